"""Every default of a mapping or project.yaml, read from the JSON Schemas' `default` keywords:
the schema is the one place a default value is written (editors show it, the mapping reference
prints it, and resolve applies it from here).

A default is named by its property path from the document's root: property names, `ITEMS` for
the items of an array and `EACH` for any property of a map, e.g.
`mapping("target", "tables", ITEMS, "columns", EACH, "on_unmapped")`. A path with no `default`
in the schema is a LookupError, so resolve cannot apply a default the schema does not state.

A few defaults depend on another value of the mapping (carry on the field's type, if_missing on
the action); the schema states those in words, and `carry` and `if_missing` below apply them.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from functools import cache
from typing import Any

from generator.schema import load_schema

ITEMS = "[]"  # path segment: the items of an array
EACH = "*"  # path segment: the value of any property of a map (additionalProperties)

Path = tuple[str, ...]


def mapping(*path: str) -> Any:
    """The default of a mapping file's property at `path`."""
    return _copy(_default("mapping", path))


def project(*path: str) -> Any:
    """The default of a project.yaml property at `path`."""
    return _copy(_default("project", path))


def carry(kind: str, dynamodb_type: str | None) -> str:
    """How a field travels unless its mapping says (the schema's description of carry): a
    string attribute as its whole DynamoDB attribute value ({"S": "x"}), so that a missing
    attribute (rendered "") and an empty string ({"S": ""}) stay apart and missing means NULL;
    every other attribute, and every key (always present), as its bare value
    (docs/mapping-reference.md, "Missing attributes")."""
    return "typed" if kind == "attribute" and dynamodb_type == "S" else "value"


def if_missing(action: str) -> str:
    """What an update or soft_delete does when the row does not exist, unless the mapping says
    (the schema's description of if_missing): ignore for soft_delete, fail otherwise."""
    return "ignore" if action == "soft_delete" else "fail"


def schema_defaults(kind: str) -> Iterator[tuple[Path, Any]]:
    """Every (path, default) the schema states, through its $refs (for the tests)."""
    yield from _walk(kind, _deref(kind, load_schema(kind)), ())


def _copy(value: Any) -> Any:
    # A list or map default must not be shared between the documents it is applied to.
    return copy.deepcopy(value) if isinstance(value, list | dict) else value


@cache
def _default(kind: str, path: Path) -> Any:
    node = _deref(kind, load_schema(kind))
    for segment in path:
        child = _child(node, segment)
        if child is None:
            raise LookupError(f"the {kind} schema has no property {'.'.join(path)}")
        node = _deref(kind, child)
    if "default" not in node:
        raise LookupError(f"the {kind} schema states no default for {'.'.join(path)}; add one there")
    return node["default"]


def _deref(kind: str, node: dict[str, Any]) -> dict[str, Any]:
    """The node a `$ref` points at (the shipped schemas refer only into their own $defs),
    with the referring node's own keywords (a description, a default) taking precedence."""
    ref = node.get("$ref")
    if ref is None:
        return node
    target = load_schema(kind)
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return {**_deref(kind, target), **{k: v for k, v in node.items() if k != "$ref"}}


def _child(node: dict[str, Any], segment: str) -> dict[str, Any] | None:
    if segment == ITEMS:
        items = node.get("items")
        return items if isinstance(items, dict) else None
    if segment == EACH:
        each = node.get("additionalProperties")
        return each if isinstance(each, dict) else None
    child = node.get("properties", {}).get(segment)
    return child if isinstance(child, dict) else None


def _walk(kind: str, node: dict[str, Any], path: Path) -> Iterator[tuple[Path, Any]]:
    if "default" in node:
        yield path, node["default"]
    for name, child in node.get("properties", {}).items():
        yield from _walk(kind, _deref(kind, child), path + (name,))
    for segment, key in ((ITEMS, "items"), (EACH, "additionalProperties")):
        child = node.get(key)
        if isinstance(child, dict):
            yield from _walk(kind, _deref(kind, child), path + (segment,))
