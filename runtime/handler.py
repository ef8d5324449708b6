"""The Lambda entry point: `runtime.handler.handler(event, context)`.

The registry, the database source and the engine live at module scope and survive warm
invocations; the first invocation creates them (so importing this module stays cheap), with
client-side limits derived from the function's timeout (runtime.config.Limits).

Each invocation plans against `context.get_remaining_time_in_millis()`: apply_batch answers
by the Lambda's deadline less a margin, reporting what it could not finish for a retry. When
the database refuses the login, the secret is fetched again (with IAM authentication: a new
token is signed) and the batch retried once at once with the new credentials (a rotation).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine

from runtime.apply import FAILED, TRANSIENT, BatchResult, Outcome, apply_batch
from runtime.config import DatabaseSource, Limits, make_engine
from runtime.decode import parse_sqs_record
from runtime.observe import log_batch
from runtime.prune import is_prune_event, prune
from runtime.redact import cut, reason
from runtime.registry import Registry, load_registry
from runtime.wire import BatchResponse, PruneEvent, PruneResponse, SqsEvent, SqsEventRecord


@dataclass
class _Runtime:
    registry: Registry
    source: DatabaseSource
    limits: Limits
    engine: Engine

    def renew_engine(self) -> None:
        self.engine.dispose()
        self.engine = make_engine(self.source.url, limits=self.limits, password=self.source.password)


_runtime: _Runtime | None = None


def _timeout_seconds(context: Any) -> float | None:
    """The function's timeout, as the first invocation sees it (rounded up to whole seconds)."""
    remaining = _remaining_ms(context)
    return math.ceil(remaining / 1000) if remaining is not None else None


def _remaining_ms(context: Any) -> float | None:
    get = getattr(context, "get_remaining_time_in_millis", None)
    if not callable(get):
        return None
    try:
        return float(get())
    except (TypeError, ValueError):
        return None


def _get_runtime(context: Any) -> _Runtime:
    global _runtime
    if _runtime is None:
        registry = load_registry()
        limits = Limits.for_timeout(_timeout_seconds(context))
        source = DatabaseSource()
        engine = make_engine(source.url, limits=limits, password=source.password)
        _runtime = _Runtime(registry, source, limits, engine)
    return _runtime


def _records(event: Any) -> list[SqsEventRecord]:
    """The event's records (an event of any other shape: none, never an exception)."""
    records = event.get("Records") if isinstance(event, dict) else None
    return records if isinstance(records, list) else []


def _all_failed(records: list[SqsEventRecord], why: str) -> BatchResult:
    outcomes = []
    for raw in records:
        rec = parse_sqs_record(raw)
        outcomes.append(Outcome(rec.message_id, rec.group_id, status=FAILED, kind=TRANSIENT, reason=why))
    return BatchResult(outcomes)


def handler(event: SqsEvent | PruneEvent, context: Any = None) -> BatchResponse | PruneResponse:
    if is_prune_event(event):
        return _prune(context)
    started = time.monotonic()
    records = _records(event)
    try:
        rt = _get_runtime(context)
    except Exception as exc:  # configuration failures: report every message, never half a batch
        result = _all_failed(
            records, reason(f"runtime not ready: {type(exc).__name__}: {cut(str(exc), 300)}")
        )
    else:
        if rt.source.stale:
            try:
                if rt.source.refetch(force=True):
                    rt.renew_engine()
            except Exception:  # Secrets Manager out of reach: go on with the credentials in hand
                pass
        remaining = _remaining_ms(context)
        deadline = None if remaining is None else started + (remaining - rt.limits.margin_ms) / 1000
        result = apply_batch(records, rt.engine, rt.registry, deadline=deadline)
        if result.failure is not None and result.failure.auth:
            try:
                renewed = rt.source.refetch()
            except Exception:  # Secrets Manager out of reach: the refused batch stands, SQS retries it
                renewed = False
            if renewed:
                rt.renew_engine()
                result = apply_batch(records, rt.engine, rt.registry, deadline=deadline)
    log_batch(result)
    return result.response()


def _prune(context: Any) -> PruneResponse:
    """A prune event (runtime.prune.PRUNE_EVENT, from the generated schedule): prune the ledger
    and the tombstones in batches until done or until the invocation's deadline less the
    margin; what is left goes at the next run. A failure raises (the Lambda's Errors metric)."""
    started = time.monotonic()
    rt = _get_runtime(context)
    remaining = _remaining_ms(context)
    deadline = None if remaining is None else started + (remaining - rt.limits.margin_ms) / 1000
    result = prune(rt.engine, rt.registry, deadline=deadline)
    summary = result.as_dict()
    print(json.dumps({"prune": summary["prune"], "rows": summary["rows"], "targets": summary["targets"]}))
    return {"prune": summary["prune"], "rows": summary["rows"], "complete": summary["complete"]}
