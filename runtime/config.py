"""Database configuration for the Lambda and local tools.

SYNC_DATABASE_URL wins; otherwise SYNC_DB_SECRET_ARN names a Secrets Manager secret in the
standard RDS JSON shape ({"engine", "host", "port", "username", "password", "dbname"}).
boto3 is imported only in that case, to keep the cold start light.
"""

from __future__ import annotations

import json
import math
import os
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Engine, make_url

from runtime.deadline import CURRENT


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
        from botocore.config import Config

        # A Secrets Manager endpoint out of reach (an in-VPC Lambda without a route to it)
        # fails in seconds, not after boto3's default minute.
        client = boto3.client(
            "secretsmanager",
            config=Config(connect_timeout=3, read_timeout=5, retries={"max_attempts": 2, "mode": "standard"}),
        )
    value = client.get_secret_value(SecretId=arn)
    text = value.get("SecretString")
    if not text:
        raise ConfigError(f"secret {arn} has no SecretString")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise ConfigError(f"secret {arn} is not JSON (expected the RDS secret shape)") from None


def database_url(env: Mapping[str, str] | None = None) -> URL:
    env = os.environ if env is None else env
    if env.get("SYNC_DATABASE_URL"):
        return make_url(env["SYNC_DATABASE_URL"])
    if env.get("SYNC_DB_SECRET_ARN"):
        return url_from_secret(fetch_secret(env["SYNC_DB_SECRET_ARN"]))
    raise ConfigError(
        "no database configured: set SYNC_DATABASE_URL, or SYNC_DB_SECRET_ARN to an RDS-shaped secret"
    )


class DatabaseSource:
    """Where the Lambda's database URL comes from: SYNC_DATABASE_URL (fixed), or the Secrets
    Manager secret SYNC_DB_SECRET_ARN, kept for SYNC_SECRET_TTL_SECONDS (default 300) and
    fetched again at once when the database refuses the login, so a rotated password costs
    one refused connection, never a recycled Lambda. The Secrets Manager Lambda extension
    and Powertools' parameters utility cache secrets the same way."""

    MIN_REFETCH_S = 5.0  # a password that is simply wrong does not send every batch to Secrets Manager

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        *,
        fetch: Callable[[str], dict[str, Any]] = fetch_secret,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        env = os.environ if env is None else env
        self.arn = env.get("SYNC_DB_SECRET_ARN", "") if not env.get("SYNC_DATABASE_URL") else ""
        ttl = env.get("SYNC_SECRET_TTL_SECONDS", "300")
        try:
            self.ttl = float(ttl)
        except ValueError:
            raise ConfigError(f"SYNC_SECRET_TTL_SECONDS={ttl!r}: expected a number of seconds") from None
        self._env = env
        self._fetch = fetch
        self._clock = clock
        self._url = database_url(env) if not self.arn else url_from_secret(fetch(self.arn))
        self._fetched = clock()
        self._refetched = -self.MIN_REFETCH_S  # when a refused login last had the secret fetched

    @property
    def url(self) -> URL:
        return self._url

    @property
    def stale(self) -> bool:
        return bool(self.arn) and self._clock() - self._fetched >= self.ttl

    def refetch(self, *, force: bool = False) -> bool:
        """Fetch the secret again (when it is one; after a refused login, at most once per
        MIN_REFETCH_S unless `force`); True when the URL changed."""
        now = self._clock()
        if not self.arn or (not force and now - self._refetched < self.MIN_REFETCH_S):
            return False
        self._fetched = now
        if not force:
            self._refetched = now
        url = url_from_secret(self._fetch(self.arn))
        changed = url != self._url
        self._url = url
        return changed


def _clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


# Each limit's environment variable, and whether it is a whole number of milliseconds.
LIMIT_VARIABLES = {
    "connect_timeout_s": "SYNC_CONNECT_TIMEOUT_S",
    "lock_timeout_ms": "SYNC_LOCK_TIMEOUT_MS",
    "statement_timeout_ms": "SYNC_STATEMENT_TIMEOUT_MS",
    "network_timeout_s": "SYNC_NETWORK_TIMEOUT_S",
    "margin_ms": "SYNC_DEADLINE_MARGIN_MS",
}


