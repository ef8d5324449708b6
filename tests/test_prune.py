"""Retention of the ledger and the tombstones (runtime/prune.py) on SQLite, PostgreSQL and
MariaDB: only what is older than the window goes, in batches; a duplicate inside the window is
still caught; the sync keeps working while a prune runs; a retired entity loses all its ledger
rows; the Lambda's handler runs it on the prune event; `ddb-sql-sync prune` runs it locally."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, insert

import runtime.handler
from runtime.apply import DUPLICATE
from runtime.config import make_engine
from runtime.prune import LEDGER, PRUNE_EVENT, TOMBSTONES, PruneError, prune, targets
from runtime.registry import Registry, RetiredSpec, load_registry
from runtime.schema import build_metadata, ledger_table, tombstone_table
from tests.factories import order_record, redelivered
from tests.runtime_db import ROOT, Db

NOW = datetime.now(UTC)
OLD = NOW - timedelta(days=40)  # older than the default window (23 days)
YOUNG = NOW - timedelta(hours=1)


def _ledger_rows(db: Db, entity: str, at: datetime, n: int, prefix: str) -> None:
    table = ledger_table(MetaData(), db.registry.ledger_table)
    rows = [
        {
            "entity": entity,
            "event_id": f"{prefix}-{i}",
            "message_id": None,
            "outcome": "applied",
            "applied_at": at,
        }
        for i in range(n)
    ]
    with db.engine.begin() as conn:
        conn.execute(insert(table), rows)


def _tombstones(db: Db, table_name: str, at: datetime, n: int, prefix: str) -> None:
    table = tombstone_table(MetaData(), db.registry.tombstone_table)
    rows = [
        {"table_name": table_name, "row_key": f'["{prefix}-{i}"]', "version": "1", "deleted_at": at}
        for i in range(n)
    ]
    with db.engine.begin() as conn:
        conn.execute(insert(table), rows)


def _count(db: Db, sql: str, **params: Any) -> int:
    return int(db.one(sql, **params))


def _tomb_table(registry: Registry) -> str:
    return next(t.qualified for e in registry.entities.values() for t in e.tables.values() if t.tombstones)


def test_the_default_windows_come_from_the_registry(registry: Registry) -> None:
    # GIVEN the bundled registry  THEN each entity carries the derived window (23 days)
    assert {e.ledger_seconds for e in registry.entities.values()} == {1987200}
    found = targets(registry)
    assert {t.name for t in found if t.kind == LEDGER} == set(registry.entities)
    assert {t.seconds for t in found} == {1987200}
    with pytest.raises(PruneError, match="no entity nope"):
        targets(registry, entities=["nope"])


def test_prune_removes_only_rows_older_than_the_window_in_batches(db: Db) -> None:
    # GIVEN 25 old and 5 young ledger rows of orders, 7 old rows of customers, and old and
    # young tombstones of a table with deletes
    _ledger_rows(db, "orders", OLD, 25, "old")
    _ledger_rows(db, "orders", YOUNG, 5, "young")
    _ledger_rows(db, "customers", OLD, 7, "cust")
    tomb = _tomb_table(db.registry)
    _tombstones(db, tomb, OLD, 12, "gone")
    _tombstones(db, tomb, YOUNG, 3, "fresh")
    # WHEN a dry run counts, then orders is pruned 10 rows per batch
    dry = prune(db.engine, db.registry, entities=["orders"], batch_rows=10, dry_run=True)
    assert [(p.target.kind, p.rows) for p in dry.pruned] == [(LEDGER, 25)]
    assert _count(db, "SELECT count(*) FROM sync_ledger") == 37
    result = prune(db.engine, db.registry, entities=["orders"], batch_rows=10)
    # THEN only the old orders rows went, in 3 batches (10, 10, 5)
    (ledger,) = result.pruned
    assert (ledger.rows, ledger.batches, ledger.complete) == (25, 3, True)
    assert _count(db, "SELECT count(*) FROM sync_ledger WHERE entity = 'orders'") == 5
    assert _count(db, "SELECT count(*) FROM sync_ledger WHERE event_id LIKE 'young-%'") == 5
    assert _count(db, "SELECT count(*) FROM sync_ledger WHERE entity = 'customers'") == 7
    # WHEN everything is pruned THEN the old customers rows and the old tombstones go too
    everything = prune(db.engine, db.registry, batch_rows=4)
    assert everything.complete
    by = {(p.target.kind, p.target.name): p.rows for p in everything.pruned}
    assert by[(LEDGER, "customers")] == 7 and by[(TOMBSTONES, tomb)] == 12
    assert _count(db, "SELECT count(*) FROM sync_ledger") == 5
    assert _count(db, "SELECT count(*) FROM sync_tombstones") == 3


def test_a_duplicate_inside_the_window_is_still_caught(db: Db) -> None:
    # GIVEN an applied event
    rec = order_record("O-dup")
    assert db.apply([rec]).outcomes[0].status == "applied"
    # WHEN a prune runs (the event is inside its window) and the message comes again
    prune(db.engine, db.registry)
    again = db.apply([redelivered(rec)])
    # THEN the ledger still catches it
    assert again.outcomes[0].status == DUPLICATE
    # AND once pruned past its window (older_than 0) the ledger row is gone
    cut = prune(
        db.engine,
        db.registry,
        entities=["orders"],
        older_than=0,
        now=datetime.now(UTC) + timedelta(seconds=5),
    )
    assert cut.rows == 1


def test_a_deadline_stops_before_the_next_batch(db: Db) -> None:
    _ledger_rows(db, "orders", OLD, 6, "old")
    result = prune(db.engine, db.registry, entities=["orders"], batch_rows=2, deadline=0.0, clock=lambda: 1.0)
    assert not result.complete and result.rows == 0
    assert _count(db, "SELECT count(*) FROM sync_ledger") == 6


def test_a_retired_entity_loses_all_its_ledger_rows(db: Db) -> None:
    # GIVEN ledger rows, old and young, of an entity the registry lists as retired
    _ledger_rows(db, "legacy_orders", OLD, 3, "a")
    _ledger_rows(db, "legacy_orders", YOUNG, 4, "b")
    _ledger_rows(db, "orders", YOUNG, 2, "c")
    _tombstones(db, "legacy_table", YOUNG, 2, "t")
    retired = replace(db.registry, retired={"legacy_orders": RetiredSpec("legacy_orders", ("legacy_table",))})
    # WHEN pruned THEN every row of the retired entity went, young ones too, and nothing else
    result = prune(db.engine, retired, batch_rows=2)
    assert result.complete
    assert _count(db, "SELECT count(*) FROM sync_ledger WHERE entity = 'legacy_orders'") == 0
    assert _count(db, "SELECT count(*) FROM sync_ledger WHERE entity = 'orders'") == 2
    assert _count(db, "SELECT count(*) FROM sync_tombstones WHERE table_name = 'legacy_table'") == 0


def test_the_sync_keeps_working_while_a_prune_runs(db: Db) -> None:
    if db.name == "sqlite":
        pytest.skip("one writer at a time on SQLite: the concurrency test needs a server")
    # GIVEN many old ledger rows, pruned in small batches on a connection of its own
    _ledger_rows(db, "orders", OLD, 3000, "old")
    pruner = make_engine(db.url, lock_timeout_ms=1000)
    done: list[Any] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            done.append(prune(pruner, db.registry, entities=["orders"], batch_rows=50))
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    # WHEN the sync applies batches meanwhile
    applied = 0
    for i in range(15):
        result = db.apply([order_record(f"live-{i}-{j}") for j in range(5)])
        assert result.response() == {"batchItemFailures": []}
        applied += sum(1 for o in result.outcomes if o.status == "applied")
    thread.join(timeout=120)
    pruner.dispose()
    # THEN every batch applied, and the prune finished
    assert not errors, errors
    assert applied == 75
    assert done and done[0].complete and done[0].rows == 3000
    assert _count(db, "SELECT count(*) FROM sync_ledger WHERE entity = 'orders'") == 75


def test_the_handler_prunes_on_the_prune_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN the Lambda's configuration on a SQLite database with old ledger rows
    registry_file = ROOT / "build" / "registry.json"
    url = f"sqlite:///{tmp_path / 'h.db'}"
    registry = load_registry(registry_file)
    engine = make_engine(url)
    build_metadata(registry).create_all(engine)
    table = ledger_table(MetaData(), registry.ledger_table)
    with engine.begin() as conn:
        conn.execute(
            insert(table),
            [
                {"entity": "orders", "event_id": f"e{i}", "outcome": "applied", "applied_at": OLD}
                for i in range(3)
            ],
        )
    monkeypatch.setenv("SYNC_REGISTRY", str(registry_file))
    monkeypatch.setenv("SYNC_DATABASE_URL", url)
    monkeypatch.setattr(runtime.handler, "_runtime", None)

    class Context:
        def get_remaining_time_in_millis(self) -> int:
            return 30000

    # WHEN the schedule's event arrives
    response = runtime.handler.handler(PRUNE_EVENT, Context())  # type: ignore[arg-type]
    # THEN the old rows are gone and the answer and the log line say so
    assert response == {"prune": "done", "rows": 3, "complete": True}
    logged = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert logged and logged[-1]["rows"] == 3
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM sync_ledger").scalar() == 0
    engine.dispose()


def test_the_prune_command_runs_the_same_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from generator.cli import main

    url = f"sqlite:///{tmp_path / 'c.db'}"
    registry = load_registry(ROOT / "build" / "registry.json")
    engine = make_engine(url)
    build_metadata(registry).create_all(engine)
    table = ledger_table(MetaData(), registry.ledger_table)
    with engine.begin() as conn:
        conn.execute(
            insert(table),
            [
                {"entity": "customers", "event_id": f"e{i}", "outcome": "applied", "applied_at": OLD}
                for i in range(4)
            ],
        )
    build = str(ROOT / "build")
    assert main(["prune", "--db", url, "--build", build, "--dry-run", "--format", "json"]) == 0
    dry = json.loads(capsys.readouterr().out)
    assert dry["prune"] == "dry-run" and dry["rows"] == 4
    assert main(["prune", "--db", url, "--build", build, "--entity", "customers", "--batch-rows", "3"]) == 0
    out = capsys.readouterr().out
    assert "ledger customers: deleted 4 row(s)" in out and "in 2 batch(es)" in out
    assert main(["prune", "--db", url, "--build", build, "--entity", "nope"]) == 2
    engine.dispose()
