"""Terraform emitter: the returned .tf.json data, and the real terraform binary's verdict on it."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from generator.emit import pipes
from generator.emit.terraform import DuplicateLabel, escape, hcl, terraform_files
from generator.load import load
from generator.model import Entity, IamAuth, Model
from generator.pipeunits import pipe_units
from tests.conftest import terraform_or_skip

REPO_ROOT = Path(__file__).resolve().parent.parent

# Every `${` the emitter writes on purpose opens a reference or one of these calls.
GENERATED_INTERPOLATION = re.compile(
    r"\$\{(?:(?:data\.)?aws_[a-z0-9_]+\.[A-Za-z0-9_-]+\.[a-z_]+\}|path\.module\}|jsonencode\(|fileexists\()"
)
UNESCAPED_INTERPOLATION = re.compile(r"(?<!\$)(?:\$\$)*\$\{")
ABSOLUTE_PATH = re.compile(r"(?:^|[\s\"'=(])(?:/(?:home|root|tmp|work|usr|opt|var|etc|Users)\b|[A-Za-z]:\\)")


# --- helpers -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model() -> Model:
    loaded = load(REPO_ROOT)
    assert loaded.model is not None, [str(d) for d in loaded.diagnostics.errors]
    return loaded.model


@pytest.fixture(scope="module")
def files(model: Model) -> dict[str, dict[str, Any]]:
    return terraform_files(model)


def dump(doc: dict[str, Any]) -> str:
    return json.dumps(doc, sort_keys=True, indent=2) + "\n"


def strings(node: Any) -> Iterator[str]:
    """Every string in a JSON document, object keys included."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield k
            yield from strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from strings(v)


def resources(files: dict[str, dict[str, Any]], kind: str, block: str = "resource") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for doc in files.values():
        out.update(doc.get(block, {}).get(kind, {}))
    return out


def entity(model: Model, name: str) -> Entity:
    found = next(e for e in model.entities if e.name == name)
    return found


def with_entities(model: Model, *entities: Entity) -> Model:
    return replace(model, entities=tuple(entities))


# --- the bundled mappings ------------------------------------------------------------------


def test_one_file_per_entity_beside_the_shared_files(model: Model, files: dict[str, dict[str, Any]]) -> None:
    # GIVEN the bundled project WHEN the Terraform is generated
    # THEN the provider, shared data sources and the Lambda have their own files, and each entity one
    expected = (
        {"providers.tf.json", "versions.tf.json", "data.tf.json", "lambda.tf.json", "network.tf.json"}
        | {f"{e.name}.tf.json" for e in model.entities}
        # AND a table's shared Pipe (a single-table design) one of its own
        | {f"{u.name}.tf.json" for u in pipe_units(model) if u.shared}
    )
    assert set(files) == expected
    assert "provider" in files["providers.tf.json"]
    assert all("provider" not in doc for name, doc in files.items() if name != "providers.tf.json")


def test_providers_file_pins_versions_and_tags_by_default_tags(
    model: Model, files: dict[str, dict[str, Any]]
) -> None:
    # GIVEN project.yaml's terraform settings and tags
    doc = files["providers.tf.json"]
    # THEN they land in terraform {} (a file of its own) and provider "aws" { default_tags }
    assert files["versions.tf.json"]["terraform"] == {
        "required_version": model.project.terraform_required_version,
        "required_providers": {
            "aws": {"source": "hashicorp/aws", "version": model.project.aws_provider_version}
        },
    }
    assert doc["provider"]["aws"]["region"] == "ap-northeast-1"
    assert doc["provider"]["aws"]["default_tags"] == {"tags": dict(model.project.tags)}
    # AND no resource repeats the tags
    for name, fdoc in files.items():
        for kind, blocks in fdoc.get("resource", {}).items():
            for label, body in blocks.items():
                assert "tags" not in body, f"{name}: {kind}.{label}"


