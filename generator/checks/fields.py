"""Checks of message.fields: how each field is read from the stream record, and the input
template they compile to."""

from __future__ import annotations

from collections.abc import Iterator

from generator.checks.problem import Problem
from generator.emit import pipes
from generator.model import Entity, Project
from runtime.aws_limits import (
    PIPES_TEMPLATE_CHARS,
)
from synctools import awsdocs


def check_fields(entity: Entity, project: Project) -> Iterator[Problem]:
    names = {f.name for f in entity.fields}
    for f in entity.fields:
        parts = f.parts
        for i in range(1, len(parts)):
            prefix = ".".join(parts[:i])
            if prefix in names:
                yield Problem(
                    f.where,
                    f"field '{f.name}' nests under '{prefix}', which is itself a field",
                    f"rename one of them: '{prefix}' cannot be both a value and an object",
                    "field-nesting",
                    key=True,
                )
        if f.kind == "key" and entity.source.key(f.key or "") is None:
            keys = ", ".join(k.name for k in entity.source.keys)
            yield Problem(
                f.where + ("key",),
                f"'{f.key}' is not a key attribute of table '{entity.source.table}'",
                f"use one of: {keys}, or read it with attribute: instead",
                "field-key",
            )
        if f.kind != "attribute":
            continue
        if f.image not in entity.source.images:
            view = entity.source.stream_view_type
            needs = (
                "NEW_IMAGE or NEW_AND_OLD_IMAGES" if f.image == "new" else "OLD_IMAGE or NEW_AND_OLD_IMAGES"
            )
            yield Problem(
                f.where + ("attribute",),
                f"field '{f.name}' reads the {f.image} image, which stream_view_type {view} does not carry",
                f"set source.stream_view_type to {needs}, or read the value from a key",
                "stream-view-image",
            )


def check_field_options(entity: Entity, project: Project) -> Iterator[Problem]:
    raw_fields = entity.fields
    for f in raw_fields:
        if f.kind == "meta" and f.carry == "typed":
            yield Problem(
                f.where + ("carry",),
                "carry: typed applies to DynamoDB attribute values, not stream metadata",
                "remove carry",
                "field-carry",
            )
        if f.kind != "attribute" and f.image is not None:
            yield Problem(
                f.where + ("image",), "image applies to attribute: fields only", "remove image", "field-image"
            )


def check_template(entity: Entity, project: Project) -> Iterator[Problem]:
    text = pipes.input_template(entity)
    if len(text) > PIPES_TEMPLATE_CHARS:
        yield Problem(
            ("message", "fields"),
            f"the input template is {len(text)} characters even compact; Pipes allows {PIPES_TEMPLATE_CHARS} (see {awsdocs.PIPES_INPUT_TRANSFORM})",
            "carry fewer fields, or carry a whole map once with type: M instead of its members one by one",
            "limit-template",
        )
