"""Checks of a target column: the field types it takes, its options, and the mapping's own
values for it (map values, default, constant), run through the runtime's coercion."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from generator import expr as expressions
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


# The DynamoDB type standing for an expression's value type, for COLUMN_ACCEPTS.
_EXPR_AS_FIELD = {"text": "S", "number": "N", "bool": "BOOL", "map": "M", "list": "L"}
_TAKES_TIMESTAMP = {"timestamp", "date", "string", "text"}


def _check_expr(entity: Entity, c: Column, nul_ok: bool) -> Iterator[Problem]:
    """The expression parses, every name is a field and a function, every argument fits, and the
    result fits the column: what the runtime would refuse for every message is refused here."""
    assert c.expr is not None
    where = c.where + ("expr",)
    try:
        compiled = expressions.compile_expr(c.expr, {f.name: f.type for f in entity.fields})
    except expressions.ExprProblem as p:
        yield Problem(where, p.message, p.hint, p.code, offset=p.offset)
        return
    t = compiled.type
    if t == "timestamp":
        if c.type not in _TAKES_TIMESTAMP:
            yield Problem(
                where,
                f"the expression gives a timestamp, which column type {c.type} cannot take",
                "use type: timestamp (or date, string, text), or to_epoch(...) for a number",
                "expr-column-type",
            )
        elif c.format is not None:
            yield Problem(
                c.where + ("format",),
                "format says how text or a number arrives; the expression gives a timestamp already",
                "remove format",
                "column-option",
            )
    elif t != "any" and c.value_map is None and _EXPR_AS_FIELD[t] not in COLUMN_ACCEPTS[c.type]:
        yield Problem(
            where,
            f"the expression gives {'a ' + t if t != 'text' else 'text'}, which column type {c.type} cannot take",
            "convert it (text(...), number(...), timestamp(...)) or change the column type",
            "expr-column-type",
        )
    elif t == "number" and c.type in {"timestamp", "date"} and c.format is None:
        yield Problem(
            where,
            f"a numeric expression feeds {c.type} column '{c.name}' without a format",
            "add format: epoch_seconds or epoch_millis, or use from_epoch(...)",
            "column-format",
        )
    if not compiled.fields:
        # No field: the same value for every message; compute it now, as the runtime would.
        from runtime.expr import ExprError, evaluator

        try:
            value = evaluator(compiled.tree, c.name)(lambda name: None)
        except ExprError as exc:
            yield Problem(where, str(exc), "fix the expression", "expr-value")
            return
        why = _refusal(c, value, nul_ok) if value is not None else None
        if why:
            yield Problem(
                where, f"its value is refused by column '{c.name}': {why}", "fix the expression", "expr-value"
            )


def check_column(entity: Entity, t: Table, c: Column, nul_ok: bool) -> Iterator[Problem]:
    if c.expr is not None:
        yield from _check_expr(entity, c, nul_ok)
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
