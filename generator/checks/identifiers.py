"""Checks of names: SQL identifiers the databases reserve, and entity names the generated
Terraform files or IAM would refuse."""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy.dialects.mysql.reserved_words import RESERVED_WORDS_MARIADB, RESERVED_WORDS_MYSQL
from sqlalchemy.dialects.postgresql.base import RESERVED_WORDS as RESERVED_WORDS_POSTGRESQL

from generator.checks.problem import Problem, warn
from generator.diagnostics import PathT
from generator.model import Entity, Project

# Words reserved in PostgreSQL, MySQL or MariaDB: legal as identifiers only when quoted. These are
# SQLAlchemy's lists, the ones its identifier preparers quote by; the runtime's statements and the
# reference DDL are compiled by SQLAlchemy, so these are exactly the names that come out quoted.
# (MariaDB's list is on no preparer class: a MySQL preparer takes it once the server is MariaDB.)
RESERVED = RESERVED_WORDS_POSTGRESQL | RESERVED_WORDS_MYSQL | RESERVED_WORDS_MARIADB

# PostgreSQL cuts a longer identifier to 63 bytes (NAMEDATALEN - 1), so two long names can
# become one; MySQL and MariaDB refuse more than 64 characters. The schema's identifier pattern
# holds a name to 63; the names made from one (an index, a constraint) must fit too.
IDENTIFIER_MAX = 63


def derived_name_problems(path: PathT, base: str, names: list[str], what: str) -> Iterator[Problem]:
    """The longest of the names made from `base` (index and constraint names), if it is longer
    than the databases allow."""
    name = max(names, key=len, default="")
    if len(name) > IDENTIFIER_MAX:
        yield Problem(
            path,
            f"{what} '{name}' made from '{base}' is {len(name)} characters; PostgreSQL cuts names at "
            f"{IDENTIFIER_MAX} and MySQL refuses more than 64",
            f"shorten '{base}' by at least {len(name) - IDENTIFIER_MAX} character(s)",
            "identifier-too-long",
        )


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
