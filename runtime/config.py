"""Database configuration for the Lambda and local tools.

SYNC_DATABASE_URL wins; otherwise SYNC_DB_SECRET_ARN names a Secrets Manager secret in the
standard RDS JSON shape ({"engine", "host", "port", "username", "password", "dbname"}).
boto3 is imported only in that case, to keep the cold start light.
"""

from __future__ import annotations

import json
import os
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Engine, make_url


class ConfigError(Exception):
    pass


DRIVERS = {
    "postgres": "postgresql+psycopg",
    "postgresql": "postgresql+psycopg",
    "aurora-postgresql": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mysql+pymysql",
    "aurora-mysql": "mysql+pymysql",
    "aurora": "mysql+pymysql",
}


def url_from_secret(secret: dict[str, Any]) -> URL:
    """The standard RDS secret JSON -> a SQLAlchemy URL (the password never enters a string)."""
    try:
        engine = str(secret.get("engine", "postgres")).lower()
        driver = DRIVERS[engine]
        return URL.create(
            driver,
            username=secret["username"],
            password=secret["password"],
            host=secret["host"],
            port=int(secret["port"]) if secret.get("port") else None,
            database=secret.get("dbname") or secret.get("database"),
        )
    except KeyError as exc:
        raise ConfigError(
            f"the database secret lacks {exc} (expected the RDS shape: engine, host, port, username, password, dbname)"
        ) from None


def fetch_secret(arn: str, *, client: Any = None) -> dict[str, Any]:
    if client is None:
        import boto3  # only here: the cold start of a URL-configured Lambda never pays for it

        client = boto3.client("secretsmanager")
    value = client.get_secret_value(SecretId=arn)
    text = value.get("SecretString")
    if not text:
        raise ConfigError(f"secret {arn} has no SecretString")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise ConfigError(f"secret {arn} is not JSON (expected the RDS secret shape)") from None


def database_url(env: dict[str, str] | None = None) -> URL:
    env = dict(os.environ) if env is None else env
    if env.get("SYNC_DATABASE_URL"):
        return make_url(env["SYNC_DATABASE_URL"])
    if env.get("SYNC_DB_SECRET_ARN"):
        return url_from_secret(fetch_secret(env["SYNC_DB_SECRET_ARN"]))
    raise ConfigError(
        "no database configured: set SYNC_DATABASE_URL, or SYNC_DB_SECRET_ARN to an RDS-shaped secret"
    )


def make_engine(
    url: URL | str, *, lock_timeout_ms: int | None = None, statement_timeout_ms: int | None = None
) -> Engine:
    """An engine suited to a Lambda: one pooled connection kept across warm invocations,
    recycled before typical idle cutoffs, short connect timeout, and multi-statement enabled
    on MySQL so a batch's writes go out in one round trip."""
    url = make_url(url)
    lock_timeout_ms = (
        lock_timeout_ms
        if lock_timeout_ms is not None
        else int(os.environ.get("SYNC_LOCK_TIMEOUT_MS", "5000"))
    )
    statement_timeout_ms = (
        statement_timeout_ms
        if statement_timeout_ms is not None
        else int(os.environ.get("SYNC_STATEMENT_TIMEOUT_MS", "20000"))
    )
    backend = url.get_backend_name()
    # No pre-ping and no reset-on-return: each would cost a round trip per invocation. A dead
    # connection is detected by the batch itself, invalidated, and the batch retried on a
    # fresh one; every transaction ends in an explicit COMMIT or ROLLBACK.
    kwargs: dict[str, Any] = {
        "pool_size": 1,
        "max_overflow": 0,
        "pool_recycle": 280,
        "pool_pre_ping": False,
        "pool_reset_on_return": None,
    }
    connect_args: dict[str, Any] = {}
    if backend == "postgresql":
        connect_args["connect_timeout"] = 5
        connect_args["application_name"] = "ddb-sql-sync"
        # Every statement the runtime sends finds rows by a unique key (the mapped key, the
        # ledger's and the tombstones' primary keys). On a young table without statistics the
        # planner would pick sequential scans, and a prepared statement would keep that plan
        # for the life of the connection; with sequential scans off, every plan is a key
        # lookup, so each statement shape is planned once per connection (generic plans)
        # instead of on every execution. The settings apply to this connection only.
        connect_args["options"] = (
            f"-c lock_timeout={lock_timeout_ms} -c statement_timeout={statement_timeout_ms} "
            "-c enable_seqscan=off -c plan_cache_mode=force_generic_plan"
        )
    elif backend in ("mysql", "mariadb"):
        from pymysql.constants import CLIENT

        connect_args["connect_timeout"] = 5
        # SQLAlchemy always sets FOUND_ROWS; connect_args replace its flags, so keep it.
        connect_args["client_flag"] = CLIENT.MULTI_STATEMENTS | CLIENT.FOUND_ROWS
        connect_args["init_command"] = (
            f"SET SESSION innodb_lock_wait_timeout={max(1, lock_timeout_ms // 1000)}, "
            "SESSION sql_mode='STRICT_ALL_TABLES,NO_ZERO_DATE,NO_ENGINE_SUBSTITUTION', SESSION time_zone='+00:00'"
        )
        connect_args["charset"] = "utf8mb4"
    elif backend == "sqlite":
        kwargs = {}
        connect_args["timeout"] = lock_timeout_ms / 1000
    engine = create_engine(url, connect_args=connect_args, **kwargs)
    if backend == "sqlite":
        # SQLite enforces foreign keys only when asked, per connection.
        @event.listens_for(engine, "connect")
        def _foreign_keys(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

    return engine
