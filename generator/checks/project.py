"""Checks of project.yaml: the Lambda's environment and names, the database tables, alarms."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import PurePosixPath, PureWindowsPath

from sqlalchemy import MetaData

from generator.checks.identifiers import derived_name_problems
from generator.checks.problem import Problem, warn
from generator.emit.terraform.sync_lambda import GENERATED_ENVIRONMENT
from generator.model import Project
from runtime import dialects
from runtime.config import ConfigError, Limits
from runtime.schema import ledger_table, tombstone_table


def check_project(project: Project) -> Iterator[Problem]:
    for key, value in project.lambda_.environment:
        upper = key.upper()
        if (
            any(word in upper for word in ("PASSWORD", "SECRET", "TOKEN", "CREDENTIAL"))
            or "://" in value
            and "@" in value
        ):
            yield Problem(
                ("lambda", "environment", key),
                f"'{key}' looks like a secret; environment values are written to build/ in clear",
                "put the credentials in Secrets Manager and set database.secret_arn",
                "secret-in-env",
            )
    for key, _ in project.lambda_.environment:
        if key in GENERATED_ENVIRONMENT:
            yield Problem(
                ("lambda", "environment", key),
                f"'{key}' is set by the generator (or would bypass the secret)",
                "remove it; the database settings of project.yaml set it (README.md, Command reference)",
                "env-reserved",
            )
    if len(project.lambda_.role_name) > 64:
        yield Problem(
            ("lambda",),
            f"the Lambda's IAM role name '{project.lambda_.role_name}' is longer than 64 characters",
            "shorten lambda.function_name or the project name",
            "iam-role-name",
        )
    for key, build in (("ledger_table", ledger_table), ("tombstone_table", tombstone_table)):
        base = getattr(project.database, key)
        table = build(MetaData(), base)
        names = [str(i.name) for i in table.indexes] + [str(c.name) for c in table.constraints if c.name]
        yield from derived_name_problems(("database", key), base, names, "the index or key")
    db = project.database
    if db.tls_mode != "verify-full":
        yield warn(
            ("database", "tls", "mode"),
            f"database.tls.mode {db.tls_mode}: the database's certificate is not verified, so a man in the "
            "middle inside the network goes unnoticed"
            + ("" if db.tls_mode == "require" else ", and the connection may not even be encrypted"),
            "use mode: verify-full with the database's CA bundle (ca_bundle)",
            "tls-unverified",
        )
    if project.database.ledger_table == project.database.tombstone_table:
        yield Problem(
            ("database", "tombstone_table"),
            "ledger and tombstone tables share a name",
            "use two names",
            "database-tables",
        )
    if not project.alarm_topic_arns:
        yield warn(
            ("alarms",),
            "the generated CloudWatch alarms (DLQ depth, oldest message age) notify nobody: "
            "alarms.sns_topic_arns is empty",
            "add alarms: {sns_topic_arns: [arn:aws:sns:REGION:ACCOUNT:TOPIC]}; ignore this only if another "
            "system watches the alarms' states",
            "alarms-no-actions",
        )
    package = project.lambda_.package
    if (
        PurePosixPath(package).is_absolute()
        or PureWindowsPath(package).is_absolute()
        or ".." in PurePosixPath(package.replace("\\", "/")).parts
    ):
        yield Problem(
            ("lambda", "package"),
            f"the package path {package!r} leaves build/ (it is relative to build/, where the zip is written)",
            "give a path inside build/, such as lambda.zip",
            "lambda-package",
        )
    try:
        limits = Limits.for_timeout(project.lambda_.timeout_seconds, dict(project.lambda_.environment))
    except ConfigError as exc:
        yield Problem(
            ("lambda", "environment"),
            f"the Lambda would refuse its environment at startup: {exc}",
            "give each SYNC_*_MS / SYNC_*_S limit a positive number (README.md, The sync Lambda)",
            "env-limit",
        )
    else:
        if db.proxy:
            yield from _proxy_problems(project, limits)
    if db.iam is not None:
        yield from _iam_problems(project)
    elif not db.secret_arn:
        yield warn(
            ("database",),
            "no database.secret_arn: the Lambda will read SYNC_DATABASE_URL, which Terraform does not set",
            "set database.secret_arn to the RDS secret, or use IAM database authentication (database.auth)",
            "database-secret",
        )
    yield from _network_problems(project)


IAM_SETTINGS = ("host", "user", "dbname", "resource_id")


def _iam_problems(project: Project) -> Iterator[Problem]:
    """database.auth mode iam: its settings, no secret beside it, TLS, and the proxy's id."""
    db = project.database
    assert db.iam is not None
    auth = ("database", "auth")
    for key in IAM_SETTINGS:
        if not getattr(db.iam, key):
            yield Problem(
                auth,
                f"database.auth.mode iam needs database.auth.{key}",
                f"add {key} (README.md, Database login)",
                "iam-auth",
            )
    if db.secret_arn:
        yield Problem(
            ("database", "secret_arn"),
            "database.secret_arn is set beside database.auth.mode iam: the Lambda would read no password "
            "from it, yet its role could",
            "remove secret_arn (IAM authentication needs no secret), or use auth mode password",
            "iam-auth",
        )
    if db.tls_mode == "off":
        yield Problem(
            ("database", "tls", "mode"),
            "database.tls.mode off with IAM database authentication: RDS accepts an IAM token only over "
            "TLS (https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/UsingWithRDS.IAMDBAuth.html)",
            "use tls mode verify-full (or require)",
            "iam-auth",
        )
    through_proxy = db.iam.resource_id.startswith("prx-")
    if through_proxy != db.proxy:
        yield Problem(
            ("database", "auth", "resource_id"),
            f"database.auth.resource_id {db.iam.resource_id} is "
            + (
                "an RDS Proxy's id but database.proxy is false"
                if through_proxy
                else "not an RDS Proxy's id (prx-...) but database.proxy is true"
            ),
            "behind an RDS Proxy, name the proxy's id (prx-...) and set database.proxy: true; "
            "without one, name the instance's (db-...) or cluster's (cluster-...) resource id",
            "iam-auth",
        )


