"""A short Markdown document per entity, tracing each column back to its DynamoDB attribute."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import jinja2

from generator.emit import pipes
from generator.expr import compile_expr
from generator.model import Column, Entity, Field, Table
from generator.pipeunits import DISCRIMINATOR_FIELD, PipeUnit


@cache
def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("generator", "templates"),
        autoescape=False,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=False,
    )


def _code(text: str) -> str:
    """Text inside a Markdown code span in a table cell: no backquote, no cell separator."""
    return text.replace("`", "'").replace("|", "\\|")


def _field_source(f: Field) -> str:
    if f.kind == "meta":
        return f"stream metadata `{f.meta}` (`{f.json_path}`)"
    if f.kind == "key":
        return f"key attribute `{f.key}` (`{f.json_path}`)"
    return f"{f.image} image attribute `{f.attribute.text if f.attribute else ''}` (`{f.json_path}`)"


def _element_source(e: Entity, t: Table, c: Column) -> tuple[str, str]:
    """A child table's element column: the element attribute (or position) and the list."""
    assert t.each is not None
    f = e.field(t.each.field)
    listed = f"each element of {_field_source(f)}" if f is not None else "-"
    if c.position:
        if f is not None and f.type == "M":
            return f"key in `{t.each.field}`", listed
        return f"position in `{t.each.field}` (from {t.each.start})", listed
    assert c.element is not None
    return f"`{t.each.field}[].{'.'.join(c.element)}`", f"attribute `{'.'.join(c.element)}` of {listed}"


def _child_words(t: Table, kind: str) -> str:
    """What an action on a child table does, in words."""
    assert t.each is not None and t.version is not None
    parent = ", ".join(f"`{k}`" for k in t.key if (c := t.column(k)) is not None and not c.position)
    if kind == "delete":
        return (
            f": every row of the parent ({parent}) whose `{t.version.column}` is not newer, "
            "with a tombstone so a late older event cannot bring them back"
        )
    return (
        f": one row per element of `{t.each.field}` when `{t.version.column}` is older, and the parent's "
        f"({parent}) rows at positions no longer in it deleted"
    )


def _pattern_words(pattern: dict[str, Any]) -> str:
    parts = []

    def walk(node: Any, path: list[str]) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, path + [k])
            return
        where = ".".join(path)
        conds = []
        for item in node:
            if isinstance(item, dict) and item.get("exists") is True:
                conds.append("exists")
            elif isinstance(item, dict) and item.get("exists") is False:
                conds.append("is absent")
            else:
                conds.append(f"= `{item}`" if not isinstance(item, dict) else f"`{item}`")
        parts.append(f"`{where}` " + " or ".join(conds))

    walk(pattern, [])
    return "; ".join(parts)


def entity_doc(e: Entity, unit: PipeUnit | None = None) -> str:
    """The entity's README (`unit`: the Pipe that carries it, told when shared)."""
    column_rows = []
    for t in e.tables:
        for c in t.columns:
            if t.each is not None and (c.element is not None or c.position):
                field_text, source = _element_source(e, t, c)
            elif c.has_const:
                field_text, source = f"constant `{c.const}`", "-"
            elif c.expr is not None:
                # Computed: the expression, then the source of each field it reads.
                used = compile_expr(c.expr, {f.name: f.type for f in e.fields}).fields
                field_text = f"computed `{_code(' '.join(c.expr.split()))}`"
                source = "; ".join(f"`{n}`: {_field_source(f)}" for n in used if (f := e.field(n))) or "-"
            elif c.lookup is not None:
                lk = c.lookup
                field_text = f"`{lk.table}.{lk.select}` where " + " and ".join(
                    f"`{column}` = `{name}`" for column, name in lk.match
                )
                fields = [e.field(name) for _, name in lk.match]
                source = "; ".join(_field_source(f) for f in fields if f is not None)
                source += {
                    "retry": "; no such row: retried (the message waits)",
                    "null": "; no such row: NULL",
                    "fail": "; no such row: the message fails",
                }[lk.when_missing]
            else:
                fields = [e.field(n) for n in c.fields]
                field_text = " or ".join(f"`{n}`" for n in c.fields)
                source = "; ".join(_field_source(f) for f in fields if f is not None)
            extra = []
            if c.value_map is not None:
                extra.append("mapped " + ", ".join(f"{k}->{v}" for k, v in c.value_map))
            if c.has_default:
                extra.append(f"default {json.dumps(c.default)}")
            if c.lookup is not None:
                extra.append(f"looked up in `{c.lookup.table}`")
            type_text = c.type + (f" ({'; '.join(extra)})" if extra else "")
            column_rows.append(
                {"table": t.name, "column": c.name, "type": type_text, "field": field_text, "source": source}
            )
        if t.version:
            column_rows.append(
                {
                    "table": t.name,
                    "column": t.version.column,
                    "type": f"version ({t.version.kind})",
                    "field": " or ".join(f"`{n}`" for n in t.version.fields),
                    "source": "; ".join(_field_source(f) for n in t.version.fields if (f := e.field(n))),
                }
            )
        if t.soft_delete:
            column_rows.append(
                {
                    "table": t.name,
                    "column": t.soft_delete.column,
                    "type": f"soft delete ({t.soft_delete.kind})",
                    "field": f"`{t.soft_delete.field}`" if t.soft_delete.field else "true",
                    "source": "set by soft_delete",
                }
            )
    rules = []
    for rule in e.events.rules:
        on = ", ".join(f"`{n}`" for n in rule.on)
        if rule.ignore:
            rules.append(f"{on}: ignored (acknowledged, nothing written).")
            continue
        words = []
        for a in rule.actions:
            text = f"{a.kind.replace('_', ' ')} `{a.table}`"
            if a.columns:
                text += " setting " + ", ".join(f"`{c}`" for c in a.columns)
            target = e.table(a.table)
            if target and target.each is not None:
                text += _child_words(target, a.kind)
            elif target and target.version and a.kind in ("insert", "upsert", "update"):
                text += f" when `{target.version.column}` is older"
            words.append(text)
        rules.append(f"{on}: " + ", then ".join(words) + " (one transaction).")
    return (
        _env()
        .get_template("entity.md.j2")
        .render(
            e=e,
            filter_words=[_pattern_words(p) for p in pipes.filter_patterns(e)],
            column_rows=column_rows,
            rules=rules,
            type_from=", ".join(f"`{n}`" for n in e.events.type_from),
            shared=unit if unit is not None and unit.shared else None,
            discriminator_field=DISCRIMINATOR_FIELD,
        )
    )
