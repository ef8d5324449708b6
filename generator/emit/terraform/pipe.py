"""The EventBridge Pipe of an entity: its stream source with filter and retry settings, and
the FIFO queue target with the input template and the message group and deduplication ids."""

from __future__ import annotations

from typing import Any

from generator.emit import pipes
from generator.emit.terraform.files import EntityFile
from generator.emit.terraform.hcl import address, escape, interp, ref
from generator.emit.terraform.queues import queue_arn
from generator.emit.terraform.streams import Stream


def pipe(out: EntityFile, stream: Stream) -> None:
    """The aws_pipes_pipe, started only once its role's policy exists."""
    unit, lb = out.unit, out.labels
    p = unit.pipeline
    out.resource(
        "aws_pipes_pipe",
        lb.pipe,
        {
            "name": escape(p.pipe.name),
            "description": escape(
                f"ddb-sql-sync {unit.description}: stream of {unit.source.table} to {p.queue.name}"
            ),
            "role_arn": ref("aws_iam_role", lb.pipe_role, "arn"),
            "source": interp(stream.arn),
            "target": interp(queue_arn(lb.queue)),
            "desired_state": p.pipe.desired_state,
            # facts 7.6: meta-arguments take bare addresses. Without the policy the pipe would
            # start and fail on its first poll.
            "depends_on": [address("aws_iam_role_policy", lb.pipe_role)],
            "source_parameters": _source_parameters(out),
            "target_parameters": {
                # facts 1.3: the template is its own language, rendered by emit.pipes; `<$.x>` needs no escaping.
                "input_template": escape(pipes.unit_template(unit)),
                # facts 4: each value is one JSON path evaluated against the source record.
                "sqs_queue_parameters": {
                    "message_group_id": escape(unit.routing.message_group_id),
                    "message_deduplication_id": escape(unit.routing.deduplication_id),
                },
            },
        },
    )


def _source_parameters(out: EntityFile) -> dict[str, Any]:
    settings = out.unit.pipeline.pipe
    stream_params: dict[str, Any] = {
        "starting_position": settings.starting_position,
        # facts 1.7 / 3: at most 10 with an SQS target; always explicit.
        "batch_size": settings.batch_size,
        # facts 0.11: the defaults (-1) let a poison record block its shard for 24 h.
        "maximum_retry_attempts": settings.maximum_retry_attempts,
        "maximum_record_age_in_seconds": settings.maximum_record_age_in_seconds,
        "maximum_batching_window_in_seconds": settings.maximum_batching_window_in_seconds,
        "parallelization_factor": settings.parallelization_factor,
        "dead_letter_config": {"arn": interp(queue_arn(out.labels.pipe_dlq))},
    }
    params: dict[str, Any] = {"dynamodb_stream_parameters": stream_params}
    patterns = pipes.unit_patterns(out.unit)
    if patterns:
        # facts 3.2 / 7.1: filter_criteria sits beside dynamodb_stream_parameters; `filter`
        # is a repeatable block (an array, facts 7.6).
        params["filter_criteria"] = {
            "filter": [{"pattern": escape(pipes.pattern_text(pat))} for pat in patterns]
        }
    return params