def _proxy_problems(project: Project, limits: Limits) -> Iterator[Problem]:
    """Behind an RDS Proxy, what the proxy must set on its database connections (MySQL: the
    lock wait, which the runtime cannot set without pinning; runtime/dialects/mysql.py)."""
    query = dialects.for_name(project.database.dialect).proxy_init_query(limits)
    if query:
        yield warn(
            ("database", "proxy"),
            "behind an RDS Proxy the sync Lambda does not set its lock wait itself (a SET the proxy does "
            "not track pins the connection): the proxy must, or every batch is refused at connect",
            f"set the proxy's initialization query (its default target group's connection_pool_config "
            f'init_query) to "{query}" (docs/database-auth.md, RDS Proxy)',
            "proxy-init-query",
        )


def _network_problems(project: Project) -> Iterator[Problem]:
    """A function in private subnets that calls an AWS API needs a route to it."""
    lam = project.lambda_
    if not lam.subnet_ids:
        return
    vpc = ("lambda", "vpc")
    if lam.aws_access == "endpoints" and not lam.vpc_id:
        yield Problem(
            (*vpc, "aws_access"),
            "lambda.vpc.aws_access endpoints needs lambda.vpc.vpc_id: the endpoints and their security group "
            "are made in that VPC",
            "add vpc_id: the VPC of subnet_ids",
            "vpc-endpoints",
        )
    calls = project.endpoint_services() if lam.endpoint_services is None else ()
    if lam.aws_access is None and calls:
        yield warn(
            vpc,
            f"the sync Lambda runs in private subnets and calls {', '.join(calls)} (the database secret), "
            "but nothing says how it reaches it: without a NAT gateway or a VPC interface endpoint its first "
            "connection times out fetching the secret",
            "set lambda.vpc.aws_access: endpoints (with vpc_id) to generate the endpoints, or routed if the "
            "subnets already reach the service (README.md, Deploying into private subnets)",
            "vpc-no-route",
        )
