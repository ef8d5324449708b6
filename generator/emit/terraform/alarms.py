"""CloudWatch alarms: of a Pipe, messages in either DLQ, the age of the oldest message in the
FIFO queue (a stuck message group) and failed Pipe executions; of each entity, the sync
Lambda's counts of its messages (runtime.observe): a permanent failure, transient failures
minute after minute, a flood of stale events; of the sync Lambda, errors and throttles."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from generator.emit.terraform.files import FUNCTION, LAMBDA_FILE, EntityFile, Files
from generator.emit.terraform.hcl import escape, ref
from generator.model import Model, Project
from runtime.observe import DEFAULT_NAMESPACE as NAMESPACE


@dataclass(frozen=True)
class Metric:
    """What an alarm watches: a metric of one resource, and when it breaches."""

    namespace: str
    name: str
    statistic: str
    comparison: str
    threshold: int
    dimensions: dict[str, str]
    minutes: int = 1  # consecutive one-minute periods that must breach


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
        "evaluation_periods": metric.minutes,
        "datapoints_to_alarm": metric.minutes,
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


def entity_alarms(out: EntityFile, project: Project) -> None:
    """The sync Lambda's counts of the entity's messages (EMF metrics, dimension Entity)."""
    e = out.entity
    a = e.pipeline.alarms
    for label, metric_name, threshold, minutes, description in (
        (
            "failed_permanent", "FailedPermanent", 1, 1,
            "a message failed permanently (on its way to the FIFO DLQ: see the sync Lambda's log)",
        ),
        (
            "failed_transient", "FailedTransient", 1, a.transient_failure_minutes,
            f"messages failed transiently {a.transient_failure_minutes} minute(s) running (the database "
            "unreachable, lock waits)",
        ),
        (
            "stale", "Stale", a.stale_events_per_minute, 1,
            f"at least {a.stale_events_per_minute} stale events in a minute (a source writing out of order, "
            "or a replay of old records)",
        ),
    ):  # fmt: skip
        metric = Metric(
            NAMESPACE,
            metric_name,
            "Sum",
            "GreaterThanOrEqualToThreshold",
            threshold,
            {"Entity": e.name},
            minutes,
        )
        out.resource(
            "aws_cloudwatch_metric_alarm",
            f"{e.name}_{label}",
            alarm(
                f"{project.lambda_.function_name}-{e.name}-{label.replace('_', '-')}",
                f"ddb-sql-sync {e.name}: {description}",
                metric,
                project,
            ),
        )


def lambda_alarms(files: Files, project: Project) -> None:
    """The sync Lambda's errors (an invocation that failed as a whole) and throttles."""
    name = project.lambda_.function_name
    for label, metric_name, description in (
        ("errors", "Errors", "invocations failed as a whole (a timeout, an out-of-memory, a crash)"),
        ("throttles", "Throttles", "invocations throttled (reserved concurrency or the account's limit)"),
    ):
        metric = Metric(
            "AWS/Lambda",
            metric_name,
            "Sum",
            "GreaterThanOrEqualToThreshold",
            1,
            {"FunctionName": ref("aws_lambda_function", FUNCTION, "function_name")},
        )
        files.resource(
            LAMBDA_FILE,
            "aws_cloudwatch_metric_alarm",
            f"{FUNCTION}_{label}",
            alarm(f"{name}-{label}", f"ddb-sql-sync sync Lambda: {description}", metric, project),
        )


def dashboard(files: Files, model: Model) -> None:
    """One CloudWatch dashboard for the project: a row for the sync Lambda, then a row per entity
    with its Pipe (records in, failed executions), its queues (messages sent, the oldest
    message's age, the DLQs' depth) and the Lambda's counts of its messages (applied, failed,
    stale, held back), so an operator reads one picture instead of five consoles."""
    project = model.project
    fn = project.lambda_.function_name
    region = project.region
    widgets: list[dict[str, Any]] = []

    def row(y: int, panels: list[tuple[str, list[list[Any]]]]) -> None:
        width = 24 // len(panels)
        for i, (title, metrics) in enumerate(panels):
            widgets.append(
                {
                    "type": "metric",
                    "x": i * width,
                    "y": y,
                    "width": width,
                    "height": 6,
                    "properties": {
                        "title": title,
                        "region": region,
                        "stat": "Sum",
                        "period": 60,
                        "view": "timeSeries",
                        "metrics": metrics,
                    },
                }
            )

    row(
        0,
        [
            (
                f"sync Lambda {fn}: invocations, errors, throttles",
                [["AWS/Lambda", m, "FunctionName", fn] for m in ("Invocations", "Errors", "Throttles")],
            ),
            (
                f"sync Lambda {fn}: duration (p99, ms)",
                [["AWS/Lambda", "Duration", "FunctionName", fn, {"stat": "p99"}]],
            ),
        ],
    )
    for y, e in enumerate(model.live, start=1):
        p = e.pipeline
        row(
            y * 6,
            [
                (
                    f"{e.name}: Pipe {p.pipe.name}",
                    [
                        ["AWS/EventBridge/Pipes", m, "PipeName", p.pipe.name]
                        for m in ("EventCount", "ExecutionFailed")
                    ],
                ),
                (
                    f"{e.name}: queue {p.queue.name}",
                    [
                        ["AWS/SQS", "NumberOfMessagesSent", "QueueName", p.queue.name],
                        [
                            "AWS/SQS",
                            "ApproximateAgeOfOldestMessage",
                            "QueueName",
                            p.queue.name,
                            {"stat": "Maximum", "yAxis": "right"},
                        ],
                        [
                            "AWS/SQS",
                            "ApproximateNumberOfMessagesVisible",
                            "QueueName",
                            p.queue.dlq_name,
                            {"stat": "Maximum", "label": "FIFO DLQ depth"},
                        ],
                        [
                            "AWS/SQS",
                            "ApproximateNumberOfMessagesVisible",
                            "QueueName",
                            p.pipe.dlq_name,
                            {"stat": "Maximum", "label": "Pipe DLQ depth"},
                        ],
                    ],
                ),  # fmt: skip
                (
                    f"{e.name}: applied by the sync Lambda",
                    [
                        [NAMESPACE, m, "Entity", e.name]
                        for m in ("Applied", "FailedPermanent", "FailedTransient", "Stale", "Blocked")
                    ],
                ),
            ],
        )
    body = json.dumps({"widgets": widgets}, sort_keys=True, separators=(",", ":"))
    files.resource(
        LAMBDA_FILE,
        "aws_cloudwatch_dashboard",
        FUNCTION,
        {"dashboard_name": escape(fn), "dashboard_body": escape(body)},
    )
