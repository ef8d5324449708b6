"""Column coercions: a decoded message value -> the Python value bound for one SQL column.

Every refusal raises CoercionError with a message naming the column, the limit, and the
value's kind and size (runtime.redact: never the value itself unless asked for); the batch
logic turns it into a permanent failure of that message (never a silent truncation or
rounding). Numbers are exact: no arithmetic here rounds to a decimal context's precision.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from runtime.ddbjson import AttributeValueError, number
from runtime.redact import SAMPLE_MAX, cut, show_values, shown
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
# A decimal column without precision or scale is NUMERIC(38, 10) (runtime.schema.column_type
# uses decimal_limits too): the limits are checked here, so the database never rounds.
DEFAULT_PRECISION, DEFAULT_SCALE = 38, 10


def decimal_limits(col: ColumnSpec) -> tuple[int, int]:
    """(precision, scale) of a decimal column, defaults filled in."""
    precision = col.precision if col.precision is not None else DEFAULT_PRECISION
    scale = col.scale if col.scale is not None else min(DEFAULT_SCALE, precision)
    return precision, scale


class CoercionError(ValueError):
    pass


def canonical_text(value: Any) -> str:
    """Stable text of a scalar: map lookups, tombstone keys and string columns use it.
    Decimals keep every digit (no context precision applies): 1E+30 is 1 and 30 zeros,
    1.50 is 1.5."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        sign, digits, exponent = value.as_tuple()
        if not any(digits):
            return "0"
        if isinstance(exponent, int) and exponent < 0:  # drop the fraction's trailing zeros
            n = len(digits)
            k = 0
            while k < -exponent and digits[n - 1 - k] == 0:
                k += 1
            if k:
                value = Decimal((sign, digits[: n - k], exponent + k))
        return format(value, "f")
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


def _text_check(col: ColumnSpec, text: str, *, nul_ok: bool) -> str:
    """Text every driver can send: valid Unicode (no lone surrogate, which no UTF-8 encoder
    accepts), and no U+0000 where the database cannot store it (PostgreSQL text and jsonb)."""
    if not nul_ok and "\x00" in text:
        raise CoercionError(
            f"column {col.name}: the text contains U+0000, which PostgreSQL cannot store in a {col.type} column"
        )
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise CoercionError(
                f"column {col.name}: the text is not valid Unicode (a lone surrogate U+{ord(text[exc.start]):04X} "
                f"at character {exc.start:,})"
            ) from None
    return text


def _decimal(value: Any, col: ColumnSpec) -> Decimal:
    if isinstance(value, bool):
        raise CoercionError(f"column {col.name}: a boolean is not a number")
    if isinstance(value, Decimal):
        return value
    if isinstance(value, (int, float, str)):
        try:
            return number(value.strip() if isinstance(value, str) else value)
        except AttributeValueError as exc:
            raise CoercionError(f"column {col.name}: {exc}") from None
    raise CoercionError(f"column {col.name}: {shown(value)} is not a number")


def _number_shown(d: Decimal) -> str:
    """A number as a reason names it: 'a number', or its exact text under SYNC_LOG_VALUES=1."""
    return f"the number {cut(canonical_text(d), SAMPLE_MAX)}" if show_values() else "a number"


def _integer_converter(col: ColumnSpec) -> Callable[[Any], int]:
    """An integer column's conversion, its range chosen once."""
    limit = INT_RANGES[col.type]

    def integer(value: Any) -> int:
        if type(value) is Decimal:  # the common case: a number of the message
            d = value
        elif isinstance(value, bool):
            return int(value)
        else:
            d = _decimal(value, col)
        if d != d.to_integral_value():
            raise CoercionError(
                f"column {col.name}: {_number_shown(d)} with decimal places is not a whole number"
            )
        if d.adjusted() >= 19 or not -limit <= (whole := int(d)) < limit:
            raise CoercionError(
                f"column {col.name}: {_number_shown(d)} of {d.adjusted() + 1} digits is out of range for "
                f"{col.type} ({-limit}..{limit - 1})"
            )
        return whole

    return integer


def _timestamp(value: Any, col: ColumnSpec) -> datetime:
    return timestamp_value(value, col.format, f"column {col.name}", col)


def _timestamp_converter(col: ColumnSpec) -> Callable[[Any], datetime]:
    """A timestamp column's conversion (_timestamp), its format and the reason's prefix chosen once."""
    fmt, where = col.format, f"column {col.name}"
    epoch, millis = fmt != "iso8601", fmt == "epoch_millis"

    def timestamp(value: Any) -> datetime:
        if epoch and type(value) is Decimal:  # the common case: a number of the message
            return epoch_timestamp(value, millis, where)
        return timestamp_value(value, fmt, where, col)

    return timestamp


