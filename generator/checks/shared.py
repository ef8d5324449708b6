"""Checks of single-table designs: the entities of one table that share a Pipe must each be
told apart (a discriminator of one kind, no two claiming one item), agree on every setting of
the Pipe, its queues and consumer, give each message field one source, and fit one Pipe's
filter and template limits together."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from generator.checks.problem import Problem
from generator.diagnostics import PathT
from generator.emit import pipes
from generator.model import Entity, Model
from generator.pipeunits import PipeUnit, pipe_units
from runtime.aws_limits import PIPES_FILTERS, PIPES_PATTERN_CHARS, PIPES_TEMPLATE_CHARS
from synctools import awsdocs

DISC: PathT = ("source", "discriminator")

# Settings of the shared Pipe, queues and consumer: (model part, dataclass field) -> mapping path.
_SETTING_PATHS: dict[tuple[str, str], PathT] = {
    ("pipe", "dlq_name"): ("pipeline", "pipe", "dlq", "name"),
    ("pipe", "dlq_retention_seconds"): ("pipeline", "pipe", "dlq", "message_retention_seconds"),
    ("queue", "dlq_name"): ("pipeline", "queue", "dlq", "name"),
    ("queue", "dlq_retention_seconds"): ("pipeline", "queue", "dlq", "message_retention_seconds"),
}


def check_shared(model: Model) -> Iterator[tuple[Entity, Problem]]:
    """Every check of the shared Pipes of the model."""
    yield from _missing(model)
    for unit in pipe_units(model):
        if unit.shared:
            yield from _unit(unit)


def _missing(model: Model) -> Iterator[tuple[Entity, Problem]]:
    """A table read through a shared Pipe: every live mapping of it declares a discriminator."""
    by_table: dict[str, list[Entity]] = defaultdict(list)
    for e in model.live:
        by_table[e.source.table].append(e)
    for table, entities in sorted(by_table.items()):
        told = sorted(e.name for e in entities if e.source.discriminator is not None)
        if not told:
            continue
        for e in entities:
            if e.source.discriminator is None:
                yield (
                    e,
                    Problem(
                        ("source", "table"),
                        f"table '{table}' is a single-table design ({', '.join(told)} declare a "
                        "source.discriminator), but this mapping declares none: its Pipe would read "
                        "every item of the table, and a third reader of the stream risks throttling "
                        f"(see {awsdocs.DYNAMODB_STREAMS})",
                        "add source.discriminator ({attribute: NAME, value: V} or {key: NAME, prefix: P}) "
                        "naming this entity's items",
                        "discriminator-missing",
                    ),
                )


def _unit(unit: PipeUnit) -> Iterator[tuple[Entity, Problem]]:
    first = unit.first
    d0 = first.source.discriminator
    assert d0 is not None
    consistent = True
    for e in unit.members:
        d = e.source.discriminator
        assert d is not None
        if (d.kind, d.name) != (d0.kind, d0.name):
            consistent = False
            yield (
                e,
                Problem(
                    DISC,
                    f"the entities of table '{e.source.table}' share one Pipe and must be told apart one "
                    f"way: this one by {d.kind} {d.name}, {first.file} by {d0.kind} {d0.name}",
                    f"use {{{d0.kind}: {d0.name}, ...}} here too",
                    "discriminator-mismatch",
                ),
            )
        yield from ((e, p) for p in _own(e))
    if consistent:
        yield from _overlaps(unit)
    yield from _settings(unit)
    try:
        template = pipes.unit_template(unit)
    except pipes.FieldConflict as exc:
        f0, f1 = exc.first.field(exc.name), exc.other.field(exc.name)
        yield (
            exc.other,
            Problem(
                ("message", "fields", exc.name),
                f"message field '{exc.name}' is read from {f1.json_path if f1 else '?'} here, but from "
                f"{f0.json_path if f0 else '?'} in {exc.first.file}; the entities of table "
                f"'{unit.source.table}' share one input template",
                "give one of them another name (each name has one source in a shared template)",
                "shared-field-conflict",
                key=True,
            ),
        )
        return
    problems = []
    if len(template) > PIPES_TEMPLATE_CHARS:
        problems.append(
            (
                f"the shared input template of table '{unit.source.table}' ({unit.description}) is "
                f"{len(template)} characters even compact; Pipes allows {PIPES_TEMPLATE_CHARS} "
                f"(see {awsdocs.PIPES_INPUT_TRANSFORM})",
                "carry fewer fields in the entities of this table, or use the same field names for the same attributes",
                "limit-template",
            )
        )
    patterns = pipes.unit_patterns(unit)
    if len(patterns) > PIPES_FILTERS:
        problems.append(
            (
                f"the shared Pipe of table '{unit.source.table}' needs {len(patterns)} filter patterns "
                f"for its entities ({unit.description}); Pipes allows {PIPES_FILTERS} "
                f"(see {awsdocs.PIPES_FILTERING})",
                "give the entities of the table the same filter settings (event_names, require_attributes), "
                "so that their patterns differ in the discriminator only and merge into one",
                "limit-filters",
            )
        )
    for i, pat in enumerate(patterns, 1):
        size = len(pipes.pattern_text(pat))
        if size > PIPES_PATTERN_CHARS:
            problems.append(
                (
                    f"pattern {i} of the shared Pipe of table '{unit.source.table}' is {size} characters; "
                    f"Pipes allows {PIPES_PATTERN_CHARS} (see {awsdocs.PIPES_FILTERING})",
                    "use shorter discriminator values or fewer conditions",
                    "limit-pattern",
                )
            )
    for message, hint, code in problems:
        for e in unit.members:
            yield e, Problem(DISC, message, hint, code)


def _own(e: Entity) -> Iterator[Problem]:
    """What one entity's discriminator needs from its own mapping."""
    d = e.source.discriminator
    assert d is not None
    src = e.source
    if d.kind == "key":
        key = src.key(d.name)
        if key is None:
            yield Problem(
                DISC + ("key",),
                f"'{d.name}' is not a key attribute of table '{src.table}' "
                f"(keys: {', '.join(k.name for k in src.keys)})",
                "name the partition or the sort key, or use {attribute: NAME, value: V}",
                "discriminator-key",
            )
        elif key.type != "S":
            yield Problem(
                DISC + ("key",),
                f"key '{d.name}' is of type {key.type}; a prefix matches strings only "
                f"(see {awsdocs.PIPES_FILTERING})",
                "use a string key, or an attribute discriminator",
                "discriminator-key",
            )
    else:
        needs = {"new"} if {"INSERT", "MODIFY"} & set(e.filter.event_names) else set()
        if "REMOVE" in e.filter.event_names:
            needs.add("old")
        for image in sorted(needs - src.images):
            which = "INSERT and MODIFY" if image == "new" else "REMOVE"
            yield Problem(
                DISC + ("attribute",),
                f"the discriminator attribute '{d.name}' of {which} records is read from the {image} "
                f"image, which stream view {src.stream_view_type} does not carry",
                "use stream_view_type NEW_AND_OLD_IMAGES, or a key discriminator (keys are in every record)",
                "discriminator-image",
            )
    if e.filter.or_patterns:
        yield Problem(
            ("filter", "or_patterns"),
            "or_patterns are whole patterns: on a shared Pipe they would let through items of every entity type",
            "express the condition with require_attributes or and_pattern, which apply with the discriminator",
            "discriminator-or-patterns",
        )


