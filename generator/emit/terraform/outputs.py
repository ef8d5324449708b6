"""Terraform outputs: each entity's queue, DLQ, Pipe and stream addresses, and the sync
Lambda's name (what the operator tools and an apply's caller read back)."""

from __future__ import annotations

from generator.emit.terraform.files import FUNCTION, LAMBDA_FILE, EntityFile, Files
from generator.emit.terraform.hcl import interp, ref
from generator.emit.terraform.queues import queue_arn
from generator.emit.terraform.streams import Stream


def entity_outputs(out: EntityFile, stream: Stream) -> None:
    """The entity's outputs (an entity of a shared Pipe: that Pipe's queues and Pipe)."""
    n, lb = out.entity.name, out.labels
    out.output(f"{n}_queue_url", ref("aws_sqs_queue", lb.queue, "url"), f"{n}: FIFO queue URL")
    out.output(f"{n}_queue_arn", interp(queue_arn(lb.queue)), f"{n}: FIFO queue ARN")
    out.output(f"{n}_dlq_url", ref("aws_sqs_queue", lb.dlq, "url"), f"{n}: FIFO DLQ URL")
    out.output(f"{n}_pipe_dlq_url", ref("aws_sqs_queue", lb.pipe_dlq, "url"), f"{n}: Pipe DLQ URL")
    out.output(f"{n}_pipe_arn", ref("aws_pipes_pipe", lb.pipe, "arn"), f"{n}: Pipe ARN")
    out.output(
        f"{n}_stream_arn", interp(stream.arn), f"{n}: DynamoDB stream ARN ({stream.output_note} table)"
    )


def lambda_outputs(files: Files) -> None:
    files.output(
        LAMBDA_FILE,
        "sync_function_name",
        ref("aws_lambda_function", FUNCTION, "function_name"),
        "Name of the sync Lambda",
    )