def timestamp_value(value: Any, fmt: str | None, where: str, col: ColumnSpec | None = None) -> datetime:
    """A time as an aware UTC datetime: ISO 8601 text, or epoch seconds or milliseconds
    (`fmt`; None: ISO 8601 for text, epoch seconds for numbers)."""
    if isinstance(value, datetime):  # a computed column's timestamp (runtime.expr)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if fmt is None:
        fmt = "iso8601" if isinstance(value, str) else "epoch_seconds"
    if fmt == "iso8601":
        if not isinstance(value, str):
            raise CoercionError(f"{where}: expected ISO 8601 text, got {shown(value)}")
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise CoercionError(f"{where}: {shown(value)} is not an ISO 8601 timestamp") from None
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    if isinstance(value, Decimal):
        d = value
    elif col is not None:
        d = _decimal(value, col)
    else:
        try:
            d = number(value.strip() if isinstance(value, str) else value)
        except AttributeValueError as exc:
            raise CoercionError(f"{where}: {exc}") from None
    return epoch_timestamp(d, fmt == "epoch_millis", where)


# What datetime (and so every column the runtime writes) can hold: years 1 to 9999 (as
# Decimals: a comparison of a Decimal with a float converts the float every time).
_MIN_SECONDS = Decimal(int((datetime(1, 1, 1, tzinfo=UTC) - EPOCH).total_seconds()))
_MAX_SECONDS = Decimal(int((datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC) - EPOCH).total_seconds()))


def epoch_timestamp(d: Decimal, millis: bool, where: str) -> datetime:
    """Epoch seconds (or milliseconds) -> an aware UTC datetime; refused outside years 1..9999."""
    seconds = d.scaleb(-3) if millis else d
    if not _MIN_SECONDS <= seconds <= _MAX_SECONDS:
        unit = "milliseconds" if millis else "seconds"
        raise CoercionError(
            f"{where}: {_number_shown(d)} of epoch {unit} is out of range for a timestamp (years 1 to 9999)"
        )
    if seconds == seconds.to_integral_value():
        return EPOCH + timedelta(0, int(seconds))  # (days, seconds): a keyword costs more
    return EPOCH + timedelta(0, float(seconds))


def _exponent(d: Decimal) -> int:
    """`d.as_tuple().exponent` of a finite Decimal, read off its text (as_tuple builds a named
    tuple, through a Python call). The text holds every digit of the coefficient, then the
    exponent of its first digit in scientific notation: "1.2E-7" is 12E-8, "0.05" is 5E-2,
    "1E+5" is 1E+5 (upper-cased: a context with capitals=0 writes "e")."""
    mantissa, _, exponent = str(d).upper().partition("E")
    return (int(exponent) if exponent else 0) - len(mantissa.partition(".")[2])


def _decimal_column(value: Any, col: ColumnSpec, limits: tuple[int, int]) -> Decimal:
    d = value if type(value) is Decimal else _decimal(value, col)
    if not d:
        return d
    precision, scale = limits
    assert d.is_finite()  # _decimal admits finite numbers only
    if _exponent(d) < -scale:  # more places than the scale, unless the extra ones are zeros
        _, digits, exponent = d.as_tuple()
        assert isinstance(exponent, int)
        trailing = 0
        while trailing < -exponent and digits[len(digits) - 1 - trailing] == 0:
            trailing += 1
        places = -exponent - trailing
        if places > scale:
            raise CoercionError(
                f"column {col.name}: {_number_shown(d)} with {places} decimal places does not fit "
                f"decimal({precision},{scale}), which keeps {scale} (values are never rounded)"
            )
    whole = d.adjusted() + 1
    if whole > precision - scale:
        raise CoercionError(
            f"column {col.name}: {_number_shown(d)} with {whole} digits before the decimal point does not "
            f"fit decimal({precision},{scale}), which keeps {precision - scale}"
        )
    return d


def _string(value: Any, col: ColumnSpec, *, nul_ok: bool = True) -> str:
    if type(value) is str:
        text = value
    elif isinstance(value, (dict, list, bytes)):
        raise CoercionError(
            f"column {col.name}: {shown(value)} cannot go into a {col.type} column (use type: json)"
        )
    else:
        text = canonical_text(value)
    if col.length is not None and len(text) > col.length:
        sample = (
            f"{shown(text)} of {len(text):,} characters"
            if show_values()
            else f"a value of {len(text):,} characters"
        )
        raise CoercionError(f"column {col.name}: {sample} exceeds length {col.length}")
    return _text_check(col, text, nul_ok=nul_ok)


