"""IAM: the Pipe's role (read the stream, send to the queue and its DLQ) and the sync Lambda's
role (consume every entity queue, write its logs, read the database secret or connect as its
IAM database user, attach to a VPC, use the project's KMS key), each with explicit actions
only; the services' trust policies name the resource that may assume the role."""

from __future__ import annotations

from typing import Any

from generator.emit.terraform.files import ACCOUNT, FUNCTION, LAMBDA_FILE, EntityFile, Files, labels
from generator.emit.terraform.hcl import escape, expr, interp, ref, template
from generator.emit.terraform.queues import queue_arn
from generator.emit.terraform.streams import Stream
from generator.model import Model, Project
from generator.pipeunits import pipe_units

# facts 4: what the Pipe needs on its source stream.
STREAM_READ_ACTIONS = (
    "dynamodb:DescribeStream",
    "dynamodb:GetRecords",
    "dynamodb:GetShardIterator",
    "dynamodb:ListStreams",
)
QUEUE_CONSUME_ACTIONS = (
    "sqs:ChangeMessageVisibility",
    "sqs:DeleteMessage",
    "sqs:GetQueueAttributes",
    "sqs:ReceiveMessage",
)
VPC_ENI_ACTIONS = (
    "ec2:AssignPrivateIpAddresses",
    "ec2:CreateNetworkInterface",
    "ec2:DeleteNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:UnassignPrivateIpAddresses",
)


def policy_document(statements: list[dict[str, Any]]) -> dict[str, Any]:
    """An aws_iam_policy_document body; `statement` is a repeatable block (see Terraform JSON configuration syntax: an array)."""
    return {"statement": statements}