def test_orders_pipe_reads_the_stream_with_the_mapping_settings(
    model: Model, files: dict[str, dict[str, Any]]
) -> None:
    # GIVEN orders.yaml (batch 10, TRIM_HORIZON, 3 retries, 300 s)
    pipe = files["orders.tf.json"]["resource"]["aws_pipes_pipe"]["orders"]
    stream = pipe["source_parameters"]["dynamodb_stream_parameters"]
    # THEN the pipe carries them, with its DLQ, from the managed table's stream to the FIFO queue
    assert pipe["name"] == "orders-pipe"
    assert pipe["source"] == "${aws_dynamodb_table.orders.stream_arn}"
    assert pipe["target"] == "${aws_sqs_queue.orders.arn}"
    assert pipe["role_arn"] == "${aws_iam_role.orders_pipe.arn}"
    assert pipe["desired_state"] == "RUNNING"
    assert stream["batch_size"] == 10
    assert stream["starting_position"] == "TRIM_HORIZON"
    assert stream["maximum_retry_attempts"] == 3
    assert stream["maximum_record_age_in_seconds"] == 300
    assert stream["parallelization_factor"] == 1
    assert stream["dead_letter_config"] == {"arn": "${aws_sqs_queue.orders_pipe_dlq.arn}"}
    # AND depends_on is a bare address (facts 7.6)
    assert pipe["depends_on"] == ["aws_iam_role_policy.orders_pipe"]


def test_pipe_filters_template_and_routing_come_from_the_pipes_emitter(
    model: Model, files: dict[str, dict[str, Any]]
) -> None:
    for u in pipe_units(model):
        # GIVEN each Pipe (an entity's own, or a table's shared one)
        pipe = files[f"{u.name}.tf.json"]["resource"]["aws_pipes_pipe"][u.name]
        # THEN filters, template and SQS parameters are the pipes emitter's output verbatim
        # (none of the bundled strings contains `${` or `%{`, so escaping leaves them alone)
        assert pipe["source_parameters"]["filter_criteria"]["filter"] == [
            {"pattern": pipes.pattern_text(p)} for p in pipes.unit_patterns(u)
        ]
        target = pipe["target_parameters"]
        assert target["input_template"] == pipes.unit_template(u)
        if not u.shared:
            assert target["input_template"] == pipes.input_template(u.first)
        assert target["sqs_queue_parameters"] == {
            "message_group_id": u.routing.message_group_id,
            "message_deduplication_id": u.routing.deduplication_id,
        }
    orders = files["orders.tf.json"]["resource"]["aws_pipes_pipe"]["orders"]["target_parameters"]
    assert orders["sqs_queue_parameters"]["message_group_id"] == "$.dynamodb.Keys.order_id.S"
    assert "<$.dynamodb.Keys.order_id.S>" in orders["input_template"]


def test_event_source_mapping_reports_item_failures_and_has_no_batching_window(
    files: dict[str, dict[str, Any]],
) -> None:
    # GIVEN the orders queue's event source mapping
    esm = files["orders.tf.json"]["resource"]["aws_lambda_event_source_mapping"]["orders"]
    # THEN it reports batch item failures, and has neither a batching window (refused on
    # FIFO) nor a starting position (stream sources only): facts 6.1 / 7.3
    assert esm["function_response_types"] == ["ReportBatchItemFailures"]
    assert esm["batch_size"] == 10
    assert esm["enabled"] is True
    assert esm["scaling_config"] == {"maximum_concurrency": 2}
    assert esm["event_source_arn"] == "${aws_sqs_queue.orders.arn}"
    assert esm["function_name"] == "${aws_lambda_function.sync.arn}"
    for body in resources(files, "aws_lambda_event_source_mapping").values():
        assert "maximum_batching_window_in_seconds" not in body
        assert "starting_position" not in body


def test_queues_fifo_dlq_is_fifo_and_pipe_dlq_is_standard(
    model: Model, files: dict[str, dict[str, Any]]
) -> None:
    # GIVEN the orders queues
    queues = files["orders.tf.json"]["resource"]["aws_sqs_queue"]
    # THEN the FIFO queue and its DLQ are FIFO (facts 5), the Pipe DLQ is not (facts 3.3)
    assert queues["orders"]["fifo_queue"] is True
    assert queues["orders"]["name"] == "orders-sync.fifo"
    assert queues["orders"]["content_based_deduplication"] is True
    assert queues["orders"]["visibility_timeout_seconds"] == 30
    assert queues["orders_dlq"]["fifo_queue"] is True
    assert queues["orders_dlq"]["message_retention_seconds"] == 1209600
    assert queues["orders_pipe_dlq"].get("fifo_queue", False) is False
    assert not queues["orders_pipe_dlq"]["name"].endswith(".fifo")
    # AND high throughput stays off unless asked for
    assert "deduplication_scope" not in queues["orders"]


