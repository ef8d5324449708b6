"""Database configuration for the Lambda and local tools.

SYNC_DB_AUTH chooses how the runtime logs in:
- password (the default): SYNC_DATABASE_URL wins; otherwise SYNC_DB_SECRET_ARN names a Secrets
  Manager secret in the standard RDS JSON shape ({"engine", "host", "port", "username",
  "password", "dbname"});
- iam: no password anywhere; each new connection's password is an RDS IAM auth token
  (runtime.iam_auth), for SYNC_DATABASE_URL without a password (local tools), or for
  SYNC_DB_HOST, SYNC_DB_PORT, SYNC_DB_USER, SYNC_DB_NAME and SYNC_DB_ENGINE (the Lambda), in
  the region AWS_REGION (or AWS_DEFAULT_REGION). It needs TLS: SYNC_DB_TLS=off is refused.
SYNC_DB_PROXY=1 says the host is an RDS Proxy endpoint: the connections avoid what pins a
client connection to one database connection (runtime.dialects, docs/database-auth.md).
boto3 is imported only for a secret or a token, to keep the cold start light.
"""

from __future__ import annotations

import json
import os
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Engine, make_url

from runtime import dialects
from runtime.dialects.base import mark_proxied
from runtime.iam_auth import IamTokens, Signer
from runtime.tls import Tls, TlsError, TlsMode


class ConfigError(Exception):
    pass


class DbAuth(StrEnum):
    PASSWORD = "password"
    IAM = "iam"


# What SYNC_DB_AUTH=iam reads when SYNC_DATABASE_URL is not set (SYNC_DB_PORT may be left
# out: the engine's default port).
IAM_VARIABLES = ("SYNC_DB_HOST", "SYNC_DB_USER", "SYNC_DB_NAME", "SYNC_DB_ENGINE")


def db_auth(env: Mapping[str, str] | None = None) -> DbAuth:
    env = os.environ if env is None else env
    text = env.get("SYNC_DB_AUTH", "") or DbAuth.PASSWORD.value
    try:
        return DbAuth(text)
    except ValueError:
        raise ConfigError(f"SYNC_DB_AUTH={text!r}: expected password or iam") from None


def behind_proxy(env: Mapping[str, str] | None = None) -> bool:
    """SYNC_DB_PROXY: 1 when the database host is an RDS Proxy endpoint."""
    env = os.environ if env is None else env
    text = env.get("SYNC_DB_PROXY", "")
    if text not in ("", "0", "1"):
        raise ConfigError(f"SYNC_DB_PROXY={text!r}: expected 1 (the host is an RDS Proxy endpoint) or 0")
    return text == "1"


def iam_url(env: Mapping[str, str]) -> URL:
    """The URL SYNC_DB_HOST, SYNC_DB_PORT, SYNC_DB_USER, SYNC_DB_NAME and SYNC_DB_ENGINE name
    (no password: SYNC_DB_AUTH=iam signs one per connection)."""
    missing = [v for v in IAM_VARIABLES if not env.get(v)]
    if missing:
        raise ConfigError(
            f"SYNC_DB_AUTH=iam without SYNC_DATABASE_URL needs {', '.join(IAM_VARIABLES)} "
            f"(and SYNC_DB_PORT unless the engine's default); not set: {', '.join(missing)}"
        )
    try:
        dialect = dialects.for_secret_engine(env["SYNC_DB_ENGINE"])
    except dialects.UnknownDialect:
        known = ", ".join(dialects.SECRET_ENGINES)
        raise ConfigError(f"SYNC_DB_ENGINE={env['SYNC_DB_ENGINE']!r}: expected one of {known}") from None
    port_text = env.get("SYNC_DB_PORT") or ""
    port = dialect.default_port
    if port_text:
        port = int(port_text) if port_text.isdigit() else 0
        if not 0 < port < 65536:
            raise ConfigError(f"SYNC_DB_PORT={port_text!r}: expected a port number (1..65535)")
    return URL.create(
        dialect.url_scheme,
        username=env["SYNC_DB_USER"],
        host=env["SYNC_DB_HOST"],
        port=port,
        database=env["SYNC_DB_NAME"],
    )


def tls_settings(env: Mapping[str, str]) -> Tls:
    """SYNC_DB_TLS and SYNC_DB_CA_BUNDLE (runtime.tls), a setting that cannot work a ConfigError."""
    try:
        return Tls.from_env(env)
    except TlsError as exc:
        raise ConfigError(str(exc)) from None


