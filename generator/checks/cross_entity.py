"""Checks across entities: names claimed twice, one stream read two ways, foreign keys, and
Terraform labels that collide."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator

from generator.checks.problem import Problem, missing_field_hint, warn
from generator.diagnostics import PathT
from generator.model import Entity, Model
from generator.pipeunits import pipe_units
from runtime.aws_limits import (
    DYNAMODB_STREAM_READERS_PER_SHARD,
)
from synctools import awsdocs


def check_uniqueness(model: Model) -> Iterator[tuple[Entity, Problem]]:
    """Entity names, AWS names and SQL tables must not be claimed twice."""
    claims: dict[tuple[str, str], list[tuple[Entity, PathT]]] = defaultdict(list)
    units = [u for u in pipe_units(model) if u.shared]
    shared = {e.name: u.name for u in units for e in u.members}
    shared_first = {u.name: u.first.name for u in units}
    for e in model.entities:
        claims[("entity", e.name)].append((e, ("entity",)))
        p = e.pipeline
        queues: tuple[tuple[PathT, str], ...] = (
            (("pipeline", "queue", "name"), p.queue.name),
            (("pipeline", "queue", "dlq", "name"), p.queue.dlq_name),
            (("pipeline", "pipe", "dlq", "name"), p.pipe.dlq_name),
        )
        if e.name in shared and e.name != shared_first[shared[e.name]]:
            queues = ()  # a shared Pipe's names are claimed once, by its first entity
        else:
            claims[("pipe", p.pipe.name)].append((e, ("pipeline", "pipe", "name")))
        for where, name in queues:
            claims[("queue", name)].append((e, where))
        if e.source.managed:
            claims[("dynamodb table", e.source.table)].append((e, ("source", "table")))
        for t in e.tables:
            claims[("SQL table", t.qualified)].append((e, t.where + ("table",)))
    for (kind, name), owners in sorted(claims.items()):
        entities = {o[0].name for o in owners}
        if len(owners) < 2:
            continue
        if kind == "SQL table" and len(entities) == 1:
            continue  # reported per entity
        for entity, where in owners:
            others = ", ".join(sorted(o[0].file for o in owners if o[0] is not entity)) or entity.file
            hint = {
                "entity": "rename one entity",
                "queue": "give each entity its own queue names",
                "pipe": "give each entity its own pipe name",
                "dynamodb table": "let one mapping manage the table and set managed: false in the others",
                "SQL table": "write a legacy table from one entity only: separate queues give no order between entities",
            }[kind]
            yield (
                entity,
                Problem(where, f"{kind} '{name}' is also claimed by {others}", hint, "duplicate-name"),
            )
    # Readers of a stream: its Pipes, so a table's shared Pipe counts once.
    readers = Counter(u.source.table for u in pipe_units(model))
    for e in model.live:
        if readers[e.source.table] > DYNAMODB_STREAM_READERS_PER_SHARD:
            yield (
                e,
                warn(
                    ("source", "table"),
                    f"{readers[e.source.table]} Pipes read the stream of '{e.source.table}'; more than {DYNAMODB_STREAM_READERS_PER_SHARD} readers per shard risks throttling (see {awsdocs.DYNAMODB_STREAMS})",
                    "merge the entities of the table into one shared Pipe: give each a source.discriminator (see the README's Single-table designs), or accept throttling",
                    "stream-readers",
                ),
            )


def check_sources(model: Model) -> Iterator[tuple[Entity, Problem]]:
    """Entities reading one DynamoDB table must agree on what its stream carries."""
    by_table: dict[str, list[Entity]] = defaultdict(list)
    for e in model.entities:
        by_table[e.source.table].append(e)
    for table, entities in sorted(by_table.items()):
        views = {e.source.stream_view_type for e in entities}
        if len(views) > 1:
            for e in entities:
                others = ", ".join(f"{o.file} ({o.source.stream_view_type})" for o in entities if o is not e)
                yield (
                    e,
                    Problem(
                        ("source", "stream_view_type"),
                        f"table '{table}' has one stream, but its readers declare different view types: {others}",
                        "give every mapping of this table the same stream_view_type",
                        "stream-view-mismatch",
                    ),
                )
        keys = {(e.source.partition_key, e.source.sort_key) for e in entities}
        if len(keys) > 1:
            for e in entities:
                yield (
                    e,
                    Problem(
                        ("source", "partition_key"),
                        f"mappings of table '{table}' declare different keys",
                        "declare the table's real partition and sort key everywhere",
                        "source-key-mismatch",
                    ),
                )


def check_references(model: Model) -> Iterator[tuple[Entity, Problem]]:
    """A foreign key in the reference DDL must point at a column some mapping writes."""
    written = {(t.name, c.name) for e in model.entities for t in e.tables for c in t.columns}
    for e in model.entities:
        for t in e.tables:
            for c in t.columns:
                if c.references:
                    parent, _, column = c.references.partition(".")
                    if (parent, column) not in written:
                        yield (
                            e,
                            Problem(
                                c.where + ("references",),
                                f"'{c.references}' is not a column written by any mapping",
                                "reference a table.column declared under some mapping's target.tables (the DDL is generated from them)",
                                "column-references",
                            ),
                        )


def check_terraform_claims(model: Model) -> Iterator[tuple[Entity, Problem]]:
    """Two entities whose Terraform labels collide (orders + orders_dlq, say) cannot both exist."""
    from generator.emit import terraform

    try:
        terraform.terraform_files(model)
    except terraform.DuplicateLabel as exc:
        culprit = max(
            (e for e in model.entities if e.name in str(exc)), key=lambda e: len(e.name), default=None
        )
        if culprit is not None:
            yield (
                culprit,
                Problem(
                    ("entity",),
                    f"the entity's Terraform names collide with another entity's: {exc}",
                    "rename the entity (names ending in _dlq, _pipe or _pipe_dlq clash with the resources of the entity without the suffix)",
                    "entity-name",
                ),
            )


# The type a surrogate key has (the reference DDL's auto-increment BIGINT: runtime.schema).
SURROGATE_KEY_TYPE = "bigint"


def check_lookups(model: Model) -> Iterator[tuple[Entity, Problem]]:
    """A lookup reads a table some mapping writes, by that table's key, and selects a column
    of it whose type is the looked-up column's."""
    from generator.checks.columns import COLUMN_ACCEPTS

    tables = {t.qualified: t for e in model.live for t in e.tables}
    for e in model.live:
        for t in e.tables:
            for c in t.columns:
                lk = c.lookup
                if lk is None:
                    continue
                parent = tables.get(lk.table)
                retired = [
                    r.file
                    for r in model.entities
                    if r.retired and any(x.qualified == lk.table for x in r.tables)
                ]
                if parent is None and retired:
                    yield (
                        e,
                        Problem(
                            lk.where + ("table",),
                            f"table '{lk.table}' is written only by a retired mapping ({', '.join(retired)}): "
                            "nothing keeps it up to date, and the runtime no longer knows it",
                            "remove the lookup before retiring that mapping",
                            "lookup-table",
                        ),
                    )
                    continue
                if parent is None:
                    yield (
                        e,
                        Problem(
                            lk.where + ("table",),
                            f"table '{lk.table}' is not written by any mapping",
                            f"look up in a table some mapping's target.tables declares: {', '.join(sorted(tables))}",
                            "lookup-table",
                        ),
                    )
                    continue
                if parent.qualified == t.qualified:
                    yield (
                        e,
                        Problem(
                            lk.where + ("table",),
                            "a column cannot look up a row of its own table",
                            "look up in the parent table",
                            "lookup-table",
                        ),
                    )
                    continue
                for column, field in lk.match:
                    pc = parent.column(column)
                    if pc is None:
                        yield (
                            e,
                            Problem(
                                lk.where + ("match", column),
                                f"table '{parent.qualified}' has no column '{column}'",
                                f"match on its key: {', '.join(parent.key)}",
                                "lookup-column",
                                key=True,
                            ),
                        )
                        continue
                    f = e.field(field)
                    if f is None:
                        yield (
                            e,
                            Problem(
                                lk.where + ("match", column),
                                f"field '{field}' is not in the message",
                                missing_field_hint(e, field, "add it under message.fields"),
                                "field-missing",
                            ),
                        )
                    elif f.type not in COLUMN_ACCEPTS[pc.type]:
                        yield (
                            e,
                            Problem(
                                lk.where + ("match", column),
                                f"field '{field}' of DynamoDB type {f.type} cannot match column "
                                f"'{column}' ({pc.type}) of table '{parent.qualified}'",
                                f"match a field of a type {pc.type} takes",
                                "lookup-type",
                            ),
                        )
                matched = {column for column, _ in lk.match}
                if all(parent.column(m) for m in matched) and matched != set(parent.key):
                    yield (
                        e,
                        Problem(
                            lk.where + ("match",),
                            f"columns {', '.join(sorted(matched))} are not the unique key of table "
                            f"'{parent.qualified}' (its key: {', '.join(parent.key)})",
                            "match every column of the table's key and no other: a lookup must find at most one row",
                            "lookup-key",
                        ),
                    )
                if lk.select == parent.surrogate_key:
                    selected_type: str | None = SURROGATE_KEY_TYPE
                else:
                    sc = parent.column(lk.select)
                    selected_type = sc.type if sc is not None else None
                if selected_type is None:
                    choices = ([parent.surrogate_key] if parent.surrogate_key else []) + [
                        x.name for x in parent.columns
                    ]
                    yield (
                        e,
                        Problem(
                            lk.where + ("select",),
                            f"table '{parent.qualified}' has no column '{lk.select}'",
                            f"select one of: {', '.join(choices)}",
                            "lookup-column",
                        ),
                    )
                elif selected_type != c.type:
                    yield (
                        e,
                        Problem(
                            c.where + ("type",),
                            f"column '{c.name}' is {c.type} but looks up '{parent.qualified}.{lk.select}', "
                            f"which is {selected_type}",
                            f"declare type: {selected_type}",
                            "lookup-type",
                        ),
                    )