def _string_converter(col: ColumnSpec, nul_ok: bool) -> Callable[[Any], str]:
    """_string as a closure over the column (decode runs it for every string of every message)."""
    length = col.length

    def convert(value: Any) -> str:
        if type(value) is not str:
            return _string(value, col, nul_ok=nul_ok)
        if length is not None and len(value) > length:
            return _string(value, col, nul_ok=nul_ok)  # refused there, with its reason
        if value.isascii() and (nul_ok or "\x00" not in value):
            return value
        return _text_check(col, value, nul_ok=nul_ok)

    return convert


def _json(value: Any, col: ColumnSpec, *, nul_ok: bool = True) -> str:
    if not nul_ok and _holds_nul(value):
        raise CoercionError(
            f"column {col.name}: the value holds U+0000 in a string, which PostgreSQL cannot store in a json column"
        )
    return _text_check(col, json_text(value), nul_ok=True)


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any("\x00" in str(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(_holds_nul(v) for v in value)
    return False


def _boolean(value: Any, col: ColumnSpec) -> bool:
    if isinstance(value, bool):
        return value
    word = canonical_text(value).strip().lower() if isinstance(value, (str, Decimal, int)) else None
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise CoercionError(f"column {col.name}: {shown(value)} is not a boolean (true/false, yes/no, 1/0)")


def _date(value: Any, col: ColumnSpec) -> date:
    if isinstance(value, str) and len(value.strip()) == 10:
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            raise CoercionError(f"column {col.name}: {shown(value)} is not an ISO 8601 date") from None
    return _timestamp(value, col).date()


def _converter_for(col: ColumnSpec, nul_ok: bool) -> Callable[[Any], Any]:
    """The type conversion of one column as a function of the value (no default or map)."""
    t = col.type
    if t in ("string", "text"):
        return _string_converter(col, nul_ok)
    if t in INT_RANGES:
        return _integer_converter(col)
    if t == "decimal":
        limits = decimal_limits(col)
        return lambda value: _decimal_column(value, col, limits)
    if t == "float":
        return lambda value: float(_decimal(value, col))
    if t == "boolean":
        return lambda value: _boolean(value, col)
    if t == "timestamp":
        return _timestamp_converter(col)
    if t == "date":
        return lambda value: _date(value, col)
    if t == "json":
        return lambda value: _json(value, col, nul_ok=nul_ok)

    def unknown(value: Any) -> Any:
        raise CoercionError(f"column {col.name}: unknown column type {t!r}")

    return unknown


def _no_value(col: ColumnSpec) -> str:
    if col.expr is not None:
        return f"column {col.name}: no value (its expression gives null) and the column is NOT NULL"
    return f"column {col.name}: no value (field {' / '.join(col.fields) or '-'} is missing) and the column is NOT NULL"


def converter(col: ColumnSpec, *, nul_ok: bool = True) -> Callable[[Any], Any]:
    """`coerce(col, value)` as a function of the value, its choices made once per column
    (decode runs it for every column of every message); same results, same errors.
    `nul_ok=False` refuses U+0000 in text (PostgreSQL)."""
    if col.has_const or col.value_map is not None:
        return lambda value: coerce(col, value, nul_ok=nul_ok)
    convert = _converter_for(col, nul_ok)
    has_default, default, nullable = col.has_default, col.default, col.nullable
    missing = _no_value(col)

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


def refusal(col: ColumnSpec, value: Any, *, nul_ok: bool = True) -> str | None:
    """Why the column refuses `value` (the reason after "column NAME: "), or None when it takes
    it: the very check the runtime makes, for the validator to run on a mapping's own values
    (map values, defaults, constants)."""
    try:
        _converter_for(col, nul_ok)(value)
    except CoercionError as exc:
        return str(exc).removeprefix(f"column {col.name}: ")
    return None


def coerce(col: ColumnSpec, value: Any, *, nul_ok: bool = True) -> Any:
    """Apply default, value map and type coercion for one column."""
    if col.has_const:
        value = col.const
    if value is MISSING or value is None:
        if col.has_default:
            value = col.default
        elif col.nullable:
            return None
        else:
            raise CoercionError(_no_value(col))
    if col.value_map is not None:
        key = canonical_text(value)
        if key in col.value_map:
            value = col.value_map[key]
            if value is None:
                return None
        elif col.on_unmapped == "fail":
            known = ", ".join(sorted(col.value_map))
            raise CoercionError(f"column {col.name}: {shown(value)} is not in its value map (known: {known})")
        elif col.on_unmapped == "null":
            return None
        elif col.on_unmapped == "default":
            value = col.default
    return _converter_for(col, nul_ok)(value)
