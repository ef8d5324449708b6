"""Chaos on a real server: while a stream of events is applied batch after batch, another
thread kills the runtime's backend, cuts its connection on the network path, and holds row
locks, at random moments. Failed messages are delivered again the way SQS FIFO does (the rest
of their group behind them), late duplicates arrive under new message ids, and each batch has
a deadline. At the end nothing is lost and nothing is doubled: every row is the fold of its
item's events, the ledger holds every event once, and every appended history row is there once.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import create_engine, event, make_url, text

from runtime.apply import apply_batch
from runtime.config import make_engine
from tests.factories import customer_record, order_record, redelivered, sqs_record
from tests.netfaults import FreezableProxy
from tests.runtime_db import Db

ORDER_STEPS = ("order.confirmed", "order.shipped", "order.cancelled")
STATUSES = ("active", "suspended", "closed")
STATUS_CODES = {"active": 1, "suspended": 2, "closed": 9}
ORDERS, CUSTOMERS = 40, 24


@dataclass
class Workload:
    """A stream of events for a fixed set of items, generated as the test goes, and the state
    their fold leaves."""

    rng: random.Random
    groups: dict[str, deque[dict[str, Any]]] = field(default_factory=dict)
    orders: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (status, version)
    customers: dict[str, tuple[int, bool, str]] = field(
        default_factory=dict
    )  # id -> (code, deleted, version)
    history: dict[str, int] = field(default_factory=dict)
    events: int = 0
    seq: int = 1000

    def __post_init__(self) -> None:
        for i in range(ORDERS):
            oid = f"ORD-{i:02d}"
            self.groups[oid] = deque([order_record(oid, seq=self._next())])
            self.orders[oid] = ("pending", self._version())
        for i in range(CUSTOMERS):
            cid = f"C-{i:02d}"
            status = self.rng.choice(STATUSES)
            self.groups[cid] = deque([customer_record(cid, status=status, seq=self._next())])
            self.customers[cid] = (STATUS_CODES[status], False, self._version())
            self.history[cid] = 0
        self.events = ORDERS + CUSTOMERS

    def _next(self) -> str:
        self.seq += 1
        return str(self.seq)

    def _version(self) -> str:
        return str(self.seq).zfill(40)

    def more(self, n: int) -> None:
        """n more events, each for an item chosen at random (a removed customer has no more)."""
        for _ in range(n):
            item = self.rng.choice(list(self.groups))
            if item.startswith("ORD-"):
                step = self.rng.choice(ORDER_STEPS)
                status = step.split(".")[1]
                self.groups[item].append(order_record(item, step, status=status, seq=self._next()))
                self.orders[item] = (status, self._version())
            else:
                code, deleted, _ = self.customers[item]
                if deleted:
                    continue
                roll = self.rng.random()
                if roll < 0.1:
                    self.groups[item].append(customer_record(item, event_name="REMOVE", seq=self._next()))
                    self.customers[item] = (code, True, self._version())
                else:
                    status = self.rng.choice(STATUSES)
                    kind = "customer.status_changed" if roll < 0.55 else "customer.updated"
                    self.groups[item].append(customer_record(item, kind, status=status, seq=self._next()))
                    self.customers[item] = (STATUS_CODES[status], False, self._version())
                    self.history[item] += kind == "customer.status_changed"
            self.events += 1


class Chaos(threading.Thread):
    """Kills the runtime's backend, cuts its connections, holds row locks, until stopped."""

    def __init__(self, db: Db, proxy: FreezableProxy, backends: list[int], rng: random.Random) -> None:
        super().__init__(name="chaos", daemon=True)
        self.db, self.proxy, self.backends, self.rng = db, proxy, backends, rng
        self.done = threading.Event()
        self.counts = {"kill": 0, "cut": 0, "lock": 0}
        self.admin = create_engine(db.url, isolation_level="AUTOCOMMIT")

    def run(self) -> None:
        while not self.done.wait(self.rng.uniform(0.01, 0.08)):
            action = self.rng.choice(("kill", "cut", "lock", "lock"))
            try:
                getattr(self, action)()
                self.counts[action] += 1
            except Exception:  # the target went away first: chaos goes on
                pass
        self.admin.dispose()

    def kill(self) -> None:
        if not self.backends:
            return
        with self.admin.connect() as conn:
            if self.db.name == "postgresql":
                conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": self.backends[-1]})
            else:
                conn.execute(text(f"KILL {int(self.backends[-1])}"))

    def cut(self) -> None:
        self.proxy.cut()

    def lock(self) -> None:
        rows = self.rng.sample([f"ORD-{i:02d}" for i in range(ORDERS)], 3)
        with self.admin.connect() as conn:
            conn.execute(text("BEGIN"))
            for order_id in rows:
                conn.execute(text("SELECT 1 FROM orders WHERE order_id = :o FOR UPDATE"), {"o": order_id})
            self.done.wait(self.rng.uniform(0.1, 1.0))
            conn.execute(text("ROLLBACK"))