def test_redrive_policy_has_an_integer_max_receive_count(
    model: Model, files: dict[str, dict[str, Any]]
) -> None:
    for e in pipe_units(model):
        # GIVEN each FIFO queue's redrive policy
        policy = files[f"{e.name}.tf.json"]["resource"]["aws_sqs_queue"][e.name]["redrive_policy"]
        # THEN it is one jsonencode call with a bare integer (facts 5: not a string)
        m = re.fullmatch(
            r"\$\{jsonencode\(\{deadLetterTargetArn = aws_sqs_queue\.(\w+)\.arn, maxReceiveCount = (\d+)\}\)\}",
            policy,
        )
        assert m, policy
        assert m.group(1) == f"{e.name}_dlq"
        assert int(m.group(2)) == e.pipeline.queue.max_receive_count
    allow = files["orders.tf.json"]["resource"]["aws_sqs_queue_redrive_allow_policy"]["orders_dlq"]
    assert allow["queue_url"] == "${aws_sqs_queue.orders_dlq.id}"
    assert "sourceQueueArns = [aws_sqs_queue.orders.arn]" in allow["redrive_allow_policy"]


def test_alarms_watch_both_dlqs_the_queue_age_and_the_pipe(files: dict[str, dict[str, Any]]) -> None:
    # GIVEN the orders alarms
    alarms = files["orders.tf.json"]["resource"]["aws_cloudwatch_metric_alarm"]
    # THEN each DLQ alarms on visible messages, the queue on message age, the pipe on failures
    assert set(alarms) == {
        "orders_pipe_dlq_messages",
        "orders_dlq_messages",
        "orders_oldest_message",
        "orders_pipe_failures",
        "orders_failed_permanent",
        "orders_failed_transient",
        "orders_stale",
    }
    assert alarms["orders_dlq_messages"]["dimensions"] == {"QueueName": "${aws_sqs_queue.orders_dlq.name}"}
    assert alarms["orders_dlq_messages"]["metric_name"] == "ApproximateNumberOfMessagesVisible"
    assert alarms["orders_dlq_messages"]["comparison_operator"] == "GreaterThanOrEqualToThreshold"
    assert alarms["orders_dlq_messages"]["threshold"] == 1
    assert alarms["orders_oldest_message"]["metric_name"] == "ApproximateAgeOfOldestMessage"
    assert alarms["orders_oldest_message"]["comparison_operator"] == "GreaterThanThreshold"
    assert alarms["orders_oldest_message"]["threshold"] == 300
    assert alarms["orders_pipe_failures"]["namespace"] == "AWS/EventBridge/Pipes"
    assert alarms["orders_pipe_failures"]["dimensions"] == {"PipeName": "${aws_pipes_pipe.orders.name}"}
    assert all(a["treat_missing_data"] == "notBreaching" for a in alarms.values())
    # AND the sync Lambda's counts of the entity's messages: a permanent failure at once,
    # transient failures five minutes running, a flood of stale events
    runtime = {
        label: (a["namespace"], a["metric_name"], a["dimensions"], a["threshold"], a["evaluation_periods"])
        for label, a in alarms.items()
        if a["namespace"] == "DdbSqlSync"
    }
    assert runtime == {
        "orders_failed_permanent": ("DdbSqlSync", "FailedPermanent", {"Entity": "orders"}, 1, 1),
        "orders_failed_transient": ("DdbSqlSync", "FailedTransient", {"Entity": "orders"}, 1, 5),
        "orders_stale": ("DdbSqlSync", "Stale", {"Entity": "orders"}, 100, 1),
    }
    # AND the sync Lambda alarms on its errors and throttles
    fn_alarms = files["lambda.tf.json"]["resource"]["aws_cloudwatch_metric_alarm"]
    assert {label: (a["namespace"], a["metric_name"], a["dimensions"]) for label, a in fn_alarms.items()} == {
        "sync_errors": (
            "AWS/Lambda",
            "Errors",
            {"FunctionName": "${aws_lambda_function.sync.function_name}"},
        ),
        "sync_throttles": (
            "AWS/Lambda",
            "Throttles",
            {"FunctionName": "${aws_lambda_function.sync.function_name}"},
        ),
    }
    # AND every alarm notifies the project's topics, when it fires and when it clears
    topics = ["arn:aws:sns:ap-northeast-1:123456789012:legacy-sync-oncall"]
    assert all(
        a["alarm_actions"] == a["ok_actions"] == topics for a in [*alarms.values(), *fn_alarms.values()]
    )


