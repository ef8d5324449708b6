"""Checks of routing.*: the FIFO message group and deduplication ids the Pipe sets."""

from __future__ import annotations

from collections.abc import Iterator

from generator.checks.problem import Problem, warn
from generator.model import PIPES_JSON_PATH, Entity, Project
from runtime.aws_limits import (
    PIPES_DYNAMIC_PARAMETER_CHARS,
)
from synctools import awsdocs


def check_routing(entity: Entity, project: Project) -> Iterator[Problem]:
    for key, value in (
        ("message_group_id", entity.routing.message_group_id),
        ("deduplication_id", entity.routing.deduplication_id),
    ):
        path = ("routing", key)
        if not value.startswith("$"):
            yield Problem(
                path,
                f"{value!r} is not a JSON path; Pipes would send it literally",
                f"the whole value must be one JSON path such as $.dynamodb.Keys.order_id.S (see {awsdocs.PIPES_SQS_TARGET})",
                "routing-path",
            )
            continue
        if not PIPES_JSON_PATH.fullmatch(value):  # fullmatch: '$' alone allows a trailing newline
            yield Problem(
                path,
                f"{value!r} is not one whole JSON path of the form Pipes accepts",
                "write a single path of '.name' segments with optional [n], e.g. $.dynamodb.Keys.order_id.S; "
                f"prefixes, suffixes and concatenation are not evaluated (see {awsdocs.PIPES_SQS_TARGET})",
                "routing-path",
            )
        if len(value) > PIPES_DYNAMIC_PARAMETER_CHARS:
            yield Problem(
                path,
                f"{key} is {len(value)} characters; the Pipes API allows {PIPES_DYNAMIC_PARAMETER_CHARS} (see {awsdocs.PIPES_SQS_TARGET})",
                "point at a shorter path",
                "routing-length",
            )
        if (
            value.startswith("$.dynamodb.NewImage")
            and "new" in entity.source.images
            and "REMOVE" in entity.filter.event_names
        ):
            yield warn(
                path,
                f"{key} reads the new image, which REMOVE records do not have",
                "read it from $.dynamodb.Keys so every record has it",
                "routing-remove",
            )
    dedup = entity.routing.deduplication_id
    if dedup not in ("$.eventID", "$.dynamodb.SequenceNumber"):
        yield warn(
            ("routing", "deduplication_id"),
            f"{dedup} may repeat across distinct stream records; SQS drops a repeat within 5 minutes (see {awsdocs.SQS_DEDUPLICATION})",
            "use $.eventID unless you mean to merge records",
            "routing-dedup",
        )
    group = entity.routing.message_group_id
    key_paths = {f"$.dynamodb.Keys.{k.name}.{k.type}" for k in entity.source.keys}
    if group.startswith("$.dynamodb.Keys.") and group not in key_paths:
        yield Problem(
            ("routing", "message_group_id"),
            f"{group} is not a key attribute of table '{entity.source.table}' with its type, so no record "
            f"has a value there; SQS refuses a FIFO message without a group id (see {awsdocs.PIPES_SQS_TARGET})",
            f"use one of: {', '.join(sorted(key_paths))}",
            "routing-group-key",
        )
    if group.startswith("$.") and group not in key_paths and not group.startswith("$.dynamodb.Keys."):
        yield warn(
            ("routing", "message_group_id"),
            f"{group} is not a key attribute; records of one item could land in different groups and overtake each other",
            "group by the partition key (the default)",
            "routing-group",
        )
