"""Child rows from a list attribute (mappings/invoices.yaml, a table with `each`) on SQLite,
PostgreSQL and MariaDB: replace semantics, the version and tombstone guards, empty lists,
failures isolated to their message, and the statements' shapes per dialect."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy.dialects import mysql, postgresql, sqlite

from runtime.decode import decode, parse_sqs_record
from runtime.dialects import for_name
from runtime.kinds import OP_PRUNE
from runtime.statements import Statements
from tests.factories import invoice_record, redelivered
from tests.runtime_db import Db, failed_ids

A = {"sku": "SKU-A", "qty": 2, "price": "10.5"}
B = {"sku": "SKU-B", "qty": 1, "price": "99"}
C = {"sku": "SKU-C", "price": "1.25"}


def lines(db: Db, invoice: str) -> list[tuple[Any, ...]]:
    return db.rows(
        "SELECT line_no, sku, qty, price FROM invoice_lines WHERE invoice_id = :i ORDER BY line_no", i=invoice
    )


def test_each_element_is_a_row_and_a_removed_element_is_deleted(db: Db) -> None:
    # GIVEN an invoice with three lines
    r1 = db.apply([invoice_record("INV-1", [A, B, C])])
    assert failed_ids(r1) == []
    assert lines(db, "INV-1") == [
        (1, "SKU-A", 2, Decimal("10.50")),
        (2, "SKU-B", 1, Decimal("99.00")),
        (3, "SKU-C", 1, Decimal("1.25")),
    ]
    # WHEN the second line is removed from the list (C moves to position 2)
    r2 = db.apply([invoice_record("INV-1", [A, C], event_name="MODIFY")])
    # THEN position 3 is deleted and position 2 holds C
    assert failed_ids(r2) == [] and r2.counts()["applied"] == 1
    assert lines(db, "INV-1") == [(1, "SKU-A", 2, Decimal("10.50")), (2, "SKU-C", 1, Decimal("1.25"))]


def test_changes_of_one_invoice_in_one_batch_apply_in_order(db: Db) -> None:
    # GIVEN a create, a shrink and a growth of one invoice in one batch, and another invoice
    batch = [
        invoice_record("INV-2", [A, B, C]),
        invoice_record("INV-2", [B], event_name="MODIFY"),
        invoice_record("INV-3", [C]),
        invoice_record("INV-2", [B, A], event_name="MODIFY"),
    ]
    r = db.apply(batch)
    # THEN the last list stands
    assert failed_ids(r) == [] and r.counts()["applied"] == 4
    assert [x[1] for x in lines(db, "INV-2")] == ["SKU-B", "SKU-A"]
    assert [x[1] for x in lines(db, "INV-3")] == ["SKU-C"]


def test_an_empty_or_missing_list_deletes_every_row_of_the_parent(db: Db) -> None:
    db.apply([invoice_record("INV-4", [A, B]), invoice_record("INV-5", [A])])
    r = db.apply(
        [invoice_record("INV-4", [], event_name="MODIFY"), invoice_record("INV-5", None, event_name="MODIFY")]
    )
    assert failed_ids(r) == []
    assert lines(db, "INV-4") == [] and lines(db, "INV-5") == []
    assert db.one("SELECT COUNT(*) FROM invoices") == 2


def test_an_older_event_neither_overwrites_nor_deletes_newer_rows(db: Db) -> None:
    # GIVEN the newer list applied first
    newer = invoice_record("INV-6", [A], seq="200000000000000000000")
    older_long = invoice_record("INV-6", [B, B, B], seq="150000000000000000000", event_name="MODIFY")
    older_empty = invoice_record("INV-6", [], seq="160000000000000000000", event_name="MODIFY")
    db.apply([newer])
    # WHEN an older, longer list and an older, empty list arrive late
    r = db.apply([older_long])
    r2 = db.apply([older_empty])
    # THEN both are stale and the newer list stands: not overwritten, not extended, not deleted
    assert failed_ids(r) == [] and r.counts()["stale"] == 1
    assert failed_ids(r2) == [] and r2.counts()["stale"] == 1
    assert lines(db, "INV-6") == [(1, "SKU-A", 2, Decimal("10.50"))]


def test_a_parent_delete_removes_its_rows_and_a_late_older_insert_cannot_bring_them_back(db: Db) -> None:
    created = invoice_record("INV-7", [A, B], seq="300000000000000000000")
    db.apply([created])
    r = db.apply([invoice_record("INV-7", None, event_name="REMOVE", seq="300000000000000000001")])
    assert failed_ids(r) == []
    assert lines(db, "INV-7") == [] and db.one("SELECT COUNT(*) FROM invoices") == 0
    # WHEN the create arrives again (a redrive: another copy, another event id), and a redelivery
    late = invoice_record("INV-7", [A, B, C], seq="300000000000000000000")
    r2 = db.apply([late, redelivered(created)])
    # THEN nothing comes back
    assert failed_ids(r2) == [] and r2.counts()["stale"] == 1 and r2.counts()["duplicate"] == 1
    assert lines(db, "INV-7") == [] and db.one("SELECT COUNT(*) FROM invoices") == 0
    # AND a newer re-creation is applied
    r3 = db.apply([invoice_record("INV-7", [C], seq="300000000000000000002")])
    assert failed_ids(r3) == [] and [x[1] for x in lines(db, "INV-7")] == ["SKU-C"]


def test_a_refused_element_fails_its_message_whole_and_other_groups_go_on(db: Db) -> None:
    # GIVEN an invoice whose second line has a price its column refuses, behind it a change of
    # the same invoice, and another invoice
    db.apply([invoice_record("INV-8", [A])])
    bad = invoice_record("INV-8", [A, {"sku": "SKU-B", "qty": 1, "price": "1.005"}], event_name="MODIFY")
    behind = invoice_record("INV-8", [B], event_name="MODIFY")
    other = invoice_record("INV-9", [A, B])
    r = db.apply([bad, behind, other])
    # THEN the bad one and the one behind it fail, nothing of them is written; the other applies
    assert failed_ids(r) == [bad["messageId"], behind["messageId"]]
    assert "column price" in r.outcomes[0].reason
    assert lines(db, "INV-8") == [(1, "SKU-A", 2, Decimal("10.50"))]
    assert [x[1] for x in lines(db, "INV-9")] == ["SKU-A", "SKU-B"]


def test_a_row_the_database_refuses_fails_its_message_whole(db: Db) -> None:
    # GIVEN a line whose sku is longer than its column on the server side: the decode refuses
    # it, so force one through the database instead: a qty beyond INTEGER
    db.apply([invoice_record("INV-10", [A])])
    bad = invoice_record("INV-10", [B, {"sku": "SKU-Z", "qty": 2**40, "price": "1"}], event_name="MODIFY")
    other = invoice_record("INV-11", [C])
    r = db.apply([bad, other])
    assert failed_ids(r) == [bad["messageId"]]
    assert lines(db, "INV-10") == [(1, "SKU-A", 2, Decimal("10.50"))]
    assert db.one("SELECT sync_version FROM invoices WHERE invoice_id = 'INV-10'") is not None
    assert [x[1] for x in lines(db, "INV-11")] == ["SKU-C"]


def test_a_batch_with_child_rows_takes_the_same_round_trips(db: Db) -> None:
    # GIVEN a warm connection, a batch of ten invoices of 1 line and one of ten invoices of 20
    if db.name == "sqlite":
        pytest.skip("SQLite runs in the process: one call per statement, no network round trip")
    db.apply([invoice_record("INV-W", [A])])
    small = db.apply([invoice_record(f"INV-S{i}", [A]) for i in range(10)])
    large = db.apply([invoice_record(f"INV-L{i}", [A, B] * 10) for i in range(10)])
    # THEN the number of round trips does not grow with the elements
    assert failed_ids(small) == [] and failed_ids(large) == []
    assert large.round_trips == small.round_trips
    assert db.one("SELECT COUNT(*) FROM invoice_lines WHERE invoice_id LIKE 'INV-L%'") == 200


def test_more_elements_than_max_elements_fail_permanently(db: Db) -> None:
    r = db.apply([invoice_record("INV-12", [A] * 201)])
    assert failed_ids(r) and r.outcomes[0].kind == "permanent"
    assert "more than max_elements 200" in r.outcomes[0].reason
    assert lines(db, "INV-12") == []


@pytest.mark.parametrize(
    ("name", "sa_dialect"),
    [("postgresql", postgresql.dialect()), ("mysql", mysql.dialect()), ("sqlite", sqlite.dialect())],
)
def test_the_prune_binds_every_value(registry: Any, name: str, sa_dialect: Any) -> None:
    # GIVEN the prune of a list and of a map (three keys kept, and none)
    stmts = Statements(registry, for_name(name))
    spec = registry.entities["invoices"].tables["invoice_lines"]
    sql = str(stmts.statement(OP_PRUNE, spec, ()).compile(dialect=sa_dialect))
    # THEN the positions and the parent's key are parameters, and the version guards the delete
    assert "DELETE FROM invoice_lines" in sql and "line_no >=" in sql and "sync_version <=" in sql
    assert "INV" not in sql


def test_a_map_field_expands_by_key(registry: Any) -> None:
    # GIVEN the invoices entity with its list field read as a map (keys are the positions)
    from dataclasses import replace

    entity = registry.entities["invoices"]
    table = entity.tables["invoice_lines"]
    assert table.each is not None
    each = replace(table.each, kind="M")
    columns = dict(table.columns)
    columns["line_no"] = replace(columns["line_no"], type="string", length=8)
    as_map = replace(table, each=each, columns=columns)
    field = replace(entity.fields["lines"], type="M")
    entity_m = replace(
        entity, tables={**entity.tables, "invoice_lines": as_map}, fields={**entity.fields, "lines": field}
    )
    body = invoice_record("INV-M", [A])
    body_json = __import__("json").loads(body["body"])
    body_json["lines"] = {"b": {"M": {"sku": {"S": "SKU-B"}}}, "a": {"M": {"sku": {"S": "SKU-A"}}}}
    body["body"] = __import__("json").dumps(body_json)
    change = decode(parse_sqs_record(body), entity_m)
    child = [w for w in change.writes if w.table is as_map]
    # THEN one upsert per key, in key order, then the prune keeping those keys
    assert [w.values.get("line_no") for w in child[:-1]] == ["a", "b"]
    assert child[-1].prune == ("a", "b")
    stmts = Statements(registry, for_name("postgresql"))
    sql = str(stmts.statement(OP_PRUNE, as_map, ("keep_0", "keep_1")).compile(dialect=postgresql.dialect()))
    assert "NOT IN" in sql and "%(keep_0)s" in sql
