"""The runtime keeps its promise under poison values, hostile bodies, concurrent duplicates,
deletes of missing rows, time limits and secret rotation: one bad message never takes other
message groups down, nothing of a failed message is ever committed (later), and a deleted row
never comes back. Every scenario runs on SQLite, PostgreSQL and MariaDB where it applies.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from sqlalchemy import create_engine, text

import runtime.apply
import runtime.plan
from runtime.apply import apply_batch
from runtime.coerce import converter
from runtime.config import make_engine
from runtime.registry import Registry
from tests.factories import customer_record, item_record, order_record, redelivered, sqs_record
from tests.netfaults import FreezableProxy, SilentServer
from tests.runtime_db import Db, failed_ids, lock_orders, statuses
from tests.test_runtime_units import col


def with_raw(record: dict[str, Any], json_string: str, raw: str) -> dict[str, Any]:
    """The record with one JSON string of its body (e.g. '"3000"') replaced by raw JSON text
    (e.g. '1E+30'): a number rendered by an unquoted template placeholder, a hand-written escape."""
    body = record["body"]
    assert json_string in body, (json_string, body)
    record["body"] = body.replace(json_string, raw, 1)
    return record


def orders(db: Db) -> list[tuple[Any, ...]]:
    return db.rows("SELECT order_id, status FROM orders ORDER BY order_id")


def ledger_size(db: Db) -> int:
    return db.one("SELECT COUNT(*) FROM sync_ledger")


# --- one poison value fails one message, never the batch ----------------------------------


def _order(raw: str | None = None, *, field: str = "total", **kw: Any) -> dict[str, Any]:
    """An order of group P, with its amount (or status) replaced by raw JSON text."""
    if raw is None:
        return order_record("P", **kw)
    placeholder = "T0" if field == "total" else "S0"
    return with_raw(order_record("P", **{field: placeholder}, **kw), f'"{placeholder}"', raw)


POISONS: dict[str, tuple[Any, Any, tuple[str, ...] | None]] = {
    # name: (the poison message of group P, the message behind it, words its reason holds;
    # None: DynamoDB and the database both take the value, so it is applied)
    "a 31-digit number into a decimal column": (
        lambda: _order("1E+30"),
        lambda: order_record("P", "order.confirmed"),
        ("total_amount", "decimal(12,2)"),
    ),
    "39 significant digits": (
        lambda: _order("1" * 39),
        lambda: order_record("P", "order.confirmed"),
        ("38 significant digits",),
    ),
    "a number beyond DynamoDB's range": (
        lambda: _order("1E+126"),
        lambda: order_record("P", "order.confirmed"),
        ("1E-130", "1E+125"),
    ),
    "a 31-digit number inside a json column": (
        lambda: with_raw(customer_record("P"), '"120.5"', '"1E+30"'),
        lambda: customer_record("P", "customer.updated"),
        None,
    ),
    "an epoch beyond any timestamp": (
        lambda: _order(changed_at=10**20),
        lambda: order_record("P", "order.confirmed"),
        ("updated_at", "timestamp"),
    ),
    "an epoch beyond any soft-delete timestamp": (
        lambda: customer_record("P", event_name="REMOVE", changed_at=10**20),
        lambda: customer_record("P", "customer.updated"),
        ("deleted_at", "timestamp"),
    ),
    "a lone surrogate in a string": (
        lambda: _order('"\\ud800"', field="status"),
        lambda: order_record("P", "order.confirmed"),
        ("status", "not valid Unicode"),
    ),
    "U+0000 in a string": (
        lambda: _order('"a\\u0000b"', field="status"),
        lambda: order_record("P", "order.confirmed"),
        ("status", "U+0000"),  # PostgreSQL only: MySQL and SQLite store it
    ),
}


@pytest.mark.parametrize("poison", list(POISONS))
def test_a_poison_value_fails_its_message_and_nothing_else(db: Db, poison: str) -> None:
    make, make_behind, words = POISONS[poison]
    # GIVEN a batch of three message groups, the middle one starting with a poison value
    a, bad, behind, b = order_record("A"), make(), make_behind(), order_record("B")
    # WHEN applied
    r = db.apply([a, bad, behind, b])
    # THEN the other groups are applied; the poison fails alone, permanently, saying why;
    # the message behind it in its group is held back
    refused = words is not None and not (poison.startswith("U+0000") and db.name != "postgresql")
    if refused:
        assert statuses(r) == ["applied", "failed", "blocked", "applied"], r.outcomes
        assert r.outcomes[1].kind == "permanent"
        reason = r.outcomes[1].reason
        assert all(w in reason for w in words), reason
        assert len(reason) <= 1024
    else:
        assert statuses(r) == ["applied"] * 4, r.outcomes
    assert orders(db)[0] == ("A", "pending") and ("B", "pending") in orders(db)
    # AND the next batch commits nothing of the failed message
    r2 = db.apply([order_record("C")])
    assert failed_ids(r2) == []
    if refused:
        assert [k for k, _ in orders(db)] == ["A", "B", "C"]
        assert ledger_size(db) == 3


def test_numbers_are_exact_whatever_their_size(monkeypatch: pytest.MonkeyPatch) -> None:
    from decimal import Decimal

    # GIVEN DynamoDB numbers at the edges of its range
    # THEN a string column gets every digit, a decimal column names its limit
    assert converter(col("string", length=200))(Decimal("1E+30")) == "1" + "0" * 30
    assert converter(col("string"))(Decimal("-1.50")) == "-1.5"
    assert converter(col("string"))(Decimal("0.000000000000000000000000000000123")) == (
        "0.000000000000000000000000000000123"
    )
    big = Decimal("99999999999999999999999999999999999999.99")
    with pytest.raises(
        ValueError, match=r"a number with 38 digits before the decimal point does not fit decimal\(14,2\)"
    ):
        converter(col("decimal", precision=14, scale=2))(big)
    # AND with SYNC_LOG_VALUES=1 the reason shows the number exactly
    monkeypatch.setenv("SYNC_LOG_VALUES", "1")
    with pytest.raises(
        ValueError, match=r"the number 99999999999999999999999999999999999999\.99 with 38 digits"
    ):
        converter(col("decimal", precision=14, scale=2))(big)
    assert converter(col("json"))({"n": Decimal("1E+30")}) == '{"n":1' + "0" * 30 + "}"


# --- hostile bodies: never a raise, refused in milliseconds -----------------------------------

HOSTILE = {
    "deeply nested JSON": "[" * 100_000,
    "an integer of 5,000 digits": '{"eventType": "order.created", "orderID": "H", "customerID": '
    + "9" * 5000
    + "}",
    "1e999999": None,  # built below: a whole order body with this amount
    "JSON that is not an object": '["order.created"]',
    "an empty body": "",
    "a NUL byte": "\x00",
    "an object nested 10,000 deep": '{"a":' * 10_000 + "1" + "}" * 10_000,
}


@pytest.mark.parametrize("hostile", list(HOSTILE))
def test_a_hostile_body_is_refused_quickly_and_alone(db: Db, hostile: str) -> None:
    # GIVEN a hostile body between two good messages of other groups
    body = HOSTILE[hostile]
    if body is None:
        bad = with_raw(order_record("H", total="T0"), '"T0"', "1e999999")
    else:
        bad = sqs_record(body, group="H", queue="orders-sync.fifo")
    a, b = order_record("A"), order_record("B")
    # WHEN applied
    started = time.perf_counter()
    r = db.apply([a, bad, b])
    elapsed = time.perf_counter() - started
    # THEN apply_batch did not raise, refused it permanently, and applied the others
    assert statuses(r) == ["applied", "failed", "applied"], r.outcomes
    assert r.outcomes[1].kind == "permanent" and len(r.outcomes[1].reason) <= 1024
    assert elapsed < 5, f"{hostile} took {elapsed:.1f}s to refuse"


def test_the_handler_never_raises_for_a_malformed_event(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    import runtime.handler
    from runtime.registry import load_registry
    from runtime.schema import build_metadata
    from tests.test_runtime_units import REGISTRY

    url = f"sqlite:///{tmp_path / 'h.db'}"
    build_metadata(load_registry(REGISTRY)).create_all(make_engine(url))
    monkeypatch.setenv("SYNC_REGISTRY", str(REGISTRY))
    monkeypatch.setenv("SYNC_DATABASE_URL", url)
    monkeypatch.setattr(runtime.handler, "_runtime", None)
    ok = order_record("O-1")
    # GIVEN events Lambda would never send, and records of every wrong shape
    for event in (None, [], "x", {"Records": "x"}, {"Records": None}):
        assert runtime.handler.handler(event, None) == {"batchItemFailures": []}
    odd: list[Any] = [7, None, {"messageId": "m-1", "body": 5}, {"messageId": "m-2"}, ok]
    # WHEN they come in one batch THEN nothing raises; the good record is applied
    response = runtime.handler.handler({"Records": odd}, None)
    assert {"itemIdentifier": ok["messageId"]} not in response["batchItemFailures"]
    assert {"itemIdentifier": "m-1"} in response["batchItemFailures"]


# --- no resurrection -------------------------------------------------------------------


def customers(db: Db) -> list[tuple[Any, ...]]:
    return db.rows(
        "SELECT external_id, CASE WHEN deleted_at IS NULL THEN 'live' ELSE 'deleted' END FROM customers"
    )


def test_a_redriven_registration_does_not_bring_a_removed_customer_back(db: Db) -> None:
    # GIVEN a registration (seq 100) that went to the DLQ, so the REMOVE (seq 200) finds no row
    registration = customer_record("C-1", seq="100")
    remove = customer_record("C-1", event_name="REMOVE", seq="200")
    r1 = db.apply([remove])
    assert statuses(r1) == ["skipped"]
    # WHEN the operator redrives the DLQ and the registration is applied after all
    r2 = db.apply([redelivered(registration)])
    # THEN it is older than the delete: stale, and the customer deleted in DynamoDB stays gone
    assert statuses(r2) == ["stale"]
    assert customers(db) == []
    # AND a genuinely newer registration (seq 300) re-creates it
    assert statuses(db.apply([customer_record("C-1", seq="300")])) == ["applied"]
    assert customers(db) == [("C-1", "live")]


def test_a_late_copy_of_a_remove_leaves_the_delete_in_place(db: Db) -> None:
    # GIVEN the registration and its REMOVE both waiting in the DLQ, in order, and a late copy
    # of the REMOVE (a new message id after the 5-minute deduplication window) applied meanwhile
    registration = customer_record("C-2", seq="100")
    remove = customer_record("C-2", event_name="REMOVE", seq="200")
    late_copy = sqs_record(remove["body"], group="C-2", queue="customers-sync.fifo")
    assert statuses(db.apply([late_copy])) == ["skipped"]
    # WHEN the DLQ is redriven
    r = db.apply([redelivered(registration), redelivered(remove)])
    # THEN the registration is stale, the REMOVE a duplicate, and no live customer appears
    assert statuses(r) == ["stale", "duplicate"]
    assert customers(db) == []


def test_a_hard_delete_of_a_missing_row_keeps_older_inserts_out(db: Db) -> None:
    # GIVEN an order line deleted (old rev 2) before its creation was ever applied
    db.apply([order_record("ORD-H")])
    assert statuses(db.apply([item_record("ORD-H", 1, "REMOVE", rev=2)])) == ["applied"]
    # WHEN the creation (rev 1) and an update (rev 2) arrive late
    r = db.apply([item_record("ORD-H", 1, rev=1), item_record("ORD-H", 1, "MODIFY", rev=2)])
    # THEN both are stale and the line stays deleted
    assert statuses(r) == ["stale", "stale"]
    assert db.one("SELECT COUNT(*) FROM order_items") == 0


# --- a concurrent duplicate is a duplicate ------------------------------------------------------


def test_a_concurrent_invocation_makes_duplicates_not_failures(
    db: Db, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a batch whose visibility timeout expired while it ran: a second invocation got the
    # same messages and committed them between this invocation's read and its write
    batch = [order_record("ORD-C1"), order_record("ORD-C2"), customer_record("C-C")]
    real_read = runtime.apply.read_state
    concurrent: list[Any] = []

    def read_then_lose_the_race(run: Any, stmts: Any, changes: Any) -> Any:
        state = real_read(run, stmts, changes)
        if not concurrent:  # the first read only: the other invocation reads unhindered
            concurrent.append(None)
            other = make_engine(db.url)
            concurrent[0] = apply_batch([redelivered(r) for r in batch], other, db.registry)
            other.dispose()
        return state

    monkeypatch.setattr(runtime.apply, "read_state", read_then_lose_the_race)
    if db.name == "sqlite":
        pytest.skip("SQLite serialises writers: a second invocation cannot commit inside the first's read")
    # WHEN this invocation goes on (its messages received a second time, so it reads first)
    r = db.apply([redelivered(rec) for rec in batch])
    # THEN the other invocation applied everything once; this one reports duplicates, no failure
    assert failed_ids(concurrent[0]) == []
    assert failed_ids(r) == [] and statuses(r) == ["duplicate"] * 3, r.outcomes
    assert r.counts()["failed_permanent"] == 0
    assert ledger_size(db) == 3


def test_a_ledger_row_met_on_the_per_message_path_is_a_duplicate(
    db: Db, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN events already recorded by another invocation, and a read that did not see them
    # (taken before that invocation committed); one message of the batch also breaks a constraint,
    # so the batch takes the per-message path
    with db.observer.begin() as conn:
        conn.execute(text("CREATE UNIQUE INDEX customers_email_uq ON customers (email)"))
    done = [order_record("ORD-D1"), order_record("ORD-D2")]
    assert failed_ids(db.apply(done)) == []
    real_read = runtime.apply.read_state

    def stale_read(run: Any, stmts: Any, changes: Any) -> Any:
        state = real_read(run, stmts, changes)
        state.ledger.clear()  # as read before the other invocation's commit
        state.rows = {k: runtime.plan.ABSENT for k in state.rows}
        return state

    monkeypatch.setattr(runtime.apply, "read_state", stale_read)
    clash = [
        customer_record("C-X", email="same@example.com"),
        customer_record("C-Y", email="same@example.com"),
    ]
    # WHEN the batch is applied
    r = db.apply([redelivered(done[0]), clash[0], clash[1], redelivered(done[1])])
    # THEN the recorded events are duplicates, the clash alone fails
    assert statuses(r) == ["duplicate", "applied", "failed", "duplicate"], r.outcomes
    assert r.counts()["failed_permanent"] == 1


# --- the time budget ---------------------------------------------------------------------------


def server_only(db: Db) -> None:
    if db.name == "sqlite":
        pytest.skip("row locks and networks are a server's")


def test_six_locked_rows_never_outlast_the_deadline(db: Db) -> None:
    server_only(db)
    # GIVEN six orders whose rows another session holds locked (the runtime waits 1 s per lock)
    locked = [f"ORD-L{i}" for i in range(6)]
    db.apply([order_record(o, seq="1") for o in locked])
    engine, (conn, trans) = lock_orders(db, locked)
    try:
        free = [order_record("ORD-F1"), order_record("ORD-F2")]
        batch = free + [order_record(o, "order.confirmed", status="confirmed", seq="2") for o in locked]
        # WHEN a batch needing them runs with 3.5 s left before the Lambda deadline
        started = time.monotonic()
        r = db.apply(batch, deadline=started + 3.5)
        elapsed = time.monotonic() - started
    finally:
        trans.rollback()
        conn.close()
        engine.dispose()
    # THEN it answered before the deadline; the free orders are applied and committed; every
    # locked one is reported failed (transient), none applied
    assert elapsed < 3.5, elapsed
    assert statuses(r)[:2] == ["applied", "applied"], r.outcomes
    assert all(o.status == "failed" and o.kind == "transient" for o in r.outcomes[2:]), r.outcomes
    assert db.one("SELECT COUNT(*) FROM orders WHERE order_id LIKE 'ORD-F%'") == 2
    assert db.one("SELECT COUNT(*) FROM orders WHERE status = 'confirmed'") == 0
    assert any("deadline" in o.reason for o in r.outcomes[2:]), [o.reason for o in r.outcomes]


def test_a_lock_that_timed_out_is_not_waited_for_again(db: Db) -> None:
    server_only(db)
    # GIVEN an order whose row another session holds (the runtime waits 1 s for a lock)
    db.apply([order_record("ORD-W", seq="1")])
    engine, (conn, trans) = lock_orders(db, ["ORD-W"])
    try:
        batch = [
            order_record("ORD-W", "order.confirmed", seq="2"),
            order_record("ORD-X1"),
            order_record("ORD-X2"),
        ]
        # WHEN a batch needs it: its fast path waits out the lock once, then the per-message
        # path isolates the culprit
        started = time.monotonic()
        r = db.apply(batch)
        elapsed = time.monotonic() - started
    finally:
        trans.rollback()
        conn.close()
        engine.dispose()
    # THEN the group that timed out is reported without a second wait; the others are applied
    assert statuses(r) == ["failed", "applied", "applied"] and r.outcomes[0].kind == "transient"
    assert r.path == "slow"
    assert elapsed < 1.7, f"{elapsed:.2f}s: the lock was waited for twice"


def test_a_frozen_network_path_never_outlasts_the_deadline(db: Db, registry: Registry) -> None:
    server_only(db)
    from sqlalchemy import make_url

    url = make_url(db.url)
    with FreezableProxy(
        url.host or "127.0.0.1", url.port or (5432 if db.name == "postgresql" else 3306)
    ) as proxy:
        engine = make_engine(url.set(host="127.0.0.1", port=proxy.port))
        try:
            # GIVEN a runtime whose pooled connection goes through a path that then freezes
            assert failed_ids(apply_batch([order_record("ORD-N1")], engine, registry)) == []
            proxy.freeze()
            batch = [order_record("ORD-N2"), order_record("ORD-N3")]
            # WHEN a batch runs with 3 s left
            started = time.monotonic()
            r = apply_batch(batch, engine, registry, deadline=started + 3)
            elapsed = time.monotonic() - started
        finally:
            engine.dispose()
    # THEN it answered in time, every message reported failed (transient) for the deadline
    assert elapsed < 3, elapsed
    assert failed_ids(r) == [rec["messageId"] for rec in batch]
    assert {o.kind for o in r.outcomes} == {"transient"}
    assert all("deadline" in o.reason for o in r.outcomes), [o.reason for o in r.outcomes]


@pytest.mark.parametrize("dialect", ["postgresql+psycopg", "mysql+pymysql"])
def test_a_server_that_never_answers_never_outlasts_the_deadline(registry: Registry, dialect: str) -> None:
    # GIVEN a server that accepts connections and never says a word
    with SilentServer() as server:
        engine = make_engine(f"{dialect}://u@127.0.0.1:{server.port}/db")
        batch = [order_record("ORD-S1"), order_record("ORD-S2")]
        # WHEN a batch runs with 4 s left
        started = time.monotonic()
        r = apply_batch(batch, engine, registry, deadline=started + 4)
        elapsed = time.monotonic() - started
        engine.dispose()
    # THEN it answered in time, every message failed transiently
    assert elapsed < 4, elapsed
    assert failed_ids(r) == [rec["messageId"] for rec in batch]
    assert {o.kind for o in r.outcomes} == {"transient"}


def test_the_handler_plans_against_the_lambda_deadline(
    db: Db, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    server_only(db)
    import runtime.handler
    from tests.test_runtime_units import REGISTRY

    monkeypatch.setenv("SYNC_REGISTRY", str(REGISTRY))
    monkeypatch.setenv("SYNC_DATABASE_URL", db.url)
    monkeypatch.setenv("SYNC_LOCK_TIMEOUT_MS", "1000")
    monkeypatch.setattr(runtime.handler, "_runtime", None)

    class Context:
        def __init__(self, ms: int) -> None:
            self.deadline = time.monotonic() + ms / 1000

        def get_remaining_time_in_millis(self) -> int:
            return max(0, int((self.deadline - time.monotonic()) * 1000))

    db.apply([order_record(f"ORD-T{i}", seq="1") for i in range(4)])
    engine, (conn, trans) = lock_orders(db, [f"ORD-T{i}" for i in range(4)])
    try:
        batch = [order_record(f"ORD-T{i}", "order.confirmed", status="confirmed", seq="2") for i in range(4)]
        # WHEN Lambda invokes the handler with 3 s left
        ctx = Context(3000)
        response = runtime.handler.handler({"Records": batch}, ctx)
        left = ctx.get_remaining_time_in_millis()
    finally:
        trans.rollback()
        conn.close()
        engine.dispose()
    # THEN it answered before Lambda's deadline, every message reported for a retry
    assert left > 0
    assert response == {"batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in batch]}


# --- secret rotation ------------------------------------------------------------------------


@pytest.fixture
def rotating_user(db: Db) -> Any:
    """A database login of its own (MariaDB: a password that can change; PostgreSQL, which
    trusts every local login here: a role that can be replaced by another, as RDS's
    alternating-users rotation does)."""
    server_only(db)
    import uuid

    from sqlalchemy import make_url

    admin = create_engine(db.url, isolation_level="AUTOCOMMIT")
    names = [f"sync_rot_{uuid.uuid4().hex[:8]}", f"sync_rot_{uuid.uuid4().hex[:8]}"]
    url = make_url(db.url)

    def create(conn: Any, name: str, password: str) -> None:
        if db.name == "postgresql":
            conn.execute(text(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'"))
            conn.execute(text(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {name}"))
            # The surrogate keys' sequences (orders.id numbers itself on every insert).
            conn.execute(text(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {name}"))
        else:
            conn.execute(text(f"CREATE USER '{name}'@'%' IDENTIFIED BY '{password}'"))
            conn.execute(text(f"GRANT ALL ON {url.database}.* TO '{name}'@'%'"))

    with admin.connect() as conn:
        create(conn, names[0], "first-pw")
    yield admin, names, create, url
    with admin.connect() as conn:
        for name in names:
            if db.name == "postgresql":
                conn.execute(
                    text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = :u"),
                    {"u": name},
                )
                conn.execute(text(f"DROP OWNED BY {name}")) if conn.execute(
                    text("SELECT 1 FROM pg_roles WHERE rolname = :u"), {"u": name}
                ).first() else None
                conn.execute(text(f"DROP ROLE IF EXISTS {name}"))
            else:
                conn.execute(text(f"DROP USER IF EXISTS '{name}'@'%'"))
    admin.dispose()


def test_a_rotated_secret_costs_no_failed_batch(
    db: Db, rotating_user: Any, aws_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    import runtime.handler
    from tests.test_runtime_units import REGISTRY

    admin, names, create, url = rotating_user
    sm = boto3.client("secretsmanager")

    def secret(user: str, password: str) -> str:
        return json.dumps(
            {
                "engine": "postgres" if db.name == "postgresql" else "mariadb",
                "host": url.host,
                "port": url.port,
                "username": user,
                "password": password,
                "dbname": url.database,
            }
        )

    arn = sm.create_secret(Name=f"rot-{names[0]}", SecretString=secret(names[0], "first-pw"))["ARN"]
    monkeypatch.setenv("SYNC_REGISTRY", str(REGISTRY))
    monkeypatch.delenv("SYNC_DATABASE_URL", raising=False)
    monkeypatch.setenv("SYNC_DB_SECRET_ARN", arn)
    monkeypatch.setattr(runtime.handler, "_runtime", None)
    # GIVEN a warm Lambda that applied a batch with the first credentials
    assert runtime.handler.handler({"Records": [order_record("ORD-R1")]}, None) == {"batchItemFailures": []}
    # WHEN the secret rotates (MariaDB: the password changes; PostgreSQL: the other user takes
    # over and the first is removed), and the pooled connection is gone (recycled, or cut)
    with admin.connect() as conn:
        if db.name == "postgresql":
            create(conn, names[1], "second-pw")
            sm.put_secret_value(SecretId=arn, SecretString=secret(names[1], "second-pw"))
            conn.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = :u"),
                {"u": names[0]},
            )
            conn.execute(text(f"DROP OWNED BY {names[0]}"))
            conn.execute(text(f"DROP ROLE {names[0]}"))
        else:
            conn.execute(text(f"ALTER USER '{names[0]}'@'%' IDENTIFIED BY 'second-pw'"))
            sm.put_secret_value(SecretId=arn, SecretString=secret(names[0], "second-pw"))
            for (pid,) in conn.execute(
                text("SELECT id FROM information_schema.processlist WHERE user = :u"), {"u": names[0]}
            ):
                conn.execute(text(f"KILL {int(pid)}"))
    # THEN the next batch is applied in the same invocation, with the new credentials
    response = runtime.handler.handler({"Records": [order_record("ORD-R2")]}, None)
    assert response == {"batchItemFailures": []}
    assert db.one("SELECT COUNT(*) FROM orders") == 2


# --- bounded, privacy-aware failure reasons ------------------------------------------------------


def test_a_huge_value_gives_a_short_reason_without_the_value(
    db: Db, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from runtime.observe import log_batch

    # GIVEN a 1 MB status (its column holds 32 characters), a 1 MB unknown event type and a 1 MB event id
    huge = "x" * (1 << 20)
    batch = [
        order_record("ORD-B1", status=huge),
        order_record("ORD-B2", "order." + "y" * (1 << 20)),
        order_record("ORD-B3", event_id="e" * (1 << 20)),
    ]
    # WHEN applied and logged
    r = db.apply(batch)
    lines: list[str] = []
    log_batch(r, sink=lines.append)
    # THEN every reason is short; a value is named by its column and size, never shown; an
    # event type (a name, not data) is cut to a short sample
    assert statuses(r) == ["failed"] * 3
    for o in r.outcomes:
        assert len(o.reason) <= 1024 and "x" * 10 not in o.reason and "e" * 200 not in o.reason
    assert "status" in r.outcomes[0].reason and "1048576" in r.outcomes[0].reason.replace(",", "")
    assert "y" * 200 not in r.outcomes[1].reason and "1,048,582 characters" in r.outcomes[1].reason
    # AND the EMF line stays far under CloudWatch's 256 KB event limit
    assert len(lines) == 1 and len(lines[0].encode()) < 32 * 1024
    assert "x" * 10 not in lines[0] and "e" * 200 not in lines[0]
    # AND a debug setting shows a short sample of the value
    monkeypatch.setenv("SYNC_LOG_VALUES", "1")
    r2 = db.apply([order_record("ORD-B4", status="z" * 100)])
    assert "zzzzzzzz" in r2.outcomes[0].reason and len(r2.outcomes[0].reason) <= 1024
