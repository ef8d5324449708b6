"""One object per database: what differs between PostgreSQL, MySQL/MariaDB and SQLite (statement
forms, sessions, connect arguments, error classification) lives in its module here, and this
is the only place that tells them apart by name. Each module is imported when first asked
for, so a Lambda loads its own database's code alone."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from runtime.dialects.base import Dialect

if TYPE_CHECKING:
    from sqlalchemy.types import TypeEngine

# Names a database goes by (SQLAlchemy's dialect names, the registry's `database.dialect`)
# -> the module that holds its dialect.
_MODULES = {"postgresql": "postgresql", "mysql": "mysql", "mariadb": "mysql", "sqlite": "sqlite"}
# The `engine` field of an RDS secret (Secrets Manager's RDS credentials shape) -> dialect name.
SECRET_ENGINES = {
    "postgres": "postgresql",
    "postgresql": "postgresql",
    "aurora-postgresql": "postgresql",
    "mysql": "mysql",
    "mariadb": "mysql",
    "aurora-mysql": "mysql",
    "aurora": "mysql",
}
NAMES = ("postgresql", "mysql", "sqlite")  # one per dialect object
_LOADED: dict[str, Dialect] = {}


class UnknownDialect(ValueError):
    pass


def for_name(name: str) -> Dialect:
    """The dialect a database name (or a SQLAlchemy backend name) stands for."""
    dialect = _LOADED.get(name)
    if dialect is None:
        module = _MODULES.get(name)
        if module is None:
            raise UnknownDialect(f"no dialect {name!r} (known: {', '.join(sorted(_MODULES))})")
        dialect = _LOADED[name] = importlib.import_module(f"runtime.dialects.{module}").DIALECT
    return dialect


def of(bind: Any) -> Dialect:
    """The dialect of an Engine, a Connection, a URL or a SQLAlchemy dialect."""
    if hasattr(bind, "get_backend_name"):  # a URL
        return for_name(bind.get_backend_name())
    sa_dialect = getattr(bind, "dialect", bind)
    return for_name(sa_dialect.name)


def json_type() -> TypeEngine[Any]:
    """A JSON column: jsonb on PostgreSQL (indexable, compact), each other database's JSON."""
    from sqlalchemy import JSON
    from sqlalchemy.dialects.postgresql import JSONB

    return JSON().with_variant(JSONB(), "postgresql")


def surrogate_key_type() -> TypeEngine[Any]:
    """An auto-increment key: BIGINT, but INTEGER on SQLite, whose rowid alias (the column that
    numbers itself) must be declared exactly INTEGER PRIMARY KEY."""
    from sqlalchemy import BigInteger, Integer

    return BigInteger().with_variant(Integer(), "sqlite")


def for_secret_engine(engine: str) -> Dialect:
    name = SECRET_ENGINES.get(engine.lower())
    if name is None:
        raise UnknownDialect(
            f"the database secret's engine {engine!r} is not supported (known: {', '.join(SECRET_ENGINES)})"
        )
    return for_name(name)


__all__ = [
    "NAMES",
    "SECRET_ENGINES",
    "Dialect",
    "UnknownDialect",
    "for_name",
    "for_secret_engine",
    "json_type",
    "of",
    "surrogate_key_type",
]
