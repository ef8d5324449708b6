"""A fast yes/no JSON Schema check, compiled once from the shipped schema.

jsonschema spends most of a validation on bookkeeping it needs to report errors (a new
validator per subschema it descends into, a resolver look-up per `$ref`): about 1.6 ms per
mapping, most of it in the `oneOf` alternatives. Nearly every document is valid, so
`schema.validate` asks this compiled check first and runs jsonschema, which explains the
errors, only for a document it refuses.

The applicators (`properties`, `items`, `oneOf`, `$ref`, ...) become closures here, and so
do the three most frequent leaves (`type`, `required`, `enum` of a string); every other
keyword calls jsonschema's own function for it (`Validator.VALIDATORS`, with extensions
such as the ECMA `pattern`), so it means exactly what it means to jsonschema.
tests/test_schema.py compares the two verdicts on every test document and on mutated ones.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

from jsonschema import Draft202012Validator

Check = Callable[[object], bool]

# Keywords compiled here; the others are delegated (or, like jsonschema, ignored when no
# validator function exists for them: annotations such as description and examples).
_APPLICATORS = frozenset(
    {"$ref", "properties", "additionalProperties", "items", "propertyNames", "oneOf", "anyOf", "allOf", "not"}
)

# Keywords whose meaning depends on the dynamic scope or on what sibling subschemas
# evaluated: a closure compiled from the local schema alone could not mirror them.
_UNSUPPORTED = frozenset({"$dynamicRef", "$recursiveRef", "unevaluatedProperties", "unevaluatedItems"})

# The JSON types as Draft 2020-12's type checker defines them: bool is not a number, and
# a float with no fraction is an integer.
_IS_TYPE: dict[str, Check] = {
    "object": lambda i: isinstance(i, dict),
    "array": lambda i: isinstance(i, list),
    "string": lambda i: isinstance(i, str),
    "boolean": lambda i: isinstance(i, bool),
    "null": lambda i: i is None,
    "number": lambda i: isinstance(i, numbers.Number) and not isinstance(i, bool),
    "integer": lambda i: (
        isinstance(i, int) and not isinstance(i, bool) or isinstance(i, float) and i.is_integer()
    ),
}


def _valid(_: object) -> bool:
    return True


def _invalid(_: object) -> bool:
    return False


def compile_check(validator: Any) -> Check:
    """A function telling whether an instance is valid under `validator`'s schema, with the
    same verdict as `validator.is_valid` but without building errors."""
    root = validator.schema
    compiled: dict[str, Check] = {}

    def ref(pointer: str) -> Check:
        # Compiled on first use and looked up at call time, so a recursive $ref terminates.
        def check(instance: object) -> bool:
            if pointer not in compiled:
                target: Any = root
                for part in pointer.removeprefix("#/").split("/"):
                    target = target[part.replace("~1", "/").replace("~0", "~")]
                compiled[pointer] = build(target)
            return compiled[pointer](instance)

        return check

    def delegate(keyword: str, value: Any, schema: dict[str, Any]) -> Check:
        function = validator.VALIDATORS[keyword]

        def check(instance: object) -> bool:
            return next(iter(function(validator, value, instance, schema) or ()), None) is None

        return check

    def leaf(keyword: str, value: Any, schema: dict[str, Any]) -> Check:
        if keyword == "type" and validator.TYPE_CHECKER is Draft202012Validator.TYPE_CHECKER:
            if isinstance(value, str):
                return _IS_TYPE[value]
            alternatives = [_IS_TYPE[t] for t in value]
            return lambda i: any(t(i) for t in alternatives)
        if keyword == "required":
            return lambda i: not isinstance(i, dict) or all(k in i for k in value)
        if keyword == "enum":
            # jsonschema compares a string to the options with ==; other values (1 against
            # 1.0 or True) by its own equality, so they go to its function.
            other = delegate(keyword, value, schema)
            return lambda i: i in value if isinstance(i, str) else other(i)
        return delegate(keyword, value, schema)

    def applicator(keyword: str, value: Any, schema: dict[str, Any]) -> Check:
        if keyword == "$ref":
            if not value.startswith("#/"):
                return delegate(keyword, value, schema)  # a remote schema: jsonschema resolves it
            return ref(value)
        if keyword == "properties":
            subs = [(name, build(sub)) for name, sub in value.items()]
            return lambda i: not isinstance(i, dict) or all(c(i[n]) for n, c in subs if n in i)
        if keyword == "additionalProperties":
            if "patternProperties" in schema:
                return delegate(keyword, value, schema)
            known = frozenset(schema.get("properties", {}))
            sub = build(value)
            return lambda i: not isinstance(i, dict) or all(sub(v) for k, v in i.items() if k not in known)
        if keyword == "items":
            if "prefixItems" in schema:
                return delegate(keyword, value, schema)
            sub = build(value)
            return lambda i: not isinstance(i, list) or all(map(sub, i))
        if keyword == "propertyNames":
            sub = build(value)
            return lambda i: not isinstance(i, dict) or all(map(sub, i))
        if keyword == "not":
            sub = build(value)
            return lambda i: not sub(i)
        branches = [build(b) for b in value]
        if keyword == "allOf":
            return lambda i: all(b(i) for b in branches)
        if keyword == "anyOf":
            return lambda i: any(b(i) for b in branches)
        if keyword == "oneOf":
            return lambda i: sum(1 for b in branches if b(i)) == 1
        raise AssertionError(f"no applicator for {keyword!r}")  # _APPLICATORS and this disagree

    def build(schema: Any) -> Check:
        if schema is True:
            return _valid
        if schema is False:
            return _invalid
        if _UNSUPPORTED & schema.keys() or ("$id" in schema and schema is not root):
            # Refuse loudly rather than give a verdict jsonschema might not share.
            raise ValueError(f"compile_check does not support this schema: {sorted(schema)}")
        checks = [
            applicator(k, v, schema) if k in _APPLICATORS else leaf(k, v, schema)
            for k, v in schema.items()
            if k in _APPLICATORS or k in validator.VALIDATORS
        ]
        if not checks:
            return _valid
        if len(checks) == 1:
            return checks[0]
        return lambda i: all(c(i) for c in checks)

    return build(root)
