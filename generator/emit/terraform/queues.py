"""An entity's queues: the FIFO queue the Pipe sends to, its FIFO DLQ with the redrive
permission, and the Pipe's own (standard) DLQ."""

from __future__ import annotations

from typing import Any

from generator.emit.terraform.files import EntityFile
from generator.emit.terraform.hcl import Expr, call, escape, expr, ref


def queue_arn(label: str) -> Expr:
    return expr("aws_sqs_queue", label, "arn")


def queues(out: EntityFile, kms_key_arn: str | None) -> None:
    """The Pipe DLQ, the FIFO DLQ, the FIFO queue, the DLQ's redrive allow policy, and on each
    queue a policy refusing requests without TLS. Every queue is encrypted at rest: with the
    project's KMS key when it names one, SQS-managed (SSE-SQS) otherwise."""
    p = out.unit.pipeline
    lb = out.labels
    at_rest = encryption(kms_key_arn)
    # facts 3.3: a stream source's DLQ receives batch metadata only, and FIFO is not
    # supported there, so the Pipe DLQ is a standard queue.
    out.resource(
        "aws_sqs_queue",
        lb.pipe_dlq,
        {
            "name": escape(p.pipe.dlq_name),
            "message_retention_seconds": p.pipe.dlq_retention_seconds,
            **at_rest,
        },
    )
    # facts 5: a FIFO queue's DLQ must itself be FIFO.
    out.resource(
        "aws_sqs_queue",
        lb.dlq,
        {
            "name": escape(p.queue.dlq_name),
            "fifo_queue": True,
            "message_retention_seconds": p.queue.dlq_retention_seconds,
            **at_rest,
        },
    )
    out.resource("aws_sqs_queue", lb.queue, {**_fifo_queue(out), **at_rest})
    # A separate resource: written inline on the DLQ, the queue ARN would make a cycle with
    # the queue's redrive_policy.
    out.resource(
        "aws_sqs_queue_redrive_allow_policy",
        lb.dlq,
        {
            "queue_url": ref("aws_sqs_queue", lb.dlq, "id"),
            "redrive_allow_policy": call(
                "jsonencode", {"redrivePermission": "byQueue", "sourceQueueArns": [queue_arn(lb.queue)]}
            ),
        },
    )
    for label in (lb.pipe_dlq, lb.dlq, lb.queue):
        out.resource("aws_sqs_queue_policy", label, tls_only(label))


def encryption(kms_key_arn: str | None) -> dict[str, Any]:
    """A queue's encryption at rest, stated either way (left implicit, it is whatever SQS's
    default is on the day the queue is made)."""
    if kms_key_arn:
        return {"kms_master_key_id": escape(kms_key_arn)}
    return {"sqs_managed_sse_enabled": True}


def tls_only(label: str) -> dict[str, Any]:
    """A queue policy that denies every request made without TLS (aws:SecureTransport false),
    whoever makes it. The Deny names every SQS action (sqs:*) on purpose: what it refuses must
    not depend on a list; the roles' Allow statements stay explicit (generator.emit.terraform.iam)."""
    return {
        "queue_url": ref("aws_sqs_queue", label, "id"),
        "policy": call(
            "jsonencode",
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "DenyWithoutTls",
                        "Effect": "Deny",
                        "Principal": "*",
                        "Action": "sqs:*",
                        "Resource": queue_arn(label),
                        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                    }
                ],
            },
        ),
    }


def _fifo_queue(out: EntityFile) -> dict[str, Any]:
    q = out.unit.pipeline.queue
    body: dict[str, Any] = {
        "name": escape(q.name),
        "fifo_queue": True,
        "content_based_deduplication": q.content_based_deduplication,
        "visibility_timeout_seconds": q.visibility_timeout_seconds,
        "message_retention_seconds": q.message_retention_seconds,
        # facts 5 / 7.2: maxReceiveCount must be an integer, not a string.
        "redrive_policy": call(
            "jsonencode",
            {"deadLetterTargetArn": queue_arn(out.labels.dlq), "maxReceiveCount": q.max_receive_count},
        ),
    }
    if q.high_throughput:
        # facts 5: high throughput means both settings; perMessageGroupId requires messageGroup.
        body["deduplication_scope"] = "messageGroup"
        body["fifo_throughput_limit"] = "perMessageGroupId"
    return body
