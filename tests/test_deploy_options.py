"""The production options of project.yaml (issue: production posture): IAM database
authentication and RDS Proxy, the VPC interface endpoints, customer-managed KMS keys and the
confused-deputy guards. Each is checked three ways: what validate says about it, the Terraform
generated for it, and that Terraform applied on the moto server with the real terraform binary
(the bundled project, and a project with every option on)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from generator.diagnostics import Diagnostic
from generator.emit.terraform import terraform_files
from generator.emit.terraform.sync_lambda import GENERATED_ENVIRONMENT
from generator.load import load
from generator.model import Model
from tests.conftest import (
    DeployedPipeline,
    copy_project,
    deploy,
    moto_client,
    moto_network,
    running_moto,
    terraform_or_skip,
)

KEY = "arn:aws:kms:ap-northeast-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
SECRET_KEY = "arn:aws:kms:ap-northeast-1:123456789012:key/9999abcd-12ab-34cd-56ef-1234567890ab"
PROXY_AUTH = {
    "mode": "iam",
    "host": "legacy-proxy.proxy-c0abcdefghij.ap-northeast-1.rds.amazonaws.com",
    "user": "ddb_sync",
    "dbname": "legacy",
    "resource_id": "prx-0123456789abcdef0",
}


def edit_project(root: Path, edit: Any) -> None:
    """Apply `edit(settings)` to root/project.yaml (a dict, written back as YAML)."""
    path = root / "project.yaml"
    settings = yaml.safe_load(path.read_text(encoding="utf-8"))
    edit(settings)
    path.write_text(yaml.safe_dump(settings, sort_keys=False), encoding="utf-8")


def iam_auth(settings: dict[str, Any], *, proxy: bool = True, **auth: Any) -> None:
    db = settings["database"]
    db.pop("secret_arn", None)
    db["auth"] = {**PROXY_AUTH, **auth}
    db["proxy"] = proxy


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return copy_project(tmp_path / "project")


def validated(root: Path) -> tuple[Model | None, list[Diagnostic]]:
    loaded = load(root)
    return loaded.model, loaded.diagnostics.sorted()


def found(diags: list[Diagnostic], code: str) -> list[Diagnostic]:
    return [d for d in diags if d.code == code]


def statements(files: dict[str, dict[str, Any]], label: str) -> dict[str, dict[str, Any]]:
    docs = {}
    for doc in files.values():
        docs.update(doc.get("data", {}).get("aws_iam_policy_document", {}))
    return {s["sid"]: s for s in docs[label]["statement"]}


# --- validate --------------------------------------------------------------------------------


def test_iam_authentication_through_a_proxy_validates_without_a_secret(project: Path) -> None:
    # GIVEN IAM database authentication to an RDS Proxy, no secret
    edit_project(project, iam_auth)
    model, diags = validated(project)
    # THEN it validates, with no warning about the missing secret nor about a route to
    # Secrets Manager (the token is signed inside the function: nothing to reach)
    assert model is not None, [d.render() for d in diags]
    assert not found(diags, "database-secret") and not found(diags, "vpc-no-route")
    assert model.project.database.iam is not None and model.project.database.iam.port == 5432
    assert model.project.endpoint_services() == ()


@pytest.mark.parametrize(
    ("edit", "path", "message"),
    [
        (
            lambda s: (iam_auth(s), s["database"]["auth"].pop("host")),
            "database.auth",
            "needs database.auth.host",
        ),
        (
            lambda s: (iam_auth(s), s["database"]["auth"].pop("user")),
            "database.auth",
            "needs database.auth.user",
        ),
        (
            lambda s: (
                iam_auth(s),
                s["database"].update(
                    secret_arn="arn:aws:secretsmanager:ap-northeast-1:123456789012:secret:x"
                ),
            ),
            "database.secret_arn",
            "is set beside database.auth.mode iam",
        ),
        (
            lambda s: (iam_auth(s), s["database"].update(tls={"mode": "off"})),
            "database.tls.mode",
            "RDS accepts an IAM token only over TLS",
        ),
        (
            lambda s: iam_auth(s, proxy=False),
            "database.auth.resource_id",
            "an RDS Proxy's id but database.proxy is false",
        ),
        (
            lambda s: iam_auth(s, resource_id="cluster-ABCDEFGHIJ"),
            "database.auth.resource_id",
            "not an RDS Proxy's id (prx-...) but database.proxy is true",
        ),
    ],
)
def test_iam_authentication_settings_that_cannot_work_are_refused(
    project: Path, edit: Any, path: str, message: str
) -> None:
    edit_project(project, edit)
    model, diags = validated(project)
    errors = found(diags, "iam-auth")
    assert model is None and len(errors) == 1, [d.render() for d in diags]
    assert errors[0].severity == "error" and errors[0].path == path and message in errors[0].message
    assert errors[0].file == "project.yaml" and errors[0].line > 0


def test_a_resource_id_of_the_wrong_form_is_refused_in_words(project: Path) -> None:
    edit_project(project, lambda s: iam_auth(s, resource_id="legacy-db"))
    model, diags = validated(project)
    assert model is None
    (error,) = [d for d in diags if d.path == "database.auth.resource_id"]
    assert "an RDS resource id: db-..." in error.message


def test_private_subnets_without_a_route_to_secrets_manager_warn(project: Path) -> None:
    # GIVEN the function in private subnets, reading the secret, and nothing said of a route
    edit_project(project, lambda s: s["lambda"]["vpc"].pop("aws_access"))
    _, diags = validated(project)
    (warning,) = found(diags, "vpc-no-route")
    # THEN validate warns, naming the service and both ways out
    assert warning.severity == "warning" and warning.path == "lambda.vpc"
    assert "calls secretsmanager" in warning.message and "aws_access: endpoints" in warning.hint
    # AND `routed` (a NAT gateway, or endpoints of one's own) silences it
    edit_project(project, lambda s: s["lambda"]["vpc"].update(aws_access="routed"))
    _, diags = validated(project)
    assert not found(diags, "vpc-no-route")


def test_endpoints_need_the_vpc_id(project: Path) -> None:
    edit_project(project, lambda s: s["lambda"]["vpc"].pop("vpc_id"))
    model, diags = validated(project)
    (error,) = found(diags, "vpc-endpoints")
    assert model is None and error.path == "lambda.vpc.aws_access" and "vpc_id" in error.message


@pytest.mark.parametrize("name", ["SYNC_DB_HOST", "SYNC_DB_AUTH", "SYNC_DB_PROXY", "SYNC_DB_TLS"])
def test_the_lambda_environment_cannot_set_what_the_generator_sets(project: Path, name: str) -> None:
    edit_project(project, lambda s: s["lambda"].update(environment={name: "x"}))
    model, diags = validated(project)
    (error,) = found(diags, "env-reserved")
    assert model is None and error.path == f"lambda.environment.{name}"


# --- the generated Terraform -------------------------------------------------------------------


def test_without_a_key_every_queue_states_sqs_managed_encryption(model: Model) -> None:
    files = terraform_files(model)
    queues = [q for doc in files.values() for q in doc.get("resource", {}).get("aws_sqs_queue", {}).values()]
    assert len(queues) == 3 * 5  # five Pipes (four entities of their own and one shared), three queues each
    assert all(q["sqs_managed_sse_enabled"] is True and "kms_master_key_id" not in q for q in queues)
    lam = files["lambda.tf.json"]["resource"]
    assert "kms_key_arn" not in lam["aws_lambda_function"]["sync"]
    assert "kms_key_id" not in lam["aws_cloudwatch_log_group"]["sync"]


def test_a_project_key_encrypts_queues_logs_environment_and_tables_with_its_grants(
    project: Path,
) -> None:
    # GIVEN encryption.kms_key_arn and a secret encrypted with a key of its own
    edit_project(
        project,
        lambda s: (
            s.update(encryption={"kms_key_arn": KEY}),
            s["database"].update(secret_kms_key_arn=SECRET_KEY),
        ),
    )
    model, diags = validated(project)
    assert model is not None, [d.render() for d in diags]
    files = terraform_files(model)
    # THEN every queue, the log group, the function's environment and each managed table use the key
    for doc in files.values():
        for queue in doc.get("resource", {}).get("aws_sqs_queue", {}).values():
            assert queue["kms_master_key_id"] == KEY and "sqs_managed_sse_enabled" not in queue
        for table in doc.get("resource", {}).get("aws_dynamodb_table", {}).values():
            assert table["server_side_encryption"] == {"enabled": True, "kms_key_arn": KEY}
    lam = files["lambda.tf.json"]["resource"]
    assert lam["aws_lambda_function"]["sync"]["kms_key_arn"] == KEY
    assert lam["aws_cloudwatch_log_group"]["sync"]["kms_key_id"] == KEY
    # AND each Pipe may encrypt to its queues with it, the Lambda decrypt with it
    for unit in ("orders", "customers", "shop_shared"):
        grant = statements(files, f"{unit}_pipe")["UseProjectKey"]
        assert grant["actions"] == ["kms:Decrypt", "kms:GenerateDataKey"] and grant["resources"] == [KEY]
    sync = statements(files, "sync")
    assert sync["UseProjectKey"]["actions"] == ["kms:Decrypt"] and sync["UseProjectKey"]["resources"] == [KEY]
    # AND the secret's key only through Secrets Manager
    secret = sync["DecryptDatabaseSecret"]
    assert secret["actions"] == ["kms:Decrypt"] and secret["resources"] == [SECRET_KEY]
    assert secret["condition"] == [
        {
            "test": "StringEquals",
            "variable": "kms:ViaService",
            "values": ["secretsmanager.ap-northeast-1.amazonaws.com"],
        }
    ]


def test_iam_authentication_sets_the_connection_and_grants_rds_db_connect_on_that_user(
    project: Path,
) -> None:
    edit_project(project, iam_auth)
    model, _ = validated(project)
    assert model is not None
    files = terraform_files(model)
    env = files["lambda.tf.json"]["resource"]["aws_lambda_function"]["sync"]["environment"]["variables"]
    assert env == {
        "SYNC_REGISTRY": "registry.json",
        "SYNC_DB_TLS": "verify-full",
        "SYNC_DB_AUTH": "iam",
        "SYNC_DB_ENGINE": "postgresql",
        "SYNC_DB_HOST": PROXY_AUTH["host"],
        "SYNC_DB_PORT": "5432",
        "SYNC_DB_USER": "ddb_sync",
        "SYNC_DB_NAME": "legacy",
        "SYNC_DB_PROXY": "1",
    }
    # AND validate keeps lambda.environment off every one of them
    assert set(env) <= set(GENERATED_ENVIRONMENT)
    sync = statements(files, "sync")
    assert "ReadDatabaseSecret" not in sync
    assert sync["ConnectAsDatabaseUser"] == {
        "sid": "ConnectAsDatabaseUser",
        "effect": "Allow",
        "actions": ["rds-db:connect"],
        "resources": [
            "arn:${data.aws_partition.current.partition}:rds-db:ap-northeast-1:"
            "${data.aws_caller_identity.current.account_id}:dbuser:prx-0123456789abcdef0/ddb_sync"
        ],
    }
    # AND nothing to reach from the subnets: no endpoints are generated
    assert "network.tf.json" not in files


def test_endpoints_admit_https_from_the_functions_groups_only(model: Model, project: Path) -> None:
    # GIVEN the bundled project (a secret, aws_access: endpoints)
    net = terraform_files(model)["network.tf.json"]["resource"]
    lam = model.project.lambda_
    (endpoint,) = net["aws_vpc_endpoint"].values()
    assert endpoint == {
        "vpc_id": lam.vpc_id,
        "service_name": "com.amazonaws.ap-northeast-1.secretsmanager",
        "vpc_endpoint_type": "Interface",
        "subnet_ids": list(lam.subnet_ids),
        "security_group_ids": ["${aws_security_group.endpoints.id}"],
        "private_dns_enabled": True,
    }
    rules = net["aws_vpc_security_group_ingress_rule"].values()
    assert [(r["referenced_security_group_id"], r["from_port"], r["to_port"]) for r in rules] == [
        (g, 443, 443) for g in lam.security_group_ids
    ]
    assert "egress" not in net["aws_security_group"]["endpoints"]
    # AND endpoint_services replaces the list
    edit_project(project, lambda s: s["lambda"]["vpc"].update(endpoint_services=["secretsmanager", "sts"]))
    listed, _ = validated(project)
    assert listed is not None
    assert set(terraform_files(listed)["network.tf.json"]["resource"]["aws_vpc_endpoint"]) == {
        "secretsmanager",
        "sts",
    }


def test_service_trust_policies_name_the_resource_the_service_acts_for(model: Model) -> None:
    files = terraform_files(model)
    docs: dict[str, Any] = {}
    for doc in files.values():
        docs.update(doc.get("data", {}).get("aws_iam_policy_document", {}))
    account = "${data.aws_caller_identity.current.account_id}"
    partition = "${data.aws_partition.current.partition}"
    expected = {
        "orders_pipe_assume": f"arn:{partition}:pipes:ap-northeast-1:{account}:pipe/orders-pipe",
        "prune_assume": f"arn:{partition}:scheduler:ap-northeast-1:{account}:schedule-group/default",
    }
    for label, source in expected.items():
        (trust,) = docs[label]["statement"]
        assert trust["condition"] == [
            {"test": "StringEquals", "variable": "aws:SourceAccount", "values": [account]},
            {"test": "StringEquals", "variable": "aws:SourceArn", "values": [source]},
        ]
    # AND the Lambda's execution role this account's Lambda only
    (trust,) = docs["sync_assume"]["statement"]
    assert trust["condition"] == [
        {"test": "StringEquals", "variable": "aws:SourceAccount", "values": [account]}
    ]


# --- applied on moto ------------------------------------------------------------------------


@pytest.mark.terraform
def test_the_bundled_deployment_has_its_secrets_manager_endpoint_and_encrypted_queues(
    deployed_pipeline: DeployedPipeline, model: Model
) -> None:
    ec2 = moto_client(deployed_pipeline.endpoint, "ec2")
    net = deployed_pipeline.network
    lam = model.project.lambda_
    (endpoint,) = ec2.describe_vpc_endpoints(Filters=[{"Name": "vpc-id", "Values": [net[str(lam.vpc_id)]]}])[
        "VpcEndpoints"
    ]
    assert endpoint["ServiceName"] == "com.amazonaws.ap-northeast-1.secretsmanager"
    assert endpoint["VpcEndpointType"] == "Interface" and endpoint["PrivateDnsEnabled"] is True
    assert sorted(endpoint["SubnetIds"]) == sorted(net[s] for s in lam.subnet_ids)
    (group,) = endpoint["Groups"]
    rules = ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [group["GroupId"]]}])
    ingress = [r for r in rules["SecurityGroupRules"] if not r["IsEgress"]]
    assert [(r["ReferencedGroupInfo"]["GroupId"], r["FromPort"], r["ToPort"]) for r in ingress] == [
        (net[g], 443, 443) for g in lam.security_group_ids
    ]
    sqs = moto_client(deployed_pipeline.endpoint, "sqs")
    url = deployed_pipeline.outputs["orders_queue_url"]
    assert (
        sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]["SqsManagedSseEnabled"]
        == "true"
    )


@pytest.fixture(scope="module")
def deployed_options(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeployedPipeline]:
    """One entity (orders) with every production option on, deployed to a moto server of its
    own (the bundled deployment holds the same names): IAM database authentication through an
    RDS Proxy, a project KMS key (made on moto), and endpoints for STS in a VPC made on moto."""
    terraform_or_skip()
    with running_moto() as moto_server:
        yield _deploy_options(moto_server, tmp_path_factory)


def _deploy_options(moto_server: str, tmp_path_factory: pytest.TempPathFactory) -> DeployedPipeline:
    root = copy_project(tmp_path_factory.mktemp("options") / "project")
    for mapping in (root / "mappings").iterdir():
        if mapping.name != "orders.yaml":
            mapping.unlink() if mapping.is_file() else shutil.rmtree(mapping)
    key = moto_client(moto_server, "kms").create_key(Description="ddb-sql-sync options test")["KeyMetadata"]
    edit_project(
        root,
        lambda s: (
            iam_auth(s),
            s.update(encryption={"kms_key_arn": key["Arn"]}),
            s["lambda"]["vpc"].update(endpoint_services=["sts"]),
            s["lambda"].update(function_name="options-sync"),
        ),
    )
    network = moto_network(moto_server, root)
    return deploy(root, moto_server, network)


@pytest.mark.terraform
def test_every_option_applies_on_moto(deployed_options: DeployedPipeline) -> None:
    endpoint = deployed_options.endpoint
    key = moto_client(endpoint, "kms").list_keys()["Keys"]
    key_arns = {k["KeyArn"] for k in key}
    # THEN the function connects with IAM auth through the proxy, its environment under the key
    fn = moto_client(endpoint, "lambda").get_function_configuration(FunctionName="options-sync")
    assert fn["KMSKeyArn"] in key_arns
    variables = fn["Environment"]["Variables"]
    assert variables["SYNC_DB_AUTH"] == "iam" and variables["SYNC_DB_PROXY"] == "1"
    assert "SYNC_DB_SECRET_ARN" not in variables
    # AND its role may connect as that database user of that proxy, and decrypt with the key
    iam = moto_client(endpoint, "iam")
    role = fn["Role"].rsplit("/", 1)[1]
    (policy,) = iam.list_role_policies(RoleName=role)["PolicyNames"]
    document = iam.get_role_policy(RoleName=role, PolicyName=policy)["PolicyDocument"]
    document = json.loads(document) if isinstance(document, str) else document
    by_sid = {s["Sid"]: s for s in document["Statement"]}
    account = moto_client(endpoint, "sts").get_caller_identity()["Account"]
    assert by_sid["ConnectAsDatabaseUser"]["Resource"] == (
        f"arn:aws:rds-db:ap-northeast-1:{account}:dbuser:prx-0123456789abcdef0/ddb_sync"
    )
    assert by_sid["UseProjectKey"]["Resource"] in key_arns and "ReadDatabaseSecret" not in by_sid
    # AND the queues and the log group are encrypted with the key
    sqs = moto_client(endpoint, "sqs")
    for name in ("orders_queue_url", "orders_dlq_url"):
        attributes = sqs.get_queue_attributes(QueueUrl=deployed_options.outputs[name], AttributeNames=["All"])
        assert attributes["Attributes"]["KmsMasterKeyId"] in key_arns
    (group,) = moto_client(endpoint, "logs").describe_log_groups(
        logGroupNamePrefix="/aws/lambda/options-sync"
    )["logGroups"]
    assert group["kmsKeyId"] in key_arns
    # AND the managed table too
    table = moto_client(endpoint, "dynamodb").describe_table(TableName="orders")["Table"]
    assert table["SSEDescription"]["KMSMasterKeyArn"] in key_arns
    # AND the STS endpoint stands in the VPC made for it
    ec2 = moto_client(endpoint, "ec2")
    vpc = deployed_options.network["vpc-0a1b2c3d4e5f60001"]
    endpoints = ec2.describe_vpc_endpoints(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["VpcEndpoints"]
    assert [e["ServiceName"] for e in endpoints] == ["com.amazonaws.ap-northeast-1.sts"]


def test_mysql_behind_a_proxy_is_told_the_init_query_its_timeout_needs(project: Path) -> None:
    # GIVEN MySQL behind an RDS Proxy, the Lambda's timeout 60 s
    edit_project(
        project,
        lambda s: (
            iam_auth(s),
            s["database"].update(dialect="mysql"),
            s["lambda"].update(timeout_seconds=60),
        ),
    )
    model, diags = validated(project)
    (warning,) = found(diags, "proxy-init-query")
    # THEN validate gives the exact initialization query, with the lock wait of that timeout
    assert model is not None and warning.path == "database.proxy"
    assert "SET SESSION innodb_lock_wait_timeout=6, SESSION sql_mode=" in warning.hint
    assert "SESSION time_zone='+00:00'" in warning.hint
    # AND PostgreSQL needs none
    edit_project(project, lambda s: s["database"].update(dialect="postgresql"))
    _, diags = validated(project)
    assert not found(diags, "proxy-init-query")


def test_a_limit_the_lambda_would_refuse_is_refused_by_validate(project: Path) -> None:
    edit_project(project, lambda s: s["lambda"].update(environment={"SYNC_LOCK_TIMEOUT_MS": "soon"}))
    model, diags = validated(project)
    (error,) = found(diags, "env-limit")
    assert model is None and "SYNC_LOCK_TIMEOUT_MS='soon'" in error.message


def test_the_readme_walk_through_validates_without_a_warning_of_its_own(project: Path) -> None:
    # GIVEN the project.yaml settings of README.md's "Deploying into private subnets"
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### Deploying into private subnets") : readme.index("### Security review")]
    block = section[section.index("```yaml\n") + 8 : section.index("```", section.index("```yaml\n") + 8)]
    walk = yaml.safe_load("\n".join(line.removeprefix("   ") for line in block.splitlines()))

    def merge(into: dict[str, Any], new: dict[str, Any]) -> None:
        for key, value in new.items():
            if isinstance(value, dict) and isinstance(into.get(key), dict):
                merge(into[key], value)
            else:
                into[key] = value

    def apply(settings: dict[str, Any]) -> None:
        settings["lambda"]["vpc"] = {}
        settings["database"] = {}
        merge(settings, walk)

    edit_project(project, apply)
    model, diags = validated(project)
    # THEN it validates; the only warnings are the bundled mappings' own (the article's queue settings)
    assert model is not None, [d.render() for d in diags]
    assert {d.file for d in diags} <= {"mappings/orders.yaml"}, [d.render() for d in diags]
    assert model.project.database.iam is not None and model.project.database.proxy
