"""Every property of every shipped schema has a description and examples (editors show them
on hover), and every object refuses unknown keys."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from generator.schema import SCHEMA_FILES, load_schema


def _properties(node: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        for key, child in (node.get("properties") or {}).items():
            yield f"{path}.{key}", child
        for key, child in node.items():
            if key in ("properties",):
                for name, sub in child.items():
                    yield from _properties(sub, f"{path}.{name}")
            elif isinstance(child, (dict, list)):
                yield from _properties(child, f"{path}/{key}")
    elif isinstance(node, list):
        for i, child in enumerate(node):
            yield from _properties(child, f"{path}[{i}]")


def _objects(node: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        if "properties" in node:
            yield path, node
        for key, child in node.items():
            yield from _objects(child, f"{path}/{key}")
    elif isinstance(node, list):
        for i, child in enumerate(node):
            yield from _objects(child, f"{path}[{i}]")


@pytest.mark.parametrize("kind", sorted(SCHEMA_FILES))
def test_every_property_is_described_with_examples(kind: str) -> None:
    schema = load_schema(kind)
    missing = []
    for path, prop in _properties(schema, kind):
        if "$ref" in prop and set(prop) <= {"$ref"}:
            continue  # described where it is defined
        if not prop.get("description"):
            missing.append(f"{path}: description")
        if not prop.get("examples") and "$ref" not in prop:
            missing.append(f"{path}: examples")
    assert missing == []


@pytest.mark.parametrize("kind", sorted(SCHEMA_FILES))
def test_every_object_refuses_unknown_keys(kind: str) -> None:
    schema = load_schema(kind)
    open_objects = [p for p, node in _objects(schema, kind) if node.get("additionalProperties") is not False]
    assert open_objects == []
