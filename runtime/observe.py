"""One structured JSON line per batch and entity, which is also a CloudWatch Embedded Metric
Format document: the counts become metrics with an Entity dimension, the rest stays searchable
in CloudWatch Logs Insights."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from runtime.apply import (
    APPLIED,
    BLOCKED,
    DUPLICATE,
    FAILED,
    IGNORED,
    PERMANENT,
    SKIPPED,
    STALE,
    TRANSIENT,
    BatchResult,
    Outcome,
)

DEFAULT_NAMESPACE = "DdbSqlSync"  # the generated alarms watch it (generator.emit.terraform.alarms)
NAMESPACE = os.environ.get("SYNC_METRICS_NAMESPACE", DEFAULT_NAMESPACE)
# Each metric: the messages it counts.
METRICS: dict[str, Callable[[Outcome], bool]] = {
    "Applied": lambda o: o.status is APPLIED,
    "Duplicate": lambda o: o.status is DUPLICATE,
    "Stale": lambda o: o.status is STALE,
    "Ignored": lambda o: o.status is IGNORED,
    "Skipped": lambda o: o.status is SKIPPED,
    "FailedPermanent": lambda o: o.status is FAILED and o.kind is PERMANENT,
    "FailedTransient": lambda o: o.status is FAILED and o.kind is TRANSIENT,
    "Blocked": lambda o: o.status is BLOCKED,
}


def _write_stdout(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def batch_documents(result: BatchResult, *, now: Callable[[], float] = time.time) -> list[dict[str, Any]]:
    """The log/EMF documents of one batch (one per entity present; 'unknown' for messages
    whose queue is not in the registry)."""
    by_entity: dict[str, list[Outcome]] = {}
    for o in result.outcomes:
        by_entity.setdefault(o.entity or "unknown", []).append(o)
    docs = []
    for entity, outs in sorted(by_entity.items()):
        counts = {name: sum(1 for o in outs if test(o)) for name, test in METRICS.items()}
        lags = [o.lag_seconds for o in outs if o.lag_seconds is not None]
        metrics = [{"Name": name, "Unit": "Count"} for name in counts]
        metrics.append({"Name": "BatchDuration", "Unit": "Milliseconds"})
        doc: dict[str, Any] = {
            "_aws": {
                "Timestamp": int(now() * 1000),
                "CloudWatchMetrics": [
                    {"Namespace": NAMESPACE, "Dimensions": [["Entity"]], "Metrics": metrics}
                ],
            },
            "level": "ERROR" if counts["FailedPermanent"] or counts["FailedTransient"] else "INFO",
            "message": "sync batch",
            "Entity": entity,
            **counts,
            "BatchDuration": result.duration_ms,
            "messages": len(outs),
            "path": result.path,
            "attempts": result.attempts,
            "roundTrips": result.round_trips,
            "failures": [
                {
                    "entity": entity,
                    "event_id": o.event_id,
                    "message_id": o.message_id,
                    "group_id": o.group_id,
                    "kind": o.kind,
                    "reason": o.reason,
                }
                for o in outs
                if o.status == FAILED
            ],
            "blocked": [o.message_id for o in outs if o.status == BLOCKED],
        }
        if lags:
            metrics.append({"Name": "LagSeconds", "Unit": "Seconds"})
            doc["LagSeconds"] = lags
        docs.append(doc)
    return docs


def log_batch(result: BatchResult, sink: Callable[[str], None] = _write_stdout) -> None:
    for doc in batch_documents(result):
        sink(json.dumps(doc, default=str, separators=(",", ":")))
