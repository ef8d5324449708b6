"""EventBridge Pipes filter patterns, as Pipes matches them against a DynamoDB stream record.

Semantics (facts 2.1-2.4):
- a record passes when it matches any pattern (at most 5 per Pipe); inside a pattern
  different fields are AND, the values listed for one field are OR; every field a pattern
  names must be in the record, fields it does not name are ignored;
- a pattern field's value is a list (a bare scalar is refused: facts 2.3) or a nested object;
- operators: exact values (case-sensitive, type-sensitive), prefix / suffix (also with
  equals-ignore-case), anything-but (one value or a list), equals-ignore-case, numeric ranges,
  exists true / false;
- matching is on leaves only: an object is not a leaf, so `{"x": [{"exists": false}]}` matches
  when x is `{"S": "..."}` and `exists: true` does not (facts 2.3, validated);
- `[null]` matches only null, `[""]` only the empty string; an empty array has no leaves;
- an array in the record matches when it intersects the pattern's values; arrays of objects
  are "crushed" (each element is tried), fields are never combined across elements;
- `numeric` matches JSON numbers only: DynamoDB N values are strings, so never (facts 2.4);
- `anything-but` needs the field: it does not match a missing field but matches null;
- a record key containing a dot (`"state.status"`) is matched by the nested pattern
  `{"state": {"status": [...]}}` (facts 2.3, validated quirk).

Operators the facts mark as not supported by Pipes (anything-but with prefix / suffix /
equals-ignore-case / wildcard; wildcard; cidr; `$or`, facts 2.2) are refused at compile time
with a PatternError, as CreatePipe would: a local model must not pass a pattern AWS rejects.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from typing import Any

MAX_FILTERS = 5  # facts 2.1
PATTERN_MAX_CHARS = 4096  # facts 2.1

Test = Callable[[Any], bool]
Matcher = Callable[[Any], bool]

_NUMERIC_OPS = {"<", "<=", "=", ">", ">="}
_UNSUPPORTED = {
    "wildcard": "wildcard is not a confirmed Pipes operator (facts 2.2)",
    "cidr": "cidr is not a confirmed Pipes operator (facts 2.2)",
}


class PatternError(ValueError):
    """A malformed pattern, or one that uses an operator Pipes does not support."""


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _same(a: Any, b: Any) -> bool:
    """Exact-value equality as EventBridge applies it: type-sensitive (the string "300" is not
    the number 300, true is not 1), numbers compared by value (300 matches 300.0: facts 2.4,
    validated `number_comparison_float`)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if _is_number(a):
        return _is_number(b) and a == b
    if a is None:
        return b is None
    return isinstance(b, str) and a == b


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


def _string_operand(op: str, value: Any, where: str) -> tuple[str, bool]:
    """prefix / suffix take a string or {"equals-ignore-case": string}."""
    if isinstance(value, str):
        return value, False
    if (
        isinstance(value, dict)
        and list(value) == ["equals-ignore-case"]
        and isinstance(value["equals-ignore-case"], str)
    ):
        return value["equals-ignore-case"], True
    raise PatternError(
        f'{where}: "{op}" takes a string or {{"equals-ignore-case": "..."}}, got {value!r:.60}'
    )


def _numeric_test(spec: Any, where: str) -> Test:
    if not isinstance(spec, list) or not spec or len(spec) % 2:
        raise PatternError(f'{where}: "numeric" takes [op, number, ...] pairs, got {spec!r:.60}')
    bounds: list[tuple[str, float]] = []
    for i in range(0, len(spec), 2):
        op, num = spec[i], spec[i + 1]
        if op not in _NUMERIC_OPS:
            raise PatternError(f'{where}: "numeric" operator {op!r} is not one of < <= = > >=')
        if not _is_number(num) or not math.isfinite(num):
            raise PatternError(f'{where}: "numeric" bound {num!r} is not a number')
        bounds.append((op, float(num)))
    if any(op == "=" for op, _ in bounds) and len(bounds) > 1:
        raise PatternError(f'{where}: "numeric" with "=" takes no other bound')
    if sum(op in (">", ">=") for op, _ in bounds) > 1 or sum(op in ("<", "<=") for op, _ in bounds) > 1:
        raise PatternError(f'{where}: "numeric" takes at most one lower and one upper bound')

    def test(v: Any) -> bool:
        # JSON numbers only: a DynamoDB N value is a string and never matches (facts 2.4).
        if not _is_number(v):
            return False
        for op, b in bounds:
            if op == "<" and not v < b:
                return False
            if op == "<=" and not v <= b:
                return False
            if op == "=" and v != b:
                return False
            if op == ">" and not v > b:
                return False
            if op == ">=" and not v >= b:
                return False
        return True

    return test