def test_iam_policies_list_explicit_actions_on_specific_resources(files: dict[str, dict[str, Any]]) -> None:
    documents = resources(files, "aws_iam_policy_document", "data")
    assert documents
    for label, doc in documents.items():
        for statement in doc["statement"]:
            # THEN no action is "*" or a wildcard such as "sqs:*"
            assert all("*" not in action for action in statement["actions"]), (label, statement)
            if statement["actions"] == ["sts:AssumeRole"]:
                assert "resources" not in statement
                continue
            # AND every other statement names resources, "*" only for the EC2 network-interface actions
            assert statement["resources"], (label, statement)
            if "*" in statement["resources"]:
                assert all(a.startswith("ec2:") for a in statement["actions"]), (label, statement)


def test_pipe_role_reads_its_stream_and_sends_to_its_queue_and_dlq(files: dict[str, dict[str, Any]]) -> None:
    doc = files["orders.tf.json"]
    statements = {s["sid"]: s for s in doc["data"]["aws_iam_policy_document"]["orders_pipe"]["statement"]}
    assert statements["ReadStream"]["actions"] == [
        "dynamodb:DescribeStream",
        "dynamodb:GetRecords",
        "dynamodb:GetShardIterator",
        "dynamodb:ListStreams",
    ]
    assert statements["ReadStream"]["resources"] == ["${aws_dynamodb_table.orders.stream_arn}"]
    assert statements["SendToQueueAndDlq"]["actions"] == ["sqs:SendMessage"]
    assert statements["SendToQueueAndDlq"]["resources"] == [
        "${aws_sqs_queue.orders.arn}",
        "${aws_sqs_queue.orders_pipe_dlq.arn}",
    ]
    assume = doc["data"]["aws_iam_policy_document"]["orders_pipe_assume"]["statement"][0]
    assert assume["principals"] == [{"type": "Service", "identifiers": ["pipes.amazonaws.com"]}]
    assert assume["condition"][0]["variable"] == "aws:SourceAccount"
    assert doc["resource"]["aws_iam_role_policy"]["orders_pipe"]["role"] == "${aws_iam_role.orders_pipe.id}"


def test_sync_lambda_function_role_and_log_group(model: Model, files: dict[str, dict[str, Any]]) -> None:
    # GIVEN project.yaml (VPC subnets, a database secret)
    doc = files["lambda.tf.json"]
    fn = doc["resource"]["aws_lambda_function"]["sync"]
    # THEN the function runs the runtime handler from the package beside build/terraform
    assert fn["function_name"] == model.project.lambda_.function_name
    assert fn["handler"] == "runtime.handler.handler"
    assert fn["runtime"] == "python3.12"
    assert fn["architectures"] == ["x86_64"]
    assert fn["memory_size"] == 256 and fn["timeout"] == 30
    assert fn["filename"] == "${path.module}/../lambda.zip"
    assert "filebase64sha256" in fn["source_code_hash"]
    assert "reserved_concurrent_executions" not in fn
    assert fn["environment"]["variables"] == {
        "SYNC_REGISTRY": "registry.json",
        "SYNC_DB_SECRET_ARN": model.project.database.secret_arn,
        "SYNC_DB_TLS": "verify-full",
    }
    assert fn["vpc_config"]["subnet_ids"] == list(model.project.lambda_.subnet_ids)
    assert set(fn["depends_on"]) == {"aws_cloudwatch_log_group.sync", "aws_iam_role_policy.sync"}
    assert doc["resource"]["aws_cloudwatch_log_group"]["sync"] == {
        "name": "/aws/lambda/legacy-sync",
        "retention_in_days": 30,
    }
    # AND its policy consumes every entity queue, writes its logs, reads the secret, manages ENIs
    statements = {s["sid"]: s for s in doc["data"]["aws_iam_policy_document"]["sync"]["statement"]}
    assert statements["ConsumeQueues"]["resources"] == [
        f"${{aws_sqs_queue.{u.name}.arn}}" for u in pipe_units(model)
    ]
    assert set(statements["ConsumeQueues"]["actions"]) == {
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
        "sqs:ChangeMessageVisibility",
    }
    assert statements["WriteLogs"]["resources"] == ["${aws_cloudwatch_log_group.sync.arn}:*"]
    assert statements["ReadDatabaseSecret"]["resources"] == [model.project.database.secret_arn]
    assert "ec2:CreateNetworkInterface" in statements["VpcNetworkInterfaces"]["actions"]
    assert not any(a.startswith("cloudwatch:") for s in statements.values() for a in s["actions"])


