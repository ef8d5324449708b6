"""Checks of pipeline.*: the Pipe's, the queues' and the Lambda event source mapping's settings
against the AWS limits (runtime/aws_limits.py). The batch sizes' and the concurrency's limits are
the schema's own bounds (tests/test_aws_limits.py holds them to aws_limits), so no check repeats them."""

from __future__ import annotations

from collections.abc import Iterator

from generator.checks.problem import Problem, warn
from generator.model import Entity, Project
from runtime.aws_limits import (
    DYNAMODB_STREAM_RETENTION_SECONDS,
    LAMBDA_MAX_RECEIVE_ADVICE,
    LAMBDA_VISIBILITY_FACTOR,
    PIPES_NAME_CHARS,
    PIPES_RECORD_AGE_MAX,
    PIPES_RECORD_AGE_MIN,
    SQS_QUEUE_NAME_CHARS,
)
from synctools import awsdocs


def check_pipeline(entity: Entity, project: Project) -> Iterator[Problem]:
    p = entity.pipeline
    base = ("pipeline",)
    age = p.pipe.maximum_record_age_in_seconds
    if age != -1 and not PIPES_RECORD_AGE_MIN <= age <= PIPES_RECORD_AGE_MAX:
        yield Problem(
            base + ("pipe", "maximum_record_age_in_seconds"),
            f"{age} is not -1 or {PIPES_RECORD_AGE_MIN}..{PIPES_RECORD_AGE_MAX} (see {awsdocs.PIPES_DYNAMODB_PARAMETERS})",
            f"use -1 (no limit) or a value of at least {PIPES_RECORD_AGE_MIN}",
            "pipe-record-age",
        )
    if age == -1 or age > DYNAMODB_STREAM_RETENTION_SECONDS:
        yield warn(
            base + ("pipe", "maximum_record_age_in_seconds"),
            f"records are retried until the stream trims them (24 h), blocking the shard (see {awsdocs.PIPES_DYNAMODB_PARAMETERS})",
            f"set a limit below {DYNAMODB_STREAM_RETENTION_SECONDS} so the Pipe DLQ can still resolve the record",
            "pipe-record-age",
        )
    if p.pipe.maximum_retry_attempts == -1:
        yield warn(
            base + ("pipe", "maximum_retry_attempts"),
            f"-1 retries a poison record until it expires, blocking its shard (see {awsdocs.PIPES_DYNAMODB_PARAMETERS})",
            "set a finite number such as 3",
            "pipe-retries",
        )
    if p.pipe.dlq_name.endswith(".fifo"):
        yield Problem(
            base + ("pipe", "dlq", "name"),
            f"the Pipe DLQ '{p.pipe.dlq_name}' is a FIFO queue; a stream source's DLQ must be a standard queue (see {awsdocs.PIPES_DYNAMODB})",
            "drop the .fifo suffix",
            "pipe-dlq-fifo",
        )
    q = p.queue
    if not q.name.endswith(".fifo"):
        yield Problem(
            base + ("queue", "name"),
            f"queue '{q.name}' must end in .fifo (see {awsdocs.SQS_FIFO})",
            f"name it {q.name}.fifo",
            "queue-name",
        )
    if not q.dlq_name.endswith(".fifo"):
        yield Problem(
            base + ("queue", "dlq", "name"),
            f"the DLQ of a FIFO queue must itself be FIFO: '{q.dlq_name}' (see {awsdocs.SQS_DEAD_LETTER_QUEUES})",
            f"name it {q.dlq_name}.fifo",
            "queue-dlq-fifo",
        )
    for where, name in (
        (("queue", "name"), q.name),
        (("queue", "dlq", "name"), q.dlq_name),
        (("pipe", "dlq", "name"), p.pipe.dlq_name),
    ):
        if len(name) > SQS_QUEUE_NAME_CHARS:
            yield Problem(
                base + where,
                f"queue name '{name}' is {len(name)} characters; SQS allows {SQS_QUEUE_NAME_CHARS} including .fifo (see {awsdocs.SQS_FIFO_QUOTAS})",
                "shorten the name or the project prefix",
                "queue-name-length",
            )
    if len(p.pipe.name) > PIPES_NAME_CHARS:
        yield Problem(
            base + ("pipe", "name"),
            f"pipe name is {len(p.pipe.name)} characters; Pipes allows {PIPES_NAME_CHARS} (see {awsdocs.PIPES_CREATE})",
            "shorten it",
            "pipe-name",
        )
    c = p.consumer
    if c.maximum_batching_window_in_seconds:
        yield Problem(
            base + ("consumer", "maximum_batching_window_in_seconds"),
            f"a batching window of {c.maximum_batching_window_in_seconds} s is refused by AWS on a FIFO queue's event source mapping (see {awsdocs.LAMBDA_SQS_PARAMETERS})",
            "remove the key (the seed article's maximum_batching_window_in_seconds = 5 fails at apply)",
            "consumer-batching-window",
        )
    if q.visibility_timeout_seconds < LAMBDA_VISIBILITY_FACTOR * project.lambda_.timeout_seconds:
        yield warn(
            base + ("queue", "visibility_timeout_seconds"),
            f"visibility timeout {q.visibility_timeout_seconds}s is under {LAMBDA_VISIBILITY_FACTOR}x the Lambda timeout ({project.lambda_.timeout_seconds}s); a slow batch can reappear while still running (see {awsdocs.LAMBDA_SQS_CONFIGURE})",
            f"set it to at least {LAMBDA_VISIBILITY_FACTOR * project.lambda_.timeout_seconds}",
            "queue-visibility",
        )
    if q.max_receive_count < LAMBDA_MAX_RECEIVE_ADVICE:
        yield warn(
            base + ("queue", "max_receive_count"),
            f"maxReceiveCount {q.max_receive_count} is under {LAMBDA_MAX_RECEIVE_ADVICE}; messages held behind a failing one in their group use up receives too and reach the DLQ early (see {awsdocs.LAMBDA_SQS_ERRORS})",
            "set it to 5 or more",
            "queue-receive-count",
        )
    if q.dlq_retention_seconds <= q.message_retention_seconds:
        yield warn(
            base + ("queue", "dlq", "message_retention_seconds"),
            f"the DLQ keeps messages no longer than the queue; expiry counts from the original enqueue, so they can expire on arrival (see {awsdocs.SQS_DEAD_LETTER_QUEUES})",
            "give the DLQ a longer retention (default 14 days)",
            "queue-dlq-retention",
        )