def _operator_test(rule: dict[str, Any], where: str) -> tuple[str, Any]:
    """One `{"operator": operand}` -> ("test", fn) or ("exists", bool)."""
    if len(rule) != 1:
        raise PatternError(f"{where}: an operator object has exactly one key, got {sorted(rule)}")
    ((op, value),) = rule.items()
    if op == "exists":
        if not isinstance(value, bool):
            raise PatternError(f'{where}: "exists" takes true or false, got {value!r:.40}')
        return "exists", value
    if op == "prefix":
        text, fold = _string_operand(op, value, where)
        if fold:
            low = text.lower()
            return "test", lambda v: isinstance(v, str) and v.lower().startswith(low)
        return "test", lambda v: isinstance(v, str) and v.startswith(text)
    if op == "suffix":
        text, fold = _string_operand(op, value, where)
        if fold:
            low = text.lower()
            return "test", lambda v: isinstance(v, str) and v.lower().endswith(low)
        return "test", lambda v: isinstance(v, str) and v.endswith(text)
    if op == "equals-ignore-case":
        if not isinstance(value, str):
            raise PatternError(f'{where}: "equals-ignore-case" takes a string, got {value!r:.40}')
        low = value.lower()
        return "test", lambda v: isinstance(v, str) and v.lower() == low
    if op == "numeric":
        return "test", _numeric_test(value, where)
    if op == "anything-but":
        if isinstance(value, dict):
            raise PatternError(
                f'{where}: "anything-but" with {sorted(value)} is not supported by Pipes (facts 2.2); '
                "only a value or a list of values"
            )
        excluded = value if isinstance(value, list) else [value]
        if not excluded or not all(isinstance(x, str) or _is_number(x) for x in excluded):
            raise PatternError(f'{where}: "anything-but" takes a string, a number, or a list of them')

        # Called only on values that are present: a missing field never matches; null does
        # (facts 2.3, validated on EventBridge).
        return "test", lambda v: not any(_same(x, v) for x in excluded)
    if op in _UNSUPPORTED:
        raise PatternError(f"{where}: {_UNSUPPORTED[op]}")
    raise PatternError(f"{where}: unknown operator {op!r}")


def _leaves(value: Any) -> list[Any]:
    """The leaf values a list of matchers sees: an object is not a leaf (facts 2.3); an array
    contributes its scalar elements (intersection semantics); [] has none."""
    if isinstance(value, dict):
        return []
    if isinstance(value, list):
        out: list[Any] = []
        for v in value:
            if isinstance(v, list):
                out.extend(_leaves(v))
            elif not isinstance(v, dict):
                out.append(v)
        return out
    return [value]


_ABSENT = object()


def _values_matcher(rules: list[Any], where: str) -> Callable[[Any], bool]:
    """A field's list of values / operators (OR), applied to the record value (or _ABSENT)."""
    if not rules:
        raise PatternError(f"{where}: an empty list matches nothing; list at least one value")
    tests: list[Test] = []
    exists: set[bool] = set()
    strings: set[str] = set()  # exact string values: one set lookup instead of a test each
    for i, rule in enumerate(rules):
        here = f"{where}[{i}]"
        if isinstance(rule, dict):
            kind, fn = _operator_test(rule, here)
            if kind == "exists":
                exists.add(fn)
            else:
                tests.append(fn)
        elif isinstance(rule, str):
            strings.add(rule)
        elif _scalar(rule):
            tests.append(lambda v, r=rule: _same(r, v))
        else:
            raise PatternError(f"{here}: a nested list is not a pattern value")
    if strings:
        tests.insert(0, lambda v: type(v) is str and v in strings)
    present, absent = True in exists, False in exists

    def match(value: Any) -> bool:
        if value is _ABSENT:
            return absent
        leaves = (value,) if type(value) is str else _leaves(value)
        if leaves:
            return present or any(t(v) for t in tests for v in leaves)
        return absent

    return match


