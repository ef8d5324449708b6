"""Checks of retirement (`retired`) and retention (`pipeline.retention`): what retiring an
entity destroys and keeps, said before anyone applies it; a retention window shorter than the
time a duplicate or a late event can still arrive."""

from __future__ import annotations

from collections.abc import Iterator

from generator.checks.problem import Problem, warn
from generator.model import Entity, Project


def check_retirement(entity: Entity, project: Project) -> Iterator[Problem]:
    if not entity.retired:
        return
    p = entity.pipeline
    src = entity.source
    if src.managed:
        kept = (
            f"keeps the DynamoDB table '{src.table}' and its data (generated with lifecycle prevent_destroy"
            + (", deletion protection" if src.deletion_protection else "")
            + (" and point-in-time recovery" if src.point_in_time_recovery else "")
            + "; its stream stays enabled)"
        )
    else:
        kept = f"leaves the DynamoDB table '{src.table}' untouched (managed elsewhere)"
    yield warn(
        ("retired",),
        f"retired: the next terraform apply destroys the Pipe '{p.pipe.name}' and its role, the FIFO queue "
        f"'{p.queue.name}', its DLQ '{p.queue.dlq_name}' and the Pipe DLQ '{p.pipe.dlq_name}' with any message "
        "still in them, their alarms and the sync Lambda's event source mapping on the queue; it "
        f"{kept} and the rows already written to {', '.join(t.qualified for t in entity.tables)}; "
        "the registry drops the entity, and prune deletes all its ledger rows (and the tombstones of "
        "tables no live entity writes)",
        "drain the queue and both DLQs before applying (ddb-sql-sync dlq); to sync it again, remove "
        "`retired` (the Pipe starts from the stream's trim horizon: at most 24 h back)",
        "entity-retired",
    )


def check_retention(entity: Entity, project: Project) -> Iterator[Problem]:
    r = entity.pipeline.retention
    for key, seconds, what in (
        (
            "ledger_seconds",
            r.ledger_seconds,
            "a duplicate of an event pruned from the ledger is applied again",
        ),
        (
            "tombstone_seconds",
            r.tombstone_seconds,
            "a late write older than a pruned tombstone brings its row back",
        ),
    ):
        if seconds < r.window:
            yield warn(
                ("pipeline", "retention", key),
                f"{seconds} s is shorter than the {r.window} s a copy or a late event of this entity can still "
                "arrive (stream 24 h + queue retention + DLQ retention + queue retention after a redrive): "
                + what,
                f"remove the key for the derived {r.window} s, or shorten the queues' retention",
                "retention-window",
            )
