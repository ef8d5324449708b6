"""The generated Terraform applied for real: `terraform init` + `apply` against the moto server,
through the override file of `python -m generator override`; every resource is then read
back with boto3 and compared with the mappings.

The deployment is the session fixture `deployed_pipeline` (tests/conftest.py), made once and
shared with the end-to-end tests. moto cannot hold one generated resource type,
aws_sqs_queue_redrive_allow_policy (it drops RedriveAllowPolicy), which `override --moto`
leaves out; everything else is created and checked here.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from generator import override as ov
from generator.model import Entity, Model
from generator.pipeunits import pipe_units
from synctools.local.build import shared_pipe
from tests.conftest import DeployedPipeline, copy_project, run_generator, terraform_or_skip

REPO_ROOT = Path(__file__).resolve().parent.parent
BUILD = REPO_ROOT / "build"
REGION = "ap-northeast-1"
ALL_SERVICES = ["cloudwatch", "dynamodb", "ec2", "iam", "lambda", "logs", "pipes", "scheduler", "sqs", "sts"]


def generator(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    return run_generator(*argv, timeout=120)


# --- the override file (no terraform needed) ----------------------------------------------


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return copy_project(tmp_path / "project")


def override_file(project: Path) -> Path:
    return project / "build" / "terraform" / ov.DEFAULT_NAME


def test_override_points_every_service_the_terraform_uses_at_the_endpoint(project: Path) -> None:
    # WHEN written for a local endpoint
    proc = generator("override", "--root", project, "--endpoint", "http://127.0.0.1:4566/")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(override_file(project).read_text())
    provider = doc["provider"]["aws"]
    # THEN every service of the generated resources (and STS, EC2 for the VPC function) goes there
    assert provider["endpoints"] == {name: "http://127.0.0.1:4566" for name in ALL_SERVICES}
    assert provider["skip_credentials_validation"] is True
    assert provider["skip_metadata_api_check"] is True
    # AND no credentials are written unless asked, and the region stays project.yaml's
    assert "access_key" not in provider and "secret_key" not in provider and "region" not in provider
    assert "resource" not in doc
    assert "credentials: the standard chain" in proc.stderr


def test_override_is_not_part_of_the_build(project: Path) -> None:
    # GIVEN the override in build/terraform
    assert generator("override", "--root", project, "--endpoint", "http://localhost:5000").returncode == 0
    # THEN check still finds build/ current, the manifest does not list it, and a rebuild keeps it
    assert generator("check", "--root", project).returncode == 0
    assert (
        f"terraform/{ov.DEFAULT_NAME}"
        not in json.loads((project / "build" / "manifest.json").read_text())["files"]
    )
    before = override_file(project).read_bytes()
    assert generator("build", "--root", project).returncode == 0
    assert override_file(project).read_bytes() == before
    # AND git ignores it at its default place
    assert f"build/terraform/{ov.DEFAULT_NAME}" in (REPO_ROOT / ".gitignore").read_text().splitlines()


def test_override_options(project: Path) -> None:
    # WHEN asked for fake credentials, another region and moto's omissions
    proc = generator(
        "override",
        "--root",
        project,
        "--endpoint",
        "http://127.0.0.1:5000",
        "--fake-credentials",
        "--region",
        "us-east-1",
        "--moto",
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(override_file(project).read_text())
    provider = doc["provider"]["aws"]
    # THEN the keys are the emulator's placeholder, and the region is overridden
    assert (provider["access_key"], provider["secret_key"], provider["region"]) == (
        "test",
        "test",
        "us-east-1",
    )
    # AND every redrive allow policy is disabled with count = 0, saying why
    omitted = doc["resource"]["aws_sqs_queue_redrive_allow_policy"]
    assert sorted(omitted) == [
        "customers_dlq",
        "invoices_dlq",
        "order_items_dlq",
        "orders_dlq",
        "shop_shared_dlq",
    ]
    assert all(body["count"] == 0 and "RedriveAllowPolicy" in body["//"] for body in omitted.values())
    assert "left out: aws_sqs_queue_redrive_allow_policy (5)" in proc.stderr


def test_override_dry_run_prints_and_writes_nothing(project: Path) -> None:
    proc = generator("override", "--root", project, "--endpoint", "http://127.0.0.1:5000", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["provider"]["aws"]["endpoints"]["pipes"] == "http://127.0.0.1:5000"
    assert not override_file(project).exists()


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["--endpoint", "ftp://x"], 2, "is not an http(s)://host[:port] URL"),
        (["--endpoint", "http://x:1", "--out", "local.tf.json"], 2, "must end in _override.tf.json"),
        (["--endpoint", "http://x:1", "--omit", "aws_sqs_queue"], 1, "is referred to by"),
        (["--endpoint", "http://x:1", "--omit", "aws_s3_bucket"], 1, "no resource of that type"),
    ],
)
def test_override_refusals(project: Path, argv: list[str], code: int, message: str) -> None:
    proc = generator("override", "--root", project, *argv)
    assert proc.returncode == code, proc.stderr
    assert message in proc.stderr
    assert not override_file(project).exists()


def test_override_refuses_a_resource_type_it_has_no_endpoint_for() -> None:
    docs = {"x.tf.json": {"resource": {"aws_s3_bucket": {"b": {}}}}}
    with pytest.raises(ov.OverrideError, match="no endpoint is known for aws_s3_bucket"):
        ov.services(docs)


def test_override_without_a_build_exits_1(tmp_path: Path) -> None:
    proc = generator("override", "--root", tmp_path, "--endpoint", "http://x:1")
    assert proc.returncode == 1
    assert "run: python -m generator build" in proc.stderr


# --- the deployment --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def deployed(deployed_pipeline: DeployedPipeline) -> DeployedPipeline:
    return deployed_pipeline


@pytest.fixture(scope="module")
def aws(deployed: DeployedPipeline) -> Any:
    """boto3 clients on the moto server (the account of the deployment)."""
    import boto3

    session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)

    def client(name: str) -> Any:
        return session.client(name, endpoint_url=deployed.endpoint)

    return client


def queue_attributes(aws: Any, url: str) -> dict[str, str]:
    return aws("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]


def managed(model: Model) -> list[Entity]:
    return [e for e in model.entities if e.source.managed]


@pytest.mark.terraform
def test_every_generated_resource_is_in_the_state(deployed: DeployedPipeline) -> None:
    # GIVEN the resources of the generated files
    docs = ov.generated_documents(deployed.workdir)
    generated = {
        f"{kind}.{label}"
        for doc in docs.values()
        for kind, blocks in doc.get("resource", {}).items()
        for label in blocks
    }
    # WHEN the state is listed
    binary, _ = terraform_or_skip()
    listed = subprocess.run(
        [binary, "state", "list"], cwd=deployed.workdir, capture_output=True, text=True, check=True
    ).stdout.split()
    # THEN all of them were created, but the redrive allow policies moto cannot hold
    omitted = {a for a in generated if a.startswith("aws_sqs_queue_redrive_allow_policy.")}
    assert len(omitted) == 5  # one per FIFO DLQ: a shared Pipe has one
    assert {a for a in listed if not a.startswith("data.")} == generated - omitted


@pytest.mark.terraform
def test_tables_have_streams_of_the_mapping_view_type(
    deployed: DeployedPipeline, aws: Any, model: Model
) -> None:
    for e in managed(model):
        table = aws("dynamodb").describe_table(TableName=e.source.table)["Table"]
        assert table["StreamSpecification"] == {
            "StreamEnabled": True,
            "StreamViewType": e.source.stream_view_type,
        }
        assert table["LatestStreamArn"] == deployed.outputs[f"{e.name}_stream_arn"]
        keys = {k["AttributeName"]: k["KeyType"] for k in table["KeySchema"]}
        assert keys[e.source.partition_key.name] == "HASH"
        assert table["BillingModeSummary"]["BillingMode"] == e.source.billing_mode


@pytest.mark.terraform
def test_fifo_queues_redrive_to_fifo_dlqs(deployed: DeployedPipeline, aws: Any, model: Model) -> None:
    for e in model.entities:
        q = e.pipeline.queue
        queue = queue_attributes(aws, deployed.outputs[f"{e.name}_queue_url"])
        dlq = queue_attributes(aws, deployed.outputs[f"{e.name}_dlq_url"])
        # THEN the queue is FIFO with the mapping's settings (facts 5)
        assert queue["QueueArn"] == deployed.outputs[f"{e.name}_queue_arn"]
        assert queue["FifoQueue"] == "true"
        assert queue["ContentBasedDeduplication"] == str(q.content_based_deduplication).lower()
        assert int(queue["VisibilityTimeout"]) == q.visibility_timeout_seconds
        assert int(queue["MessageRetentionPeriod"]) == q.message_retention_seconds
        # AND its redrive policy names the FIFO DLQ, with maxReceiveCount an integer (facts 7.2)
        redrive = json.loads(queue["RedrivePolicy"])
        assert redrive == {"deadLetterTargetArn": dlq["QueueArn"], "maxReceiveCount": q.max_receive_count}
        # AND the DLQ is FIFO too, keeping messages for its own retention
        assert dlq["QueueArn"].endswith(":" + q.dlq_name)
        assert dlq["FifoQueue"] == "true"
        assert int(dlq["MessageRetentionPeriod"]) == q.dlq_retention_seconds


@pytest.mark.terraform
def test_pipe_dlqs_are_standard_queues(deployed: DeployedPipeline, aws: Any, model: Model) -> None:
    for e in model.entities:
        attrs = queue_attributes(aws, deployed.outputs[f"{e.name}_pipe_dlq_url"])
        # facts 3.3: a stream source's DLQ cannot be FIFO
        assert "FifoQueue" not in attrs
        assert attrs["QueueArn"].endswith(":" + e.pipeline.pipe.dlq_name)
        assert int(attrs["MessageRetentionPeriod"]) == e.pipeline.pipe.dlq_retention_seconds


def deployed_registry() -> dict[str, Any]:
    return json.loads((BUILD / "registry.json").read_text())


@pytest.mark.terraform
def test_pipes_carry_the_generated_filters_template_and_routing(
    deployed: DeployedPipeline, aws: Any, model: Model
) -> None:
    for e in model.entities:
        p = e.pipeline.pipe
        pipe = aws("pipes").describe_pipe(Name=p.name)
        assert pipe["Arn"] == deployed.outputs[f"{e.name}_pipe_arn"]
        # THEN it reads the table's stream and sends to the entity's FIFO queue
        assert pipe["Source"] == deployed.outputs[f"{e.name}_stream_arn"]
        assert pipe["Target"] == deployed.outputs[f"{e.name}_queue_arn"]
        assert pipe["RoleArn"].endswith(":role/" + p.role_name)
        assert pipe["DesiredState"] == p.desired_state
        # AND the filter patterns and the input template are build/'s, exactly
        source = pipe["SourceParameters"]
        # A single-table design's entity: its table's shared Pipe, whose filter ORs every entity's.
        shared = shared_pipe(deployed_registry(), e.name)
        filters = json.loads(
            (BUILD / (f"pipes/{shared}" if shared else f"entities/{e.name}") / "filters.json").read_text()
        )
        assert [
            json.loads(f["Pattern"]) for f in source.get("FilterCriteria", {}).get("Filters", [])
        ] == filters
        template = (BUILD / "entities" / e.name / "input-template.txt").read_text()
        assert pipe["TargetParameters"]["InputTemplate"] + "\n" == template
        assert pipe["TargetParameters"]["SqsQueueParameters"] == {
            "MessageGroupId": e.routing.message_group_id,
            "MessageDeduplicationId": e.routing.deduplication_id,
        }
        # AND the stream settings of the mapping, with the Pipe DLQ
        stream = source["DynamoDBStreamParameters"]
        pipe_dlq = queue_attributes(aws, deployed.outputs[f"{e.name}_pipe_dlq_url"])["QueueArn"]
        assert stream["BatchSize"] == p.batch_size
        assert stream["StartingPosition"] == p.starting_position
        assert stream["MaximumRetryAttempts"] == p.maximum_retry_attempts
        assert stream["MaximumRecordAgeInSeconds"] == p.maximum_record_age_in_seconds
        assert stream["DeadLetterConfig"] == {"Arn": pipe_dlq}


@pytest.mark.terraform
def test_the_sync_lambda_is_the_packaged_zip_with_its_configuration(
    deployed: DeployedPipeline, aws: Any, model: Model
) -> None:
    lam = model.project.lambda_
    config = aws("lambda").get_function_configuration(FunctionName=deployed.outputs["sync_function_name"])
    assert config["FunctionName"] == lam.function_name
    assert config["Handler"] == "runtime.handler.handler"
    assert config["Runtime"] == lam.runtime
    assert config["Architectures"] == [lam.architecture]
    assert (config["MemorySize"], config["Timeout"]) == (lam.memory_mb, lam.timeout_seconds)
    assert config["Environment"]["Variables"] == {
        "SYNC_REGISTRY": "registry.json",
        "SYNC_DB_SECRET_ARN": model.project.database.secret_arn,
        "SYNC_DB_TLS": "verify-full",
    }
    assert sorted(config["VpcConfig"]["SubnetIds"]) == sorted(deployed.network[s] for s in lam.subnet_ids)
    assert config["Role"].endswith(":role/" + lam.role_name)
    # AND the code is the zip `package` wrote beside build/terraform
    zip_bytes = (deployed.workdir.parent / lam.package).read_bytes()
    assert config["CodeSha256"] == base64.b64encode(hashlib.sha256(zip_bytes).digest()).decode()


@pytest.mark.terraform
def test_one_event_source_mapping_per_queue_with_partial_batch_responses(
    deployed: DeployedPipeline, aws: Any, model: Model
) -> None:
    function_arn = aws("lambda").get_function_configuration(
        FunctionName=deployed.outputs["sync_function_name"]
    )["FunctionArn"]
    # moto filters list_event_source_mappings by function ARN only (AWS takes a name too)
    mappings = aws("lambda").list_event_source_mappings(FunctionName=function_arn)["EventSourceMappings"]
    by_queue = {m["EventSourceArn"]: m for m in mappings}
    assert len(mappings) == len(by_queue) == len(pipe_units(model))  # one per queue: a shared Pipe has one
    for e in model.entities:
        c = e.pipeline.consumer
        esm = by_queue[deployed.outputs[f"{e.name}_queue_arn"]]
        # facts 6.1 / 6.4
        assert esm["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        assert esm["BatchSize"] == c.batch_size
        assert esm.get("MaximumBatchingWindowInSeconds", 0) == 0
        assert esm["ScalingConfig"] == {"MaximumConcurrency": c.maximum_concurrency}
        assert esm["State"] == ("Enabled" if c.enabled else "Disabled")
        assert "StartingPosition" not in esm


@pytest.mark.terraform
def test_alarms_watch_every_dlq_queue_age_and_pipe(
    deployed: DeployedPipeline, aws: Any, model: Model
) -> None:
    alarms = {a["AlarmName"]: a for a in aws("cloudwatch").describe_alarms()["MetricAlarms"]}
    expected = set()
    for e in model.entities:
        p = e.pipeline
        for queue in (p.pipe.dlq_name, p.queue.dlq_name):
            alarm = alarms[f"{queue}-messages-visible"]
            assert (alarm["Namespace"], alarm["MetricName"]) == (
                "AWS/SQS",
                "ApproximateNumberOfMessagesVisible",
            )
            assert alarm["Dimensions"] == [{"Name": "QueueName", "Value": queue}]
            assert alarm["Threshold"] == p.alarms.dlq_messages
            expected.add(alarm["AlarmName"])
        age = alarms[f"{p.queue.name}-oldest-message-age"]
        assert age["MetricName"] == "ApproximateAgeOfOldestMessage"
        assert age["Dimensions"] == [{"Name": "QueueName", "Value": p.queue.name}]
        assert age["Threshold"] == p.alarms.oldest_message_age_seconds
        pipe = alarms[f"{p.pipe.name}-execution-failed"]
        assert pipe["Dimensions"] == [{"Name": "PipeName", "Value": p.pipe.name}]
        expected |= {age["AlarmName"], pipe["AlarmName"]}
        # the sync Lambda's counts of the entity's messages
        fn = model.project.lambda_.function_name
        for suffix, metric, threshold, periods in (
            ("failed-permanent", "FailedPermanent", 1, 1),
            ("failed-transient", "FailedTransient", 1, p.alarms.transient_failure_minutes),
            ("stale", "Stale", p.alarms.stale_events_per_minute, 1),
        ):
            alarm = alarms[f"{fn}-{e.name}-{suffix}"]
            assert (alarm["Namespace"], alarm["MetricName"], alarm["Threshold"]) == (
                "DdbSqlSync",
                metric,
                threshold,
            )
            assert alarm["Dimensions"] == [{"Name": "Entity", "Value": e.name}]
            assert (alarm["EvaluationPeriods"], alarm["DatapointsToAlarm"]) == (periods, periods)
            expected.add(alarm["AlarmName"])
    # and the sync Lambda's errors and throttles
    for suffix, metric in (("errors", "Errors"), ("throttles", "Throttles")):
        alarm = alarms[f"{model.project.lambda_.function_name}-{suffix}"]
        assert (alarm["Namespace"], alarm["MetricName"]) == ("AWS/Lambda", metric)
        assert alarm["Dimensions"] == [{"Name": "FunctionName", "Value": model.project.lambda_.function_name}]
        expected.add(alarm["AlarmName"])
    assert set(alarms) == expected


def _statements(document: Any) -> list[dict[str, Any]]:
    doc = json.loads(document) if isinstance(document, str) else document
    return doc["Statement"]


def _listed(value: Any) -> list[str]:
    return value if isinstance(value, list) else [value]


@pytest.mark.terraform
def test_iam_roles_are_least_privilege(deployed: DeployedPipeline, aws: Any, model: Model) -> None:
    iam = aws("iam")
    account = aws("sts").get_caller_identity()["Account"]
    pipes = {p["Name"]: p["Arn"] for p in aws("pipes").list_pipes()["Pipes"]}
    schedules = aws("scheduler").list_schedules()["Schedules"]
    # Each role, the service that assumes it, and the resource that service acts for.
    roles: dict[str, tuple[str, str | None]] = {
        model.project.lambda_.role_name: ("lambda.amazonaws.com", None),
        f"{model.project.lambda_.function_name}-prune": (
            "scheduler.amazonaws.com",
            f"arn:aws:scheduler:ap-northeast-1:{account}:schedule-group/default",
        ),
    }
    roles |= {
        e.pipeline.pipe.role_name: ("pipes.amazonaws.com", pipes[e.pipeline.pipe.name]) for e in model.live
    }
    assert [s["GroupName"] for s in schedules] == ["default"]
    for role_name, (principal, source) in roles.items():
        role = iam.get_role(RoleName=role_name)["Role"]
        (trust,) = _statements(role["AssumeRolePolicyDocument"])
        assert trust["Principal"] == {"Service": principal}
        assert trust["Action"] == "sts:AssumeRole"
        # confused-deputy guard: this resource (the deployed Pipe's own ARN) of this account
        # (Lambda's: this account only)
        guard = {"aws:SourceAccount": account} | ({"aws:SourceArn": source} if source else {})
        assert trust["Condition"] == {"StringEquals": guard}
        (policy_name,) = iam.list_role_policies(RoleName=role_name)["PolicyNames"]
        statements = _statements(
            iam.get_role_policy(RoleName=role_name, PolicyName=policy_name)["PolicyDocument"]
        )
        for statement in statements:
            assert statement["Effect"] == "Allow"
            assert not any("*" in action for action in _listed(statement["Action"])), statement
            # "*" is a resource only for the VPC network-interface actions, which take no other
            if "*" in _listed(statement["Resource"]):
                assert statement["Sid"] == "VpcNetworkInterfaces"
    # AND each pipe role may read its stream and send to its queue and Pipe DLQ, nothing else
    for e in model.entities:
        role = e.pipeline.pipe.role_name
        statements = {
            s["Sid"]: s
            for s in _statements(
                iam.get_role_policy(RoleName=role, PolicyName="pipe-access")["PolicyDocument"]
            )
        }
        assert set(statements) == {"ReadStream", "SendToQueueAndDlq"}
        assert _listed(statements["ReadStream"]["Resource"]) == [deployed.outputs[f"{e.name}_stream_arn"]]
        send_to = set(_listed(statements["SendToQueueAndDlq"]["Resource"]))
        assert deployed.outputs[f"{e.name}_queue_arn"] in send_to and len(send_to) == 2


@pytest.mark.terraform
def test_the_dashboard_is_deployed_with_a_row_per_entity(
    deployed: DeployedPipeline, aws: Any, model: Model
) -> None:
    name = model.project.lambda_.function_name
    body = json.loads(aws("cloudwatch").get_dashboard(DashboardName=name)["DashboardBody"])
    titles = [w["properties"]["title"] for w in body["widgets"]]
    for e in model.live:
        assert f"{e.name}: Pipe {e.pipeline.pipe.name}" in titles
        assert f"{e.name}: queue {e.pipeline.queue.name}" in titles


@pytest.mark.terraform
def test_the_deployed_queues_deny_requests_without_tls(
    deployed: DeployedPipeline, aws: Any, model: Model
) -> None:
    sqs = aws("sqs")
    names = {
        n
        for e in model.live
        for n in (e.pipeline.queue.name, e.pipeline.queue.dlq_name, e.pipeline.pipe.dlq_name)
    }
    for name in sorted(names):
        attrs = queue_attributes(aws, sqs.get_queue_url(QueueName=name)["QueueUrl"])
        (statement,) = json.loads(attrs["Policy"])["Statement"]
        assert (statement["Effect"], statement["Principal"], statement["Action"]) == ("Deny", "*", "sqs:*")
        assert statement["Resource"] == attrs["QueueArn"]
        assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
