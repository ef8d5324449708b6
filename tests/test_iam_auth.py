"""IAM database authentication and RDS Proxy mode (runtime.iam_auth, runtime.config, the
dialects' proxy forms; docs/database-auth.md).

- Units: the token kept and signed anew after its refresh point, by an injected clock and a
  fake signer; a refused login discards it; the configuration refused clearly; the token
  never in a reason, a log line, an exception or a repr.
- Real signing: boto3 signs with credentials a moto server's STS handed out for a role, and
  the token has RDS's shape.
- Real databases: a PostgreSQL and a MariaDB server of the tests' own over verified TLS on
  this machine's non-loopback address (tests/tls_servers.py), where a login role's password
  is what the fake signer hands out, standing in for the RDS service: batches apply through
  the handler, a changed password is met by the next connection's new token, a refused login
  has the handler sign again. Proxy mode: no named statement left on the PostgreSQL session,
  the same results as without, the limits in force per transaction; on MariaDB the session
  check naming the proxy's initialization query, and long write phases split under 16 KB.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine

import runtime.handler as handler
from runtime.apply import apply_batch
from runtime.aws_limits import RDS_IAM_TOKEN_SECONDS, RDS_PROXY_STATEMENT_BYTES
from runtime.config import ConfigError, DatabaseSource, Limits, database_url, iam_tokens, make_engine
from runtime.dialects import for_name
from runtime.dialects.mysql import split_texts
from runtime.iam_auth import REFRESH_AFTER_S, BotoSigner, IamTokens, TokenError
from runtime.observe import log_batch
from runtime.registry import Registry, load_registry
from runtime.schema import build_metadata
from tests import tls_servers as ts
from tests.factories import customer_record, order_record, redelivered

ROOT = Path(__file__).resolve().parent.parent
REGISTRY = ROOT / "build" / "registry.json"
REGION = "eu-west-1"
USER = "sync_iam"
DATABASE = "sync_iam"

# Every variable the runtime reads for its database, cleared before each test sets its own.
DB_VARIABLES = (
    "SYNC_DATABASE_URL", "SYNC_DB_SECRET_ARN", "SYNC_DB_AUTH", "SYNC_DB_HOST", "SYNC_DB_PORT", "SYNC_DB_USER",
    "SYNC_DB_NAME", "SYNC_DB_ENGINE", "SYNC_DB_PROXY", "SYNC_DB_TLS", "SYNC_DB_CA_BUNDLE", "SYNC_LOCK_TIMEOUT_MS",
)  # fmt: skip


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeSigner:
    """Stands in for RDS's token signature: hands out `tokens` in turn (the last one again
    once they run out) and records what it was asked to sign for."""

    tokens: list[str]
    calls: list[tuple[str, int, str, str]] = field(default_factory=list)

    def __call__(self, host: str, port: int, user: str, region: str) -> str:
        self.calls.append((host, port, user, region))
        return self.tokens.pop(0) if len(self.tokens) > 1 else self.tokens[0]


def iam_env(**extra: str) -> dict[str, str]:
    """What the generated Terraform sets for IAM authentication (PostgreSQL by default)."""
    env = {
        "SYNC_DB_AUTH": "iam",
        "SYNC_DB_HOST": "db.cluster-abc.eu-west-1.rds.amazonaws.com",
        "SYNC_DB_PORT": "5432",
        "SYNC_DB_USER": USER,
        "SYNC_DB_NAME": "app",
        "SYNC_DB_ENGINE": "postgresql",
        "AWS_REGION": REGION,
    }
    env.update(extra)
    return {k: v for k, v in env.items() if v}


# --- the token: kept, then signed anew ---------------------------------------------------


def test_a_token_is_kept_until_its_refresh_point_then_signed_anew() -> None:
    # GIVEN the tokens of one user, a clock and a fake signer
    clock, signer = Clock(), FakeSigner(["t1", "t2", "t3"])
    tokens = IamTokens("db.example", 5432, USER, REGION, sign=signer, clock=clock)
    # WHEN connections open over ten minutes
    handed = [tokens.token()]
    clock.now += REFRESH_AFTER_S - 1
    handed.append(tokens.token())
    clock.now += 1
    handed.append(tokens.token())
    # THEN one token serves every connection until its refresh point, the next is new
    assert handed == ["t1", "t1", "t2"]
    assert signer.calls == [("db.example", 5432, USER, REGION)] * 2
    # AND every token handed out has at least five of its fifteen minutes left
    assert RDS_IAM_TOKEN_SECONDS == 900 and RDS_IAM_TOKEN_SECONDS - REFRESH_AFTER_S >= 300


def test_a_refused_login_discards_the_token() -> None:
    clock, signer = Clock(), FakeSigner(["t1", "t2"])
    source = DatabaseSource(iam_env(), sign=signer, clock=clock)
    assert source.password is not None
    assert source.password() == "t1"
    # WHEN the database refuses the login (the handler asks the source again)
    assert source.refetch() is True
    # THEN the next connection signs a new token at once, whatever its age
    assert source.password() == "t2"
    # AND a second refusal within MIN_REFETCH_S does not sign yet again
    assert source.refetch() is False
    clock.now += DatabaseSource.MIN_REFETCH_S
    assert source.refetch() is True
    # AND the handler's forced refresh of a stale secret never applies to tokens
    assert source.stale is False and source.refetch(force=True) is False


def test_the_source_signs_for_the_configured_host_port_user_and_region() -> None:
    signer = FakeSigner(["t"])
    # GIVEN the Lambda's variables for MariaDB without a port, and only AWS_DEFAULT_REGION
    env = iam_env(SYNC_DB_ENGINE="mariadb", SYNC_DB_PORT="", AWS_REGION="", AWS_DEFAULT_REGION="us-east-2")
    source = DatabaseSource(env, sign=signer)
    # THEN the URL carries no password, the engine's default port, and the token is for them
    url = source.url
    assert (url.drivername, url.host, url.port, url.username, url.database, url.password) == (
        "mysql+pymysql", "db.cluster-abc.eu-west-1.rds.amazonaws.com", 3306, USER, "app", None,
    )  # fmt: skip
    assert source.password is not None and source.password() == "t"
    assert signer.calls == [("db.cluster-abc.eu-west-1.rds.amazonaws.com", 3306, USER, "us-east-2")]
    # AND password authentication has no token provider at all
    assert DatabaseSource({"SYNC_DATABASE_URL": "postgresql+psycopg://u:p@h/db"}).password is None


def test_local_tools_sign_for_a_url_without_a_password() -> None:
    # GIVEN SYNC_DATABASE_URL and SYNC_DB_AUTH=iam, as the local tools read them
    env = {"SYNC_DB_AUTH": "iam", "SYNC_DATABASE_URL": "postgresql+psycopg://sync_iam@db.example:6543/app",
           "AWS_REGION": REGION}  # fmt: skip
    signer = FakeSigner(["t"])
    # THEN host, port and user come from the URL
    tokens = iam_tokens(database_url(env), env, sign=signer)
    assert tokens.token() == "t" and signer.calls == [("db.example", 6543, USER, REGION)]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (iam_env(SYNC_DB_HOST="", SYNC_DB_NAME=""), "not set: SYNC_DB_HOST, SYNC_DB_NAME"),
        (iam_env(SYNC_DB_ENGINE="oracle"), "SYNC_DB_ENGINE='oracle': expected one of postgres, postgresql"),
        (iam_env(SYNC_DB_PORT="54x"), r"SYNC_DB_PORT='54x': expected a port number"),
        (iam_env(AWS_REGION=""), "set AWS_REGION"),
        (iam_env(SYNC_DB_TLS="off"), "RDS accepts an IAM token only over TLS; set database.tls.mode"),
        (iam_env(SYNC_DB_AUTH="kerberos"), "SYNC_DB_AUTH='kerberos': expected password or iam"),
        (iam_env(SYNC_DB_SECRET_ARN="arn:aws:secretsmanager:eu-west-1:1:secret:x"), "uses no secret"),
        (iam_env(SYNC_DATABASE_URL="postgresql+psycopg://u:pw@h/db"), "the database URL carries a password"),
        (iam_env(SYNC_DATABASE_URL="sqlite:///local.db"), "needs a PostgreSQL or MySQL server, not sqlite"),
        (iam_env(SYNC_DB_PROXY="yes"), "SYNC_DB_PROXY='yes': expected 1"),
    ],
)  # fmt: skip
def test_a_configuration_that_cannot_work_is_refused_clearly(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        source = DatabaseSource(env, sign=FakeSigner(["t"]))
        make_engine(source.url, password=source.password, env=env)


def test_iam_without_tls_refuses_to_start_and_reports_every_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a Lambda configured for IAM authentication with SYNC_DB_TLS=off
    for var in DB_VARIABLES:
        monkeypatch.delenv(var, raising=False)
    for key, value in iam_env(SYNC_DB_TLS="off", SYNC_REGISTRY=str(REGISTRY)).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(handler, "_runtime", None)
    # WHEN a batch arrives
    records = [order_record("ORD-T1"), order_record("ORD-T2")]
    response = handler.handler({"Records": records}, None)
    # THEN every message is reported (nothing half done), with the reason saying what to fix
    assert len(response["batchItemFailures"]) == 2
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "runtime not ready: ConfigError: SYNC_DB_AUTH=iam with SYNC_DB_TLS=off" in json.dumps(line)


def test_a_proxy_needs_a_server_database() -> None:
    with pytest.raises(ConfigError, match="SYNC_DB_PROXY=1 needs a PostgreSQL or MySQL server"):
        make_engine("sqlite:///:memory:", env={"SYNC_DB_PROXY": "1"})


# --- failures: transient, clear, and never the token ---------------------------------------


def _no_aws_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def test_no_credentials_to_sign_with_fail_the_batch_transiently_saying_what_to_fix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pytest.importorskip("boto3")
    _no_aws_credentials(monkeypatch, tmp_path)
    # GIVEN the real signer and no AWS credentials anywhere
    with pytest.raises(TokenError, match="no AWS credentials to sign the login token with"):
        BotoSigner()("db.example", 5432, USER, REGION)
    # WHEN a batch needs a connection of an engine signing its own tokens (the local tools)
    env = {"SYNC_DB_AUTH": "iam", "AWS_REGION": REGION}
    engine = make_engine("postgresql+psycopg://sync_iam@db.example.invalid/app", env=env)
    records = [order_record("ORD-C1"), order_record("ORD-C2")]
    result = apply_batch(records, engine, load_registry(REGISTRY))
    engine.dispose()
    # THEN every message fails transiently with the reason, and nothing raised
    assert [(o.status, o.kind) for o in result.outcomes] == [("failed", "transient")] * 2
    assert all("no AWS credentials to sign the login token with" in o.reason for o in result.outcomes)
    assert result.attempts == 1  # signing again at once would fail the same way


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("scheme", ["postgresql+psycopg", "mysql+pymysql"])
def test_the_token_is_in_no_reason_log_line_exception_or_repr(
    scheme: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = f"tok-{uuid.uuid4().hex}"
    tokens = IamTokens("127.0.0.1", 5432, USER, REGION, sign=FakeSigner([secret]))
    # GIVEN an engine handing the token to a server that is not there
    url = f"{scheme}://{USER}@127.0.0.1:{_closed_port()}/app"
    engine = make_engine(url, password=tokens.token)
    engine.echo = True  # SQLAlchemy's own logging, at its most talkative
    caught: list[BaseException] = []
    try:
        with engine.connect():
            pass
    except Exception as exc:
        caught.append(exc)
    # WHEN a batch fails to connect and is logged
    result = apply_batch([order_record("ORD-S1")], engine, load_registry(REGISTRY))
    lines: list[str] = []
    log_batch(result, sink=lines.append)
    engine.dispose()
    # THEN the token was asked for, but appears nowhere
    assert tokens.signed == 1 and caught and result.outcomes[0].status == "failed"
    shown = [str(caught[0]), repr(caught[0]), result.outcomes[0].reason, *lines, caplog.text, repr(tokens)]
    shown.append(repr(engine.url))
    assert not [s for s in shown if secret in s]


# --- real signing: boto3, credentials from an assumed role on moto -------------------------


def test_a_token_signed_with_assumed_role_credentials_has_the_rds_shape(
    aws_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    # GIVEN the Lambda's credentials: a role assumed through STS (the moto server)
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]}  # fmt: skip
    role = boto3.client("iam").create_role(RoleName=f"sync-{uuid.uuid4().hex[:8]}", AssumeRolePolicyDocument=json.dumps(trust))  # fmt: skip
    creds = boto3.client("sts").assume_role(RoleArn=role["Role"]["Arn"], RoleSessionName="sync-lambda")[
        "Credentials"
    ]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", creds["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", creds["SecretAccessKey"])
    monkeypatch.setenv("AWS_SESSION_TOKEN", creds["SessionToken"])
    monkeypatch.setenv("AWS_REGION", REGION)
    host = "db.cluster-abc.eu-west-1.rds.amazonaws.com"
    # WHEN the runtime's own provider signs a token (the real signer, the Lambda's variables)
    source = DatabaseSource(iam_env(SYNC_DB_HOST=host))
    assert source.password is not None
    token = source.password()
    # THEN it is RDS's presigned connect request for that endpoint and user, signed with
    # the assumed role's key and session token, valid 900 seconds
    assert token.startswith(f"{host}:5432/?")
    query = urllib.parse.parse_qs(token.split("?", 1)[1], strict_parsing=True)
    flat = {k: v[0] for k, v in query.items()}
    assert flat["Action"] == "connect" and flat["DBUser"] == USER
    assert flat["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256" and flat["X-Amz-SignedHeaders"] == "host"
    assert flat["X-Amz-Expires"] == "900"
    access_key, _date, region, service, terminator = flat["X-Amz-Credential"].split("/")
    assert (access_key, region, service, terminator) == (
        creds["AccessKeyId"],
        REGION,
        "rds-db",
        "aws4_request",
    )
    assert flat["X-Amz-Security-Token"] == creds["SessionToken"]
    assert len(flat["X-Amz-Signature"]) == 64 and int(flat["X-Amz-Signature"], 16) >= 0
    # AND an engine of the local tools (SYNC_DATABASE_URL + SYNC_DB_AUTH=iam) hands such a
    # token to each new connection as its password
    env = {**os.environ, "SYNC_DB_AUTH": "iam"}
    port = _closed_port()
    engine = make_engine(f"postgresql+psycopg://{USER}@127.0.0.1:{port}/app", env=env)
    handed: list[str] = []

    @event.listens_for(engine, "do_connect")
    def _seen(_d: Any, _r: Any, _a: Any, params: dict[str, Any]) -> None:
        handed.append(params["password"])

    with pytest.raises(Exception, match="Connection refused|connection failed"):
        engine.connect()
    engine.dispose()
    assert handed and handed[0].startswith(f"127.0.0.1:{port}/?Action=connect&DBUser={USER}&")


# --- real databases, a fake signer standing in for RDS -------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> ts.Pki:
    return ts.pki_or_skip(tmp_path_factory.mktemp("pki"))


@dataclass
class IamDb:
    """A server of the test's own whose login `USER` has a password the test sets."""

    server: ts.Server
    pki: ts.Pki
    admin: Engine  # the administrator, on DATABASE
    registry: Registry

    @property
    def kind(self) -> str:
        return self.server.kind

    def run(self, *sql: str) -> None:
        with self.admin.connect() as conn:
            for statement in sql:
                conn.execute(text(statement))

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        with self.admin.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql))]

    def set_password(self, password: str) -> None:
        if self.kind == "postgresql":
            self.run(f"ALTER ROLE {USER} PASSWORD '{password}'")
        else:
            self.run(f"ALTER USER '{USER}'@'%' IDENTIFIED BY '{password}'")

    def logins(self) -> list[Any]:
        """The server-side ids of `USER`'s open connections."""
        if self.kind == "postgresql":
            return [r[0] for r in self.rows(f"SELECT pid FROM pg_stat_activity WHERE usename = '{USER}'")]
        return [
            r[0] for r in self.rows(f"SELECT id FROM information_schema.processlist WHERE user = '{USER}'")
        ]

    def kill_logins(self) -> None:
        for server_id in self.logins():
            self.run(
                f"SELECT pg_terminate_backend({server_id})"
                if self.kind == "postgresql"
                else f"KILL {server_id}"
            )

    def reset(self) -> None:
        """Empty tables of the registry's shape, and `USER` allowed to use them."""
        metadata = build_metadata(self.registry)
        metadata.drop_all(self.admin)
        metadata.create_all(self.admin)
        if self.kind == "postgresql":
            self.run(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {USER}",
                     f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {USER}")  # fmt: skip


@pytest.fixture(scope="module", params=["postgresql", "mysql"])
def iam_db(request: pytest.FixtureRequest, pki: ts.Pki) -> Iterator[IamDb]:
    try:
        if request.param == "postgresql":
            server = ts.start_postgresql(pki, tls=True)
            server.require_password(USER)
        else:
            server = ts.start_mariadb(pki, tls=True, grants=True)
    except (FileNotFoundError, OSError) as exc:
        ts.unavailable(f"cannot start a {request.param} test server: {exc}")
    bootstrap = create_engine(server.admin_url(), isolation_level="AUTOCOMMIT")
    try:
        with bootstrap.connect() as conn:
            if server.kind == "postgresql":
                conn.execute(text(f"CREATE DATABASE {DATABASE}"))
                conn.execute(text(f"CREATE ROLE {USER} LOGIN PASSWORD 'token-1'"))
            else:
                conn.execute(text(f"CREATE DATABASE {DATABASE} CHARACTER SET utf8mb4"))
                # As RDS asks of an IAM user (there: IDENTIFIED WITH AWSAuthenticationPlugin)
                conn.execute(text(f"CREATE USER '{USER}'@'%' IDENTIFIED BY 'token-1' REQUIRE SSL"))
                conn.execute(text(f"GRANT ALL ON {DATABASE}.* TO '{USER}'@'%'"))
        admin = create_engine(server.admin_url(DATABASE), isolation_level="AUTOCOMMIT")
        yield IamDb(server, pki, admin, load_registry(REGISTRY))
        admin.dispose()
    finally:
        bootstrap.dispose()
        server.stop()


@pytest.fixture
def fresh(iam_db: IamDb) -> IamDb:
    """The server as a test finds it: empty tables, password token-1, nobody logged in."""
    iam_db.kill_logins()
    iam_db.reset()
    iam_db.set_password("token-1")
    return iam_db


Installer = Callable[..., "handler._Runtime"]


@pytest.fixture
def install(fresh: IamDb, monkeypatch: pytest.MonkeyPatch) -> Iterator[Installer]:
    """Installs the Lambda's runtime as its first invocation would make it, from the
    variables the generated Terraform sets, with the fake signer and clock injected."""
    made: list[handler._Runtime] = []

    def make(signer: FakeSigner, clock: Clock | None = None, **env: str) -> handler._Runtime:
        for var in DB_VARIABLES:
            monkeypatch.delenv(var, raising=False)
        engine_name = fresh.kind  # what the generator sets: the registry's dialect
        variables = {
            "SYNC_DB_AUTH": "iam", "SYNC_DB_HOST": fresh.server.host, "SYNC_DB_PORT": str(fresh.server.port),
            "SYNC_DB_USER": USER, "SYNC_DB_NAME": DATABASE, "SYNC_DB_ENGINE": engine_name,
            "SYNC_DB_CA_BUNDLE": str(fresh.pki.ca), "AWS_REGION": REGION, **env,
        }  # fmt: skip
        for key, value in variables.items():
            monkeypatch.setenv(key, value)
        registry = load_registry(REGISTRY)
        limits = Limits.for_timeout(None)
        source = DatabaseSource(sign=signer, clock=clock or Clock())
        rt = handler._Runtime(
            registry, source, limits, make_engine(source.url, limits=limits, password=source.password)
        )
        made.append(rt)
        monkeypatch.setattr(handler, "_runtime", rt)
        return rt

    yield make
    for rt in made:
        rt.engine.dispose()


def _ok(records: list[dict[str, Any]]) -> None:
    response = handler.handler({"Records": records}, None)
    assert response == {"batchItemFailures": []}


def test_batches_apply_with_tokens_and_a_new_connection_gets_a_new_token_after_the_refresh_point(
    fresh: IamDb, install: Installer
) -> None:
    signer, clock = FakeSigner(["token-1"]), Clock()
    install(signer, clock)
    # GIVEN a warm Lambda that applied a batch with the first token
    _ok([order_record("ORD-I1")])
    assert signer.calls == [(fresh.server.host, fresh.server.port, USER, REGION)]
    # WHEN the database takes a new token (RDS: a new signature) and the kept one ages past
    # its refresh point
    fresh.set_password("token-2")
    signer.tokens = ["token-2"]
    clock.now += REFRESH_AFTER_S + 1
    # THEN the open pooled connection goes on untouched: no new token is signed
    _ok([order_record("ORD-I2")])
    assert len(signer.calls) == 1
    # WHEN that connection goes (recycled, cut), the next one is opened with a new token
    fresh.kill_logins()
    _ok([order_record("ORD-I3")])
    assert len(signer.calls) == 2
    assert fresh.rows("SELECT COUNT(*) FROM orders") == [(3,)]


def test_a_refused_login_has_the_handler_sign_again_and_the_batch_apply(
    fresh: IamDb, install: Installer
) -> None:
    # GIVEN a signer whose first token the database refuses
    signer = FakeSigner(["token-refused", "token-1"])
    install(signer)
    # WHEN a batch arrives THEN it applies in the same invocation, with a second token
    _ok([order_record("ORD-R1"), order_record("ORD-R2")])
    assert len(signer.calls) == 2
    assert fresh.rows("SELECT COUNT(*) FROM orders") == [(2,)]


def test_a_token_always_refused_fails_the_batch_transiently_and_is_shown_nowhere(
    fresh: IamDb, install: Installer, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = f"token-{uuid.uuid4().hex}"
    signer = FakeSigner([secret])
    rt = install(signer)
    records = [order_record("ORD-X1"), order_record("ORD-X2")]
    # WHEN every token is refused
    response = handler.handler({"Records": records}, None)
    # THEN every message is reported, once signed anew and refused again
    assert len(response["batchItemFailures"]) == 2 and len(signer.calls) == 2
    result = apply_batch(records, rt.engine, rt.registry)
    assert result.failure is not None and result.failure.auth
    assert all(o.reason.startswith("batch not applied: login refused") for o in result.outcomes)
    # AND the token is in no log line, reason or message
    out = capsys.readouterr()
    assert secret not in out.out + out.err + caplog.text
    assert not [o for o in result.outcomes if secret in o.reason]


def _batches() -> list[list[dict[str, Any]]]:
    """Batches with every outcome: new rows, an update, a duplicate delivered as new (the
    optimistic attempt's premise fails), a stale event."""
    first = [order_record("ORD-P1", seq="500"), order_record("ORD-P2", seq="500")]
    confirmed = order_record("ORD-P1", "order.confirmed", status="confirmed", seq="600")
    duplicate = json.loads(json.dumps(first[1]))
    duplicate["messageId"] = str(uuid.uuid4())
    stale = order_record("ORD-P1", "order.confirmed", status="pending", seq="550")
    return [first, [confirmed], [duplicate], [stale], [redelivered(confirmed)]]


def _run(rt: handler._Runtime, batches: list[list[dict[str, Any]]]) -> list[list[str]]:
    return [[o.status for o in apply_batch(b, rt.engine, rt.registry).outcomes] for b in batches]


def _named_statements(rt: handler._Runtime) -> tuple[int, int]:
    """(backend pid, named prepared statements) of the runtime's pooled session."""
    with rt.engine.connect() as conn:
        row = conn.execute(text("SELECT pg_backend_pid(), COUNT(*) FROM pg_prepared_statements")).one()
        conn.rollback()
    return int(row[0]), int(row[1])


@pytest.mark.parametrize("iam_db", ["postgresql"], indirect=True)  # named statements are PostgreSQL's
def test_proxy_mode_leaves_no_named_statement_and_gives_the_same_results(
    fresh: IamDb, install: Installer
) -> None:
    batches = _batches()
    orders = "SELECT order_id, status, total_amount, sync_version FROM orders ORDER BY order_id"
    # GIVEN the batches applied without a proxy: named statements on the session
    direct = install(FakeSigner(["token-1"]))
    direct_statuses = _run(direct, batches)
    direct_rows = fresh.rows(orders)
    assert _named_statements(direct)[1] > 0
    direct.engine.dispose()
    fresh.reset()
    # WHEN the same batches go through an engine in proxy mode
    proxied = install(FakeSigner(["token-1"]), SYNC_DB_PROXY="1")
    proxied_statuses = _run(proxied, batches)
    # THEN the outcomes and rows are the same
    assert proxied_statuses == direct_statuses
    assert direct_statuses == [["applied", "applied"], ["applied"], ["duplicate"], ["stale"], ["duplicate"]]
    assert fresh.rows(orders) == direct_rows
    # AND the session that applied them holds no named statement and no session setting
    pid, named = _named_statements(proxied)
    assert named == 0 and fresh.logins() == [pid]
    with proxied.engine.connect() as conn:
        raw = conn.connection.driver_connection
        assert raw is not None
        assert raw.pgconn.exec_(b"SHOW lock_timeout").get_value(0, 0) == b"0"
        # AND a transaction opened through SQLAlchemy (the per-message path) has the limits
        assert conn.execute(text("SHOW lock_timeout")).scalar() == "3s"
        assert conn.execute(text("SHOW statement_timeout")).scalar() == "10s"
        conn.rollback()


@pytest.mark.parametrize("iam_db", ["postgresql"], indirect=True)  # the pipeline's SET LOCAL statements
def test_proxy_mode_still_bounds_a_lock_wait_in_the_pipelined_batch(fresh: IamDb, install: Installer) -> None:
    rt = install(FakeSigner(["token-1"]), SYNC_DB_PROXY="1", SYNC_LOCK_TIMEOUT_MS="1000")
    _ok([order_record("ORD-L1", seq="100")])
    # GIVEN another session holding the order's row
    blocker = create_engine(fresh.server.admin_url(DATABASE))
    conn = blocker.connect()
    conn.execute(text("SELECT * FROM orders WHERE order_id = 'ORD-L1' FOR UPDATE"))
    try:
        # WHEN a batch updates it (in a thread: a wait that is not bounded must fail the test, not hang it)
        found: list[Any] = []
        update = [order_record("ORD-L1", "order.confirmed", status="confirmed", seq="200")]
        worker = threading.Thread(
            target=lambda: found.append(apply_batch(update, rt.engine, rt.registry)), daemon=True
        )
        started = time.monotonic()
        worker.start()
        worker.join(15)
        took = time.monotonic() - started
    finally:
        conn.rollback()
        conn.close()
        blocker.dispose()
    # THEN it gave up after the lock timeout set in the transaction, transiently
    assert found, "the lock wait was not bounded"
    (outcome,) = found[0].outcomes
    assert (outcome.status, outcome.kind) == ("failed", "transient") and "55P03" in outcome.reason
    assert took < 8


@pytest.mark.parametrize("iam_db", ["mysql"], indirect=True)
def test_proxy_mode_on_mysql_checks_the_session_the_proxy_prepared(fresh: IamDb, install: Installer) -> None:
    # GIVEN a proxy whose database connections keep the server's lock wait (50 s)
    rt = install(FakeSigner(["token-1"]), SYNC_DB_PROXY="1")
    init = for_name("mysql").proxy_init_query(rt.limits)
    assert init == (
        "SET SESSION innodb_lock_wait_timeout=3, SESSION sql_mode='STRICT_ALL_TABLES,NO_ZERO_DATE,"
        "NO_ENGINE_SUBSTITUTION', SESSION time_zone='+00:00'"
    )
    # WHEN a batch arrives THEN it fails transiently, naming the initialization query to set
    result = apply_batch([order_record("ORD-M1")], rt.engine, rt.registry)
    (outcome,) = result.outcomes
    assert (outcome.status, outcome.kind) == ("failed", "transient")
    assert "innodb_lock_wait_timeout is 50 s (at most 3 wanted)" in outcome.reason
    assert f'initialization query (init_query) "{init}"' in outcome.reason
    # WHEN the proxy runs that query on each new database connection (here: the server's default)
    fresh.run("SET GLOBAL innodb_lock_wait_timeout = 3")
    try:
        # THEN the batches apply, the runtime itself setting only what the proxy tracks
        _ok([order_record("ORD-M1")])
        with rt.engine.connect() as conn:
            wait, zone = conn.execute(
                text("SELECT @@SESSION.innodb_lock_wait_timeout, @@SESSION.time_zone")
            ).one()
            conn.rollback()
        assert (int(wait), zone) == (3, "+00:00")
    finally:
        fresh.run("SET GLOBAL innodb_lock_wait_timeout = 50")


@pytest.mark.parametrize("iam_db", ["mysql"], indirect=True)
def test_proxy_mode_on_mysql_sends_long_write_phases_in_texts_under_16_kb(
    fresh: IamDb, install: Installer
) -> None:
    fresh.run("SET GLOBAL innodb_lock_wait_timeout = 3")
    try:
        # GIVEN ten customers whose profiles make a write phase of some 40 KB of SQL
        profile = {"M": {f"k{i}": {"S": "p" * 80} for i in range(40)}}
        batch = [customer_record(f"C-{i}", seq=str(100 + i)) for i in range(10)]
        for rec in batch:
            body = json.loads(rec["body"])
            body["profile"] = profile
            rec["body"] = json.dumps(body)
        direct = install(FakeSigner(["token-1"]))
        one_text = apply_batch(batch, direct.engine, direct.registry)
        rows = fresh.rows("SELECT external_id, profile FROM customers ORDER BY external_id")
        direct.engine.dispose()
        fresh.reset()
        proxied = install(FakeSigner(["token-1"]), SYNC_DB_PROXY="1")
        split = apply_batch(batch, proxied.engine, proxied.registry)
    finally:
        fresh.run("SET GLOBAL innodb_lock_wait_timeout = 50")
    # THEN both apply every message and store the same rows; behind the proxy in more round trips
    assert [o.status for o in one_text.outcomes] == [o.status for o in split.outcomes] == ["applied"] * 10
    assert fresh.rows("SELECT external_id, profile FROM customers ORDER BY external_id") == rows
    # (the read, then the write phase's ~50 KB of SQL as one text, or as four of at most 16,000 bytes)
    assert one_text.round_trips == 2 and split.round_trips >= 2 + 2


def test_split_texts_keeps_each_text_under_the_limit_in_order() -> None:
    texts = ["a" * 6000, "b" * 6000, "c" * 6000, "d" * 20000, "e" * 10]
    packets = split_texts(texts, RDS_PROXY_STATEMENT_BYTES)
    assert [(start, [t[0] for t in group]) for start, group in packets] == [
        (0, ["a", "b"]), (2, ["c"]), (3, ["d"]), (4, ["e"]),
    ]  # fmt: skip
    assert all(sum(len(t) + 2 for t in g) <= RDS_PROXY_STATEMENT_BYTES for _, g in packets if len(g) > 1)
    assert split_texts(texts, None) == [(0, texts)]


def test_proxy_mode_connect_arguments() -> None:
    # GIVEN the PostgreSQL engine options with and without a proxy
    pg = for_name("postgresql")
    limits = Limits()
    direct = pg.engine_options(limits).connect_args
    proxied = pg.engine_options(limits, proxy=True).connect_args
    # THEN behind a proxy no `options` startup parameter (RDS Proxy does not take it) and no
    # psycopg prepared statements; without, the timeouts and planner settings as before
    assert "options" not in proxied and proxied["prepare_threshold"] is None
    assert direct["options"] == (
        "-c lock_timeout=3000 -c statement_timeout=10000 -c idle_in_transaction_session_timeout=60000 "
        "-c enable_seqscan=off -c plan_cache_mode=force_generic_plan"
    )
    assert "prepare_threshold" not in direct
    # AND on MySQL the proxy's init_command sets only what RDS Proxy tracks
    my = for_name("mysql")
    assert my.engine_options(limits, proxy=True).connect_args["init_command"] == (
        "SET SESSION sql_mode='STRICT_ALL_TABLES,NO_ZERO_DATE,NO_ENGINE_SUBSTITUTION', SESSION time_zone='+00:00'"
    )
    assert my.engine_options(limits).connect_args["init_command"] == my.proxy_init_query(limits)
    assert pg.proxy_init_query(limits) is None  # PostgreSQL's limits are SET LOCAL per transaction
