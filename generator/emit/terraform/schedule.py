"""The scheduled prune: an EventBridge Scheduler schedule invoking the sync Lambda with the
prune event (runtime.prune.PRUNE_EVENT), and the role it assumes, allowed
lambda:InvokeFunction on the sync function only (project.yaml `prune`)."""

from __future__ import annotations

import json

from generator.emit.terraform.files import FUNCTION, LAMBDA_FILE, Files
from generator.emit.terraform.hcl import escape, ref
from generator.emit.terraform.iam import (
    assume_policy,
    policy_document,
    role,
    service_arn,
    source_guard,
    statement,
)
from generator.model import Project
from runtime.prune import PRUNE_EVENT

PRUNE = "prune"  # label of the schedule, its role and policy documents
NAME_CHARS = 64  # the limit on a schedule's and an IAM role's name


def _name(project: Project) -> str:
    suffix = "-prune"
    return project.lambda_.function_name[: NAME_CHARS - len(suffix)] + suffix


def prune_schedule(files: Files, project: Project) -> None:
    """lambda.tf.json's schedule and its role, when project.yaml's prune is enabled."""
    if not project.prune.enabled:
        return
    # EventBridge Scheduler assumes the role for a schedule group: the schedule is in the default one.
    group = service_arn(project, "scheduler", "schedule-group/default")
    files.data(
        LAMBDA_FILE,
        "aws_iam_policy_document",
        f"{PRUNE}_assume",
        assume_policy("SchedulerAssume", "scheduler.amazonaws.com", source_guard(project, group)),
    )
    files.data(
        LAMBDA_FILE,
        "aws_iam_policy_document",
        PRUNE,
        policy_document(
            [
                statement(
                    "InvokeSync", ("lambda:InvokeFunction",), [ref("aws_lambda_function", FUNCTION, "arn")]
                )
            ]
        ),
    )
    role(files, LAMBDA_FILE, PRUNE, _name(project), "invoke-sync")
    files.resource(
        LAMBDA_FILE,
        "aws_scheduler_schedule",
        PRUNE,
        {
            "name": escape(_name(project)),
            "description": "ddb-sql-sync: prune the processed-event ledger and the tombstones",
            "schedule_expression": escape(project.prune.schedule),
            "flexible_time_window": {"mode": "OFF"},
            "state": "ENABLED",
            "target": {
                "arn": ref("aws_lambda_function", FUNCTION, "arn"),
                "role_arn": ref("aws_iam_role", PRUNE, "arn"),
                "input": escape(json.dumps(PRUNE_EVENT, sort_keys=True)),
                # A run that fails is not repeated at once: the next scheduled run goes on.
                "retry_policy": {"maximum_retry_attempts": 0},
            },
        },
    )