def test_outputs(model: Model, files: dict[str, dict[str, Any]]) -> None:
    outputs = files["orders.tf.json"]["output"]
    assert outputs["orders_queue_url"]["value"] == "${aws_sqs_queue.orders.url}"
    assert outputs["orders_queue_arn"]["value"] == "${aws_sqs_queue.orders.arn}"
    assert outputs["orders_dlq_url"]["value"] == "${aws_sqs_queue.orders_dlq.url}"
    assert outputs["orders_pipe_dlq_url"]["value"] == "${aws_sqs_queue.orders_pipe_dlq.url}"
    assert outputs["orders_pipe_arn"]["value"] == "${aws_pipes_pipe.orders.arn}"
    assert outputs["orders_stream_arn"]["value"] == "${aws_dynamodb_table.orders.stream_arn}"
    assert (
        files["lambda.tf.json"]["output"]["sync_function_name"]["value"]
        == "${aws_lambda_function.sync.function_name}"
    )


def test_managed_tables_declare_key_attributes_only(files: dict[str, dict[str, Any]]) -> None:
    table = files["order_items.tf.json"]["resource"]["aws_dynamodb_table"]["order_items"]
    assert table["hash_key"] == "order_id" and table["range_key"] == "line_no"
    assert table["attribute"] == [{"name": "order_id", "type": "S"}, {"name": "line_no", "type": "N"}]
    assert table["stream_enabled"] is True and table["stream_view_type"] == "NEW_AND_OLD_IMAGES"
    assert "read_capacity" not in table


def test_labels_are_terraform_identifiers(files: dict[str, dict[str, Any]]) -> None:
    label = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_-]*$")
    for doc in files.values():
        for block in ("resource", "data"):
            for blocks in doc.get(block, {}).values():
                assert all(label.match(name) for name in blocks), blocks.keys()
        assert all(label.match(name) for name in doc.get("output", {}))


def test_no_absolute_paths_and_no_stray_interpolation(files: dict[str, dict[str, Any]]) -> None:
    for name, doc in files.items():
        for text in strings(doc):
            assert not ABSOLUTE_PATH.search(text), (name, text)
            # THEN every unescaped `${` opens an interpolation the emitter meant to write
            for m in UNESCAPED_INTERPOLATION.finditer(text):
                start = m.end() - 2
                assert GENERATED_INTERPOLATION.match(text, start), (name, text)


def test_output_is_deterministic(model: Model) -> None:
    # WHEN generated twice THEN the JSON text is identical
    first = {n: dump(d) for n, d in terraform_files(model).items()}
    second = {n: dump(d) for n, d in terraform_files(model).items()}
    assert first == second


# --- variations of the model ---------------------------------------------------------------


def hostile(model: Model) -> Model:
    """The bundled model with `${` and `%{` in every user string that reaches Terraform."""
    orders = entity(model, "orders")
    orders = replace(
        orders,
        filter=replace(orders.filter, or_patterns=({"eventName": ["${x}", "%{if}"]},)),
        fields=orders.fields + (replace(orders.fields[0], name="weird${x}"),),
    )
    lam = replace(model.project.lambda_, environment=(("NOTE", "cost ${var.x} %{if y}"),))
    project = replace(model.project, lambda_=lam, tags=model.project.tags + (("expr", "${boom}"),))
    return replace(model, project=project, entities=(orders,))


def test_user_strings_with_template_sequences_are_escaped(model: Model) -> None:
    # GIVEN user input containing `${` and `%{`
    files = terraform_files(hostile(model))
    pipe = files["orders.tf.json"]["resource"]["aws_pipes_pipe"]["orders"]
    # THEN they are written as `$${` and `%%{` (facts 1.6 / 7.6)
    assert (
        pipe["source_parameters"]["filter_criteria"]["filter"][-1]["pattern"]
        == '{"eventName":["$${x}","%%{if}"]}'
    )
    assert '"weird$${x}"' in pipe["target_parameters"]["input_template"]
    variables = files["lambda.tf.json"]["resource"]["aws_lambda_function"]["sync"]["environment"]["variables"]
    assert variables["NOTE"] == "cost $${var.x} %%{if y}"
    assert files["providers.tf.json"]["provider"]["aws"]["default_tags"]["tags"]["expr"] == "$${boom}"
    # AND no unescaped `${` is left beyond the generated ones
    for doc in files.values():
        for text in strings(doc):
            for m in UNESCAPED_INTERPOLATION.finditer(text):
                assert GENERATED_INTERPOLATION.match(text, m.end() - 2), text


