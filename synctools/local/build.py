"""One entity's EventBridge Pipe as build/ describes it: the filter patterns
(build/entities/<entity>/filters.json), the input template (input-template.txt) and the
routing, batch size and queue names of registry.json; for an entity of a single-table design,
its table's shared Pipe (build/pipes/<pipe>/filters.json: every entity's patterns OR'ed) when
the whole Pipe is asked for. The one loader of those files for every
tool that plays the Pipe: the replay (synctools.local.replay), the AWS pump and DLQ redrive
(synctools.aws) and the generator's mapping tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.aws_limits import SQS_BATCH, SQS_MESSAGE_BYTES
from synctools import awsdocs
from synctools.local.patterns import FilterSet, load_filters
from synctools.local.transform import (
    PipeContext,
    PipeTarget,
    SqsEntry,
    TargetError,
    TemplateError,
    load_template,
)


class PipeError(Exception):
    """build/ does not hold a usable Pipe for the entity (files missing or malformed)."""


@dataclass(frozen=True)
class Pipe:
    """What the Pipe of one entity does to a stream record: filter, then the SQS entry."""

    name: str  # the entity
    pipe_name: str
    queue: str
    pipe_dlq: str
    batch_size: int
    batching_window: float  # maximum_batching_window_in_seconds (0: none)
    filters: FilterSet
    target: PipeTarget

    def entry(self, record: dict[str, Any]) -> SqsEntry:
        """The SQS entry for a record that passed the filter; TargetError if SQS would refuse it."""
        entry = self.target.entry(record)
        if len(entry.body.encode("utf-8")) > SQS_MESSAGE_BYTES:
            raise TargetError(f"message body over {SQS_MESSAGE_BYTES} bytes")
        return entry


def shared_pipe(registry_raw: dict[str, Any], entity: str) -> str | None:
    """The shared Pipe (its build/pipes/ name) that carries `entity`, if any."""
    queue = registry_raw["entities"][entity].get("queue")
    shared = (registry_raw.get("shared_queues") or {}).get(queue)
    return shared["pipe"] if shared and entity in shared.get("entities", {}) else None


def load_pipe(
    registry_raw: dict[str, Any],
    entity: str,
    build: Path,
    *,
    region: str = "",
    account: str = "",
    source_arn: str = "",
    target_arn: str = "",
    clock: Callable[[], float] | None = None,
    whole: bool = False,
) -> Pipe:
    """The Pipe of `entity` from build/ and its registry.json (already parsed: `registry_raw`).
    The ARNs are what the template's reserved variables resolve to; `clock` gives the
    ingestion time (the replay's virtual clock). An entity of a shared Pipe: its own items
    only (its patterns), or with `whole` the shared Pipe as AWS runs it (every entity's
    items of the table). Raises PipeError."""
    raw = registry_raw["entities"][entity]
    entity_dir = build / "entities" / entity
    shared = shared_pipe(registry_raw, entity)
    filters_file = (
        (build / "pipes" / shared / "filters.json") if whole and shared else entity_dir / "filters.json"
    )
    try:
        filters = load_filters(filters_file)
        template = load_template(entity_dir / "input-template.txt")
    except OSError as exc:
        raise PipeError(
            f"cannot read the Pipe artifacts of {entity!r}: {exc}; run python -m generator build"
        ) from None
    except ValueError as exc:  # PatternError, TemplateError, malformed JSON
        raise PipeError(f"the Pipe artifacts of {entity!r} are not usable: {exc}") from None
    pipe = raw.get("pipe") or {}
    batch_size = int(pipe.get("batch_size", 10))
    if not 1 <= batch_size <= SQS_BATCH:
        raise PipeError(
            f"{entity}: pipe batch_size {batch_size}; an SQS target takes at most {SQS_BATCH} (see {awsdocs.PIPES_BATCHING})"
        )
    pipe_name = pipe.get("name") or f"{entity}-pipe"
    ctx = PipeContext(
        pipe_name=pipe_name,
        pipe_arn=f"arn:aws:pipes:{region}:{account}:pipe/{pipe_name}" if account else "",
        source_arn=source_arn,
        target_arn=target_arn,
        clock=clock,
    )
    routing = raw["routing"]
    try:
        target = PipeTarget(template, routing["message_group_id"], routing["deduplication_id"], ctx)
    except TemplateError as exc:
        raise PipeError(f"{entity}: {exc}") from None
    return Pipe(
        # The shared Pipe is named for the table it reads (its checkpoints, its log lines).
        name=shared if whole and shared else entity,
        pipe_name=pipe_name,
        queue=raw["queue"],
        pipe_dlq=raw.get("pipe_dlq", ""),
        batch_size=batch_size,
        batching_window=float(pipe.get("maximum_batching_window_in_seconds", 0) or 0),
        filters=filters,
        target=target,
    )
