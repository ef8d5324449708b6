"""The runtime registry: the one file the sync Lambda reads (build/registry.json).

It is the whole contract between generator/ and runtime/: versioned, self-contained, and
free of anything the runtime does not need (no AWS settings beyond queue names and the
consumer contract). Bump REGISTRY_VERSION on any change the runtime must know about.
"""

from __future__ import annotations

from typing import Any

from generator import __version__
from generator.expr import compile_expr
from generator.model import Column, Entity, Model, Table
from generator.pipeunits import DISCRIMINATOR_FIELD, pipe_units

# 2: a column may be computed ("expr", runtime.expr); a runtime of version 1 would ignore it.
# 3: shared queues (single-table designs): a queue of several entities told apart by a
# discriminator in the message; a runtime of version 2 would not find their entity. And a
# table may be a child table ("each", a column's "element" or "position"); a runtime of
# version 2 would write one row with the element columns NULL.
REGISTRY_VERSION = 3


def registry_column(
    c: Column, expr_tree: list[Any] | None = None, tables: dict[str, Table] | None = None
) -> dict[str, Any]:
    """One column as the registry file holds it: a computed column with its compiled tree; a
    lookup's match columns as the table it looks in (`tables`, by qualified name) declares
    them, so values coerce to their types."""
    out: dict[str, Any] = {
        "name": c.name,
        "type": c.type,
        "fields": list(c.fields),
        "nullable": c.nullable,
        "length": c.length,
        "precision": c.precision,
        "scale": c.scale,
        "format": c.format,
        "map": dict(c.value_map) if c.value_map is not None else None,
        "on_unmapped": c.on_unmapped,
        "references": c.references,
    }
    if c.has_const:
        out["const"] = c.const
    if c.has_default:
        out["default"] = c.default
    if expr_tree is not None:
        out["expr"] = expr_tree
    if c.lookup is not None and tables is not None and c.lookup.table in tables:
        parent = tables[c.lookup.table]
        match = []
        for column, field in c.lookup.match:
            pc = parent.column(column)
            assert pc is not None  # checked: generator.checks.cross_entity.check_lookups
            # The parent column's type, filled from the field (a missing value: no match).
            spec = {k: v for k, v in registry_column(pc).items() if k not in ("const", "default")}
            match.append({**spec, "fields": [field], "map": None, "nullable": True, "references": None})
        out["lookup"] = {
            "table": parent.qualified,
            "match": match,
            "select": c.lookup.select,
            "when_missing": c.lookup.when_missing,
        }
    if c.element is not None:
        out["element"] = list(c.element)
    if c.position:
        out["position"] = True
    return out


def _expr_tree(e: Entity, c: Column) -> list[Any] | None:
    """A computed column's tree (validate has type-checked it: a problem here is a defect)."""
    if c.expr is None:
        return None
    return compile_expr(c.expr, {f.name: f.type for f in e.fields}).tree


def _each(e: Entity, t: Table) -> dict[str, Any] | None:
    """A child table's expansion: the list (or map) field, the position column, the bounds."""
    if t.each is None:
        return None
    field = next(f for f in e.fields if f.name == t.each.field)  # validate: it exists
    position = t.position
    assert position is not None  # validate: a child table has one
    return {
        "field": t.each.field,
        "kind": field.type,
        "position": position.name,
        "start": t.each.start,
        "max_elements": t.each.max_elements,
    }


def _table(e: Entity, t: Table, deleted: set[str], tables: dict[str, Table]) -> dict[str, Any]:
    out = _table_common(e, t, deleted, tables)
    each = _each(e, t)
    if each is not None:
        out["each"] = each
        out["tombstones"] = True  # the set's tombstone (runtime.plan, _plan_prune)
    return out


def _table_common(e: Entity, t: Table, deleted: set[str], tables: dict[str, Table]) -> dict[str, Any]:
    return {
        # Tombstones are kept (and checked) only where some rule deletes from the table: a hard
        # delete, or a soft delete, which leaves one when the row it deletes is not there.
        "tombstones": t.version is not None and t.qualified in deleted,
        "schema": t.schema,
        "surrogate_key": t.surrogate_key,
        "append_only": t.append_only,
        "key": list(t.key),
        "columns": [registry_column(c, _expr_tree(e, c), tables) for c in t.columns],
        "version": {"column": t.version.column, "fields": list(t.version.fields), "kind": t.version.kind}
        if t.version
        else None,
        "soft_delete": {
            "column": t.soft_delete.column,
            "field": t.soft_delete.field,
            "kind": t.soft_delete.kind,
            "format": t.soft_delete.format,
        }
        if t.soft_delete
        else None,
    }


def _shared_queues(model: Model) -> dict[str, Any]:
    """The queues of shared Pipes: the message field holding the discriminator, and each
    entity's value (an attribute's value) or prefix (a key's)."""
    out: dict[str, Any] = {}
    for unit in pipe_units(model):
        d = unit.discriminator
        if d is None:
            continue
        out[unit.pipeline.queue.name] = {
            "pipe": unit.name,
            "discriminator": {"kind": d.kind, "name": d.name, "field": DISCRIMINATOR_FIELD},
            "entities": {
                e.name: e.source.discriminator.value for e in unit.members if e.source.discriminator
            },
        }
    return out


