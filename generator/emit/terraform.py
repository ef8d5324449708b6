"""Terraform (`*.tf.json`) for the whole pipeline, built as data from the model.

`terraform_files(model)` returns {file name under build/terraform/: JSON data}; the caller
dumps each with sorted keys. Everything here is a pure function of the model: no
timestamps, no absolute paths, no host names.

Terraform expressions are never spliced by hand. `${...}` is written in one place
(`_interp`); references go through `ref`/`expr`, function calls through `call`, and every
literal string that may carry user input goes through `escape` (facts 1.6 and 7.6: a literal
`${` is `$${`, a literal `%{` is `%%{`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from generator.emit import pipes
from generator.model import Entity, Model, Project

PROVIDERS_FILE = "providers.tf.json"
DATA_FILE = "data.tf.json"
LAMBDA_FILE = "lambda.tf.json"
_SHARED_FILES = {PROVIDERS_FILE, DATA_FILE, LAMBDA_FILE}

HANDLER = "runtime.handler.handler"
REGISTRY_FILE = "registry.json"
FUNCTION = "sync"  # label of the one sync Lambda and of its role, policy and log group
ACCOUNT = "current"  # label of data.aws_caller_identity

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

# Terraform block labels (resource and data names, output names).
LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_-]*$")
_HCL_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# --- expressions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Expr:
    """A Terraform expression, written as HCL native syntax (e.g. `aws_sqs_queue.orders.arn`)."""

    text: str


@dataclass(frozen=True)
class Template:
    """A string template: literal parts (escaped) and expressions (interpolated), in order."""

    parts: tuple[str | Expr, ...]


def _interp(e: Expr) -> str:
    # The only place `${` is written.
    return "${" + e.text + "}"


def escape(text: str) -> str:
    """A literal string as a Terraform template: `${` -> `$${`, `%{` -> `%%{` (facts 1.6, 7.6)."""
    return text.replace("${", "$${").replace("%{", "%%{")


def expr(*parts: str) -> Expr:
    """`expr("aws_sqs_queue", "orders", "arn")` -> the expression aws_sqs_queue.orders.arn."""
    return Expr(".".join(parts))


def ref(*parts: str) -> str:
    """`ref("aws_sqs_queue", "orders", "arn")` -> "${aws_sqs_queue.orders.arn}"."""
    return _interp(expr(*parts))


def address(kind: str, label: str) -> str:
    """A bare resource address for `depends_on`: no `${}` there (facts 7.6)."""
    return f"{kind}.{label}"


def template(*parts: str | Expr) -> str:
    """A JSON string mixing literal text (escaped) and interpolations."""
    return "".join(_interp(p) if isinstance(p, Expr) else escape(p) for p in parts)


def _hcl_string(parts: tuple[str | Expr, ...]) -> str:
    out = []
    for part in parts:
        if isinstance(part, Expr):
            out.append(_interp(part))
            continue
        text = escape(part).replace("\\", "\\\\").replace('"', '\\"')
        text = text.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
        out.append("".join(c if ord(c) >= 0x20 else f"\\u{ord(c):04x}" for c in text))
    return '"' + "".join(out) + '"'


def hcl(value: Any) -> str:
    """A Python value as an HCL native-syntax expression (for arguments of function calls)."""
    if isinstance(value, Expr):
        return value.text
    if isinstance(value, Template):
        return _hcl_string(value.parts)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _hcl_string((value,))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(hcl(v) for v in value) + "]"
    if isinstance(value, dict):
        entries = []
        for k, v in value.items():
            key = k if _HCL_IDENT.match(k) else _hcl_string((k,))
            entries.append(f"{key} = {hcl(v)}")
        return "{" + ", ".join(entries) + "}"
    raise TypeError(f"no HCL rendering for {type(value).__name__}: {value!r}")


def fn(function: str, *args: Any) -> Expr:
    """A function call expression; arguments are Python values rendered by `hcl`."""
    return Expr(f"{function}({', '.join(hcl(a) for a in args)})")


def conditional(condition: Any, if_true: Any, if_false: Any) -> Expr:
    """`condition ? if_true : if_false`; only the chosen branch is evaluated."""
    return Expr(f"{hcl(condition)} ? {hcl(if_true)} : {hcl(if_false)}")


def call(function: str, *args: Any) -> str:
    """`call("jsonencode", {...})` -> "${jsonencode({...})}"."""
    return _interp(fn(function, *args))


# --- the file set ---------------------------------------------------------------------------


class DuplicateLabel(ValueError):
    """Two parts of the generator claimed one Terraform address."""


class _Files:
    """Collects blocks per file; refuses a second claim on one (block, type, label)."""

    def __init__(self) -> None:
        self.files: dict[str, dict[str, Any]] = {}
        self._claims: dict[tuple[str, ...], str] = {}

    def _claim(self, key: tuple[str, ...], file: str) -> None:
        label = key[-1]
        if not LABEL.match(label):
            raise ValueError(f"Terraform label {label!r} does not match {LABEL.pattern}")
        if key in self._claims:
            raise DuplicateLabel(f"{'.'.join(key)} is generated twice (in {self._claims[key]} and {file})")
        self._claims[key] = file

    def file(self, name: str, comment: str | None = None) -> dict[str, Any]:
        doc = self.files.setdefault(name, {})
        if comment:
            # facts 7.6: "//" is ignored at the file root.
            doc.setdefault("//", comment)
        return doc

    def block(self, file: str, block: str, kind: str, label: str, body: dict[str, Any]) -> None:
        """Add `resource` or `data` block `kind.label`."""
        self._claim((block, kind, label), file)
        self.file(file).setdefault(block, {}).setdefault(kind, {})[label] = body

    def resource(self, file: str, kind: str, label: str, body: dict[str, Any]) -> None:
        self.block(file, "resource", kind, label, body)

    def data(self, file: str, kind: str, label: str, body: dict[str, Any]) -> None:
        self.block(file, "data", kind, label, body)

    def output(self, file: str, label: str, value: str, description: str) -> None:
        self._claim(("output", label), file)
        self.file(file).setdefault("output", {})[label] = {"value": value, "description": escape(description)}


# --- shared pieces ---------------------------------------------------------------------------


def entity_file(entity: Entity) -> str:
    name = f"{entity.name}.tf.json"
    # Terraform merges *_override.tf.json / override.tf.json instead of loading them as files.
    if name in _SHARED_FILES or entity.name == "override" or entity.name.endswith("_override"):
        raise ValueError(
            f"entity name {entity.name!r} would produce the reserved Terraform file name {name!r}"
        )
    return name


def _table_label(table: str) -> str:
    """A data source label for an unmanaged table name ([A-Za-z0-9_.-]+)."""
    label = re.sub(r"[^A-Za-z0-9_-]", "_", table)
    return label if re.match(r"^[A-Za-z_]", label) else "_" + label


def _policy_document(statements: list[dict[str, Any]]) -> dict[str, Any]:
    """An aws_iam_policy_document body; `statement` is a repeatable block (facts 7.6: an array)."""
    return {"statement": statements}


def _statement(sid: str, actions: tuple[str, ...] | list[str], resources: list[str]) -> dict[str, Any]:
    for action in actions:
        if "*" in action:
            raise ValueError(f"wildcard IAM action {action!r}: list explicit actions")
    return {"sid": sid, "effect": "Allow", "actions": sorted(actions), "resources": resources}


def _alarm(
    name: str,
    description: str,
    namespace: str,
    metric: str,
    statistic: str,
    comparison: str,
    threshold: int,
    dimensions: dict[str, str],
    project: Project,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "alarm_name": escape(name),
        "alarm_description": escape(description),
        "namespace": namespace,
        "metric_name": metric,
        "dimensions": dimensions,
        "statistic": statistic,
        "period": 60,
        "evaluation_periods": 1,
        "threshold": threshold,
        "comparison_operator": comparison,
        # An idle queue publishes nothing; that is not a problem.
        "treat_missing_data": "notBreaching",
    }
    if project.alarm_topic_arns:
        body["alarm_actions"] = [escape(a) for a in project.alarm_topic_arns]
        body["ok_actions"] = [escape(a) for a in project.alarm_topic_arns]
    return body


def _providers(files: _Files, project: Project) -> None:
    doc = files.file(
        PROVIDERS_FILE,
        "Generated by ddb-sql-sync. The provider block lives alone here so that a "
        "providers_override.tf.json can point it at a local AWS.",
    )
    # facts 7.6: everything under terraform {} is a literal, not a template.
    doc["terraform"] = {
        "required_version": project.terraform_required_version,
        "required_providers": {"aws": {"source": "hashicorp/aws", "version": project.aws_provider_version}},
    }
    provider: dict[str, Any] = {"region": escape(project.region)}
    if project.tags:
        # Tags reach every taggable resource through default_tags; resources repeat none.
        provider["default_tags"] = {"tags": {escape(k): escape(v) for k, v in project.tags}}
    doc["provider"] = {"aws": provider}


@dataclass(frozen=True)
class _Stream:
    arn: Expr
    output_note: str


def _streams(files: _Files, model: Model) -> dict[str, _Stream]:
    """Stream ARN per source table name: the managed table, else one data source per table."""
    managed = {e.source.table: e for e in model.entities if e.source.managed}
    streams = {
        table: _Stream(expr("aws_dynamodb_table", e.name, "stream_arn"), "managed")
        for table, e in managed.items()
    }
    readers: dict[str, list[Entity]] = {}
    for e in model.entities:
        if e.source.table not in managed:
            readers.setdefault(e.source.table, []).append(e)
    for table, entities in sorted(readers.items()):
        label = _table_label(table)
        # A table without a stream has an empty stream_arn, and filters on an image the
        # stream does not carry never match (facts 1.8); fail the plan with a clear message.
        view_types = sorted({e.source.stream_view_type for e in entities})
        condition = " && ".join(
            ["self.stream_enabled"] + [f"self.stream_view_type == {hcl(v)}" for v in view_types]
        )
        names = ", ".join(e.name for e in entities)
        files.data(
            DATA_FILE,
            "aws_dynamodb_table",
            label,
            {
                "name": escape(table),
                "lifecycle": {
                    "postcondition": [
                        {
                            "condition": _interp(Expr(condition)),
                            "error_message": escape(
                                f"DynamoDB table {table} must have its stream enabled with view type "
                                f"{' and '.join(view_types)} (read by: {names})."
                            ),
                        }
                    ]
                },
            },
        )
        streams[table] = _Stream(expr("data", "aws_dynamodb_table", label, "stream_arn"), "external")
    return streams


# --- per entity ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Labels:
    queue: str
    dlq: str
    pipe_dlq: str
    pipe: str
    pipe_role: str


def labels(entity: Entity) -> _Labels:
    n = entity.name
    return _Labels(queue=n, dlq=f"{n}_dlq", pipe_dlq=f"{n}_pipe_dlq", pipe=n, pipe_role=f"{n}_pipe")


def _table(entity: Entity) -> dict[str, Any]:
    src = entity.source
    body: dict[str, Any] = {
        "name": escape(src.table),
        "billing_mode": src.billing_mode,
        "hash_key": escape(src.partition_key.name),
        # Only key attributes are declared: DynamoDB is schemaless otherwise, and an
        # attribute block without an index using it is rejected at plan.
        "attribute": [{"name": escape(k.name), "type": k.type} for k in src.keys],
        "stream_enabled": True,
        # facts 7.4 / 0.19: changing this re-creates the stream, so the pipe is replaced.
        "stream_view_type": src.stream_view_type,
    }
    if src.sort_key:
        body["range_key"] = escape(src.sort_key.name)
    if src.billing_mode == "PROVISIONED":
        if src.read_capacity is not None:
            body["read_capacity"] = src.read_capacity
        if src.write_capacity is not None:
            body["write_capacity"] = src.write_capacity
    return body


def _entity(files: _Files, model: Model, entity: Entity, stream: _Stream) -> None:
    project = model.project
    p = entity.pipeline
    lb = labels(entity)
    file = entity_file(entity)
    files.file(
        file, f"Generated by ddb-sql-sync for entity '{entity.name}'; edit its mapping, not this file."
    )
    queue_arn = expr("aws_sqs_queue", lb.queue, "arn")
    dlq_arn = expr("aws_sqs_queue", lb.dlq, "arn")
    pipe_dlq_arn = expr("aws_sqs_queue", lb.pipe_dlq, "arn")

    if entity.source.managed:
        files.resource(file, "aws_dynamodb_table", entity.name, _table(entity))

    # facts 3.3: a stream source's DLQ receives batch metadata only, and FIFO is not
    # supported there, so the Pipe DLQ is a standard queue.
    files.resource(
        file,
        "aws_sqs_queue",
        lb.pipe_dlq,
        {
            "name": escape(p.pipe.dlq_name),
            "message_retention_seconds": p.pipe.dlq_retention_seconds,
        },
    )

    # facts 5: a FIFO queue's DLQ must itself be FIFO.
    files.resource(
        file,
        "aws_sqs_queue",
        lb.dlq,
        {
            "name": escape(p.queue.dlq_name),
            "fifo_queue": True,
            "message_retention_seconds": p.queue.dlq_retention_seconds,
        },
    )
    queue: dict[str, Any] = {
        "name": escape(p.queue.name),
        "fifo_queue": True,
        "content_based_deduplication": p.queue.content_based_deduplication,
        "visibility_timeout_seconds": p.queue.visibility_timeout_seconds,
        "message_retention_seconds": p.queue.message_retention_seconds,
        # facts 5 / 7.2: maxReceiveCount must be an integer, not a string.
        "redrive_policy": call(
            "jsonencode", {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": p.queue.max_receive_count}
        ),
    }
    if p.queue.high_throughput:
        # facts 5: high throughput means both settings; perMessageGroupId requires messageGroup.
        queue["deduplication_scope"] = "messageGroup"
        queue["fifo_throughput_limit"] = "perMessageGroupId"
    files.resource(file, "aws_sqs_queue", lb.queue, queue)
    # A separate resource: written inline on the DLQ, the queue ARN would make a cycle with
    # the queue's redrive_policy.
    files.resource(
        file,
        "aws_sqs_queue_redrive_allow_policy",
        lb.dlq,
        {
            "queue_url": ref("aws_sqs_queue", lb.dlq, "id"),
            "redrive_allow_policy": call(
                "jsonencode", {"redrivePermission": "byQueue", "sourceQueueArns": [queue_arn]}
            ),
        },
    )

    # The Pipe's role.
    files.data(
        file,
        "aws_iam_policy_document",
        f"{lb.pipe_role}_assume",
        _policy_document(
            [
                {
                    "sid": "PipesAssume",
                    "effect": "Allow",
                    "actions": ["sts:AssumeRole"],
                    "principals": [{"type": "Service", "identifiers": ["pipes.amazonaws.com"]}],
                    # Confused-deputy guard: only pipes of this account may assume the role.
                    "condition": [
                        {
                            "test": "StringEquals",
                            "variable": "aws:SourceAccount",
                            "values": [ref("data", "aws_caller_identity", ACCOUNT, "account_id")],
                        }
                    ],
                }
            ]
        ),
    )
    files.data(
        file,
        "aws_iam_policy_document",
        lb.pipe_role,
        _policy_document(
            [
                _statement("ReadStream", STREAM_READ_ACTIONS, [_interp(stream.arn)]),
                # facts 3.3: the role needs sqs:SendMessage on the DLQ as well as on the target (facts 4).
                _statement(
                    "SendToQueueAndDlq", ["sqs:SendMessage"], [_interp(queue_arn), _interp(pipe_dlq_arn)]
                ),
            ]
        ),
    )
    files.resource(
        file,
        "aws_iam_role",
        lb.pipe_role,
        {
            "name": escape(p.pipe.role_name),
            "assume_role_policy": ref("data", "aws_iam_policy_document", f"{lb.pipe_role}_assume", "json"),
        },
    )
    files.resource(
        file,
        "aws_iam_role_policy",
        lb.pipe_role,
        {
            "name": "pipe-access",
            "role": ref("aws_iam_role", lb.pipe_role, "id"),
            "policy": ref("data", "aws_iam_policy_document", lb.pipe_role, "json"),
        },
    )

    stream_params: dict[str, Any] = {
        "starting_position": p.pipe.starting_position,
        # facts 1.7 / 3: at most 10 with an SQS target; always explicit.
        "batch_size": p.pipe.batch_size,
        # facts 0.11: the defaults (-1) let a poison record block its shard for 24 h.
        "maximum_retry_attempts": p.pipe.maximum_retry_attempts,
        "maximum_record_age_in_seconds": p.pipe.maximum_record_age_in_seconds,
        "maximum_batching_window_in_seconds": p.pipe.maximum_batching_window_in_seconds,
        "parallelization_factor": p.pipe.parallelization_factor,
        "dead_letter_config": {"arn": _interp(pipe_dlq_arn)},
    }
    source_params: dict[str, Any] = {"dynamodb_stream_parameters": stream_params}
    patterns = pipes.filter_patterns(entity)
    if patterns:
        # facts 3.2 / 7.1: filter_criteria sits beside dynamodb_stream_parameters; `filter`
        # is a repeatable block (an array, facts 7.6).
        source_params["filter_criteria"] = {
            "filter": [{"pattern": escape(pipes.pattern_text(pat))} for pat in patterns]
        }
    files.resource(
        file,
        "aws_pipes_pipe",
        lb.pipe,
        {
            "name": escape(p.pipe.name),
            "description": escape(
                f"ddb-sql-sync {entity.name}: stream of {entity.source.table} to {p.queue.name}"
            ),
            "role_arn": ref("aws_iam_role", lb.pipe_role, "arn"),
            "source": _interp(stream.arn),
            "target": _interp(queue_arn),
            "desired_state": p.pipe.desired_state,
            # facts 7.6: meta-arguments take bare addresses. Without the policy the pipe would
            # start and fail on its first poll.
            "depends_on": [address("aws_iam_role_policy", lb.pipe_role)],
            "source_parameters": source_params,
            "target_parameters": {
                # facts 1.3: the template is its own language, rendered by emit.pipes; `<$.x>` needs no escaping.
                "input_template": escape(pipes.input_template(entity)),
                # facts 4: each value is one JSON path evaluated against the source record.
                "sqs_queue_parameters": {
                    "message_group_id": escape(entity.routing.message_group_id),
                    "message_deduplication_id": escape(entity.routing.deduplication_id),
                },
            },
        },
    )

    c = p.consumer
    files.resource(
        file,
        "aws_lambda_event_source_mapping",
        entity.name,
        {
            "event_source_arn": _interp(queue_arn),
            "function_name": ref("aws_lambda_function", FUNCTION, "arn"),
            # facts 6.1: at most 10 on FIFO. No maximum_batching_window_in_seconds (refused on
            # FIFO) and no starting_position (stream sources only, facts 7.3).
            "batch_size": c.batch_size,
            "enabled": c.enabled,
            # facts 6.4: the handler reports the first failure and everything after it.
            "function_response_types": ["ReportBatchItemFailures"],
            "scaling_config": {"maximum_concurrency": c.maximum_concurrency},
            # CreateEventSourceMapping checks that the function's role may read the queue.
            "depends_on": [address("aws_iam_role_policy", FUNCTION)],
        },
    )

    alarms = p.alarms
    for label, name, queue_name in (
        (lb.pipe_dlq, p.pipe.dlq_name, "Pipe DLQ (batch pointers of stream records the Pipe gave up on)"),
        (lb.dlq, p.queue.dlq_name, "FIFO DLQ (messages the sync Lambda failed maxReceiveCount times)"),
    ):
        files.resource(
            file,
            "aws_cloudwatch_metric_alarm",
            f"{label}_messages",
            _alarm(
                f"{name}-messages-visible",
                f"{entity.name}: messages in the {queue_name}",
                "AWS/SQS",
                "ApproximateNumberOfMessagesVisible",
                "Maximum",
                "GreaterThanOrEqualToThreshold",
                alarms.dlq_messages,
                {"QueueName": ref("aws_sqs_queue", label, "name")},
                project,
            ),
        )
    files.resource(
        file,
        "aws_cloudwatch_metric_alarm",
        f"{lb.queue}_oldest_message",
        _alarm(
            f"{p.queue.name}-oldest-message-age",
            f"{entity.name}: the oldest message waits too long (a stuck message group?)",
            "AWS/SQS",
            "ApproximateAgeOfOldestMessage",
            "Maximum",
            "GreaterThanThreshold",
            alarms.oldest_message_age_seconds,
            {"QueueName": ref("aws_sqs_queue", lb.queue, "name")},
            project,
        ),
    )
    files.resource(
        file,
        "aws_cloudwatch_metric_alarm",
        f"{lb.pipe}_pipe_failures",
        _alarm(
            f"{p.pipe.name}-execution-failed",
            f"{entity.name}: Pipe executions failed (target or permission errors)",
            "AWS/EventBridge/Pipes",
            "ExecutionFailed",
            "Sum",
            "GreaterThanOrEqualToThreshold",
            1,
            {"PipeName": ref("aws_pipes_pipe", lb.pipe, "name")},
            project,
        ),
    )

    n = entity.name
    files.output(file, f"{n}_queue_url", ref("aws_sqs_queue", lb.queue, "url"), f"{n}: FIFO queue URL")
    files.output(file, f"{n}_queue_arn", _interp(queue_arn), f"{n}: FIFO queue ARN")
    files.output(file, f"{n}_dlq_url", ref("aws_sqs_queue", lb.dlq, "url"), f"{n}: FIFO DLQ URL")
    files.output(file, f"{n}_pipe_dlq_url", ref("aws_sqs_queue", lb.pipe_dlq, "url"), f"{n}: Pipe DLQ URL")
    files.output(file, f"{n}_pipe_arn", ref("aws_pipes_pipe", lb.pipe, "arn"), f"{n}: Pipe ARN")
    files.output(
        file, f"{n}_stream_arn", _interp(stream.arn), f"{n}: DynamoDB stream ARN ({stream.output_note} table)"
    )


# --- the sync Lambda ------------------------------------------------------------------------


def _lambda(files: _Files, model: Model) -> None:
    project = model.project
    lam = project.lambda_
    files.file(LAMBDA_FILE, "Generated by ddb-sql-sync: the one sync Lambda shared by every entity queue.")
    log_group = f"/aws/lambda/{lam.function_name}"

    env: dict[str, str] = {}
    for key, value in lam.environment:
        env[escape(key)] = escape(value)
    generated = {"SYNC_REGISTRY": REGISTRY_FILE}
    if project.database.secret_arn:
        generated["SYNC_DB_SECRET_ARN"] = escape(project.database.secret_arn)
    for key, value in generated.items():
        if key in env:
            raise ValueError(f"lambda.environment sets {key}, which the generator sets itself")
        env[key] = value

    # build/terraform/../<package>: relative to the module, never an absolute path.
    package_path = Template((Expr("path.module"), "/../" + lam.package))
    package = template(*package_path.parts)
    function: dict[str, Any] = {
        "function_name": escape(lam.function_name),
        "role": ref("aws_iam_role", FUNCTION, "arn"),
        "handler": HANDLER,
        "runtime": lam.runtime,
        "architectures": [lam.architecture],
        "memory_size": lam.memory_mb,
        "timeout": lam.timeout_seconds,
        "filename": package,
        # Redeploys when the package changes. `terraform validate` evaluates function calls,
        # and filebase64sha256 of a missing file fails it, so the hash is read only when the
        # package exists; an apply without the package still fails, on `filename`.
        "source_code_hash": _interp(
            conditional(fn("fileexists", package_path), fn("filebase64sha256", package_path), Expr("null"))
        ),
        "environment": {"variables": env},
        # The log group must exist first, or Lambda creates it without a retention and the
        # later create fails with "already exists". CreateFunction checks the VPC permissions.
        "depends_on": [
            address("aws_cloudwatch_log_group", FUNCTION),
            address("aws_iam_role_policy", FUNCTION),
        ],
    }
    if lam.reserved_concurrency is not None:
        function["reserved_concurrent_executions"] = lam.reserved_concurrency
    if lam.subnet_ids:
        function["vpc_config"] = {
            "subnet_ids": [escape(s) for s in lam.subnet_ids],
            "security_group_ids": [escape(s) for s in lam.security_group_ids],
        }
    files.resource(LAMBDA_FILE, "aws_lambda_function", FUNCTION, function)
    files.resource(
        LAMBDA_FILE,
        "aws_cloudwatch_log_group",
        FUNCTION,
        {
            "name": escape(log_group),
            "retention_in_days": lam.log_retention_days,
        },
    )

    files.data(
        LAMBDA_FILE,
        "aws_iam_policy_document",
        f"{FUNCTION}_assume",
        _policy_document(
            [
                {
                    "sid": "LambdaAssume",
                    "effect": "Allow",
                    "actions": ["sts:AssumeRole"],
                    "principals": [{"type": "Service", "identifiers": ["lambda.amazonaws.com"]}],
                }
            ]
        ),
    )
    statements = []
    queues = [ref("aws_sqs_queue", labels(e).queue, "arn") for e in model.entities]
    if queues:
        statements.append(_statement("ConsumeQueues", QUEUE_CONSUME_ACTIONS, queues))
    # Log streams live under the group: arn:...:log-group:NAME:log-stream:STREAM.
    statements.append(
        _statement(
            "WriteLogs",
            ("logs:CreateLogStream", "logs:PutLogEvents"),
            [template(expr("aws_cloudwatch_log_group", FUNCTION, "arn"), ":*")],
        )
    )
    if project.database.secret_arn:
        statements.append(
            _statement(
                "ReadDatabaseSecret",
                ("secretsmanager:GetSecretValue",),
                [escape(project.database.secret_arn)],
            )
        )
    if lam.subnet_ids:
        # These EC2 actions support no resource-level permissions: "*" is the only resource
        # AWS accepts for them (the same as AWSLambdaVPCAccessExecutionRole).
        statements.append(_statement("VpcNetworkInterfaces", VPC_ENI_ACTIONS, ["*"]))
    files.data(LAMBDA_FILE, "aws_iam_policy_document", FUNCTION, _policy_document(statements))
    files.resource(
        LAMBDA_FILE,
        "aws_iam_role",
        FUNCTION,
        {
            "name": escape(lam.role_name),
            "assume_role_policy": ref("data", "aws_iam_policy_document", f"{FUNCTION}_assume", "json"),
        },
    )
    files.resource(
        LAMBDA_FILE,
        "aws_iam_role_policy",
        FUNCTION,
        {
            "name": "sync-access",
            "role": ref("aws_iam_role", FUNCTION, "id"),
            "policy": ref("data", "aws_iam_policy_document", FUNCTION, "json"),
        },
    )
    files.output(
        LAMBDA_FILE,
        "sync_function_name",
        ref("aws_lambda_function", FUNCTION, "function_name"),
        "Name of the sync Lambda",
    )


# --- entry point ----------------------------------------------------------------------------


def terraform_files(model: Model) -> dict[str, dict[str, Any]]:
    """{file name relative to build/terraform/: .tf.json data}; deterministic for one model."""
    files = _Files()
    _providers(files, model.project)
    if model.entities:
        files.file(DATA_FILE, "Generated by ddb-sql-sync: data sources shared by the entities.")
        files.data(DATA_FILE, "aws_caller_identity", ACCOUNT, {})
        streams = _streams(files, model)
        for entity in sorted(model.entities, key=lambda e: e.name):
            _entity(files, model, entity, streams[entity.source.table])
    _lambda(files, model)
    # Round-trip through JSON: plain data only, and a loud error for anything that is not.
    return {name: json.loads(json.dumps(doc, sort_keys=True)) for name, doc in sorted(files.files.items())}
