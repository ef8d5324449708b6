"""Computed columns: the compiled expression of a column (`expr:` in a mapping), evaluated in
Python on the decoded message fields.

The generator parses and type-checks the mapping's text (generator/expr.py) and writes a small
tree into the registry; nothing here parses user text, and nothing is ever passed to `eval`.
A tree is a JSON list whose first element says what it is:

    ["field", "name.given"]          a message field (MISSING and NULL are both null here)
    ["text", "x"] / ["number", "1.5"] / ["bool", true]   literals (numbers as exact text)
    ["call", "upper", ARG, ...]      a function of FUNCTIONS, operators included (add, sub, ...)
    ["get", TREE, "key" | 0]         a map's value by key, a list's element by index

Evaluation is exact: numbers are Decimals, arithmetic refuses to round (a division that does
not come out exact is an error, `round` is the one explicit rounding). Null propagates (a
function of null is null) except where a function says otherwise (concat, join, coalesce). A
value a function cannot take (text where a number is needed, a substring start below 1) raises
ExprError; decode turns it into a permanent failure of that message only.

The signatures (FUNCTIONS) are the one statement of the language: the generator type-checks
against them, and the reference documentation is rendered from them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import (
    ROUND_DOWN,
    ROUND_HALF_UP,
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
    Rounded,
    Underflow,
)
from typing import Any

from runtime.coerce import EPOCH, CoercionError, canonical_text, epoch_timestamp
from runtime.ddbjson import AttributeValueError, number
from runtime.redact import shown

# Value types of the language (the generator checks them; `any` is known only at run time:
# a value read from inside a map or list).
TEXT, NUMBER, BOOL, TIMESTAMP, MAP, LIST, ANY = "text", "number", "bool", "timestamp", "map", "list", "any"
SAME = "same"  # coalesce: the common type of its arguments
SCALAR = "scalar"  # text, number, bool or timestamp (concat, text)


class ExprError(CoercionError):
    """A value the expression cannot compute with (permanent for the message)."""


@dataclass(frozen=True)
class Signature:
    params: tuple[str, ...]  # the type of each parameter; with `variadic`, the last repeats
    result: str
    doc: str
    example: str
    min_args: int | None = None  # default: len(params) (variadic: len(params) - 1 ... no limit)
    variadic: bool = False
    null_safe: bool = False  # takes null arguments itself (no null propagation)
    literal: tuple[int, ...] = ()  # the arguments that must be literals (checked at validate)

    @property
    def least(self) -> int:
        if self.min_args is not None:
            return self.min_args
        return len(self.params)

    @property
    def most(self) -> int | None:
        return None if self.variadic else len(self.params)


FUNCTIONS: dict[str, Signature] = {
    "concat": Signature(
        (SCALAR,),
        TEXT,
        "the texts of its arguments one after another; a null argument counts as empty text",
        "concat(name.given, ' ', name.family)",
        min_args=2,
        variadic=True,
        null_safe=True,
    ),
    "join": Signature(
        (TEXT, SCALAR),
        TEXT,
        "the arguments after the first, leaving out nulls and empty texts, separated by the first",
        "join(' ', name.given, name.middle, name.family)",
        min_args=2,
        variadic=True,
        null_safe=True,
    ),
    "upper": Signature((TEXT,), TEXT, "the text in upper case", "upper(countryCode)"),
    "lower": Signature((TEXT,), TEXT, "the text in lower case", "lower(email)"),
    "trim": Signature((TEXT,), TEXT, "the text without leading and trailing white space", "trim(code)"),
    "substr": Signature(
        (TEXT, NUMBER, NUMBER),
        TEXT,
        "the part of the text from character START (the first is 1, as in SQL) of at most LENGTH "
        "characters (without LENGTH: to the end); a START past the end gives empty text",
        "substr(postcode, 1, 3)",
        min_args=2,
    ),
    "coalesce": Signature(
        (ANY,),
        SAME,
        "the first argument that is not null (a missing field is null; empty text is not)",
        "coalesce(nickname, name.given, 'customer')",
        min_args=2,
        variadic=True,
        null_safe=True,
    ),
    "nonempty": Signature(
        (TEXT,),
        TEXT,
        "null for empty text, else the text (SQL's NULLIF(x, '')): coalesce(nonempty(a), b) skips an empty a",
        "coalesce(nonempty(nickname), name.given)",
    ),
    "text": Signature(
        (SCALAR,), TEXT, "the value as text (numbers with every digit, true/false, ISO 8601)", "text(orderNo)"
    ),
    "number": Signature(
        (ANY,), NUMBER, "the value as an exact number (text must be a number)", "number(profile['score'])"
    ),
    "round": Signature(
        (NUMBER, NUMBER),
        NUMBER,
        "the number rounded to PLACES decimal places (a literal 0..30), halves away from zero as SQL's ROUND",
        "round(price * rate, 2)",
        literal=(1,),
    ),
    "from_epoch": Signature(
        (NUMBER,), TIMESTAMP, "epoch seconds as a UTC timestamp", "from_epoch(lastLoginSeconds)"
    ),
    "from_epoch_millis": Signature(
        (NUMBER,), TIMESTAMP, "epoch milliseconds as a UTC timestamp", "from_epoch_millis(lastLoginMs)"
    ),
    "to_epoch": Signature(
        (TIMESTAMP,), NUMBER, "a timestamp as epoch seconds", "to_epoch(timestamp(createdAt))"
    ),
    "to_epoch_millis": Signature(
        (TIMESTAMP,), NUMBER, "a timestamp as epoch milliseconds", "to_epoch_millis(timestamp(createdAt))"
    ),
    "timestamp": Signature(
        (TEXT,), TIMESTAMP, "ISO 8601 text as a UTC timestamp (no offset: UTC)", "timestamp(registeredAt)"
    ),
    # The operators, as the generator compiles them.
    "add": Signature(
        (ANY, ANY), SAME, "a + b: the sum of two numbers, or two texts one after the other", "a + b"
    ),
    "sub": Signature((NUMBER, NUMBER), NUMBER, "a - b", "a - b"),
    "mul": Signature((NUMBER, NUMBER), NUMBER, "a * b", "a * b"),
    "div": Signature(
        (NUMBER, NUMBER), NUMBER, "a / b, only when exact (else an error: use round)", "a / 100"
    ),
    "neg": Signature((NUMBER,), NUMBER, "-a", "-a"),
    # round(a / b, places): the quotient rounded once, exactly (the generator compiles it so).
    "round_div": Signature((NUMBER, NUMBER, NUMBER), NUMBER, "round(a / b, places)", "round(a / 3, 2)"),
}
OPERATORS = frozenset({"add", "sub", "mul", "div", "neg", "round_div"})

# Exact arithmetic: enough digits for any sum or product of DynamoDB numbers (38 significant
# digits, exponents -130..125), and every rounding trapped, so a result is exact or refused.
_EXACT = Context(
    prec=600,
    Emax=999_999,
    Emin=-999_999,
    traps=[Inexact, Rounded, InvalidOperation, DivisionByZero, Overflow, Underflow],
)
_ROUND = Context(
    prec=600, Emax=999_999, Emin=-999_999, rounding=ROUND_HALF_UP, traps=[InvalidOperation, Overflow]
)

Getter = Callable[[str], Any]  # a field's value by name (None when missing or null)
Eval = Callable[[Getter], Any]


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, str):
        return TEXT
    if isinstance(value, Decimal):
        return NUMBER
    if isinstance(value, datetime):
        return TIMESTAMP
    if isinstance(value, dict):
        return MAP
    if isinstance(value, list):
        return LIST
    return type(value).__name__


def _need(fn: str, want: str, value: Any) -> Any:
    """`value` if it is of type `want`, else ExprError (names the kind, never the value)."""
    kind = _kind(value)
    if want == ANY or kind == want or (want == SCALAR and kind in (TEXT, NUMBER, BOOL, TIMESTAMP)):
        return value
    raise ExprError(
        f"{fn}: expected {'a ' + want if want != SCALAR else 'text, a number, true/false or a timestamp'}, got {shown(value)}"
    )


def _text(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    return canonical_text(value)


def _whole(fn: str, what: str, value: Decimal, least: int) -> int:
    if value != value.to_integral_value() or value < least or value > 10**9:
        raise ExprError(f"{fn}: {what} must be a whole number from {least}, got {shown(value)}")
    return int(value)


def _substr(s: str, start: Decimal, length: Decimal | None = None) -> str:
    i = _whole("substr", "START", start, 1) - 1
    if length is None:
        return s[i:]
    return s[i : i + _whole("substr", "LENGTH", length, 0)]


def _number(value: Any) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, str):
        try:
            return number(value.strip())
        except AttributeValueError:
            pass
    raise ExprError(f"number: {shown(value)} is not a number")


def _arith(fn: str, op: Callable[[Decimal, Decimal], Decimal]) -> Callable[[Decimal, Decimal], Decimal]:
    def run(a: Decimal, b: Decimal) -> Decimal:
        try:
            return op(a, b)
        except DivisionByZero:
            raise ExprError(f"{fn}: division by zero") from None
        except (Inexact, Rounded):
            raise ExprError(
                f"{fn}: the result is not exact (divide by a number that divides it, or round it)"
            ) from None
        except (InvalidOperation, Overflow, Underflow):
            raise ExprError(f"{fn}: the result is out of range") from None

    return run


def _add(a: Any, b: Any) -> Any:
    if isinstance(a, str) and isinstance(b, str):
        return a + b
    if isinstance(a, Decimal) and isinstance(b, Decimal) and not isinstance(a, bool):
        return _arith("+", _EXACT.add)(a, b)
    raise ExprError(f"+: expected two numbers or two texts, got {shown(a)} and {shown(b)}")


def _round(a: Decimal, places: Decimal) -> Decimal:
    try:
        return a.quantize(Decimal(1).scaleb(-int(places)), context=_ROUND)
    except (InvalidOperation, Overflow):
        raise ExprError("round: the result is out of range") from None


_TRUNCATE = Context(
    prec=600, Emax=999_999, Emin=-999_999, rounding=ROUND_DOWN, traps=[InvalidOperation, Overflow]
)


def _round_div(a: Decimal, b: Decimal, places: Decimal) -> Decimal:
    """a / b rounded half away from zero to `places`: the quotient truncated to 600 digits
    rounds the same way as the exact one (a half-way point has few digits, so a truncated
    quotient reaches it only if the exact one does)."""
    if not b:
        raise ExprError("/: division by zero")
    try:
        return _round(_TRUNCATE.divide(a, b), places)
    except (InvalidOperation, Overflow):
        raise ExprError("round: the result is out of range") from None


def _epoch(ts: datetime, scale: int) -> Decimal:
    delta = ts - EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return Decimal(micros).scaleb(-6 + scale, _ROUND).normalize(_ROUND) if micros else Decimal(0)


def _timestamp(text: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ExprError(f"timestamp: {shown(text)} is not an ISO 8601 timestamp") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _from_epoch(d: Decimal, millis: bool) -> datetime:
    return epoch_timestamp(d, millis, "from_epoch_millis" if millis else "from_epoch")


# name -> the function of its (already checked) argument values.
_IMPL: dict[str, Callable[..., Any]] = {
    "concat": lambda *args: "".join(_text(a) for a in args if a is not None),
    "join": lambda sep, *args: (sep or "").join(t for a in args if a is not None and (t := _text(a))),
    "upper": str.upper,
    "lower": str.lower,
    "trim": str.strip,
    "substr": _substr,
    "coalesce": lambda *args: next((a for a in args if a is not None), None),
    "nonempty": lambda s: s or None,
    "text": _text,
    "number": _number,
    "round": _round,
    "from_epoch": lambda d: _from_epoch(d, False),
    "from_epoch_millis": lambda d: _from_epoch(d, True),
    "to_epoch": lambda ts: _epoch(ts, 0),
    "to_epoch_millis": lambda ts: _epoch(ts, 3),
    "timestamp": _timestamp,
    "add": _add,
    "sub": _arith("-", _EXACT.subtract),
    "mul": _arith("*", _EXACT.multiply),
    "div": _arith("/", _EXACT.divide),
    "neg": Decimal.copy_negate,
    "round_div": _round_div,
}


def _get(container: Any, key: str | int) -> Any:
    if container is None:
        return None
    if isinstance(key, str):
        if not isinstance(container, dict):
            raise ExprError(f"[{key!r}]: expected a map, got {shown(container)}")
        return container.get(key)
    if not isinstance(container, list):
        raise ExprError(f"[{key}]: expected a list, got {shown(container)}")
    return container[key] if key < len(container) else None


def compile_tree(tree: list[Any]) -> Eval:
    """The registry's tree of one expression as a function of a field getter."""
    tag = tree[0]
    if tag == "field":
        name = tree[1]
        return lambda get: get(name)
    if tag in ("text", "bool"):
        value = tree[1]
        return lambda get: value
    if tag == "number":
        d = Decimal(tree[1])
        return lambda get: d
    if tag == "get":
        inner, key = compile_tree(tree[1]), tree[2]
        return lambda get: _get(inner(get), key)
    if tag == "call":
        fn = tree[1]
        sig, impl = FUNCTIONS[fn], _IMPL[fn]
        args = [compile_tree(a) for a in tree[2:]]
        wants = [sig.params[min(i, len(sig.params) - 1)] for i in range(len(args))]
        label = {"add": "+", "sub": "-", "mul": "*", "div": "/", "neg": "-", "round_div": "round"}.get(fn, fn)
        null_safe = sig.null_safe

        def call(get: Getter) -> Any:
            values = []
            for arg, want in zip(args, wants, strict=True):
                v = arg(get)
                if v is None:
                    if not null_safe:
                        return None  # null in, null out
                else:
                    _need(label, want, v)
                values.append(v)
            return impl(*values)

        return call
    raise ValueError(f"unknown expression node {tag!r}")  # a registry this runtime does not know


def fields_of(tree: list[Any]) -> tuple[str, ...]:
    """The message fields an expression reads, in order of first use."""
    out: list[str] = []

    def walk(node: list[Any]) -> None:
        if node[0] == "field":
            if node[1] not in out:
                out.append(node[1])
        elif node[0] == "get":
            walk(node[1])
        elif node[0] == "call":
            for a in node[2:]:
                walk(a)

    walk(tree)
    return tuple(out)


def evaluator(tree: list[Any], column: str) -> Eval:
    """The column's expression as a function of a field getter; a refusal names the column."""
    run = compile_tree(tree)

    def evaluate(get: Getter) -> Any:
        try:
            return run(get)
        except ExprError as exc:
            raise ExprError(f"column {column}: computed value: {exc}") from None
        except CoercionError as exc:  # from_epoch out of range
            raise ExprError(f"column {column}: computed value: {exc}") from None

    return evaluate
