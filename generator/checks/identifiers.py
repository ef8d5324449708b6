"""Checks of names: SQL identifiers the databases reserve, and entity names the generated
Terraform files or IAM would refuse."""

from __future__ import annotations

from collections.abc import Iterator

from generator.checks.problem import Problem, warn
from generator.diagnostics import PathT
from generator.model import Entity, Project

# Words reserved in PostgreSQL or MySQL: legal as identifiers only when quoted.
RESERVED = {
    "all",
    "alter",
    "analyze",
    "and",
    "any",
    "as",
    "asc",
    "between",
    "both",
    "by",
    "case",
    "cast",
    "check",
    "collate",
    "column",
    "constraint",
    "create",
    "cross",
    "current_date",
    "current_time",
    "current_timestamp",
    "current_user",
    "default",
    "delete",
    "desc",
    "distinct",
    "drop",
    "else",
    "end",
    "except",
    "exists",
    "false",
    "fetch",
    "for",
    "foreign",
    "from",
    "grant",
    "group",
    "having",
    "in",
    "index",
    "inner",
    "insert",
    "interval",
    "into",
    "is",
    "join",
    "key",
    "keys",
    "leading",
    "left",
    "like",
    "limit",
    "not",
    "null",
    "offset",
    "on",
    "or",
    "order",
    "outer",
    "primary",
    "range",
    "references",
    "right",
    "select",
    "set",
    "table",
    "then",
    "to",
    "trailing",
    "true",
    "union",
    "unique",
    "update",
    "user",
    "using",
    "values",
    "when",
    "where",
    "with",
}


def sql_identifier_problems(path: PathT, ident: str) -> Iterator[Problem]:
    """A table or column name that the databases reserve, or that PostgreSQL would fold to lower case."""
    if ident.lower() in RESERVED:
        yield warn(
            path,
            f"'{ident}' is a reserved word in PostgreSQL or MySQL; it will always be quoted",
            "keep it if the legacy schema has it; otherwise choose another name",
            "sql-reserved",
        )
    elif ident != ident.lower():
        yield warn(
            path,
            f"'{ident}' has capitals; PostgreSQL folds unquoted names to lower case, so it is quoted and case-sensitive",
            "use the exact lower-case name unless the legacy table really was created quoted",
            "sql-case",
        )


TERRAFORM_FILE_NAMES = {"providers", "data", "lambda", "override"}


def check_names(entity: Entity, project: Project) -> Iterator[Problem]:
    if entity.name in TERRAFORM_FILE_NAMES or entity.name.endswith("_override"):
        yield Problem(
            ("entity",),
            f"entity name '{entity.name}' collides with a generated Terraform file (or makes it an override file)",
            "choose another entity name",
            "entity-name",
        )
    if len(entity.pipeline.pipe.role_name) > 64:
        yield Problem(
            ("entity",),
            f"the Pipe's IAM role name '{entity.pipeline.pipe.role_name}' is {len(entity.pipeline.pipe.role_name)} characters; IAM allows 64",
            "shorten the entity name, the project name or the prefix",
            "iam-role-name",
        )
