"""How a message value appears in a failure reason: by kind and size, never the value itself,
unless SYNC_LOG_VALUES=1 asks for a short sample (for debugging, off by default: values are
the items' data, often personal, and a reason goes to CloudWatch Logs).

Every failure reason is also cut to REASON_MAX characters, so a log line stays far below
CloudWatch Logs' 256 KB event limit whatever a message holds.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import date, datetime
from decimal import Decimal
from typing import Any

REASON_MAX = 1000  # characters of one failure reason
SAMPLE_MAX = 60  # characters of a value shown under SYNC_LOG_VALUES=1
NAME_MAX = 80  # characters of a name taken from a message (an event type, an attribute type)


_SHOWING: ContextVar[bool] = ContextVar("sync_showing_values", default=False)


def show_values() -> bool:
    """Whether reasons may show samples of values (read on each refusal, so a test or an
    operator can switch it without a restart; refusals are rare)."""
    return _SHOWING.get() or os.environ.get("SYNC_LOG_VALUES", "") in ("1", "true", "yes")


@contextlib.contextmanager
def showing_values() -> Iterator[None]:
    """Reasons show values inside the block: for values of a mapping file (a default, a map
    value), which are configuration, not data."""
    token = _SHOWING.set(True)
    try:
        yield
    finally:
        _SHOWING.reset(token)


def cut(text: str, limit: int) -> str:
    """`text`, or its first `limit` characters and how long it was."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text):,} characters)"


def name(text: Any) -> str:
    """A name a message carries (an event type, a DynamoDB type key): quoted, and cut short."""
    return repr(cut(text if isinstance(text, str) else str(text), NAME_MAX))


def shown(value: Any) -> str:
    """A value as a reason names it: its kind and size, or a short sample when asked for."""
    if show_values():
        return cut(repr(value), SAMPLE_MAX)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return "an empty string" if not value else f"a string of {len(value):,} characters"
    if isinstance(value, Decimal):
        return f"a number of {len(value.as_tuple().digits)} digits" if value.is_finite() else "a number"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, dict):
        return f"a map of {len(value):,} keys"
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value):,} elements"
    if isinstance(value, (bytes, bytearray)):
        return f"binary data of {len(value):,} bytes"
    if isinstance(value, datetime):
        return "a timestamp"
    if isinstance(value, date):
        return "a date"
    return f"a {type(value).__name__}"


def reason(text: str) -> str:
    """A failure reason cut to REASON_MAX characters."""
    return cut(text, REASON_MAX - 30) if len(text) > REASON_MAX else text
