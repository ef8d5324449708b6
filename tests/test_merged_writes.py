"""Runs of inserts and upserts of one table go to PostgreSQL as statements of many rows
(runtime.statements.Statements.merged_items): they write exactly what one statement per row
writes, a refused row still fails its message alone, and a premise one row misses still sends
the batch to the read-then-write path."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.dialects import postgresql

from runtime import dialects
from runtime.dialects.postgresql import PsycopgPipelineSession
from runtime.kinds import OP_UPDATE, OP_UPSERT
from runtime.plan import Op
from runtime.registry import Registry
from runtime.statements import Statements
from tests.factories import customer_record, invoice_record, order_record
from tests.runtime_db import Db, statuses
from tests.test_runtime_faults import with_raw


def _pg_statements(registry: Registry) -> Statements:
    engine: Any = type("E", (), {"dialect": postgresql.dialect()})()
    return Statements(registry, dialects.of(engine))


def _op(registry: Registry, order_id: str, kind: Any = OP_UPSERT) -> Op:
    spec = registry.entities["orders"].tables["orders"]
    return Op(kind, spec, (), {"value_order_id": order_id, "version": "1"}, ("orders", f'["{order_id}"]'))


def _rows(item: Any) -> int:
    return sum(1 for name in item[1] if name == "version" or name.startswith("version_"))


def test_a_run_is_cut_where_a_row_repeats_or_the_shape_changes(registry: Registry) -> None:
    stmts = _pg_statements(registry)
    # GIVEN upserts of 7 rows (the fourth row written twice in a row of writes), an update,
    # then 3 more upserts, from messages 0..11
    ids = ["A", "B", "C", "D", "D", "E", "F"]
    ops = (
        [_op(registry, i) for i in ids] + [_op(registry, "G", OP_UPDATE)] + [_op(registry, i) for i in "HIJ"]
    )
    owners: list[int | None] = list(range(len(ops)))
    # WHEN merged
    items, item_owners = stmts.merged_items(ops, owners)
    # THEN the run stops before the repeated row, and each run goes in power-of-two pieces
    # (4, then 1 + 2, the update alone, then 2 + 1), each piece naming its message only when
    # it has one
    assert [_rows(i) for i in items] == [4, 2, 1, 1, 2, 1]
    assert item_owners == [None, None, 6, 7, None, 10]
    # AND row i of a piece carries the i-th op's values
    assert items[0][1]["value_order_id_3"] == "D" and items[1][1]["value_order_id_0"] == "D"
    # AND one message's run keeps its owner
    _, one_owner = stmts.merged_items(ops[:3], [5, 5, 5])
    assert one_owner == [5, 5]


def test_a_write_with_a_lookup_is_never_merged(registry: Registry) -> None:
    stmts = _pg_statements(registry)
    spec = registry.entities["order_items"].tables["order_items"]
    assert spec.lookups
    ops = [Op(OP_UPSERT, spec, (), {}, ("order_items", f'["O",{i}]')) for i in range(4)]
    items, _ = stmts.merged_items(ops, [0, 1, 2, 3])
    assert len(items) == 4


def test_a_merged_statement_stays_under_the_protocol_parameter_limit(registry: Registry) -> None:
    from runtime.statements import MERGE_MAX_PARAMS, _merge_limit

    stmts = _pg_statements(registry)
    pg = postgresql.dialect()
    for entity in registry.entities.values():
        for spec in entity.tables.values():
            if spec.lookups:
                continue
            # the largest piece merged_items sends for this table
            rows = 1 << (_merge_limit(spec).bit_length() - 1)
            one = len(stmts.statement(OP_UPSERT, spec).compile(dialect=pg).binds)
            merged = stmts._merged(OP_UPSERT, spec, rows, asserted=True).compile(dialect=pg)
            assert len(merged.binds) == rows * one <= MERGE_MAX_PARAMS, (spec.name, rows, one)


def _dump(db: Db) -> dict[str, list[tuple[Any, ...]]]:
    return {
        "orders": db.rows(
            "SELECT order_id, customer_id, total_amount, status, updated_at, sync_version FROM orders "
            "ORDER BY order_id"
        ),
        # less the surrogate key (a sequence's next numbers)
        "customers": [r[1:] for r in db.rows("SELECT * FROM customers ORDER BY external_id")],
        "invoices": db.rows("SELECT * FROM invoices ORDER BY invoice_id"),
        "invoice_lines": db.rows("SELECT * FROM invoice_lines ORDER BY invoice_id, line_no"),
        "ledger": db.rows("SELECT entity, event_id, message_id, outcome FROM sync_ledger ORDER BY event_id"),
    }


def _clear(db: Db) -> None:
    with db.observer.begin() as conn:
        for table in ("orders", "customers", "customer_status_history", "invoices", "invoice_lines"):
            conn.exec_driver_sql(f"DELETE FROM {table}")
        conn.exec_driver_sql("DELETE FROM sync_ledger")
        conn.exec_driver_sql("DELETE FROM sync_tombstones")


def test_merged_statements_write_what_one_statement_per_row_writes(
    db: Db, monkeypatch: pytest.MonkeyPatch
) -> None:
    if db.name != "postgresql":
        pytest.skip("merged statements are the PostgreSQL session's")
    lines = [{"sku": f"SKU-{n}", "qty": n, "price": f"{n}.5"} for n in range(1, 12)]
    # GIVEN batches of first deliveries: 37 orders (one group with an update behind its
    # create), customers (two tables per message), an invoice of 11 lines (tombstone-guarded
    # child rows); then a batch of updates, a re-create and a delete
    first = [order_record(f"ORD-{i:03d}", seq=str(10**20 + i)) for i in range(37)]
    first.insert(5, order_record("ORD-003", "order.confirmed", status="confirmed", seq=str(10**20 + 100)))
    first += [customer_record(f"C-{i}", seq=str(10**20 + 200 + i)) for i in range(3)]
    first.append(invoice_record("INV-1", lines, seq=str(10**20 + 300)))
    second = [
        order_record(f"ORD-{i:03d}", "order.shipped", status="shipped", seq=str(10**20 + 400 + i))
        for i in range(20)
    ]
    second.append(invoice_record("INV-1", lines[:4], event_name="MODIFY", seq=str(10**20 + 500)))
    second.append(invoice_record("INV-1", None, event_name="REMOVE", seq=str(10**20 + 501)))
    second.append(invoice_record("INV-1", lines, seq=str(10**20 + 400)))  # older: stays deleted

    def run() -> tuple[list[Any], dict[str, Any], Any]:
        results = [db.apply(first), db.apply(second)]
        return [(statuses(r), r.path) for r in results], _dump(db), results[0]

    # WHEN applied with merged statements, then again on empty tables one statement per row
    merged, merged_rows, r1 = run()
    _clear(db)
    monkeypatch.setattr(PsycopgPipelineSession, "merges_rows", False)
    single, single_rows, _ = run()
    # THEN the outcomes, paths, rows and ledger are the same
    assert merged == single
    assert merged_rows == single_rows
    assert merged_rows["orders"][3][3] == "shipped" and len(merged_rows["orders"]) == 37
    assert merged_rows["invoice_lines"] == []
    # AND the first batch went in its single round trip
    assert r1.round_trips == 1 and r1.path == "fast"


def test_merged_statements_are_prepared_on_the_runtime_connection(db: Db) -> None:
    if db.name != "postgresql":
        pytest.skip("merged statements are the PostgreSQL session's")
    db.apply([order_record(f"ORD-{i}") for i in range(10)])
    with db.engine.connect() as conn:
        texts = [r[0] for r in conn.exec_driver_sql("SELECT statement FROM pg_prepared_statements")]
        conn.rollback()
    # 10 rows in a run: pieces of 8 and 2, each asserting every one of its rows changed
    assert any("(COUNT(*) = 8)::int" in t for t in texts), texts
    assert any("(COUNT(*) = 2)::int" in t for t in texts), texts


def test_a_refused_row_in_a_merged_run_fails_its_message_alone(db: Db) -> None:
    # GIVEN 20 new orders, the eighth with an amount its decimal(12,2) column refuses
    batch = [order_record(f"ORD-{i:02d}") for i in range(20)]
    batch[7] = with_raw(order_record("ORD-07", total="T0"), '"T0"', "1E+30")
    # WHEN applied
    r = db.apply(batch)
    # THEN that message fails permanently and alone; every other row and ledger row is there
    expected = ["applied"] * 20
    expected[7] = "failed"
    assert statuses(r) == expected
    assert r.outcomes[7].kind == "permanent" and "total_amount" in r.outcomes[7].reason
    assert [k for (k,) in db.rows("SELECT order_id FROM orders ORDER BY order_id")] == [
        f"ORD-{i:02d}" for i in range(20) if i != 7
    ]
    assert db.one("SELECT COUNT(*) FROM sync_ledger") == 19


def test_a_stale_row_in_a_merged_run_sends_the_batch_to_the_read_path(db: Db) -> None:
    # GIVEN ORD-05 already at a newer version than the batch's create of it
    db.apply([order_record("ORD-05", "order.created", status="confirmed", seq=str(10**20 + 999))])
    batch = [order_record(f"ORD-{i:02d}", seq=str(10**20 + i)) for i in range(12)]
    # WHEN 12 creates arrive in one batch
    r = db.apply(batch)
    # THEN the newer row stays, the stale create is counted stale, the rest applied
    expected = ["applied"] * 12
    expected[5] = "stale"
    assert statuses(r) == expected
    assert db.one("SELECT status FROM orders WHERE order_id = 'ORD-05'") == "confirmed"
    assert db.one("SELECT COUNT(*) FROM orders") == 12
    if db.name == "postgresql":  # the merged write missed its premise: tried, then read + write
        assert r.round_trips == 3