def test_unmanaged_tables_share_one_data_source(model: Model) -> None:
    # GIVEN two entities reading the same unmanaged table
    a = entity(model, "orders")
    b = entity(model, "order_items")
    a = replace(a, source=replace(a.source, managed=False, table="legacy.orders"))
    b = replace(
        b, source=replace(b.source, managed=False, table="legacy.orders", stream_view_type="NEW_IMAGE")
    )
    files = terraform_files(with_entities(model, a, b))
    # THEN one data source serves both pipes, and no table resource is generated
    tables = resources(files, "aws_dynamodb_table", "data")
    assert list(tables) == ["legacy_orders"]
    assert tables["legacy_orders"]["name"] == "legacy.orders"
    assert "self.stream_enabled" in tables["legacy_orders"]["lifecycle"]["postcondition"][0]["condition"]
    assert resources(files, "aws_dynamodb_table") == {}
    for e in (a, b):
        pipe = files[f"{e.name}.tf.json"]["resource"]["aws_pipes_pipe"][e.name]
        assert pipe["source"] == "${data.aws_dynamodb_table.legacy_orders.stream_arn}"


def test_an_unmanaged_reader_of_a_managed_table_uses_the_resource(model: Model) -> None:
    # GIVEN orders manages its table and a second entity reads it unmanaged
    orders = entity(model, "orders")
    reader = replace(entity(model, "order_items"), source=replace(orders.source, managed=False))
    files = terraform_files(with_entities(model, orders, reader))
    # THEN the reader's pipe reads the managed table's stream; no data source is needed
    pipe = files["order_items.tf.json"]["resource"]["aws_pipes_pipe"]["order_items"]
    assert pipe["source"] == "${aws_dynamodb_table.orders.stream_arn}"
    assert resources(files, "aws_dynamodb_table", "data") == {}


def test_project_without_vpc_secret_and_with_options(model: Model) -> None:
    # GIVEN no VPC, no secret, reserved concurrency, alarm topics, a provisioned table, high throughput
    lam = replace(model.project.lambda_, subnet_ids=(), security_group_ids=(), reserved_concurrency=5)
    project = replace(
        model.project,
        lambda_=lam,
        database=replace(
            model.project.database, secret_arn=None, tls_mode="require", ca_bundle="certs/ca.pem"
        ),
        alarm_topic_arns=("arn:aws:sns:ap-northeast-1:123456789012:oncall",),
    )
    orders = entity(model, "orders")
    orders = replace(
        orders,
        source=replace(orders.source, billing_mode="PROVISIONED", read_capacity=5, write_capacity=2),
        pipeline=replace(orders.pipeline, queue=replace(orders.pipeline.queue, high_throughput=True)),
    )
    files = terraform_files(replace(model, project=project, entities=(orders,)))
    fn = files["lambda.tf.json"]["resource"]["aws_lambda_function"]["sync"]
    # THEN the function has no vpc_config, no secret variable, and its reserved concurrency
    assert "vpc_config" not in fn
    assert fn["reserved_concurrent_executions"] == 5
    assert fn["environment"]["variables"] == {
        "SYNC_REGISTRY": "registry.json",
        "SYNC_DB_TLS": "require",
        "SYNC_DB_CA_BUNDLE": "ca-bundle.pem",
    }
    sids = {s["sid"] for s in files["lambda.tf.json"]["data"]["aws_iam_policy_document"]["sync"]["statement"]}
    assert sids == {"ConsumeQueues", "WriteLogs"}
    # AND the table has capacities, the queue high-throughput settings (facts 5), alarms actions
    table = files["orders.tf.json"]["resource"]["aws_dynamodb_table"]["orders"]
    assert (table["read_capacity"], table["write_capacity"]) == (5, 2)
    queue = files["orders.tf.json"]["resource"]["aws_sqs_queue"]["orders"]
    assert queue["deduplication_scope"] == "messageGroup"
    assert queue["fifo_throughput_limit"] == "perMessageGroupId"
    for alarm in files["orders.tf.json"]["resource"]["aws_cloudwatch_metric_alarm"].values():
        assert (
            alarm["alarm_actions"]
            == alarm["ok_actions"]
            == ["arn:aws:sns:ap-northeast-1:123456789012:oncall"]
        )


