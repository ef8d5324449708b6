"""The runtime's databases for tests: the `db` fixture runs a test on SQLite, PostgreSQL and
MariaDB with the tables of the generated build/registry.json, exactly as deployed; helpers to
look at rows, hold row locks and kill the runtime's connection."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from runtime.apply import apply_batch, optimism_for
from runtime.config import make_engine
from runtime.registry import Registry, load_registry
from runtime.schema import build_metadata
from tests.conftest import scratch_url

ROOT = Path(__file__).resolve().parent.parent
SCRATCH_DB_BASE = "sync_rt"
SCRATCH_DB = SCRATCH_DB_BASE + os.environ.get("SYNC_TEST_DB_SUFFIX", "")


@pytest.fixture(scope="session")
def registry() -> Registry:
    return load_registry(ROOT / "build" / "registry.json")


def _scratch_url(server_url: str) -> str:
    return scratch_url(server_url, SCRATCH_DB_BASE)


@dataclass
class Db:
    name: str
    url: str
    engine: Engine  # the runtime's own (one pooled connection, as in the Lambda)
    registry: Registry
    observer: Engine  # the test's, so looking never waits for the runtime's connection

    def rows(self, sql: str, **params: Any) -> list[tuple[Any, ...]]:
        with self.observer.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql), params)]

    def one(self, sql: str, **params: Any) -> Any:
        rows = self.rows(sql, **params)
        return rows[0][0] if rows else None

    def apply(self, records: list[dict[str, Any]], **kw: Any) -> Any:
        return apply_batch(records, self.engine, self.registry, **kw)


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def db(request: pytest.FixtureRequest, registry: Registry, tmp_path: Path) -> Iterator[Db]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'sync.db'}"
    elif request.param == "postgresql":
        url = _scratch_url(request.getfixturevalue("postgres_url"))
    else:
        url = _scratch_url(request.getfixturevalue("mysql_url"))
    engine = make_engine(url, lock_timeout_ms=1000)
    metadata = build_metadata(registry)
    metadata.drop_all(engine)
    metadata.create_all(engine)
    observer = create_engine(url)
    optimism = optimism_for(registry, engine)  # kept with the registry: start each test afresh
    optimism.skip, optimism.penalty = 0, 1
    yield Db(request.param, url, engine, registry, observer)
    engine.dispose()
    observer.dispose()


def failed_ids(result: Any) -> list[str]:
    return [f["itemIdentifier"] for f in result.response()["batchItemFailures"]]


def statuses(result: Any) -> list[str]:
    return [o.status for o in result.outcomes]


def blocker_session(db: Db, *sql: str) -> tuple[Any, Any]:
    """Another session holding the locks its statements take, in an open transaction."""
    # READ COMMITTED: the rows alone are locked, never the gaps beside them (InnoDB), so the
    # blocker holds what it names whatever index it finds the rows by (orders: its unique
    # order_id beside the surrogate primary key).
    engine = create_engine(db.url, isolation_level="READ COMMITTED")
    conn = engine.connect()
    trans = conn.begin()
    for statement in sql:
        conn.execute(text(statement))
    return engine, (conn, trans)


def lock_orders(db: Db, order_ids: list[str]) -> tuple[Any, Any]:
    """Another session holding these orders' rows locked: one key lookup each, so InnoDB
    locks the rows alone (a range or a scan would also lock the gaps between them)."""
    return blocker_session(
        db, *[f"SELECT * FROM orders WHERE order_id = '{order_id}' FOR UPDATE" for order_id in order_ids]
    )


def wait_for_lock_waiter(db: Db, timeout: float = 5.0) -> Any:
    """The server-side id of the connection waiting on a row lock."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if db.name == "postgresql":
            pid = db.one(
                "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = :d",
                d=SCRATCH_DB,
            )
        else:
            pid = db.one(
                "SELECT trx_mysql_thread_id FROM information_schema.innodb_trx WHERE trx_state = 'LOCK WAIT'"
            )
        if pid:
            return pid
        time.sleep(0.02)
    raise AssertionError("the runtime never waited on the lock")


def kill(db: Db, server_id: Any) -> None:
    admin = create_engine(db.url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if db.name == "postgresql":
            conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": server_id})
        else:
            conn.execute(text(f"KILL {int(server_id)}"))
    admin.dispose()