def _object_matcher(pattern: dict[str, Any], where: str) -> Matcher:
    if not isinstance(pattern, dict):
        raise PatternError(f"{where or 'pattern'}: a pattern is a JSON object, got {type(pattern).__name__}")
    fields: list[tuple[str, bool, Callable[[Any], bool]]] = []
    for key, sub in pattern.items():
        here = f"{where}.{key}" if where else key
        if key == "$or":
            raise PatternError(
                f"{here}: $or is not supported by Pipes per the 2023 operator table (facts 2.2)"
            )
        if isinstance(sub, dict):
            if not sub:
                raise PatternError(f"{here}: an empty object matches nothing; give it fields")
            fields.append((key, True, _object_matcher(sub, here)))
        elif isinstance(sub, list):
            fields.append((key, False, _values_matcher(sub, here)))
        else:
            raise PatternError(
                f"{here}: a pattern value must be a list, e.g. [{json.dumps(sub)}], not a bare "
                f"{type(sub).__name__} (facts 2.3)"
            )

    def match(event: Any) -> bool:
        if not isinstance(event, dict):
            event = {}
        for key, nested, sub in fields:
            value = event.get(key, _ABSENT)
            if nested:
                if not _nested(sub, key, value, event):
                    return False
            elif not sub(value):
                return False
        return True

    return match


def _dotted(key: str, event: dict[str, Any]) -> dict[str, Any] | None:
    """Record keys "key.rest" seen as {"rest": ...} under `key` (facts 2.3 dot-joining quirk)."""
    extra = None
    prefix = key + "."
    for k in event:
        if "." in k and k.startswith(prefix):
            if extra is None:
                extra = {}
            extra[k[len(prefix) :]] = event[k]
    return extra


def _nested(sub: Matcher, key: str, value: Any, event: dict[str, Any]) -> bool:
    # Record keys are JSON strings: one C-level join tells whether any of them has a dot.
    extra = _dotted(key, event) if "." in "".join(event) else None
    if isinstance(value, dict):
        return sub({**value, **extra} if extra else value)
    if isinstance(value, list):
        # Crushed arrays of objects: one element must match the whole sub-pattern on its own.
        objects = [v for v in value if isinstance(v, dict)]
        if any(sub({**v, **extra} if extra else v) for v in objects):
            return True
        if objects:
            return False
    # Missing, a scalar, or an array without objects: nothing below `key` exists, so only
    # patterns satisfied by absence (exists: false) can match.
    return sub(extra or {})


def compile_pattern(pattern: dict[str, Any] | str) -> Matcher:
    """A matcher for one filter pattern (a dict, or its JSON text). Raises PatternError."""
    if isinstance(pattern, str):
        if len(pattern) > PATTERN_MAX_CHARS:
            raise PatternError(f"pattern is {len(pattern)} characters, over the {PATTERN_MAX_CHARS} limit")
        try:
            pattern = json.loads(pattern)
        except json.JSONDecodeError as exc:
            raise PatternError(f"pattern is not JSON: {exc}") from None
    if not isinstance(pattern, dict):
        raise PatternError(f"a pattern is a JSON object, got {type(pattern).__name__}")
    return _object_matcher(pattern, "")


class FilterSet:
    """The Pipe's filter criteria: a record passes when any pattern matches (facts 2.1).

    No patterns at all means no filtering: every record passes."""

    def __init__(self, patterns: Sequence[dict[str, Any] | str]) -> None:
        if len(patterns) > MAX_FILTERS:
            raise PatternError(f"{len(patterns)} filters; a Pipe takes at most {MAX_FILTERS} (facts 2.1)")
        self.matchers = []
        for i, p in enumerate(patterns):
            try:
                self.matchers.append(compile_pattern(p))
            except PatternError as exc:
                raise PatternError(f"filter {i}: {exc}") from None

    def matches(self, record: dict[str, Any]) -> bool:
        if not self.matchers:
            return True
        return any(m(record) for m in self.matchers)


def matches(pattern: dict[str, Any] | str, record: Any) -> bool:
    """Whether one pattern matches one record (compiles the pattern each call)."""
    return compile_pattern(pattern)(record)


def load_filters(path: Any) -> FilterSet:
    """build/entities/<entity>/filters.json (a JSON list of patterns) -> FilterSet."""
    with open(path, encoding="utf-8") as fh:
        raw = json.load(fh)
    if not isinstance(raw, list):
        raise PatternError(f"{path}: expected a JSON list of patterns")
    return FilterSet(raw)
