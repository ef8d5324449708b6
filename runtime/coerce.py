"""Column coercions: a decoded message value -> the Python value bound for one SQL column.

Every refusal raises CoercionError with a message naming the column and the value; the
batch logic turns it into a permanent failure for that message (never a silent truncation
or rounding).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from runtime.registry import ColumnSpec


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()

INT_RANGES = {"smallint": 2**15, "integer": 2**31, "bigint": 2**63}
TRUE_WORDS = {"true", "1", "yes", "y", "t"}
FALSE_WORDS = {"false", "0", "no", "n", "f"}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class CoercionError(ValueError):
    pass


def canonical_text(value: Any) -> str:
    """Stable text of a scalar: map lookups and tombstone keys use it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        if value == value.to_integral_value():
            return str(value.quantize(Decimal(1)))
        return format(value.normalize(), "f")
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return str(value)


def json_text(value: Any) -> str:
    """JSON text that keeps every digit of a Decimal (json.dumps cannot)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        return canonical_text(value)
    if isinstance(value, float):
        return json.dumps(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bytes):
        return json.dumps(base64.b64encode(value).decode("ascii"))
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(json_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{"
            + ",".join(
                f"{json.dumps(str(k), ensure_ascii=False)}:{json_text(v)}" for k, v in sorted(value.items())
            )
            + "}"
        )
    raise CoercionError(f"cannot write {type(value).__name__} as JSON")


def _decimal(value: Any, col: ColumnSpec) -> Decimal:
    if isinstance(value, bool):
        raise CoercionError(f"column {col.name}: a boolean is not a number")
    if isinstance(value, Decimal):
        return value
    if isinstance(value, (int, float)):
        return Decimal(str(value))
    if isinstance(value, str):
        try:
            d = Decimal(value.strip())
        except InvalidOperation:
            raise CoercionError(f"column {col.name}: {value!r} is not a number") from None
        if not d.is_finite():
            raise CoercionError(f"column {col.name}: {value!r} is not a finite number")
        return d
    raise CoercionError(f"column {col.name}: {type(value).__name__} is not a number")


def _integer(value: Any, col: ColumnSpec) -> int:
    if isinstance(value, bool):
        return int(value)
    d = _decimal(value, col)
    if d != d.to_integral_value():
        raise CoercionError(f"column {col.name}: {canonical_text(d)} is not a whole number")
    n = int(d)
    limit = INT_RANGES[col.type]
    if not -limit <= n < limit:
        raise CoercionError(f"column {col.name}: {n} is out of range for {col.type}")
    return n


def _timestamp(value: Any, col: ColumnSpec) -> datetime:
    fmt = col.format
    if fmt is None:
        fmt = "iso8601" if isinstance(value, str) else "epoch_seconds"
    if fmt == "iso8601":
        if not isinstance(value, str):
            raise CoercionError(f"column {col.name}: expected ISO 8601 text, got {canonical_text(value)!r}")
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise CoercionError(f"column {col.name}: {value!r} is not an ISO 8601 timestamp") from None
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    d = _decimal(value, col)
    if fmt == "epoch_millis":
        d = d / 1000
    try:
        return (
            EPOCH + timedelta(seconds=float(d))
            if d != d.to_integral_value()
            else EPOCH + timedelta(seconds=int(d))
        )
    except OverflowError:
        raise CoercionError(
            f"column {col.name}: {canonical_text(d)} is out of range for a timestamp"
        ) from None


def _decimal_column(value: Any, col: ColumnSpec) -> Decimal:
    d = _decimal(value, col)
    exponent = d.as_tuple().exponent
    scale = max(0, -exponent) if isinstance(exponent, int) else 0
    if col.scale is not None and scale > col.scale and d != d.quantize(Decimal(1).scaleb(-col.scale)):
        raise CoercionError(
            f"column {col.name}: {canonical_text(d)} has more than {col.scale} decimal places (not rounded)"
        )
    if col.precision is not None:
        whole_digits = len(str(abs(int(d)))) if abs(d) >= 1 else 0
        if whole_digits > col.precision - (col.scale or 0):
            raise CoercionError(
                f"column {col.name}: {canonical_text(d)} does not fit decimal({col.precision},{col.scale or 0})"
            )
    return d


def _convert(value: Any, col: ColumnSpec) -> Any:
    t = col.type
    if t in ("string", "text"):
        if isinstance(value, (dict, list, bytes)):
            raise CoercionError(
                f"column {col.name}: a {type(value).__name__} cannot go into a {t} column (use type: json)"
            )
        text = value if isinstance(value, str) else canonical_text(value)
        if col.length is not None and len(text) > col.length:
            raise CoercionError(
                f"column {col.name}: value of {len(text)} characters exceeds length {col.length}"
            )
        return text
    if t in INT_RANGES:
        return _integer(value, col)
    if t == "decimal":
        return _decimal_column(value, col)
    if t == "float":
        return float(_decimal(value, col))
    if t == "boolean":
        if isinstance(value, bool):
            return value
        word = canonical_text(value).strip().lower() if isinstance(value, (str, Decimal, int)) else None
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        raise CoercionError(f"column {col.name}: {value!r} is not a boolean")
    if t == "timestamp":
        return _timestamp(value, col)
    if t == "date":
        if isinstance(value, str) and len(value.strip()) == 10:
            try:
                return date.fromisoformat(value.strip())
            except ValueError:
                raise CoercionError(f"column {col.name}: {value!r} is not an ISO 8601 date") from None
        return _timestamp(value, col).date()
    if t == "json":
        return json_text(value)
    raise CoercionError(f"column {col.name}: unknown column type {t!r}")


def _string_converter(col: ColumnSpec) -> Callable[[Any], Any]:
    length, t, name = col.length, col.type, col.name

    def convert(value: Any) -> Any:
        if type(value) is str:
            text = value
        elif isinstance(value, (dict, list, bytes)):
            raise CoercionError(
                f"column {name}: a {type(value).__name__} cannot go into a {t} column (use type: json)"
            )
        else:
            text = value if isinstance(value, str) else canonical_text(value)
        if length is not None and len(text) > length:
            raise CoercionError(f"column {name}: value of {len(text)} characters exceeds length {length}")
        return text

    return convert


def converter(col: ColumnSpec) -> Callable[[Any], Any]:
    """`coerce(col, value)` as a function of the value, its choices made once per column
    (decode runs it for every column of every message); same results, same errors."""
    if col.has_const or col.value_map is not None:
        return lambda value: coerce(col, value)
    t = col.type
    if t in ("string", "text"):
        convert = _string_converter(col)
    else:
        typed = {"decimal": _decimal_column, "timestamp": _timestamp, **dict.fromkeys(INT_RANGES, _integer)}
        by_type = typed.get(t, _convert)
        convert = lambda value: by_type(value, col)  # noqa: E731
    has_default, default, nullable = col.has_default, col.default, col.nullable
    missing = f"column {col.name}: no value (field {' / '.join(col.fields) or '-'} is missing) and the column is NOT NULL"

    def run(value: Any) -> Any:
        if value is MISSING or value is None:
            if has_default:
                value = default
            elif nullable:
                return None
            else:
                raise CoercionError(missing)
        return convert(value)

    return run


def coerce(col: ColumnSpec, value: Any) -> Any:
    """Apply default, value map and type coercion for one column."""
    if col.has_const:
        value = col.const
    if value is MISSING or value is None:
        if col.has_default:
            value = col.default
        elif col.nullable:
            return None
        else:
            raise CoercionError(
                f"column {col.name}: no value (field {' / '.join(col.fields) or '-'} is missing) and the column is NOT NULL"
            )
    if col.value_map is not None:
        key = canonical_text(value)
        if key in col.value_map:
            value = col.value_map[key]
            if value is None:
                return None
        elif col.on_unmapped == "fail":
            known = ", ".join(sorted(col.value_map))
            raise CoercionError(f"column {col.name}: {key!r} is not in its value map (known: {known})")
        elif col.on_unmapped == "null":
            return None
        elif col.on_unmapped == "default":
            value = col.default
    return _convert(value, col)
