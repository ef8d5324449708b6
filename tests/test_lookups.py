"""Lookups (a column's value found in another table by its unique key) on SQLite, PostgreSQL
and MariaDB: the bundled order_items.order_pk, looked up from orders.id by order_id, with each
when_missing the mapping can choose. Registries are generated from the bundled mappings (with
when_missing changed where a test says), never written by hand."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from generator.emit.registry import registry as emit_registry
from generator.load import load
from runtime.apply import apply_batch, optimism_for
from runtime.dialects.base import Executor
from runtime.registry import Registry, parse_registry
from runtime.schema import build_metadata
from runtime.statements import Statements
from tests.factories import event, item_record, order_record
from tests.runtime_db import Db, failed_ids, statuses

REPO_ROOT = Path(__file__).resolve().parent.parent


def registry_with(tmp_path: Path, when_missing: str) -> Registry:
    """The bundled mappings' registry, order_items.order_pk's when_missing set as given."""
    root = tmp_path / "project"
    shutil.copytree(REPO_ROOT / "mappings", root / "mappings", ignore=shutil.ignore_patterns("tests"))
    shutil.copy(REPO_ROOT / "project.yaml", root / "project.yaml")
    path = root / "mappings" / "order_items.yaml"
    text, n = re.subn(r'when_missing: "null"', f'when_missing: "{when_missing}"', path.read_text())
    assert n == 1
    path.write_text(text)
    loaded = load(root)
    assert loaded.model is not None, [d.render() for d in loaded.diagnostics.sorted()]
    return parse_registry(emit_registry(loaded.model))


def apply(db: Db, registry: Registry, records: list[dict[str, Any]]) -> Any:
    return apply_batch(event(records)["Records"], db.engine, registry)


def fresh(db: Db, registry: Registry) -> None:
    optimism = optimism_for(registry, db.engine)
    optimism.skip, optimism.penalty = 0, 1


def order_pk(db: Db, order_id: str, line_no: int) -> Any:
    return db.one(
        "SELECT order_pk FROM order_items WHERE order_id = :o AND line_no = :n", o=order_id, n=line_no
    )


def order_id_of(db: Db, order_id: str) -> Any:
    return db.one("SELECT id FROM orders WHERE order_id = :o", o=order_id)


def without_foreign_keys(db: Db) -> None:
    """The tables without foreign keys (a legacy database may have none: when_missing: null
    then leaves the column NULL rather than the foreign key refusing the row)."""
    build_metadata(db.registry).drop_all(db.engine)
    build_metadata(db.registry, foreign_keys=False).create_all(db.engine)


def test_a_line_gets_its_orders_surrogate_id_in_the_same_batch(db: Db) -> None:
    # GIVEN orders already synced
    without_foreign_keys(db)
    assert failed_ids(db.apply(event([order_record("o-1"), order_record("o-2")])["Records"])) == []
    # WHEN their lines arrive with a line of an order not synced (when_missing: null)
    result = db.apply(event([item_record("o-1", 1), item_record("o-2", 1), item_record("o-9", 1)])["Records"])
    # THEN each line holds its order's id, the unknown order's line NULL
    assert statuses(result) == ["applied"] * 3
    assert order_pk(db, "o-1", 1) == order_id_of(db, "o-1")
    assert order_pk(db, "o-2", 1) == order_id_of(db, "o-2")
    assert order_id_of(db, "o-1") != order_id_of(db, "o-2")
    assert order_pk(db, "o-9", 1) is None


def test_a_modified_line_finds_an_order_that_arrived_since(db: Db) -> None:
    # GIVEN a line written before its order (NULL)
    without_foreign_keys(db)
    db.apply(event([item_record("o-1", 1, rev=1)])["Records"])
    assert order_pk(db, "o-1", 1) is None
    # WHEN the order arrives, then the line changes
    db.apply(event([order_record("o-1")])["Records"])
    result = db.apply(event([item_record("o-1", 1, "MODIFY", rev=2)])["Records"])
    # THEN the upsert's update fills the id too
    assert statuses(result) == ["applied"]
    assert order_pk(db, "o-1", 1) == order_id_of(db, "o-1")


@pytest.mark.parametrize("when_missing", ["retry", "fail"])
def test_a_missed_lookup_fails_its_message_alone_and_holds_back_only_its_group(
    db: Db, tmp_path: Path, when_missing: str
) -> None:
    registry = registry_with(tmp_path, when_missing)
    fresh(db, registry)
    apply(db, registry, [order_record("o-1")])
    # GIVEN a batch of three groups: lines of o-1 (order there), of o-2 (order missing; two
    # lines, the second behind the first), of o-3 (order there)
    apply(db, registry, [order_record("o-3")])
    records = [
        item_record("o-1", 1),
        item_record("o-2", 1),
        item_record("o-2", 2),
        item_record("o-3", 1),
    ]
    # WHEN applied
    result = apply(db, registry, records)
    # THEN o-2's first line failed with the kind when_missing says, its second is held back,
    # nothing of either is committed, and the other groups are applied
    assert statuses(result) == ["applied", "failed", "blocked", "applied"]
    failed = result.outcomes[1]
    assert failed.kind == ("transient" if when_missing == "retry" else "permanent")
    assert "lookup found no row: order_items.order_pk from orders by order_id" in failed.reason
    assert failed_ids(result) == [records[1]["messageId"], records[2]["messageId"]]
    assert db.rows("SELECT line_no FROM order_items WHERE order_id = 'o-2'") == []
    assert order_pk(db, "o-1", 1) == order_id_of(db, "o-1")
    assert order_pk(db, "o-3", 1) == order_id_of(db, "o-3")
    assert db.one("SELECT COUNT(*) FROM sync_ledger WHERE entity = 'order_items'") == 2

    # AND WHEN the order arrives and SQS delivers the held messages again, they apply
    apply(db, registry, [order_record("o-2")])
    again = apply(db, registry, [records[1], records[2]])
    assert statuses(again) == ["applied", "applied"]
    assert order_pk(db, "o-2", 2) == order_id_of(db, "o-2")


def test_a_missed_lookup_on_the_per_message_path_names_the_write_not_the_ledger(
    db: Db, tmp_path: Path
) -> None:
    # GIVEN a registry whose lookup retries, and a batch with only the failing message
    registry = registry_with(tmp_path, "retry")
    fresh(db, registry)
    # WHEN applied
    result = apply(db, registry, [item_record("o-7", 1)])
    # THEN it is a transient failure and nothing was written, the ledger included
    assert statuses(result) == ["failed"]
    assert result.outcomes[0].kind == "transient"
    assert db.one("SELECT COUNT(*) FROM order_items") == 0
    assert db.one("SELECT COUNT(*) FROM sync_ledger") == 0


def test_the_missed_lookup_statement_raises_inside_the_write(db: Db, tmp_path: Path) -> None:
    # GIVEN the insert statement of order_items as the runtime builds it (when_missing: fail)
    registry = registry_with(tmp_path, "fail")
    from runtime import dialects
    from runtime.kinds import OP_INSERT

    stmts = Statements(registry, dialects.of(db.engine))
    spec = registry.entities["order_items"].tables["order_items"]
    insert = stmts.statement(OP_INSERT, spec)
    params = {
        "value_order_id": "o-5",
        "lookup_order_pk_0": "o-5",
        "value_line_no": 1,
        "value_sku": "s",
        "value_quantity": 1,
        "value_unit_price": None,
        "value_options": None,
        "value_order_pk": None,
        "version": 1,
        "tomb_table": "order_items",
        "tomb_row": "x",
        "tomb_version": "1",
    }
    # WHEN run without the order, THEN the database refuses it, and the dialect says why
    with db.engine.connect() as conn:
        with pytest.raises(Exception) as caught:
            Executor(conn).run([(insert, params)])
        conn.rollback()
    assert stmts.dialect.classify(caught.value).lookup
    # AND with the order there it writes the order's id
    db.apply(event([order_record("o-5")])["Records"])
    with db.engine.begin() as conn:
        Executor(conn).run([(insert, params)])
    assert order_pk(db, "o-5", 1) == order_id_of(db, "o-5")


def test_the_reference_ddl_declares_the_foreign_key_to_the_looked_up_column(registry: Registry) -> None:
    metadata = build_metadata(registry)
    fks = {
        (fk.parent.name, fk.column.table.name, fk.column.name)
        for fk in metadata.tables["order_items"].foreign_keys
    }
    assert ("order_pk", "orders", "id") in fks
    orders = metadata.tables["orders"]
    assert [c.name for c in orders.primary_key.columns] == ["id"]


def diagnostics_with(tmp_path: Path, old: str, new: str) -> list[str]:
    """The located errors of the bundled mappings with order_items.yaml's `old` made `new`."""
    root = tmp_path / "broken"
    shutil.copytree(REPO_ROOT / "mappings", root / "mappings", ignore=shutil.ignore_patterns("tests"))
    shutil.copy(REPO_ROOT / "project.yaml", root / "project.yaml")
    path = root / "mappings" / "order_items.yaml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    loaded = load(root)
    assert loaded.model is None
    return [d.render() for d in loaded.diagnostics.sorted() if d.severity.value == "error"]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "table: orders\n            match",
            "table: ordrs\n            match",
            "mappings/order_items.yaml:58:20: error: target.tables[0].columns.order_pk.lookup.table: "
            "table 'ordrs' is not written by any mapping - look up in a table some mapping's "
            "target.tables declares: customer_status_history, customers, invoice_lines, invoices, order_items, "
            "orders, shop_customers, shop_order_lines, shop_orders",
        ),
        (
            "match: {order_id: orderID}",
            "match: {order_no: orderID}",
            "mappings/order_items.yaml:59:21: error: target.tables[0].columns.order_pk.lookup.match.order_no: "
            "table 'orders' has no column 'order_no' - match on its key: order_id",
        ),
        (
            "select: id",
            "select: uid",
            "mappings/order_items.yaml:60:21: error: target.tables[0].columns.order_pk.lookup.select: "
            "table 'orders' has no column 'uid' - select one of: id, order_id, customer_id, total_amount, "
            "status, updated_at",
        ),
        (
            "order_pk:\n          type: bigint",
            "order_pk:\n          type: string",
            "mappings/order_items.yaml:55:17: error: target.tables[0].columns.order_pk.type: column 'order_pk' "
            "is string but looks up 'orders.id', which is bigint - declare type: bigint",
        ),
        (
            "match: {order_id: orderID}",
            "match: {order_id: options}",
            "mappings/order_items.yaml:59:31: error: target.tables[0].columns.order_pk.lookup.match.order_id: "
            "field 'options' of DynamoDB type M cannot match column 'order_id' (string) of table 'orders' "
            "- match a field of a type string takes",
        ),
        (
            "match: {order_id: orderID}",
            "match: {order_id: orderID, status: sku}",
            "mappings/order_items.yaml:59:20: error: target.tables[0].columns.order_pk.lookup.match: columns "
            "order_id, status are not the unique key of table 'orders' (its key: order_id) - match every "
            "column of the table's key and no other: a lookup must find at most one row",
        ),
    ],
)
def test_a_lookup_the_tables_cannot_answer_is_a_located_error(
    tmp_path: Path, old: str, new: str, expected: str
) -> None:
    assert expected in diagnostics_with(tmp_path, old, new)


def test_retiring_the_looked_up_entity_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "p"
    shutil.copytree(REPO_ROOT / "mappings", root / "mappings", ignore=shutil.ignore_patterns("tests"))
    shutil.copy(REPO_ROOT / "project.yaml", root / "project.yaml")
    orders = root / "mappings" / "orders.yaml"
    orders.write_text(orders.read_text() + "retired: true\n")
    loaded = load(root)
    errors = [d.render() for d in loaded.diagnostics.sorted() if d.severity.value == "error"]
    assert errors == [
        "mappings/order_items.yaml:58:20: error: target.tables[0].columns.order_pk.lookup.table: table 'orders' "
        "is written only by a retired mapping (mappings/orders.yaml): nothing keeps it up to date, and the "
        "runtime no longer knows it - remove the lookup before retiring that mapping"
    ]
