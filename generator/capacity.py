"""What one entity's pipeline can carry, per second, from its settings: the limits that bind
first for a declared write rate (`source.expected_writes_per_second`). The README's Capacity
section explains each row; `generator.checks.capacity` warns from it.

Two kinds of figures: AWS's documented limits (runtime/aws_limits.py), and the write rate one
database connection sustains, which is this project's own measurement (benchmarks/RESULTS.md)
and only an estimate of a deployment's.
"""

from __future__ import annotations

from dataclasses import dataclass

from generator.model import Entity, Project
from runtime import dialects
from runtime.aws_limits import SQS_FIFO_CALLS_PER_SECOND

# The dialects' measured_events_per_second are for batches of this size. They come from
# benchmarks/runtime_bench.py's delay-proxy runs (benchmarks/results/runtime.md: PostgreSQL
# 3,462, MariaDB 2,263 events/s at ~1 ms round trips); the Lambda's own time per invocation
# (polling, the invoke) is not in them, so they bound what one concurrent consumer does.
MEASURED_BATCH = 10


@dataclass(frozen=True)
class Limit:
    """One ceiling on the entity's events per second, and what sets it."""

    name: str
    events_per_second: float | None  # None: no ceiling from this part (high throughput)
    why: str


def per_connection(project: Project) -> float | None:
    return dialects.for_name(project.database.dialect).measured_events_per_second


def limits(entity: Entity, project: Project) -> list[Limit]:
    """The ceilings of this entity's pipeline, in the order of the hops."""
    p = entity.pipeline
    out = []
    if p.queue.high_throughput:
        out.append(Limit("queue", None, "FIFO high throughput: limits per message group, not per queue"))
    else:
        # The Pipe sends its batches with SendMessageBatch at best, the consumer receives and
        # deletes in batches of its batch size: each of those calls counts against 300/s.
        send = SQS_FIFO_CALLS_PER_SECOND * p.pipe.batch_size
        receive = SQS_FIFO_CALLS_PER_SECOND * p.consumer.batch_size
        out.append(
            Limit(
                "queue",
                float(min(send, receive)),
                f"a FIFO queue without high throughput takes {SQS_FIFO_CALLS_PER_SECOND} calls/s per "
                f"API action: {SQS_FIFO_CALLS_PER_SECOND} x pipe batch {p.pipe.batch_size} sent, "
                f"x consumer batch {p.consumer.batch_size} received and deleted",
            )
        )
    rate = per_connection(project)
    if rate is None:
        return out
    consumers = p.consumer.maximum_concurrency
    if project.lambda_.reserved_concurrency is not None:
        consumers = min(consumers, project.lambda_.reserved_concurrency)
    out.append(
        Limit(
            "consumer",
            consumers * rate * p.consumer.batch_size / MEASURED_BATCH,
            f"{consumers} concurrent consumer(s) (maximum_concurrency"
            + (
                ", capped by the function's reserved concurrency"
                if consumers < p.consumer.maximum_concurrency
                else ""
            )
            + f"), each one database connection at about {rate:,.0f} events/s in batches of "
            f"{MEASURED_BATCH} (measured at ~1 ms round trips), batch size {p.consumer.batch_size}",
        )
    )
    return out