def _entity(e: Entity, deleted: set[str], tables: dict[str, Table]) -> dict[str, Any]:
    rules: dict[str, list[dict[str, Any]]] = {}
    for rule in e.events.rules:
        actions = []
        for a in rule.actions:
            table = e.table(a.table)
            assert table is not None
            columns = list(a.columns) if a.kind == "update" else [c.name for c in table.columns]
            actions.append(
                {"action": a.kind, "table": a.table, "columns": columns, "if_missing": a.if_missing}
            )
        for name in rule.on:
            rules[name] = actions
    lag = e.fields_with_meta("ApproximateCreationDateTime")
    src = e.source
    disc = src.discriminator
    return {
        "file": e.file,
        # Single-table design: how this entity's items are told apart on its shared queue.
        "discriminator": {"kind": disc.kind, "name": disc.name, "value": disc.value} if disc else None,
        # Where records come from and how the Pipe batches them: for local tools (replay,
        # mapping tests) that emulate the Pipe; the Lambda does not need them.
        "source": {
            "table": src.table,
            "partition_key": {"name": src.partition_key.name, "type": src.partition_key.type},
            "sort_key": {"name": src.sort_key.name, "type": src.sort_key.type} if src.sort_key else None,
            "stream_view_type": src.stream_view_type,
            "outbox": {
                "attribute": src.outbox.attribute,
                "event_id": src.outbox.event_id,
                "event_type": src.outbox.event_type,
            }
            if src.outbox
            else None,
        },
        "pipe": {
            "name": e.pipeline.pipe.name,
            "batch_size": e.pipeline.pipe.batch_size,
            "maximum_batching_window_in_seconds": e.pipeline.pipe.maximum_batching_window_in_seconds,
            "maximum_retry_attempts": e.pipeline.pipe.maximum_retry_attempts,
            "maximum_record_age_in_seconds": e.pipeline.pipe.maximum_record_age_in_seconds,
        },
        "queue": e.pipeline.queue.name,
        "dlq": e.pipeline.queue.dlq_name,
        "pipe_dlq": e.pipeline.pipe.dlq_name,
        "consumer": {
            "batch_size": e.pipeline.consumer.batch_size,
            "function_response_types": ["ReportBatchItemFailures"],
            "max_receive_count": e.pipeline.queue.max_receive_count,
            "visibility_timeout_seconds": e.pipeline.queue.visibility_timeout_seconds,
        },
        "routing": {
            "message_group_id": e.routing.message_group_id,
            "deduplication_id": e.routing.deduplication_id,
        },
        "fields": {
            f.name: {
                "path": list(f.parts),
                "type": f.type,
                "carry": f.carry,
                "kind": f.kind,
                "image": f.image,
                "source": f.json_path,
            }
            for f in e.fields
        },
        "ledger": e.idempotency.ledger,
        "event_id_field": e.idempotency.event_id_field,
        "lag_field": lag[0].name if lag else None,
        "type_from": list(e.events.type_from),
        "unknown": e.events.unknown,
        "rules": rules,
        "tables": {t.name: _table(e, t, deleted, tables) for t in e.tables},
        # runtime.prune: how long its ledger rows and its tables' tombstones are kept.
        "retention": {
            "ledger_seconds": e.pipeline.retention.ledger_seconds,
            "tombstone_seconds": e.pipeline.retention.tombstone_seconds,
        },
    }


def _retired(model: Model, deleted: set[str]) -> dict[str, Any]:
    """The retired entities, for runtime.prune: all their ledger rows go, and the tombstones
    of their tables that no live entity writes."""
    live = {t.qualified for e in model.live for t in e.tables}
    return {
        e.name: {
            "tombstone_tables": sorted(
                {t.qualified for t in e.tables if t.version is not None and t.qualified in deleted} - live
            )
        }
        for e in model.entities
        if e.retired
    }


def registry(model: Model) -> dict[str, Any]:
    db = model.project.database
    deleted = {
        table.qualified
        for e in model.entities
        for rule in e.events.rules
        for a in rule.actions
        if a.kind in ("delete", "soft_delete") and (table := e.table(a.table)) is not None
    }
    tables = {t.qualified: t for e in model.live for t in e.tables}
    return {
        "registry_version": REGISTRY_VERSION,
        "generator_version": __version__,
        "project": model.project.name,
        "database": {
            "dialect": db.dialect,
            "ledger_table": db.ledger_table,
            "tombstone_table": db.tombstone_table,
            "foreign_key_violation": db.foreign_key_violation,
            "prune": {"batch_rows": model.project.prune.batch_rows},
        },
        "queues": {e.pipeline.queue.name: e.name for e in model.live if e.source.discriminator is None},
        "shared_queues": _shared_queues(model),
        "entities": {e.name: _entity(e, deleted, tables) for e in model.live},
        "retired": _retired(model, deleted),
    }