def test_two_claims_on_one_label_are_refused(model: Model) -> None:
    # GIVEN entity "orders" (whose FIFO DLQ is aws_sqs_queue.orders_dlq) and an entity named orders_dlq
    orders = entity(model, "orders")
    clash = replace(entity(model, "order_items"), name="orders_dlq")
    # WHEN generated THEN the second claim on aws_sqs_queue.orders_dlq fails loudly
    with pytest.raises(DuplicateLabel, match="aws_sqs_queue.orders_dlq"):
        terraform_files(with_entities(model, orders, clash))


@pytest.mark.parametrize(
    "name", ["lambda", "providers", "versions", "data", "network", "override", "x_override"]
)
def test_entity_names_that_would_shadow_a_file_are_refused(model: Model, name: str) -> None:
    bad = replace(entity(model, "orders"), name=name)
    with pytest.raises(ValueError, match="reserved Terraform file name"):
        terraform_files(with_entities(model, bad))


def test_hcl_renders_strings_with_escapes() -> None:
    assert hcl({"a b": 'say "${x}"\n', "n": 3, "ok": True, "l": ["%{y}"]}) == (
        '{"a b" = "say \\"$${x}\\"\\n", n = 3, ok = true, l = ["%%{y}"]}'
    )


# --- the real terraform binary ---------------------------------------------------------------