def statement(
    sid: str,
    actions: tuple[str, ...] | list[str],
    resources: list[str],
    condition: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """An Allow statement; refuses a wildcard action."""
    for action in actions:
        if "*" in action:
            raise ValueError(f"wildcard IAM action {action!r}: list explicit actions")
    body: dict[str, Any] = {"sid": sid, "effect": "Allow", "actions": sorted(actions), "resources": resources}
    if condition is not None:
        body["condition"] = condition
    return body


def string_equals(variable: str, value: str) -> dict[str, Any]:
    """One StringEquals condition of an aws_iam_policy_document statement."""
    return {"test": "StringEquals", "variable": variable, "values": [value]}


def service_arn(project: Project, service: str, resource: str) -> str:
    """arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE of a resource of this account, built from
    its parts (the resource's own `arn` attribute would make a cycle through the role that it
    uses). `resource` is a literal (escaped here)."""
    return template(
        "arn:",
        expr("data", "aws_partition", ACCOUNT, "partition"),
        f":{escape(service)}:{escape(project.region)}:",
        expr("data", "aws_caller_identity", ACCOUNT, "account_id"),
        f":{escape(resource)}",
    )


def source_guard(project: Project, source_arn: str) -> list[dict[str, Any]]:
    """The confused-deputy guard of a service trust policy: only this resource (aws:SourceArn)
    of this account (aws:SourceAccount) may have the service assume the role."""
    return [
        string_equals("aws:SourceAccount", ref("data", "aws_caller_identity", ACCOUNT, "account_id")),
        string_equals("aws:SourceArn", source_arn),
    ]


def assume_policy(sid: str, service: str, condition: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A trust policy letting one AWS service assume the role."""
    trust: dict[str, Any] = {
        "sid": sid,
        "effect": "Allow",
        "actions": ["sts:AssumeRole"],
        "principals": [{"type": "Service", "identifiers": [service]}],
    }
    if condition is not None:
        trust["condition"] = condition
    return policy_document([trust])


def role(files: Files, file: str, label: str, role_name: str, policy_name: str) -> None:
    """The role and its inline policy, from the documents `{label}_assume` and `{label}`."""
    files.resource(
        file,
        "aws_iam_role",
        label,
        {
            "name": escape(role_name),
            "assume_role_policy": ref("data", "aws_iam_policy_document", f"{label}_assume", "json"),
        },
    )
    files.resource(
        file,
        "aws_iam_role_policy",
        label,
        {
            "name": policy_name,
            "role": ref("aws_iam_role", label, "id"),
            "policy": ref("data", "aws_iam_policy_document", label, "json"),
        },
    )


def pipe_role(out: EntityFile, stream: Stream, project: Project) -> None:
    """The Pipe's role: assumed by pipes.amazonaws.com for this Pipe of this account only."""
    lb = out.labels
    pipe_arn = service_arn(project, "pipes", f"pipe/{out.unit.pipeline.pipe.name}")
    out.data(
        "aws_iam_policy_document",
        f"{lb.pipe_role}_assume",
        assume_policy("PipesAssume", "pipes.amazonaws.com", source_guard(project, pipe_arn)),
    )
    sends = [interp(queue_arn(lb.queue)), interp(queue_arn(lb.pipe_dlq))]
    statements = [
        statement("ReadStream", STREAM_READ_ACTIONS, [interp(stream.arn)]),
        # facts 3.3: the role needs sqs:SendMessage on the DLQ as well as on the target (facts 4).
        statement("SendToQueueAndDlq", ["sqs:SendMessage"], sends),
    ]
    if project.kms_key_arn:
        # Sending to a queue encrypted with a customer-managed key takes a data key from it;
        # reading a stream of a table encrypted with it (facts 4) and the queues take Decrypt.
        statements.append(
            statement("UseProjectKey", ("kms:Decrypt", "kms:GenerateDataKey"), [escape(project.kms_key_arn)])
        )
    out.data("aws_iam_policy_document", lb.pipe_role, policy_document(statements))
    role(out.files, out.name, lb.pipe_role, out.unit.pipeline.pipe.role_name, "pipe-access")


def lambda_role(files: Files, model: Model) -> None:
    """The sync Lambda's role, shared by every entity queue."""
    files.data(
        LAMBDA_FILE,
        "aws_iam_policy_document",
        f"{FUNCTION}_assume",
        # This account's Lambda only. No aws:SourceArn: AWS does not document one for Lambda
        # assuming an execution role; who may give the role to a function is iam:PassRole's.
        assume_policy(
            "LambdaAssume",
            "lambda.amazonaws.com",
            [string_equals("aws:SourceAccount", ref("data", "aws_caller_identity", ACCOUNT, "account_id"))],
        ),
    )
    files.data(LAMBDA_FILE, "aws_iam_policy_document", FUNCTION, policy_document(_lambda_statements(model)))
    role(files, LAMBDA_FILE, FUNCTION, model.project.lambda_.role_name, "sync-access")


def _lambda_statements(model: Model) -> list[dict[str, Any]]:
    project = model.project
    statements = []
    queues = [ref("aws_sqs_queue", labels(u).queue, "arn") for u in pipe_units(model)]
    if queues:
        statements.append(statement("ConsumeQueues", QUEUE_CONSUME_ACTIONS, queues))
    # Log streams live under the group: arn:...:log-group:NAME:log-stream:STREAM.
    statements.append(
        statement(
            "WriteLogs",
            ("logs:CreateLogStream", "logs:PutLogEvents"),
            [template(expr("aws_cloudwatch_log_group", FUNCTION, "arn"), ":*")],
        )
    )
    db = project.database
    if db.secret_arn:
        statements.append(
            statement("ReadDatabaseSecret", ("secretsmanager:GetSecretValue",), [escape(db.secret_arn)])
        )
        if db.secret_kms_key_arn:
            # The secret's own key, used only by Secrets Manager on the role's behalf.
            via = f"secretsmanager.{escape(project.region)}.amazonaws.com"
            statements.append(
                statement(
                    "DecryptDatabaseSecret",
                    ("kms:Decrypt",),
                    [escape(db.secret_kms_key_arn)],
                    [string_equals("kms:ViaService", via)],
                )
            )
    if db.iam is not None:
        # IAM database authentication: this database user of this instance, cluster or proxy.
        user = service_arn(project, "rds-db", f"dbuser:{db.iam.resource_id}/{db.iam.user}")
        statements.append(statement("ConnectAsDatabaseUser", ("rds-db:connect",), [user]))
    if project.kms_key_arn:
        # Receiving from the queues encrypted with the project's key, and the function's
        # environment encrypted with it.
        statements.append(statement("UseProjectKey", ("kms:Decrypt",), [escape(project.kms_key_arn)]))
    if project.lambda_.subnet_ids:
        # These EC2 actions support no resource-level permissions: "*" is the only resource
        # AWS accepts for them (the same as AWSLambdaVPCAccessExecutionRole).
        statements.append(statement("VpcNetworkInterfaces", VPC_ENI_ACTIONS, ["*"]))
    return statements