def iam_tokens(
    url: URL,
    env: Mapping[str, str] | None = None,
    *,
    sign: Signer | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> IamTokens:
    """The IAM login tokens of `url`'s user on its host and port, after checking that IAM
    authentication can work there: a network host, a user, no password, a region, TLS."""
    env = os.environ if env is None else env
    dialect = dialects.of(url)
    if dialect.default_port is None:
        raise ConfigError(
            f"SYNC_DB_AUTH=iam needs a PostgreSQL or MySQL server, not {url.get_backend_name()}"
        )
    if url.password is not None:
        raise ConfigError(
            "SYNC_DB_AUTH=iam: the database URL carries a password; IAM authentication signs a token "
            "for each connection instead: leave the password out (or unset SYNC_DB_AUTH)"
        )
    if not url.host or url.host.startswith("/") or not url.username:
        raise ConfigError(
            "SYNC_DB_AUTH=iam: the database URL needs a user and a network host to sign a token for"
        )
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if not region:
        raise ConfigError(
            "SYNC_DB_AUTH=iam signs its token for a region: set AWS_REGION (Lambda sets it) or AWS_DEFAULT_REGION"
        )
    if tls_settings(env).mode is TlsMode.OFF:
        raise ConfigError(
            "SYNC_DB_AUTH=iam with SYNC_DB_TLS=off: RDS accepts an IAM token only over TLS; "
            "set database.tls.mode to verify-full (or require)"
        )
    port = url.port or dialect.default_port
    return IamTokens(url.host, port, url.username, region, sign=sign, clock=clock)


def url_from_secret(secret: dict[str, Any]) -> URL:
    """The standard RDS secret JSON -> a SQLAlchemy URL (the password never enters a string)."""
    try:
        dialect = dialects.for_secret_engine(str(secret.get("engine", "postgres")))
    except dialects.UnknownDialect as exc:
        raise ConfigError(str(exc)) from None
    try:
        return URL.create(
            dialect.url_scheme,
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
        secret = json.loads(text)
    except json.JSONDecodeError:
        raise ConfigError(f"secret {arn} is not JSON (expected the RDS secret shape)") from None
    if not isinstance(secret, dict):
        raise ConfigError(f"secret {arn} is not a JSON object (expected the RDS secret shape)")
    return secret


def database_url(env: Mapping[str, str] | None = None) -> URL:
    env = os.environ if env is None else env
    auth = db_auth(env)
    if env.get("SYNC_DATABASE_URL"):
        return make_url(env["SYNC_DATABASE_URL"])
    if auth is DbAuth.IAM:
        if env.get("SYNC_DB_SECRET_ARN"):
            raise ConfigError(
                "SYNC_DB_AUTH=iam and SYNC_DB_SECRET_ARN: IAM authentication uses no secret; unset one of them"
            )
        return iam_url(env)
    if env.get("SYNC_DB_SECRET_ARN"):
        return url_from_secret(fetch_secret(env["SYNC_DB_SECRET_ARN"]))
    raise ConfigError(
        "no database configured: set SYNC_DATABASE_URL, or SYNC_DB_SECRET_ARN to an RDS-shaped secret"
    )


class DatabaseSource:
    """Where the Lambda's database URL and login come from: SYNC_DATABASE_URL (fixed), or the
    Secrets Manager secret SYNC_DB_SECRET_ARN, kept for SYNC_SECRET_TTL_SECONDS (default 300)
    and fetched again at once when the database refuses the login, so a rotated password costs
    one refused connection, never a recycled Lambda. The Secrets Manager Lambda extension
    and Powertools' parameters utility cache secrets the same way. With SYNC_DB_AUTH=iam the
    password of each new connection is an IAM token (`password`, runtime.iam_auth), and a
    refused login has the next one signed anew."""

    MIN_REFETCH_S = 5.0  # a password that is simply wrong does not send every batch to Secrets Manager

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        *,
        fetch: Callable[[str], dict[str, Any]] = fetch_secret,
        clock: Callable[[], float] = time.monotonic,
        sign: Signer | None = None,
    ) -> None:
        env = os.environ if env is None else env
        iam = db_auth(env) is DbAuth.IAM
        self.arn = env.get("SYNC_DB_SECRET_ARN", "") if not (env.get("SYNC_DATABASE_URL") or iam) else ""
        ttl = env.get("SYNC_SECRET_TTL_SECONDS", "300")
        try:
            self.ttl = float(ttl)
        except ValueError:
            raise ConfigError(f"SYNC_SECRET_TTL_SECONDS={ttl!r}: expected a number of seconds") from None
        self._env = env
        self._fetch = fetch
        self._clock = clock
        self._url = database_url(env) if not self.arn else url_from_secret(fetch(self.arn))
        self.tokens = iam_tokens(self._url, env, sign=sign, clock=clock) if iam else None
        self._fetched = clock()
        self._refetched = -self.MIN_REFETCH_S  # when a refused login last had the secret fetched

    @property
    def url(self) -> URL:
        return self._url

    @property
    def password(self) -> Callable[[], str] | None:
        """What gives each new connection its password (IAM: a token), or None: the URL's."""
        return self.tokens.token if self.tokens is not None else None

    @property
    def stale(self) -> bool:
        return bool(self.arn) and self._clock() - self._fetched >= self.ttl

    def refetch(self, *, force: bool = False) -> bool:
        """Fetch the secret again (when it is one; after a refused login, at most once per
        MIN_REFETCH_S unless `force`); True when the URL changed. With IAM authentication,
        after a refused login: the token is discarded, and the next connection signs one."""
        now = self._clock()
        if self.tokens is not None:
            if force or now - self._refetched < self.MIN_REFETCH_S:
                return False
            self._refetched = now
            self.tokens.expire()
            return True
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


def limits_of(engine: Engine) -> Limits:
    return _LIMITS.get(engine) or Limits()


def connect_floor_s(engine: Engine) -> float:
    """The least time a new connection may take to fail on this engine's driver."""
    return dialects.of(engine).min_connect_seconds


def make_engine(
    url: URL | str,
    *,
    limits: Limits | None = None,
    lock_timeout_ms: int | None = None,
    statement_timeout_ms: int | None = None,
    password: Callable[[], str] | None = None,
    env: Mapping[str, str] | None = None,
) -> Engine:
    """An engine suited to a Lambda: one pooled connection kept across warm invocations,
    every wait bounded by `limits` (by default Limits.for_timeout(None): a 30 s Lambda, or the
    environment's settings); the connect arguments, pool and connection hooks are the
    dialect's (runtime.dialects), TLS as SYNC_DB_TLS / SYNC_DB_CA_BUNDLE say (runtime.tls),
    connections shaped for an RDS Proxy when SYNC_DB_PROXY=1.

    `password` gives each new connection its password (DatabaseSource.password: IAM tokens);
    without it, SYNC_DB_AUTH=iam makes the engine sign its own tokens (the local tools)."""
    env = os.environ if env is None else env
    url = make_url(url)
    limits = limits or Limits.for_timeout(None, env)
    if lock_timeout_ms is not None:
        limits = replace(limits, lock_timeout_ms=lock_timeout_ms)
    if statement_timeout_ms is not None:
        limits = replace(limits, statement_timeout_ms=statement_timeout_ms)
    dialect = dialects.of(url)
    proxy = behind_proxy(env)
    if proxy and dialect.default_port is None:
        raise ConfigError(f"SYNC_DB_PROXY=1 needs a PostgreSQL or MySQL server, not {url.get_backend_name()}")
    if password is None and db_auth(env) is DbAuth.IAM:
        password = iam_tokens(url, env).token
    options = dialect.engine_options(limits, proxy=proxy)
    connect_args = {**options.connect_args, **dialect.tls_args(tls_settings(env), url)}
    engine = create_engine(url, connect_args=connect_args, **options.pool)
    _LIMITS[engine] = limits
    if proxy:
        mark_proxied(engine)
    dialect.on_engine(engine, limits, proxy=proxy)
    if password is not None:
        _login_with(engine, password)
    return engine


def _login_with(engine: Engine, password: Callable[[], str]) -> None:
    """Each new connection gets `password()` as its password, asked for as it opens (an IAM
    token fresh enough); connections already open are untouched."""

    @event.listens_for(engine, "do_connect")
    def _password(_dialect: Any, _record: Any, _args: Any, params: dict[str, Any]) -> None:
        params["password"] = password()