def _overlaps(unit: PipeUnit) -> Iterator[tuple[Entity, Problem]]:
    """No item may belong to two entities: equal values, or one key prefix starting another."""
    for e in unit.members:
        d = e.source.discriminator
        assert d is not None
        for o in unit.members:
            od = o.source.discriminator
            assert od is not None
            if o is e:
                continue
            clash = d.value == od.value if d.kind == "attribute" else d.value.startswith(od.value)
            if clash:
                what = "value" if d.kind == "attribute" else "prefix"
                yield (
                    e,
                    Problem(
                        DISC + (what,),
                        f"items whose {d.describe} also match {o.name}'s discriminator ({od.describe}, "
                        f"{o.file}): an item must belong to one entity",
                        f"give each entity of table '{e.source.table}' a {what} no other {what} "
                        + ("equals" if d.kind == "attribute" else "starts"),
                        "discriminator-overlap",
                    ),
                )


def _settings(unit: PipeUnit) -> Iterator[tuple[Entity, Problem]]:
    """The members give one Pipe, queue pair and consumer: every setting equal, and one routing."""
    first = unit.first
    for e in unit.members[1:]:
        for part in ("pipe", "queue", "consumer", "alarms"):
            mine, theirs = getattr(e.pipeline, part), getattr(first.pipeline, part)
            for f in dataclasses.fields(mine):
                a: Any = getattr(mine, f.name)
                b: Any = getattr(theirs, f.name)
                if a != b and f.name != "role_name":
                    path = _SETTING_PATHS.get((part, f.name), ("pipeline", part, f.name))
                    yield (
                        e,
                        Problem(
                            path,
                            f"{'.'.join(map(str, path))} is {a!r} here but {b!r} in {first.file}: the "
                            f"entities of table '{e.source.table}' share one Pipe, queue and consumer",
                            "give every mapping of the table the same pipeline settings",
                            "shared-setting",
                        ),
                    )
        for key in ("message_group_id", "deduplication_id"):
            a, b = getattr(e.routing, key), getattr(first.routing, key)
            if a != b:
                yield (
                    e,
                    Problem(
                        ("routing", key),
                        f"routing.{key} is {a!r} here but {b!r} in {first.file}: one Pipe sends every "
                        "entity's messages with one routing",
                        "give every mapping of the table the same routing (the default: the partition key)",
                        "shared-setting",
                    ),
                )
