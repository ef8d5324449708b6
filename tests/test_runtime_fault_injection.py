"""Raise at every step: the runtime's hand-written protocol code (PostgreSQL's libpq-level
pipeline, MySQL's multi-statements, SQLite's direct cursor) and the per-message path, made to
fail at each call they make, one call at a time. After every such fault:

- apply_batch answered (it never raises);
- nothing is half applied: each message's effect is in the database exactly when its ledger
  row is (a fault after the commit was sent may leave a message reported failed but
  committed; its redelivery is then a duplicate);
- nothing is carried over: the next, unrelated batch commits its own changes and nothing else
  (a write queued on a connection that went back to the pool would be committed by it);
- redelivering the failed messages ends with every change applied exactly once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import event, text

import runtime.dialects.base
import runtime.dialects.postgresql
from runtime.apply import optimism_for
from tests.factories import customer_record, item_record, order_record, redelivered
from tests.runtime_db import Db, failed_ids


class InjectedFault(Exception):
    """The fault the plan raises."""


@dataclass
class FaultPlan:
    """Counts every hooked call; raises InjectedFault at call number `at` (0: never)."""

    at: int = 0
    calls: int = 0
    where: str = ""
    names: list[str] = field(default_factory=list)

    def tick(self, name: str) -> None:
        self.calls += 1
        self.names.append(name)
        if self.calls == self.at:
            self.where = name
            raise InjectedFault(f"injected at call {self.at} ({name})")


class Faulty:
    """A proxy of `target` whose `methods` tick the plan before they run."""

    def __init__(self, target: Any, plan: FaultPlan, methods: tuple[str, ...], prefix: str) -> None:
        self._target, self._plan, self._methods, self._prefix = target, plan, methods, prefix

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if name not in self._methods:
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self._plan.tick(f"{self._prefix}.{name}")
            return attr(*args, **kwargs)

        return call


PG_CALLS = (
    "enter_pipeline_mode",
    "send_prepare",
    "send_query_prepared",
    "send_query_params",
    "pipeline_sync",
    "flush",
    "consume_input",
    "get_result",
    "exit_pipeline_mode",
)
TX_CALLS = ("dump_sequence", "set_pgresult", "load_rows")
PYMYSQL_CALLS = ("mogrify", "execute", "fetchall", "nextset")


@pytest.fixture
def hooked(db: Db, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultPlan]:
    """A FaultPlan wired into every step of the runtime's database code for `db`."""
    plan = FaultPlan()
    # Every statement SQLAlchemy sends (reads, the per-message path, savepoints), before it
    # goes out and after it ran; and every COMMIT and ROLLBACK.
    event.listen(db.engine, "before_cursor_execute", lambda *a: plan.tick("before_cursor_execute"))
    event.listen(db.engine, "after_cursor_execute", lambda *a: plan.tick("after_cursor_execute"))
    event.listen(db.engine, "commit", lambda *a: plan.tick("commit"))
    event.listen(db.engine, "savepoint", lambda *a: plan.tick("savepoint"))
    event.listen(db.engine, "release_savepoint", lambda *a: plan.tick("release_savepoint"))
    # Binding of the driver-level sessions' statements (PostgreSQL, SQLite).
    values = runtime.dialects.base.PositionalCompiled.values
    monkeypatch.setattr(
        runtime.dialects.base.PositionalCompiled,
        "values",
        lambda self, params: (plan.tick("values"), values(self, params))[1],
    )
    if db.name == "postgresql":
        init = runtime.dialects.postgresql.PsycopgPipelineSession.__init__

        def wrapped(self: Any, *args: Any, **kwargs: Any) -> None:
            init(self, *args, **kwargs)
            self.pg = Faulty(self.pg, plan, PG_CALLS, "pgconn")
            self.tx = Faulty(self.tx, plan, TX_CALLS, "transformer")

        monkeypatch.setattr(runtime.dialects.postgresql.PsycopgPipelineSession, "__init__", wrapped)
    if db.name == "mysql":
        import pymysql.connections
        import pymysql.cursors

        for name in PYMYSQL_CALLS:
            real = getattr(pymysql.cursors.Cursor, name)

            def hook(
                self: Any, *args: Any, _real: Callable[..., Any] = real, _n: str = name, **kw: Any
            ) -> Any:
                plan.tick(f"cursor.{_n}")
                return _real(self, *args, **kw)

            monkeypatch.setattr(pymysql.cursors.Cursor, name, hook)
        for name in ("commit", "rollback"):
            real = getattr(pymysql.connections.Connection, name)

            def conn_hook(self: Any, _real: Callable[..., Any] = real, _n: str = name) -> Any:
                plan.tick(f"connection.{_n}")
                return _real(self)

            monkeypatch.setattr(pymysql.connections.Connection, name, conn_hook)
    yield plan  # the listeners go with the test's engine


# --- the batch, and what each message leaves behind ------------------------------------------