def test_nothing_is_lost_or_doubled_under_chaos(db: Db) -> None:
    if db.name == "sqlite":
        pytest.skip("no server to kill, no network to cut, no row locks")
    rng = random.Random(20261207)
    w = Workload(random.Random(rng.random()))
    url = make_url(db.url)
    port = url.port or (5432 if db.name == "postgresql" else 3306)
    with FreezableProxy(url.host or "127.0.0.1", port) as proxy:
        engine = make_engine(url.set(host="127.0.0.1", port=proxy.port), lock_timeout_ms=500)
        backends: list[int] = []

        @event.listens_for(engine, "connect")
        def _remember(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("SELECT pg_backend_pid()" if db.name == "postgresql" else "SELECT CONNECTION_ID()")
            backends.append(int(cursor.fetchone()[0]))
            cursor.close()
            dbapi_connection.commit()

        chaos = Chaos(db, proxy, backends, random.Random(rng.random()))
        # GIVEN every item's events queued in its message group, and chaos running
        queues = w.groups
        late: list[dict[str, Any]] = []
        failures = 0
        chaos.start()
        try:
            started = time.monotonic()
            for _ in range(2000):
                if not chaos.done.is_set():
                    # Chaos lasts until each of its actions happened a few times (at least 3 s,
                    # at most 30 s), events arriving all along; then the queues drain in peace.
                    elapsed = time.monotonic() - started
                    if (min(chaos.counts.values()) >= 3 and elapsed > 3) or elapsed > 30:
                        chaos.done.set()
                    elif sum(map(len, queues.values())) < 30:
                        w.more(40)
                    time.sleep(rng.uniform(0.0, 0.02))  # the poller's gap between batches
                pending = [g for g in queues if queues[g]]
                if not pending and not late and chaos.done.is_set():
                    break
                # WHEN batches of up to 10 messages mixing groups are applied, with a deadline
                rng.shuffle(pending)
                if not pending and not late:
                    continue
                batch: list[dict[str, Any]] = []
                for g in pending:
                    take = min(len(queues[g]), rng.randint(1, 3), 10 - len(batch))
                    batch += [queues[g].popleft() for _ in range(take)]
                    if len(batch) >= 10:
                        break
                if late and len(batch) < 10:
                    batch.append(late.pop())
                result = apply_batch(batch, engine, db.registry, deadline=time.monotonic() + 3)
                failed = {f["itemIdentifier"] for f in result.response()["batchItemFailures"]}
                failures += len(failed)
                # THEN what failed comes back, in order, ahead of the rest of its group
                back: dict[str, list[dict[str, Any]]] = {}
                for rec in batch:
                    if rec["messageId"] in failed:
                        back.setdefault(rec["attributes"]["MessageGroupId"], []).append(redelivered(rec))
                    elif rng.random() < 0.1:  # a late copy under a new message id
                        late.append(
                            sqs_record(
                                rec["body"],
                                group=rec["attributes"]["MessageGroupId"],
                                queue=rec["eventSourceARN"].rsplit(":")[-1],
                            )
                        )
                for g, recs in back.items():
                    if g in queues:
                        queues[g].extendleft(reversed(recs))
                    else:  # a late copy failed: it comes back as itself
                        late.extend(recs)
            else:
                pytest.fail("the queues never drained")
        finally:
            chaos.done.set()
            chaos.join(10)
            engine.dispose()
    # AND the chaos really happened, and really failed batches
    assert min(chaos.counts.values()) > 0 and failures > 0, (chaos.counts, failures)
    # AND every row is the fold of its item's events: nothing lost, nothing doubled
    orders = {r[0]: (r[1], r[2]) for r in db.rows("SELECT order_id, status, sync_version FROM orders")}
    assert orders == w.orders
    customers = {
        r[0]: (r[1], r[2] is not None, r[3])
        for r in db.rows("SELECT external_id, status_code, deleted_at, sync_version FROM customers")
    }
    assert customers == w.customers
    history = dict(db.rows("SELECT external_id, COUNT(*) FROM customer_status_history GROUP BY external_id"))
    assert {c: n for c, n in w.history.items() if n} == history
    assert db.one("SELECT COUNT(*) FROM sync_ledger") == w.events
