"""Checks of source.expected_writes_per_second against what the pipeline can carry
(generator.capacity)."""

from __future__ import annotations

from collections.abc import Iterator

from generator.capacity import limits
from generator.checks.problem import Problem, warn
from generator.model import Entity, Project
from synctools import awsdocs

_HINTS = {
    "queue": "set pipeline.queue.high_throughput: true, or larger pipe and consumer batch sizes",
    "consumer": "raise pipeline.consumer.maximum_concurrency (one database connection each; "
    "the function's reserved concurrency caps it), or the consumer batch size",
}
_DOCS = {"queue": awsdocs.SQS_FIFO_THROTTLING, "consumer": awsdocs.LAMBDA_SQS_CONFIGURE}


def check_capacity(entity: Entity, project: Project) -> Iterator[Problem]:
    wanted = entity.source.expected_writes_per_second
    if wanted is None:
        return
    for limit in limits(entity, project):
        if limit.events_per_second is not None and limit.events_per_second < wanted:
            yield warn(
                ("source", "expected_writes_per_second"),
                f"{wanted:g} writes/s is more than the {limit.name} carries, about "
                f"{limit.events_per_second:,.0f} events/s: {limit.why} (see {_DOCS[limit.name]} "
                "and the README's Capacity section)",
                _HINTS[limit.name],
                "capacity",
            )