def the_batch(redelivery: bool) -> list[dict[str, Any]]:
    """Five messages of three groups, one of them with two writes, and an order line whose
    order does not exist (a foreign-key violation: the batch takes the per-message path)."""
    batch = [
        order_record("ORD-A", seq="10"),
        order_record("ORD-A", "order.confirmed", status="confirmed", seq="11"),
        order_record("ORD-B", seq="10"),
        customer_record("C-1", seq="10"),
        customer_record("C-1", "customer.status_changed", status="suspended", seq="11"),
    ]
    return [redelivered(r) for r in batch] if redelivery else batch


def effects(db: Db, batch: list[dict[str, Any]]) -> list[tuple[bool, bool]]:
    """Per message: (its change is in the database, its ledger row is)."""
    import json

    ledger = {r[0] for r in db.rows("SELECT event_id FROM sync_ledger")}
    orders = dict(db.rows("SELECT order_id, status FROM orders"))
    customers = dict(db.rows("SELECT external_id, status_code FROM customers"))
    history = db.one("SELECT COUNT(*) FROM customer_status_history")
    present = [
        "ORD-A" in orders,
        orders.get("ORD-A") == "confirmed",
        "ORD-B" in orders,
        "C-1" in customers,
        customers.get("C-1") == 2 and history == 1,
    ]
    if history and customers.get("C-1") != 2:
        present[4] = None  # type: ignore[call-overload]  # half applied: one write of two
    return [(p, json.loads(r["body"])["eventID"] in ledger) for p, r in zip(present, batch, strict=True)]


def reset(db: Db) -> None:
    with db.observer.begin() as conn:
        for table in (
            "customer_status_history",
            "order_items",
            "customers",
            "orders",
            "sync_ledger",
            "sync_tombstones",
        ):
            conn.execute(text(f"DELETE FROM {table}"))
    db.engine.dispose()  # a new connection for every run: the same calls in the same order
    optimism = optimism_for(db.registry, db.engine)
    optimism.skip, optimism.penalty = 0, 1


SCENARIOS = {
    # the single round trip of first deliveries (PostgreSQL, SQLite; MySQL reads first)
    "first deliveries": (False, False),
    # redelivered messages: read, plan, write
    "redeliveries": (True, False),
    # a foreign-key violation in the batch: the per-message path, one savepoint each
    "per-message path": (True, True),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_a_fault_at_any_step_leaves_nothing_half_applied(db: Db, hooked: FaultPlan, scenario: str) -> None:
    redelivery, orphan = SCENARIOS[scenario]

    def batch_for_run() -> list[dict[str, Any]]:
        batch = the_batch(redelivery)
        return batch + ([item_record("ORD-NONE", 1)] if orphan else [])

    # GIVEN the number of calls a clean run makes
    reset(db)
    hooked.at, hooked.calls = 0, 0
    clean = db.apply(batch_for_run())
    assert failed_ids(clean) == ([clean.outcomes[-1].message_id] if orphan else []), clean.outcomes
    steps = hooked.calls
    assert steps > 5, hooked.names
    checked = 0
    for at in range(1, steps + 1):
        reset(db)
        batch = batch_for_run()
        hooked.at, hooked.calls, hooked.where = at, 0, ""
        # WHEN a fault is raised at call number `at`
        result = db.apply(batch)
        hooked.at = 0
        where = f"fault at call {at} ({hooked.where or 'not reached'}) of {scenario} on {db.name}"
        if not hooked.where:
            continue
        checked += 1
        main = batch[:5]
        # THEN each message is applied whole or not at all, and its ledger row says which
        state = effects(db, main)
        assert all(p is not None and p == in_ledger for p, in_ledger in state), (
            where,
            state,
            result.outcomes,
        )
        for outcome, (present, _) in zip(result.outcomes, state, strict=False):
            if outcome.status == "applied":
                assert present, (where, outcome)
        # AND an unrelated batch on the same engine commits its own change and nothing else
        after_fault = effects(db, main)
        other = db.apply([order_record("ORD-OTHER")])
        assert failed_ids(other) == [], (where, other.outcomes)
        assert effects(db, main) == after_fault, where
        assert db.one("SELECT COUNT(*) FROM orders WHERE order_id = 'ORD-OTHER'") == 1, where
        # AND redelivering what failed applies everything exactly once
        pending = [r for r in main if r["messageId"] in set(failed_ids(result))]
        for _ in range(3):
            if not pending:
                break
            again = db.apply([redelivered(r) for r in pending])
            pending = [r for r in pending if r["messageId"] in set(failed_ids(again))]
        assert pending == [], where
        assert effects(db, main) == [(True, True)] * 5, where
        assert db.one("SELECT COUNT(*) FROM sync_ledger") == 6, where
    print(f"{scenario} on {db.name}: {checked} faults of {steps} calls checked")
    assert checked >= steps // 2, (checked, steps)
