"""Checks across entities: names claimed twice, one stream read two ways, foreign keys, and
Terraform labels that collide."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator

from generator.checks.problem import Problem, warn
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