def _env(tmp: Path) -> dict[str, str]:
    rc = tmp / "empty.tfrc"
    rc.write_text("")
    # The machine's TF_CLI_CONFIG_FILE may point to a missing file, which only prints warnings.
    return {**os.environ, "TF_CLI_CONFIG_FILE": str(rc), "TF_IN_AUTOMATION": "1"}


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def validated(model: Model, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`terraform init` + `validate -json` once, on the bundled project plus variations.

    The variations (unmanaged shared table, provisioned table, high throughput, no VPC,
    alarm topics, hostile strings) go in as extra entities of one configuration, so one
    init covers every branch of the emitter.
    """
    binary, plugin_dir = terraform_or_skip()
    tmp = tmp_path_factory.mktemp("tf")
    workdir = tmp / "terraform"
    workdir.mkdir()
    env = _env(tmp)

    orders = entity(model, "orders")
    extra_a = replace(
        orders,
        name="legacy_a",
        source=replace(orders.source, managed=False, table="legacy.orders", stream_view_type="NEW_IMAGE"),
        filter=replace(orders.filter, or_patterns=({"eventName": ["${x}", "%{if}"]},)),
        fields=orders.fields + (replace(orders.fields[0], name="weird${x}"),),
        pipeline=replace(
            orders.pipeline,
            pipe=replace(orders.pipeline.pipe, name="legacy-a", dlq_name="legacy-a-dlq"),
            queue=replace(
                orders.pipeline.queue,
                name="legacy-a.fifo",
                dlq_name="legacy-a-dlq.fifo",
                high_throughput=True,
            ),
        ),
    )
    extra_b = replace(
        extra_a,
        name="legacy_b",
        source=replace(
            entity(model, "order_items").source,
            table="prov",
            billing_mode="PROVISIONED",
            read_capacity=1,
            write_capacity=1,
        ),
        pipeline=replace(
            orders.pipeline,
            pipe=replace(orders.pipeline.pipe, name="legacy-b", dlq_name="legacy-b-dlq"),
            queue=replace(orders.pipeline.queue, name="legacy-b.fifo", dlq_name="legacy-b-dlq.fifo"),
        ),
    )
    # AND every production option on: a project KMS key, a secret under a key of its own, IAM
    # database authentication through an RDS Proxy (beside the secret, which validate would
    # refuse but the emitter must still render), endpoints for two services
    key = "arn:aws:kms:ap-northeast-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    project = replace(
        model.project,
        alarm_topic_arns=("arn:aws:sns:ap-northeast-1:123456789012:oncall",),
        lambda_=replace(
            model.project.lambda_,
            reserved_concurrency=3,
            environment=(("NOTE", "${x}"),),
            endpoint_services=("secretsmanager", "sts"),
        ),
        database=replace(
            model.project.database,
            secret_kms_key_arn=key.replace("1234abcd", "9999abcd"),
            iam=IamAuth("proxy.example.com", 5432, "ddb_sync", "legacy", "prx-0123456789abcdef0"),
            proxy=True,
        ),
        kms_key_arn=key,
    )
    wide = replace(model, project=project, entities=model.entities + (extra_a, extra_b))
    generated = terraform_files(wide)
    assert set(terraform_files(model)) < set(generated)
    for name, doc in generated.items():
        (workdir / name).write_text(dump(doc))

    init = _run([binary, "init", "-backend=false", "-input=false", f"-plugin-dir={plugin_dir}"], workdir, env)
    assert init.returncode == 0, init.stdout + init.stderr
    result = _run([binary, "validate", "-json"], workdir, env)
    return json.loads(result.stdout)


@pytest.mark.terraform
def test_terraform_validate_accepts_the_generated_files(validated: dict[str, Any]) -> None:
    # GIVEN the generated files in a directory WHEN terraform validates them
    # THEN it reports them valid, with no warnings either
    assert validated["valid"] is True, json.dumps(validated["diagnostics"], indent=2)
    assert validated["warning_count"] == 0, json.dumps(validated["diagnostics"], indent=2)


@pytest.mark.terraform
def test_escaped_strings_read_back_literally(tmp_path: Path) -> None:
    # GIVEN strings full of template sequences, escaped as the emitter escapes them, both as
    # JSON string templates and as HCL string literals inside an expression
    binary, _ = terraform_or_skip()
    samples = ["${x}", "%{if y}", "$${x}", "a$$b", "$", "%", "$${", 'say "hi"\\ ${ %{ endif }\n']
    locals_ = {f"s{i}": escape(s) for i, s in enumerate(samples)}
    locals_["h"] = "${" + hcl(samples) + "}"
    (tmp_path / "probe.tf.json").write_text(dump({"locals": locals_}))
    # WHEN terraform evaluates them (no providers, so no init)
    listed = ", ".join(f"local.s{i}" for i in range(len(samples)))
    proc = subprocess.run(
        [binary, "console"],
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        input=f"jsonencode([[{listed}], local.h])\n",
        check=False,
    )
    # THEN each reads back as the literal text
    assert proc.returncode == 0, proc.stderr
    assert json.loads(json.loads(proc.stdout.strip())) == [samples, samples]


def test_one_dashboard_shows_the_lambda_and_a_row_per_entity(
    files: dict[str, dict[str, Any]], model: Model
) -> None:
    (board,) = files["lambda.tf.json"]["resource"]["aws_cloudwatch_dashboard"].values()
    assert board["dashboard_name"] == model.project.lambda_.function_name
    widgets = json.loads(board["dashboard_body"])["widgets"]
    rows: dict[int, list[dict[str, Any]]] = {}
    for w in widgets:
        rows.setdefault(w["y"], []).append(w)
    # THEN a row for the Lambda, then one per live entity of three panels side by side
    assert len(rows) == 1 + len(model.live)
    assert all(sum(w["width"] for w in row) == 24 for row in rows.values())
    for e in model.live:
        panels = [w for w in widgets if w["properties"]["title"].startswith(f"{e.name}: ")]
        metrics = {tuple(m[:4]) for w in panels for m in w["properties"]["metrics"]}
        p = e.pipeline
        assert ("AWS/EventBridge/Pipes", "EventCount", "PipeName", p.pipe.name) in metrics
        assert ("AWS/SQS", "ApproximateAgeOfOldestMessage", "QueueName", p.queue.name) in metrics
        assert ("AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", p.queue.dlq_name) in metrics
        assert ("AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", p.pipe.dlq_name) in metrics
        assert ("DdbSqlSync", "FailedPermanent", "Entity", e.name) in metrics
        assert ("DdbSqlSync", "Applied", "Entity", e.name) in metrics


def test_every_queue_refuses_requests_without_tls(files: dict[str, dict[str, Any]], model: Model) -> None:
    policies = resources(files, "aws_sqs_queue_policy")
    queues = resources(files, "aws_sqs_queue")
    # THEN each queue (FIFO queue, FIFO DLQ, Pipe DLQ) has its policy, denying aws:SecureTransport false
    assert set(policies) == set(queues)
    for label, policy in policies.items():
        assert policy["queue_url"] == f"${{aws_sqs_queue.{label}.id}}"
        text = policy["policy"]
        assert 'Effect = "Deny"' in text and 'Principal = "*"' in text
        assert f"Resource = aws_sqs_queue.{label}.arn" in text
        assert 'Condition = {Bool = {"aws:SecureTransport" = "false"}}' in text
