"""EventBridge Pipes filter patterns, as Pipes matches them against a DynamoDB stream record.

Semantics (AWS: eb-pipes-event-filtering):
- a record passes when it matches any pattern (at most 5 per Pipe); inside a pattern
  different fields are AND, the values listed for one field are OR; every field a pattern
  names must be in the record, fields it does not name are ignored;
- a pattern field's value is a list (a bare scalar is refused: AWS: eb-pipes-event-filtering) or a nested object;
- operators: exact values (case-sensitive, type-sensitive), prefix / suffix (also with
  equals-ignore-case), anything-but (one value or a list), equals-ignore-case, numeric ranges,
  exists true / false;
- matching is on leaves only: an object is not a leaf, so `{"x": [{"exists": false}]}` matches
  when x is `{"S": "..."}` and `exists: true` does not (AWS: eb-pipes-event-filtering, validated);
- `[null]` matches only null, `[""]` only the empty string; an empty array has no leaves;
- an array in the record matches when it intersects the pattern's values; arrays of objects
  are "crushed" (each element is tried), fields are never combined across elements;
- `numeric` matches JSON numbers only: DynamoDB N values are strings, so never (AWS: eb-pipes-event-filtering);
- `anything-but` needs the field: it does not match a missing field but matches null;
- AWS joins keys with "." into one field path, on both sides: a record key containing a dot
  (`"state.status"`) is matched by the nested pattern `{"state": {"status": [...]}}` (AWS:
  eb-pipes-event-filtering, validated quirk), and a pattern key containing a dot by the nested record fields
  (`dot_joining_pattern` in tests/conformance/).

Operators this model does not implement are refused at compile time with a PatternError that
names them, never matched approximately: anything-but with prefix / suffix /
equals-ignore-case / wildcard, which Pipes does not support (AWS: eb-pipes-event-filtering), so CreatePipe would
refuse them too; and wildcard, cidr and `$or`, which are not confirmed Pipes operators (AWS:
eb-pipes-event-filtering). unsupported_operators() lists them, for a warning at validate.

tests/test_conformance.py runs every vector of tests/conformance/eventbridge-patterns.json
(recorded against AWS, or from aws/event-ruler) through this module.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

from runtime.aws_limits import PIPES_FILTERS, PIPES_PATTERN_CHARS
from synctools import awsdocs

Test = Callable[[Any], bool]
Matcher = Callable[[Any], bool]

_NUMERIC_OPS = {"<", "<=", "=", ">", ">="}


class PatternError(ValueError):
    """A malformed pattern, or one that uses an operator this model does not implement."""


# The AWS operator table, with a "Pipe support" column.
OPERATORS_DOC = "https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-create-pattern-operators.html"
_NOT_IN_PIPES = f'EventBridge Pipes does not support it ("Pipe support: No" in {OPERATORS_DOC})'
_NOT_MODELLED = (
    "the local Pipes model does not implement it, so local runs (python -m generator test, "
    f"the replay tools) refuse the pattern; AWS lists the operators Pipes supports in {OPERATORS_DOC}"
)
# anything-but takes one of these objects on the event bus; Pipes takes none (facts 2.2).
_ANYTHING_BUT_FORMS = ("prefix", "suffix", "equals-ignore-case", "wildcard")
# Operators EventBridge documents that this model does not implement, and why (facts 2.2).
_UNSUPPORTED = {"wildcard": _NOT_MODELLED, "cidr": _NOT_MODELLED, "$or": _NOT_MODELLED} | {
    f"anything-but with {form}": _NOT_IN_PIPES for form in _ANYTHING_BUT_FORMS
}

PatternPath = tuple[str | int, ...]

# "the value to match is ... in a JSON array" (the AWS event patterns page).
PATTERN_VALUES_DOC = "https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-event-patterns.html"


class Unsupported(NamedTuple):
    """An operator of a pattern that this model refuses: where it is written in the pattern
    (keys and list indexes down to the operator's own key), its name, and why."""

    path: PatternPath
    operator: str
    why: str


def unsupported_operators(pattern: Any) -> list[Unsupported]:
    """Every operator of `pattern` that compile_pattern refuses as unsupported (not as
    malformed), in the order written. A pattern that is not an object has none."""
    return list(_unsupported(pattern, ()))


def _unsupported(pattern: Any, path: PatternPath) -> Iterator[Unsupported]:
    if not isinstance(pattern, dict):
        return
    for key, sub in pattern.items():
        here = path + (key,)
        if key == "$or":
            yield Unsupported(here, "$or", _UNSUPPORTED["$or"])
            if isinstance(sub, list):
                for i, branch in enumerate(sub):
                    yield from _unsupported(branch, here + (i,))
        elif isinstance(sub, dict):
            yield from _unsupported(sub, here)
        elif isinstance(sub, list):
            for i, rule in enumerate(sub):
                if not isinstance(rule, dict) or len(rule) != 1:
                    continue
                ((op, value),) = rule.items()
                if op in ("wildcard", "cidr"):
                    yield Unsupported(here + (i, op), op, _UNSUPPORTED[op])
                elif op == "anything-but" and isinstance(value, dict):
                    for form in value:
                        if form in _ANYTHING_BUT_FORMS:
                            name = f"anything-but with {form}"
                            yield Unsupported(here + (i, op, form), name, _UNSUPPORTED[name])


def _refuse(where: str, operator: str) -> PatternError:
    return PatternError(f"{where}: {operator}: {_UNSUPPORTED[operator]}")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _same(a: Any, b: Any) -> bool:
    """Exact-value equality as EventBridge applies it: type-sensitive (the string "300" is not
    the number 300, true is not 1), numbers compared by value (300 matches 300.0: AWS: eb-pipes-event-filtering,
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
            form = next((f for f in value if f in _ANYTHING_BUT_FORMS), None)
            if form is not None:
                raise _refuse(where, f"anything-but with {form}")
            raise PatternError(
                f'{where}: "anything-but" takes a string, a number, or a list of them, got {value!r:.60}'
            )
        excluded = value if isinstance(value, list) else [value]
        if not excluded or not all(isinstance(x, str) or _is_number(x) for x in excluded):
            raise PatternError(f'{where}: "anything-but" takes a string, a number, or a list of them')

        # Called only on values that are present: a missing field never matches; null does
        # (facts 2.3, validated on EventBridge).
        return "test", lambda v: not any(_same(x, v) for x in excluded)
    if op in ("wildcard", "cidr"):
        raise _refuse(where, op)
    raise PatternError(f"{where}: unknown operator {op!r} (operator names are case-sensitive)")


def _leaves(value: Any) -> list[Any]:
    """The leaf values a list of matchers sees: an object is not a leaf (AWS: eb-pipes-event-filtering); an array
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


def _equals(rule: Any) -> Test:
    """The test of one scalar value of a pattern (a number, true, false or null)."""
    return lambda v: _same(rule, v)


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
            tests.append(_equals(rule))
        else:
            raise PatternError(f"{here}: a nested list is not a pattern value")
    present, absent = True in exists, False in exists
    others = tuple(tests)  # every test but the exact strings'
    if strings:
        tests.insert(0, lambda v: type(v) is str and v in strings)

    def match(value: Any) -> bool:
        if value is _ABSENT:
            return absent
        if type(value) is str:
            # A string is its own one leaf: the set lookup first, as the tests below begin.
            return present or value in strings or any(t(value) for t in others)
        leaves = _leaves(value)
        if leaves:
            return present or any(t(v) for t in tests for v in leaves)
        return absent

    return match


def _undotted(pattern: dict[str, Any], where: str) -> dict[str, Any]:
    """The pattern with each key that holds a dot written as the nested objects it stands for:
    AWS joins a pattern's keys with "." into one field path, so {"state.status": [...]} and
    {"state": {"status": [...]}} name the same field (`dot_joining_pattern`). Merged with the
    nested keys beside it; a field named twice is refused (AWS would keep one of the two)."""
    if not any("." in key for key in pattern):
        return pattern
    out: dict[str, Any] = {}
    for key, sub in pattern.items():
        head, *rest = key.split(".")
        for part in reversed(rest):
            sub = {part: sub}
        _merge_into(out, head, sub, f"{where}.{head}" if where else head)
    return out


def _merge_into(out: dict[str, Any], key: str, sub: Any, field: str) -> None:
    """out[key] = sub, or both objects merged; `field` is the dotted path of out[key]."""
    if key not in out:
        out[key] = sub
    elif isinstance(out[key], dict) and isinstance(sub, dict):
        merged = dict(out[key])  # a copy: the caller's pattern is never changed
        for k, v in sub.items():
            _merge_into(merged, k, v, f"{field}.{k}")
        out[key] = merged
    else:
        raise PatternError(
            f"{field}: the pattern names this field twice (a key with dots stands for nested "
            'objects: "a.b" is {"a": {"b": ...}}); write its values in one place'
        )


def _object_matcher(pattern: dict[str, Any], where: str) -> Matcher:
    if not isinstance(pattern, dict):
        raise PatternError(f"{where or 'pattern'}: a pattern is a JSON object, got {type(pattern).__name__}")
    fields: list[tuple[str, bool, Callable[[Any], bool]]] = []
    for key, sub in _undotted(pattern, where).items():
        here = f"{where}.{key}" if where else key
        if key == "$or":
            raise _refuse(here, "$or")
        if isinstance(sub, dict):
            if not sub:
                raise PatternError(f"{here}: an empty object matches nothing; give it fields")
            fields.append((key, True, _object_matcher(sub, here)))
        elif isinstance(sub, list):
            fields.append((key, False, _values_matcher(sub, here)))
        else:
            raise PatternError(
                f"{here}: a pattern value must be a list, e.g. [{json.dumps(sub)}], not a bare "
                f"{type(sub).__name__} (EventBridge refuses it: {PATTERN_VALUES_DOC})"
            )

    def match(event: Any) -> bool:
        if not isinstance(event, dict):
            event = {}
        dotted: bool | None = None  # whether a key of the event holds a dot, once asked
        for key, nested, sub in fields:
            value = event.get(key, _ABSENT)
            if nested:
                if dotted is None:
                    # Record keys are JSON strings: one C-level join tells whether any has a dot.
                    dotted = "." in "".join(event)
                if not dotted and type(value) is dict:  # the common case of _nested, inline
                    if not sub(value):
                        return False
                elif not _nested(sub, key, value, event, dotted):
                    return False
            elif not sub(value):
                return False
        return True

    return match


def _dotted(key: str, event: dict[str, Any]) -> dict[str, Any] | None:
    """Record keys "key.rest" seen as {"rest": ...} under `key` (AWS: eb-pipes-event-filtering dot-joining quirk)."""
    extra = None
    prefix = key + "."
    for k in event:
        if "." in k and k.startswith(prefix):
            if extra is None:
                extra = {}
            extra[k[len(prefix) :]] = event[k]
    return extra


def _nested(sub: Matcher, key: str, value: Any, event: dict[str, Any], dotted: bool) -> bool:
    """The sub-pattern of `key` on the event's `value` there; `dotted`: some key of the event
    holds a dot."""
    extra = _dotted(key, event) if dotted else None
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
        if len(pattern) > PIPES_PATTERN_CHARS:
            raise PatternError(f"pattern is {len(pattern)} characters, over the {PIPES_PATTERN_CHARS} limit")
        try:
            pattern = json.loads(pattern)
        except json.JSONDecodeError as exc:
            raise PatternError(f"pattern is not JSON: {exc}") from None
    if not isinstance(pattern, dict):
        raise PatternError(f"a pattern is a JSON object, got {type(pattern).__name__}")
    return _object_matcher(pattern, "")


class FilterSet:
    """The Pipe's filter criteria: a record passes when any pattern matches (AWS: eb-pipes-event-filtering).

    No patterns at all means no filtering: every record passes."""

    def __init__(self, patterns: Sequence[dict[str, Any] | str]) -> None:
        if len(patterns) > PIPES_FILTERS:
            raise PatternError(
                f"{len(patterns)} filters; a Pipe takes at most {PIPES_FILTERS} (see {awsdocs.PIPES_FILTERING})"
            )
        self.patterns = list(patterns)
        self.matchers = []
        for i, p in enumerate(patterns):
            try:
                self.matchers.append(compile_pattern(p))
            except PatternError as exc:
                raise PatternError(f"filter {i}: {exc}") from None

    def texts(self) -> list[str]:
        """Each pattern as JSON text (for a caller asking whether a field is named at all)."""
        return [p if isinstance(p, str) else json.dumps(p) for p in self.patterns]

    def matches(self, record: dict[str, Any]) -> bool:
        for m in self.matchers:
            if m(record):
                return True
        return not self.matchers


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
