"""Checks of project.yaml: the Lambda's environment and names, the database tables, alarms."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import PurePosixPath, PureWindowsPath

from sqlalchemy import MetaData

from generator.checks.identifiers import derived_name_problems
from generator.checks.problem import Problem, warn
from generator.model import Project
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
        if key in ("SYNC_REGISTRY", "SYNC_DB_SECRET_ARN", "SYNC_DATABASE_URL"):
            yield Problem(
                ("lambda", "environment", key),
                f"'{key}' is set by the generator (or would bypass the secret)",
                "remove it; use database.secret_arn for the connection",
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
    if not project.database.secret_arn:
        yield warn(
            ("database",),
            "no database.secret_arn: the Lambda will read SYNC_DATABASE_URL, which Terraform does not set",
            "set database.secret_arn to the RDS secret",
            "database-secret",
        )
