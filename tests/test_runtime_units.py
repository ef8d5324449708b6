"""Runtime units: its independence from generator/, the registry contract, decoding and
coercion, the Lambda handler with its EMF log line, and configuration from Secrets Manager."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.apply import apply_batch
from runtime.coerce import MISSING, CoercionError, canonical_text, coerce, converter, json_text
from runtime.config import ConfigError, database_url, make_engine, url_from_secret
from runtime.decode import DecodeError, decode, field_value, parse_sqs_record, row_key
from runtime.registry import ColumnSpec, FieldSpec, RegistryError, load_registry, parse_registry
from runtime.schema import build_metadata
from tests.factories import order_body, order_record, sqs_record

ROOT = Path(__file__).resolve().parent.parent
REGISTRY = ROOT / "build" / "registry.json"


# --- standing alone -------------------------------------------------------------------


def test_runtime_never_imports_generator() -> None:
    # GIVEN every module of runtime/
    offenders = []
    for path in sorted((ROOT / "runtime").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [
                f"{path.name}: {n}" for n in names if n == "generator" or n.startswith("generator.")
            ]
    # THEN none imports the build-time package
    assert offenders == []


@pytest.mark.parametrize("auth", ["password", "iam"])
def test_cold_start_imports_only_stdlib_sqlalchemy_and_driver(auth: str) -> None:
    # GIVEN a fresh interpreter, and the Lambda's database variables for `auth`
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNC_", "AWS_"))}
    env |= {"SYNC_DB_AUTH": auth, "SYNC_DATABASE_URL": "postgresql+psycopg://u@127.0.0.1:9/db",
            "AWS_REGION": "eu-west-1", "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "x"}  # fmt: skip
    code = (
        "import sys, runtime.handler, runtime.registry, runtime.config;"
        "bad = lambda: ','.join(sorted({m.split('.')[0] for m in sys.modules} & {'boto3', 'botocore', 'generator', 'jinja2', 'jsonschema', 'yaml'}));"
        f"runtime.registry.load_registry({str(REGISTRY)!r});"
        "source = runtime.config.DatabaseSource();"
        "runtime.config.make_engine(source.url, password=source.password);"
        "print(bad());"
        "source.password and source.password();"
        "print(bad())"
    )
    # WHEN the handler is imported, and the registry, the database source and the engine are
    # made as a first invocation makes them; then a first connection's password is asked for
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    # THEN nothing beyond SQLAlchemy and the driver came in (boto3 only for a secret, or with
    # IAM authentication when the first token is signed; never with passwords)
    assert out.stdout.split("\n")[:2] == ["", "" if auth == "password" else "boto3,botocore"]


# --- the registry contract ----------------------------------------------------------------


def test_unknown_registry_version_is_refused_clearly() -> None:
    with pytest.raises(
        RegistryError, match=r"registry_version 99 is not supported .*python -m generator build"
    ):
        parse_registry({"registry_version": 99})


def test_missing_registry_file_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="not found; run python -m generator build"):
        load_registry(tmp_path / "nope.json")


def test_malformed_registry_is_refused() -> None:
    with pytest.raises(RegistryError, match="malformed"):
        parse_registry({"registry_version": 1, "entities": {}})


# --- decoding and coercion ---------------------------------------------------------------


def col(type_: str, **kw: Any) -> ColumnSpec:
    base: dict[str, Any] = dict(
        name="c",
        type=type_,
        fields=("f",),
        nullable=True,
        length=None,
        precision=None,
        scale=None,
        format=None,
        value_map=None,
        on_unmapped="fail",
        has_const=False,
        const=None,
        has_default=False,
        default=None,
        references=None,
    )
    base.update(kw)
    return ColumnSpec(**base)


def test_missing_placeholder_renders_empty_and_means_missing() -> None:
    # facts 1.3: a placeholder whose path is absent renders as "" (validated on EventBridge)
    body = {"n": "", "s": "", "m": "", "t": ""}
    assert field_value(body, FieldSpec("n", ("n",), "N", "value")) is MISSING
    assert field_value(body, FieldSpec("s", ("s",), "S", "value")) == ""  # ambiguous for S: see README
    assert field_value(body, FieldSpec("m", ("m",), "M", "value")) is MISSING
    assert field_value(body, FieldSpec("t", ("t",), "S", "typed")) is MISSING
    assert field_value({"t": {"NULL": True}}, FieldSpec("t", ("t",), "S", "typed")) is None
    assert field_value({}, FieldSpec("x", ("a", "b"), "S", "value")) is MISSING


def test_numbers_keep_every_digit() -> None:
    assert field_value(
        {"n": "12345678901234567890.123456789"}, FieldSpec("n", ("n",), "N", "value")
    ) == Decimal("12345678901234567890.123456789")
    assert (
        json_text({"a": Decimal("0.10"), "b": [Decimal("1E+2"), True, None, 'x"y']})
        == '{"a":0.1,"b":[100,true,null,"x\\"y"]}'
    )


@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [
        (col("integer"), Decimal("42"), 42),
        (col("bigint"), "9000000000", 9000000000),
        (col("smallint"), True, 1),
        (col("decimal", precision=12, scale=2), Decimal("3000"), Decimal("3000")),
        (col("decimal", precision=12, scale=2), "12.50", Decimal("12.50")),
        (col("boolean"), "Y", True),
        (col("boolean"), Decimal("0"), False),
        (col("string", length=3), Decimal("7.50"), "7.5"),
        (
            col("timestamp", format="iso8601"),
            "2024-01-02T03:04:05Z",
            datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
        ),
        (
            col("timestamp", format="iso8601"),
            "2024-01-02T12:04:05+09:00",
            datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
        ),
        (
            col("timestamp", format="epoch_seconds"),
            Decimal("1700000000"),
            datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC),
        ),
        (
            col("timestamp", format="epoch_millis"),
            Decimal("1700000000500"),
            datetime(2023, 11, 14, 22, 13, 20, 500000, tzinfo=UTC),
        ),
        (col("date"), "2024-02-29", date(2024, 2, 29)),
        (col("json"), {"k": [Decimal("1.5")]}, '{"k":[1.5]}'),
        (col("smallint", value_map={"active": 1, "closed": 9}), "closed", 9),
        (col("smallint", value_map={"active": 1}, on_unmapped="null"), "weird", None),
        (
            col("smallint", value_map={"active": 1}, on_unmapped="default", has_default=True, default=0),
            "weird",
            0,
        ),
        (col("string", value_map={"a": "A"}, on_unmapped="passthrough"), "b", "b"),
        (col("integer", has_default=True, default=5), MISSING, 5),
        (col("integer"), MISSING, None),
        (col("string", has_const=True, const="dynamodb"), MISSING, "dynamodb"),
    ],
)
def test_coercions(column: ColumnSpec, value: Any, expected: Any) -> None:
    assert coerce(column, value) == expected
    # the per-column converter decode uses gives the same value, of the same type
    got = converter(column)(value)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        (
            col("decimal", precision=12, scale=2),
            Decimal("12.345"),
            r"3 decimal places does not fit decimal\(12,2\)",
        ),
        (col("decimal", precision=4, scale=2), Decimal("123.4"), r"does not fit decimal\(4,2\)"),
        (col("smallint"), Decimal("40000"), "out of range for smallint"),
        (col("integer"), Decimal("1.5"), "not a whole number"),
        (col("integer"), "abc", "not a number"),
        (col("integer"), "1_000", "not a number"),  # Python's Decimal reads it; DynamoDB has no such number
        (col("boolean"), "maybe", "not a boolean"),
        (col("string", length=3), "abcd", "exceeds length 3"),
        (col("string"), {"a": 1}, "use type: json"),
        (col("timestamp", format="iso8601"), "yesterday", "not an ISO 8601 timestamp"),
        (col("smallint", value_map={"active": 1}), "closed", "not in its value map"),
        (col("integer", nullable=False), MISSING, "NOT NULL"),
    ],
)
def test_coercion_refusals_name_the_column(column: ColumnSpec, value: Any, message: str) -> None:
    with pytest.raises(CoercionError, match=message):
        coerce(column, value)
    with pytest.raises(CoercionError, match=message):
        converter(column)(value)


_KEY_PARTS = st.one_of(
    st.text(max_size=12),
    st.text(alphabet='a"\\\n\x00\x1f\x7fé日\u2028/ ,', max_size=6),
    st.decimals(allow_nan=False, allow_infinity=False, places=2),
    st.integers(),
    st.booleans(),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_KEY_PARTS, min_size=1, max_size=3))
def test_row_key_is_the_json_text_of_the_key(key: list[Any]) -> None:
    # GIVEN a key of any scalar kind, with or without characters JSON escapes
    # WHEN its row key is built  THEN it is exactly the compact JSON array of its canonical texts
    want = json.dumps([canonical_text(v) for v in key], ensure_ascii=False, separators=(",", ":"))
    if len(want) <= 512:
        assert row_key(load_registry(REGISTRY).entities["orders"].tables["orders"], tuple(key)) == want


def test_decode_poison_shapes() -> None:
    entity = load_registry(REGISTRY).entities["orders"]
    for body, message in [
        ("not json", "not JSON"),
        ('"a string body"', "not an object"),
        (json.dumps({**order_body("O"), "eventID": ""}), "event id"),
        (json.dumps({**order_body("O"), "eventType": ""}), "no event type"),
        (json.dumps({**order_body("O"), "customerID": "12x"}), "customerID"),
        (json.dumps({**order_body("O"), "sequenceNumber": "12a"}), "sequence number"),
    ]:
        rec = parse_sqs_record(sqs_record(body, group="O"))
        with pytest.raises(DecodeError, match=message):
            decode(rec, entity)


# --- the handler -------------------------------------------------------------------------


@pytest.fixture
def sqlite_handler(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    import runtime.handler

    url = f"sqlite:///{tmp_path / 'h.db'}"
    build_metadata(load_registry(REGISTRY)).create_all(make_engine(url))
    monkeypatch.setenv("SYNC_REGISTRY", str(REGISTRY))
    monkeypatch.setenv("SYNC_DATABASE_URL", url)
    monkeypatch.setattr(runtime.handler, "_runtime", None)
    return url


def test_handler_answers_lambda_and_logs_one_emf_line(
    sqlite_handler: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from runtime.handler import handler

    # GIVEN a batch with an applied message, a poison one and one held behind it
    ok = order_record("O-1", changed_at=1700000000)
    bad = sqs_record("{", group="O-2")
    behind = order_record("O-2")
    # WHEN Lambda invokes the handler
    response = handler({"Records": [ok, bad, behind]}, None)
    # THEN the partial batch response names exactly the poison and the message behind it
    assert response == {
        "batchItemFailures": [{"itemIdentifier": bad["messageId"]}, {"itemIdentifier": behind["messageId"]}]
    }
    # AND one EMF document per entity was printed
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    docs = {d["Entity"]: d for d in lines}
    orders = docs["orders"]
    metrics = orders["_aws"]["CloudWatchMetrics"][0]
    assert metrics["Dimensions"] == [["Entity"]]
    names = {m["Name"] for m in metrics["Metrics"]}
    assert {"Applied", "Duplicate", "Stale", "FailedPermanent", "FailedTransient", "LagSeconds"} <= names
    assert (orders["Applied"], orders["FailedPermanent"], orders["Blocked"]) == (1, 1, 1)
    assert orders["blocked"] == [behind["messageId"]]
    assert orders["LagSeconds"][0] > 0
    assert list(docs) == ["orders"] and orders["level"] == "ERROR"
    (failure,) = orders["failures"]
    assert (
        failure["message_id"] == bad["messageId"]
        and failure["kind"] == "permanent"
        and "not JSON" in failure["reason"]
    )


def test_handler_with_a_broken_configuration_fails_every_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import runtime.handler

    monkeypatch.setenv("SYNC_REGISTRY", str(tmp_path / "missing.json"))
    monkeypatch.setattr(runtime.handler, "_runtime", None)
    records = [order_record("O-9"), order_record("O-8")]
    response = runtime.handler.handler({"Records": records}, None)
    assert response == {"batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in records]}


def test_empty_event_is_full_success(sqlite_handler: str) -> None:
    from runtime.handler import handler

    assert handler({"Records": []}, None) == {"batchItemFailures": []}


# --- configuration ------------------------------------------------------------------------


def test_url_from_rds_secret_never_puts_the_password_in_text() -> None:
    url = url_from_secret(
        {
            "engine": "postgres",
            "host": "db",
            "port": 5432,
            "username": "u",
            "password": "p@ss:/word",
            "dbname": "legacy",
        }
    )
    assert url.drivername == "postgresql+psycopg" and url.password == "p@ss:/word"
    assert "p@ss" not in str(url)  # str() masks it
    assert (
        url_from_secret({"engine": "mariadb", "host": "h", "username": "u", "password": "p"}).drivername
        == "mysql+pymysql"
    )
    with pytest.raises(ConfigError, match="lacks 'host'"):
        url_from_secret({"engine": "postgres", "username": "u", "password": "p"})


def test_database_url_from_secrets_manager(aws_env: str, postgres_url: str) -> None:
    import boto3
    from sqlalchemy import make_url, text

    # GIVEN the real database's credentials in a Secrets Manager secret (moto server)
    pg = make_url(postgres_url)
    secret = {
        "engine": "postgres",
        "host": pg.host,
        "port": pg.port,
        "username": pg.username,
        "password": "unused-with-trust",
        "dbname": pg.database,
    }
    arn = boto3.client("secretsmanager").create_secret(
        Name="legacy-db-test", SecretString=json.dumps(secret)
    )["ARN"]
    # WHEN the runtime resolves its database from the secret's ARN
    url = database_url({"SYNC_DB_SECRET_ARN": arn})
    # THEN it connects
    with make_engine(url).connect() as conn:
        assert conn.execute(text("SELECT 1")).scalar() == 1
    with pytest.raises(ConfigError, match="no database configured"):
        database_url({})


# --- the FIFO batch contract, for any batch --------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    plan=st.lists(
        st.tuples(st.sampled_from(["A", "B", "C"]), st.booleans()),  # (group, poison?)
        min_size=1,
        max_size=10,
    )
)
def test_no_later_message_of_a_failed_group_is_reported_done(
    plan: list[tuple[str, bool]], tmp_path_factory: Any
) -> None:
    registry = load_registry(REGISTRY)
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('p') / 'p.db'}")
    build_metadata(registry).create_all(engine)
    records = []
    seq = 1000
    created: set[str] = set()
    for group, poison in plan:
        seq += 1
        etype = "order.confirmed" if group in created else "order.created"
        created.add(group)
        rec = order_record(group, etype, status="confirmed", seq=str(seq))
        if poison:
            rec["body"] = "{broken"
        records.append(rec)
    result = apply_batch(records, engine, registry)
    failed = {f["itemIdentifier"] for f in result.response()["batchItemFailures"]}
    seen_failure: set[str] = set()
    for (group, poison), rec, outcome in zip(plan, records, result.outcomes, strict=True):
        if group in seen_failure:
            assert rec["messageId"] in failed  # never reported as a success after a failure
        if poison:
            assert rec["messageId"] in failed
            seen_failure.add(group)
        if rec["messageId"] not in failed:
            assert outcome.status in ("applied", "duplicate", "stale")
    from sqlalchemy import text

    with engine.connect() as conn:
        ledger = conn.execute(text("SELECT COUNT(*) FROM sync_ledger")).scalar()
    assert ledger == sum(1 for o in result.outcomes if o.status == "applied")


def test_a_poison_message_is_logged_with_its_event_id(tmp_path: Path) -> None:
    # GIVEN a message whose status is too long for its column (it decodes as JSON, not as a change)
    registry = load_registry(REGISTRY)
    engine = make_engine(f"sqlite:///{tmp_path / 'p.db'}")
    build_metadata(registry).create_all(engine)
    poison = order_record("O-P", status="x" * 40, event_id="ev-poison")
    # WHEN applied
    (outcome,) = apply_batch([poison], engine, registry).outcomes
    # THEN the failure names the event, so operators can find it
    assert (outcome.status, outcome.kind, outcome.event_id) == ("failed", "permanent", "ev-poison")
    assert "exceeds length 32" in outcome.reason
    assert outcome.reason.startswith("value refused: column status: ")  # a value, not an undecodable body


def test_a_secret_is_kept_for_its_ttl_and_fetched_again_after_a_refused_login() -> None:
    from runtime.config import DatabaseSource

    # GIVEN a secret that rotates, fetched through a counting fake, and a clock the test moves
    passwords = iter(["one", "two", "two", "three"])
    fetched: list[str] = []
    now = [1000.0]

    def fetch(arn: str) -> dict[str, Any]:
        fetched.append(arn)
        return {
            "engine": "postgres",
            "host": "db",
            "username": "u",
            "password": next(passwords),
            "dbname": "d",
        }

    env = {"SYNC_DB_SECRET_ARN": "arn:secret", "SYNC_SECRET_TTL_SECONDS": "300"}
    source = DatabaseSource(env, fetch=fetch, clock=lambda: now[0])
    assert source.url.password == "one" and not source.stale
    # WHEN a login is refused THEN the secret is fetched again at once, and the change is seen
    assert source.refetch() is True and source.url.password == "two"
    # AND a second refusal within MIN_REFETCH_S does not call Secrets Manager again
    now[0] += 1
    assert source.refetch() is False and len(fetched) == 2
    # WHEN the TTL runs out THEN it is stale, and a forced fetch says whether anything changed
    now[0] += 300
    assert source.stale and source.refetch(force=True) is False and not source.stale
    now[0] += 301
    assert source.refetch(force=True) is True and source.url.password == "three"
    # AND a URL from the environment is never fetched
    fixed = DatabaseSource({"SYNC_DATABASE_URL": "sqlite://"}, fetch=fetch)
    assert not fixed.stale and fixed.refetch(force=True) is False and len(fetched) == 4


def test_limits_derive_from_the_lambda_timeout_and_the_environment() -> None:
    from runtime.config import ConfigError, Limits

    # GIVEN the default 30 s timeout and a 900 s one
    thirty, long = Limits.for_timeout(30, {}), Limits.for_timeout(900, {})
    # THEN every wait fits well inside the invocation, within sane bounds
    assert (thirty.connect_timeout_s, thirty.lock_timeout_ms, thirty.statement_timeout_ms) == (5, 3000, 10000)
    assert thirty.network_timeout_s > thirty.statement_timeout_ms / 1000 and thirty.margin_ms == 1500
    assert long.lock_timeout_ms == 10_000 and long.connect_timeout_s == 10 and long.margin_ms == 5000
    # AND each is set by its variable; a bad value says which and what it wants
    assert Limits.for_timeout(30, {"SYNC_LOCK_TIMEOUT_MS": "750"}).lock_timeout_ms == 750
    with pytest.raises(ConfigError, match=r"SYNC_CONNECT_TIMEOUT_S='soon': expected a positive number"):
        Limits.for_timeout(30, {"SYNC_CONNECT_TIMEOUT_S": "soon"})