@dataclass(frozen=True)
class Limits:
    """Client-side limits on every wait for the database, derived from the Lambda timeout
    (Limits.for_timeout) so that one batch fits in one invocation, each overridable.

    connect_timeout_s: to open a connection (also clamped to the batch's deadline);
    lock_timeout_ms: a row lock wait before the statement gives up (a transient failure);
    statement_timeout_ms: one statement on PostgreSQL;
    network_timeout_s: a silent socket: PyMySQL's read and write timeouts, libpq's
    tcp_user_timeout (sent data never acknowledged);
    keepalive_*: TCP keepalives on PostgreSQL connections, which find a dead peer while the
    client waits for an answer;
    margin_ms: how long before the Lambda's deadline the handler stops and answers."""

    connect_timeout_s: float = 5
    lock_timeout_ms: int = 3000
    statement_timeout_ms: int = 10000
    network_timeout_s: float = 12
    keepalive_idle_s: int = 3
    keepalive_interval_s: int = 1
    keepalive_count: int = 3
    margin_ms: int = 1500

    @classmethod
    def for_timeout(cls, timeout_s: float | None, env: Mapping[str, str] | None = None) -> Limits:
        """The limits for a Lambda timeout of `timeout_s` seconds (30 when unknown), each
        replaced by its environment variable when set (LIMIT_VARIABLES)."""
        t = timeout_s if timeout_s and timeout_s > 0 else 30.0
        statement_ms = int(_clamp(t * 1000 / 3, 1000, 300_000))
        values: dict[str, Any] = {
            "connect_timeout_s": round(_clamp(t / 6, 2, 10), 1),
            "lock_timeout_ms": int(_clamp(t * 100, 500, 10_000)),
            "statement_timeout_ms": statement_ms,
            "network_timeout_s": round(statement_ms / 1000 + 2, 1),
            "keepalive_idle_s": int(_clamp(t / 10, 1, 30)),
            "keepalive_interval_s": int(_clamp(t / 30, 1, 10)),
            "keepalive_count": 3,
            "margin_ms": int(_clamp(t * 50, 500, 5000)),
        }
        env = os.environ if env is None else env
        for key, var in LIMIT_VARIABLES.items():
            text = env.get(var)
            if not text:
                continue
            try:
                value = float(text)
            except ValueError:
                value = -1.0
            if not value > 0:
                raise ConfigError(f"{var}={text!r}: expected a positive number ({key.rsplit('_', 1)[-1]})")
            values[key] = int(value) if key.endswith("_ms") else value
        return cls(**values)


# The limits each engine was made with (apply_batch plans its per-message waits with them).
_LIMITS: weakref.WeakKeyDictionary[Engine, Limits] = weakref.WeakKeyDictionary()
# The shortest connect timeout each driver honours (libpq treats anything below 2 s as 2 s).
MIN_CONNECT_S = {"postgresql": 2.0, "mysql": 0.5, "mariadb": 0.5}


def limits_of(engine: Engine) -> Limits:
    return _LIMITS.get(engine) or Limits()


def connect_floor_s(engine: Engine) -> float:
    """The least time a new connection may take to fail on this engine's driver."""
    return MIN_CONNECT_S.get(engine.url.get_backend_name(), 0.0)


