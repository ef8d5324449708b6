"""Checks of a target column: the field types it takes, its options, and the mapping's own
values for it (map values, default, constant), run through the runtime's coercion."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from generator.checks.problem import Problem, missing_field_hint, warn
from generator.emit.registry import registry_column
from generator.model import Column, Entity, Table

# Which DynamoDB value types each column type accepts.
COLUMN_ACCEPTS: dict[str, set[str]] = {
    "string": {"S", "N", "BOOL", "number"},
    "text": {"S", "N", "BOOL", "number"},
    "integer": {"N", "S", "number", "BOOL"},
    "bigint": {"N", "S", "number", "BOOL"},
    "smallint": {"N", "S", "number", "BOOL"},
    "decimal": {"N", "S", "number"},
    "float": {"N", "S", "number"},
    "boolean": {"BOOL", "N", "S"},
    "timestamp": {"S", "N", "number"},
    "date": {"S", "N", "number"},
    "json": {"M", "L", "SS", "NS", "S", "N", "BOOL", "NULL", "number"},
}


def _refusal(c: Column, value: Any, nul_ok: bool) -> str | None:
    """Why the runtime would refuse `value` for column `c` (its own coercion, run here on a
    value of the mapping file, shown in full), or None."""
    from runtime.coerce import refusal
    from runtime.redact import showing_values
    from runtime.registry import column_spec

    spec = column_spec({**registry_column(c), "map": None, "const": None})
    with showing_values():
        return refusal(spec, value, nul_ok=nul_ok)


def check_column(entity: Entity, t: Table, c: Column, nul_ok: bool) -> Iterator[Problem]:
    for name in c.fields:
        f = entity.field(name)
        if f is None:
            yield Problem(
                c.where + ("field",),
                f"field '{name}' is not in the message",
                missing_field_hint(entity, name, "add it under message.fields"),
                "field-missing",
            )
            continue
        if c.value_map is None and f.type not in COLUMN_ACCEPTS[c.type]:
            yield Problem(
                c.where + ("type",),
                f"column type {c.type} cannot take field '{name}' of DynamoDB type {f.type}",
                f"use a column type that accepts {f.type} (e.g. json for maps and lists)",
                "column-type",
            )
    if c.length is not None and c.type != "string":
        yield Problem(
            c.where + ("length",),
            "length applies to string columns only",
            "remove length or use type: string",
            "column-option",
        )
    if (c.precision is not None or c.scale is not None) and c.type != "decimal":
        yield Problem(
            c.where + ("precision" if c.precision is not None else "scale",),
            "precision and scale apply to decimal columns only",
            "remove them or use type: decimal",
            "column-option",
        )
    if c.type == "decimal" and c.precision is not None and c.scale is not None and c.scale > c.precision:
        yield Problem(
            c.where + ("scale",),
            f"scale {c.scale} exceeds precision {c.precision}",
            "make scale <= precision",
            "column-option",
        )
    if c.format is not None and c.type not in {"timestamp", "date"}:
        yield Problem(
            c.where + ("format",),
            "format applies to timestamp and date columns only",
            "remove format",
            "column-option",
        )
    if c.type in {"timestamp", "date"} and c.format is None and c.fields:
        f = entity.field(c.fields[0])
        if f is not None and f.type in {"N", "number"}:
            yield Problem(
                c.where,
                f"a numeric field '{f.name}' feeds {c.type} column '{c.name}' without a format",
                "add format: epoch_seconds or epoch_millis",
                "column-format",
            )
    if c.on_unmapped != "fail" and c.value_map is None:
        yield Problem(
            c.where + ("on_unmapped",),
            "on_unmapped applies with map only",
            "remove it or add map",
            "column-option",
        )
    if c.on_unmapped == "default" and not c.has_default:
        yield Problem(
            c.where + ("on_unmapped",),
            "on_unmapped: default needs a default value",
            "add default:",
            "column-option",
        )
    # A value of the mapping itself that the runtime would refuse fails every event that uses it.
    for k, v in c.value_map or ():
        why = _refusal(c, v, nul_ok) if v is not None else None
        if why:
            yield Problem(
                c.where + ("map", k),
                f"map value {v!r} for {k!r} is refused by column '{c.name}': {why}",
                f"write a value column '{c.name}' ({c.type}) takes",
                "column-map",
            )
    for key, present, value in (("default", c.has_default, c.default), ("const", c.has_const, c.const)):
        why = _refusal(c, value, nul_ok) if present and value is not None else None
        if why:
            yield Problem(
                c.where + (key,),
                f"{'default' if key == 'default' else 'constant'} {value!r} is refused by column '{c.name}': {why}",
                f"write a value column '{c.name}' ({c.type}) takes",
                f"column-{key}",
            )
    if c.lookup is not None:
        yield from _check_lookup_column(t, c)
    if c.references:
        parent, _, _ = c.references.partition(".")
        if parent == t.name:
            yield warn(
                c.where + ("references",),
                "the column references its own table",
                "check the foreign key",
                "column-references",
            )


def _check_lookup_column(t: Table, c: Column) -> Iterator[Problem]:
    """What a looked-up column cannot also be (the lookup's table and columns: check_lookups)."""
    assert c.lookup is not None
    if c.name in t.key:
        yield Problem(
            c.where + ("lookup",),
            f"key column '{c.name}' cannot be looked up: rows are found by values the message holds",
            "fill key columns from message fields",
            "lookup-key",
        )
    for option, present in (("map", c.value_map is not None), ("default", c.has_default)):
        if present:
            yield Problem(
                c.where + (option,),
                f"{option} does not apply to a looked-up column",
                f"remove {option}",
                "column-option",
            )
    if c.lookup.when_missing == "null" and not c.nullable:
        yield Problem(
            c.where + ("lookup", "when_missing"),
            f"when_missing: null writes NULL, but column '{c.name}' is not nullable",
            "use when_missing: retry or fail, or remove nullable: false",
            "lookup-null",
        )
