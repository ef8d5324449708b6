"""The Lambda entry point: `runtime.handler.handler(event, context)`.

The registry and the engine live at module scope and survive warm invocations; the first
invocation creates them (so importing this module stays cheap).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine

from runtime.apply import FAILED, TRANSIENT, BatchResult, Outcome, apply_batch
from runtime.config import database_url, make_engine
from runtime.observe import log_batch
from runtime.registry import Registry, load_registry


@dataclass
class _Runtime:
    registry: Registry
    engine: Engine


_runtime: _Runtime | None = None


def _get_runtime() -> _Runtime:
    global _runtime
    if _runtime is None:
        registry = load_registry()
        _runtime = _Runtime(registry, make_engine(database_url()))
    return _runtime


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    records = (event or {}).get("Records") or []
    try:
        rt = _get_runtime()
        result = apply_batch(records, rt.engine, rt.registry)
    except Exception as exc:  # configuration failures: report every message, never half a batch
        outcomes = [
            Outcome(
                str(r.get("messageId", "")),
                str((r.get("attributes") or {}).get("MessageGroupId", "")),
                status=FAILED,
                kind=TRANSIENT,
                reason=f"runtime not ready: {type(exc).__name__}: {exc}",
            )
            for r in records
        ]
        result = BatchResult(outcomes)
    log_batch(result)
    return result.response()