def make_engine(
    url: URL | str,
    *,
    limits: Limits | None = None,
    lock_timeout_ms: int | None = None,
    statement_timeout_ms: int | None = None,
) -> Engine:
    """An engine suited to a Lambda: one pooled connection kept across warm invocations,
    recycled before typical idle cutoffs, every wait bounded by `limits` (by default
    Limits.for_timeout(None): a 30 s Lambda, or the environment's settings), and
    multi-statement enabled on MySQL so a batch's writes go out in one round trip."""
    url = make_url(url)
    limits = limits or Limits.for_timeout(None)
    if lock_timeout_ms is not None:
        limits = replace(limits, lock_timeout_ms=lock_timeout_ms)
    if statement_timeout_ms is not None:
        limits = replace(limits, statement_timeout_ms=statement_timeout_ms)
    backend = url.get_backend_name()
    # No pre-ping and no reset-on-return: each would cost a round trip per invocation. A dead
    # connection is detected by the batch itself, invalidated, and the batch retried on a
    # fresh one; every transaction ends in an explicit COMMIT or ROLLBACK, and a connection
    # left in any other state is closed, never returned (runtime.sql).
    kwargs: dict[str, Any] = {
        "pool_size": 1,
        "max_overflow": 0,
        "pool_recycle": 280,
        "pool_pre_ping": False,
        "pool_reset_on_return": None,
    }
    connect_args: dict[str, Any] = {}
    if backend == "postgresql":
        connect_args["connect_timeout"] = max(2, math.ceil(limits.connect_timeout_s))
        connect_args["application_name"] = "ddb-sql-sync"
        # Every statement the runtime sends finds rows by a unique key (the mapped key, the
        # ledger's and the tombstones' primary keys). On a young table without statistics the
        # planner would pick sequential scans, and a prepared statement would keep that plan
        # for the life of the connection; with sequential scans off, every plan is a key
        # lookup, so each statement shape is planned once per connection (generic plans)
        # instead of on every execution. The settings apply to this connection only.
        # idle_in_transaction_session_timeout: should a client ever vanish inside a
        # transaction, the server ends it rather than keep its locks.
        connect_args["options"] = (
            f"-c lock_timeout={limits.lock_timeout_ms} -c statement_timeout={limits.statement_timeout_ms} "
            f"-c idle_in_transaction_session_timeout={max(60_000, 2 * limits.statement_timeout_ms)} "
            "-c enable_seqscan=off -c plan_cache_mode=force_generic_plan"
        )
        # A dead peer is found while waiting for an answer (keepalives) or while sent data
        # is never acknowledged (tcp_user_timeout, milliseconds; Linux).
        connect_args["keepalives"] = 1
        connect_args["keepalives_idle"] = limits.keepalive_idle_s
        connect_args["keepalives_interval"] = limits.keepalive_interval_s
        connect_args["keepalives_count"] = limits.keepalive_count
        connect_args["tcp_user_timeout"] = int(limits.network_timeout_s * 1000)
    elif backend in ("mysql", "mariadb"):
        from pymysql.constants import CLIENT

        connect_args["connect_timeout"] = limits.connect_timeout_s
        # A server that stops answering (or a path that freezes) fails the wait after this long
        # instead of never; a lock wait (innodb_lock_wait_timeout) always ends well before it.
        connect_args["read_timeout"] = limits.network_timeout_s
        connect_args["write_timeout"] = limits.network_timeout_s
        # SQLAlchemy always sets FOUND_ROWS; connect_args replace its flags, so keep it.
        connect_args["client_flag"] = CLIENT.MULTI_STATEMENTS | CLIENT.FOUND_ROWS
        connect_args["init_command"] = (
            f"SET SESSION innodb_lock_wait_timeout={max(1, math.ceil(limits.lock_timeout_ms / 1000))}, "
            "SESSION sql_mode='STRICT_ALL_TABLES,NO_ZERO_DATE,NO_ENGINE_SUBSTITUTION', SESSION time_zone='+00:00'"
        )
        connect_args["charset"] = "utf8mb4"
    elif backend == "sqlite":
        kwargs = {}
        connect_args["timeout"] = limits.lock_timeout_ms / 1000
    engine = create_engine(url, connect_args=connect_args, **kwargs)
    _LIMITS[engine] = limits
    if backend == "sqlite":
        # SQLite enforces foreign keys only when asked, per connection.
        @event.listens_for(engine, "connect")
        def _foreign_keys(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

    elif backend in MIN_CONNECT_S:
        _connect_within_the_deadline(engine, backend, limits)
    return engine


def _connect_within_the_deadline(engine: Engine, backend: str, limits: Limits) -> None:
    """A new connection never waits past the batch's deadline (runtime.deadline.CURRENT):
    its connect timeout is clamped to the time left. PyMySQL reads the server's greeting with
    its read timeout, so that is clamped for the handshake too, and set back once connected."""
    floor = MIN_CONNECT_S[backend]

    @event.listens_for(engine, "do_connect")
    def _clamp(_dialect: Any, _record: Any, _args: Any, params: dict[str, Any]) -> None:
        at = CURRENT.get()
        if at is None:
            return
        left = at - time.monotonic() - 0.25
        wanted = min(limits.connect_timeout_s, left)
        if backend == "postgresql":
            params["connect_timeout"] = max(2, int(wanted))  # libpq: whole seconds, at least 2
        else:
            wanted = max(floor, wanted)
            params["connect_timeout"] = wanted
            params["read_timeout"] = min(limits.network_timeout_s, wanted)
            params["write_timeout"] = min(limits.network_timeout_s, wanted)

    if backend != "postgresql":

        @event.listens_for(engine, "connect")
        def _restore(dbapi_connection: Any, _record: Any) -> None:
            if hasattr(dbapi_connection, "_read_timeout"):  # PyMySQL's own fields for them
                dbapi_connection._read_timeout = limits.network_timeout_s
                dbapi_connection._write_timeout = limits.network_timeout_s
