"""CloudWatch alarms of an entity: messages in either DLQ, the age of the oldest message in the
FIFO queue (a stuck message group), and failed Pipe executions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from generator.emit.terraform.files import EntityFile
from generator.emit.terraform.hcl import escape, ref
from generator.model import Project


@dataclass(frozen=True)
class Metric:
    """What an alarm watches: a metric of one resource, and when it breaches."""

    namespace: str
    name: str
    statistic: str
    comparison: str
    threshold: int
    dimensions: dict[str, str]


def alarm(name: str, description: str, metric: Metric, project: Project) -> dict[str, Any]:
    """An aws_cloudwatch_metric_alarm body over one-minute periods, notifying the project's topics."""
    body: dict[str, Any] = {
        "alarm_name": escape(name),
        "alarm_description": escape(description),
        "namespace": metric.namespace,
        "metric_name": metric.name,
        "dimensions": metric.dimensions,
        "statistic": metric.statistic,
        "period": 60,
        "evaluation_periods": 1,
        "threshold": metric.threshold,
        "comparison_operator": metric.comparison,
        # An idle queue publishes nothing; that is not a problem.
        "treat_missing_data": "notBreaching",
    }
    if project.alarm_topic_arns:
        body["alarm_actions"] = [escape(a) for a in project.alarm_topic_arns]
        body["ok_actions"] = [escape(a) for a in project.alarm_topic_arns]
    return body


def alarms(out: EntityFile, project: Project) -> None:
    """The entity's four alarms."""
    lb = out.labels
    p = out.unit.pipeline
    who = out.unit.description
    for label, name, queue_name in (
        (lb.pipe_dlq, p.pipe.dlq_name, "Pipe DLQ (batch pointers of stream records the Pipe gave up on)"),
        (lb.dlq, p.queue.dlq_name, "FIFO DLQ (messages the sync Lambda failed maxReceiveCount times)"),
    ):
        visible = Metric(
            "AWS/SQS",
            "ApproximateNumberOfMessagesVisible",
            "Maximum",
            "GreaterThanOrEqualToThreshold",
            p.alarms.dlq_messages,
            {"QueueName": ref("aws_sqs_queue", label, "name")},
        )
        out.resource(
            "aws_cloudwatch_metric_alarm",
            f"{label}_messages",
            alarm(f"{name}-messages-visible", f"{who}: messages in the {queue_name}", visible, project),
        )
    oldest = Metric(
        "AWS/SQS",
        "ApproximateAgeOfOldestMessage",
        "Maximum",
        "GreaterThanThreshold",
        p.alarms.oldest_message_age_seconds,
        {"QueueName": ref("aws_sqs_queue", lb.queue, "name")},
    )
    out.resource(
        "aws_cloudwatch_metric_alarm",
        f"{lb.queue}_oldest_message",
        alarm(
            f"{p.queue.name}-oldest-message-age",
            f"{who}: the oldest message waits too long (a stuck message group?)",
            oldest,
            project,
        ),
    )
    failed = Metric(
        "AWS/EventBridge/Pipes",
        "ExecutionFailed",
        "Sum",
        "GreaterThanOrEqualToThreshold",
        1,
        {"PipeName": ref("aws_pipes_pipe", lb.pipe, "name")},
    )
    out.resource(
        "aws_cloudwatch_metric_alarm",
        f"{lb.pipe}_pipe_failures",
        alarm(
            f"{p.pipe.name}-execution-failed",
            f"{who}: Pipe executions failed (target or permission errors)",
            failed,
            project,
        ),
    )
