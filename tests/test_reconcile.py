"""`ddb-sql-sync reconcile` (synctools/aws/reconcile.py): the rows the mapping derives from every
current item against the database's rows, on a moto server (DynamoDB, DynamoDB Streams) and
the real PostgreSQL and MariaDB. Items are backfilled, then rows corrupted, deleted and added
by hand; reconcile names exactly those keys, and --repair / --delete-extra put them right."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

pytest.importorskip("boto3")

from tests.test_aws_tools import BUILD, REGION, Aws, Run, put_order  # noqa: E402
from tests.test_backfill import (  # noqa: E402, F401 - fixtures
    Db,
    _line_items,
    account,
    aws,
    backfill,
    consume,
    pump,
    put_line,
    scan_all,
    sqldb,
    write_export,
)


def reconcile(tools: Aws, db: Db, entity: str, *extra: str) -> tuple[Run, dict[str, Any]]:
    run = tools.run("reconcile", entity, "--db", db.url, "--grace", "0", "--quiet", *extra)
    docs = run.lines() if "--format" in extra else []
    return run, (docs[-1] if docs else {})


def drift_of(doc: dict[str, Any]) -> set[tuple[str, str, str, tuple[str, ...]]]:
    return {
        (d["table"], d["kind"], d["key"]["order_id"], tuple(c["column"] for c in d.get("columns", ())))
        for d in doc["drift"]
        if not d.get("repaired")
    }


def test_reconcile_reports_exactly_the_drifted_keys_and_repair_fixes_them(
    aws: Aws,  # noqa: F811 - fixtures
    sqldb: Db,  # noqa: F811
    tmp_path: Path,
) -> None:
    ddb = aws.client("dynamodb")
    for i in range(1, 6):
        put_order(ddb, f"o{i}", f"e{i}", "order.created", status="new", total=f"{i}0.25")
    run, doc = backfill(
        aws, "orders", "--to", "db", "--db", sqldb.url, "--checkpoint", str(tmp_path / "b.json")
    )
    assert run.code == 0, run.err
    assert doc["applied"] == 5
    # GIVEN the database in step: reconcile finds no drift
    run, doc = reconcile(aws, sqldb, "orders", "--format", "json")
    assert run.code == 0, run.err + run.out
    s = doc["summary"]
    assert (s["items_read"], s["rows_compared"], s["missing"], s["differing"], s["extra"]) == (5, 5, 0, 0, 0)
    assert s["rows_scanned_for_extras"] == 5
    # WHEN a column of one row is corrupted, a row deleted and a row added
    with sqldb.engine.begin() as conn:
        conn.execute(text("UPDATE orders SET status = 'bad', total_amount = 1 WHERE order_id = 'o2'"))
        conn.execute(text("DELETE FROM orders WHERE order_id = 'o4'"))
        conn.execute(text("INSERT INTO orders (order_id, customer_id, status) VALUES ('zz', 1, 'ghost')"))
    # THEN reconcile names exactly those keys, and exits 1
    run, doc = reconcile(aws, sqldb, "orders", "--format", "json")
    assert run.code == 1, run.err
    assert drift_of(doc) == {
        ("orders", "differing", "o2", ("total_amount", "status")),
        ("orders", "missing", "o4", ()),
        ("orders", "extra", "zz", ()),
    }
    s = doc["summary"]
    assert (s["missing"], s["differing"], s["extra"]) == (1, 1, 1)
    # AND the values are redacted unless asked for
    (diff,) = [d for d in doc["drift"] if d["kind"] == "differing"]
    shown = {c["column"]: c for c in diff["columns"]}
    assert "bad" not in run.out and shown["status"]["actual"] == "a string of 3 characters"
    run, _ = reconcile(aws, sqldb, "orders", "--show-values")
    assert run.code == 1 and '"bad"' in run.out and "differing" in run.out and "o4" in run.out
    # WHEN --repair alone runs: the missing and differing keys are fixed, the extra row stays
    run, doc = reconcile(aws, sqldb, "orders", "--format", "json", "--repair")
    assert run.code == 1, run.err
    assert drift_of(doc) == {("orders", "extra", "zz", ())}
    assert doc["summary"]["repaired"] == 2
    # AND --delete-extra deletes it
    run, doc = reconcile(aws, sqldb, "orders", "--format", "json", "--repair", "--delete-extra")
    assert run.code == 0, run.err + run.out
    assert doc["summary"]["deleted_extra"] == 1
    # THEN reconcile is clean, and the rows are the items' again
    run, doc = reconcile(aws, sqldb, "orders", "--format", "json")
    assert run.code == 0, run.out
    assert sqldb.rows("SELECT order_id, status, total_amount FROM orders ORDER BY order_id") == [
        (f"o{i}", "new", pytest.approx(float(f"{i}0.25"))) for i in range(1, 6)
    ]


def test_a_drift_that_settles_within_the_grace_period_is_not_drift(
    aws: Aws,  # noqa: F811 - fixtures
    sqldb: Db,  # noqa: F811
    tmp_path: Path,
) -> None:
    from synctools.aws.reconcile import DIFFERING, Drift

    ddb = aws.client("dynamodb")
    put_order(ddb, "o1", "e1", "order.created", status="new")
    run, _ = backfill(
        aws, "orders", "--to", "db", "--db", sqldb.url, "--checkpoint", str(tmp_path / "b.json")
    )
    assert run.code == 0, run.err
    rec = _reconciler(aws, sqldb)
    # a key seen drifted, in step when it is looked at again
    d = Drift("orders", DIFFERING, {"order_id": "o1"}, {"order_id": {"S": "o1"}}, [("status", "x", "y")])
    assert rec.settle([d]) == []
    assert rec.report.settled == 1


def _reconciler(tools: Aws, db: Db) -> Any:
    from sqlalchemy import create_engine

    from runtime.registry import load_registry
    from synctools.aws.backfill import ScanSource, Synthesizer
    from synctools.aws.reconcile import Reconciler
    from synctools.local.build import load_pipe

    registry = load_registry(tools.build / "registry.json")
    ddb = tools.client("dynamodb")
    return Reconciler(
        registry=registry,
        entity="orders",
        pipe=load_pipe(registry.raw, "orders", tools.build),
        synthesizer=Synthesizer.of("orders", registry.raw["entities"]["orders"], "1"),
        source=ScanSource(ddb, "orders"),
        engine=create_engine(db.url),
        ddb=ddb,
        grace=0,
    )


def test_append_only_tables_are_skipped_with_the_reason(aws: Aws, sqldb: Db) -> None:  # noqa: F811 - fixtures
    run, doc = reconcile(aws, sqldb, "customers", "--format", "json")
    assert run.code == 0, run.err + run.out
    assert "customer_status_history" in doc["skipped_tables"]
    assert "append_only in the mapping" in doc["skipped_tables"]["customer_status_history"]
    run, _ = reconcile(aws, sqldb, "customers")
    assert "skipped table customer_status_history" in run.out


def test_command_line_errors_exit_2(aws: Aws, sqldb: Db) -> None:  # noqa: F811 - fixtures
    run, _ = reconcile(aws, sqldb, "nosuch")
    assert run.code == 2 and "unknown entity" in run.err
    bad = aws.run("reconcile", "orders", "--db", "postgresql://nobody@127.0.0.1:1/x")
    assert bad.code == 2 and "--db" in bad.err


def _lines(db: Db) -> list[tuple[Any, ...]]:
    return db.rows("SELECT order_id, line_no, quantity, row_version FROM order_items ORDER BY line_no")


def test_a_composite_key_with_item_versions_and_hard_deletes(
    aws: Aws,  # noqa: F811 - fixtures
    sqldb: Db,  # noqa: F811
    tmp_path: Path,
) -> None:
    ddb = aws.client("dynamodb")
    put_order(ddb, "o1", "e1", "order.created", status="new")
    for line in range(1, 5):
        put_line(ddb, "o1", line, rev=1, qty=line)
    for entity in ("orders", "order_items"):
        run, _ = backfill(
            aws, entity, "--to", "db", "--db", sqldb.url, "--checkpoint", str(tmp_path / f"{entity}.json")
        )
        assert run.code == 0, run.err
    run, doc = reconcile(aws, sqldb, "order_items", "--format", "json")
    assert run.code == 0, run.out
    assert doc["summary"]["rows_compared"] == 4 and doc["extras_not_checked"] == {}
    # WHEN a quantity is corrupted (the row keeps its version), a line deleted, a line added
    with sqldb.engine.begin() as conn:
        conn.execute(text("UPDATE order_items SET quantity = 99 WHERE line_no = 2"))
        conn.execute(text("DELETE FROM order_items WHERE line_no = 3"))
        conn.execute(
            text(
                "INSERT INTO order_items (order_id, line_no, sku, quantity, unit_price) VALUES ('o1', 7, 'X', 1, 1)"
            )
        )
    run, doc = reconcile(aws, sqldb, "order_items", "--format", "json")
    assert run.code == 1
    assert {(d["kind"], d["key"]["line_no"]) for d in doc["drift"]} == {
        ("differing", 2),
        ("missing", 3),
        ("extra", 7),
    }
    # THEN --repair --delete-extra puts it right, though the corrupted row's version is the item's
    run, doc = reconcile(aws, sqldb, "order_items", "--format", "json", "--repair", "--delete-extra")
    assert run.code == 0, run.out
    assert _lines(sqldb) == [("o1", n, n, 1) for n in range(1, 5)]
    run, _ = reconcile(aws, sqldb, "order_items")
    assert run.code == 0 and "in step" in run.out


def test_a_backfill_beside_concurrent_updates_and_deletes_leaves_no_drift(
    aws: Aws,  # noqa: F811 - fixtures
    sqldb: Db,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The issue's end-to-end case: a backfill while the stream's updates and deletes of the same
    items are applied, then reconcile: zero drift."""
    import threading

    from sqlalchemy import create_engine

    from runtime.registry import load_registry
    from synctools.aws.backfill import (
        Backfill,
        BackfillCheckpoint,
        DbSink,
        RateLimit,
        ScanSource,
        Summary,
        Synthesizer,
    )
    from synctools.aws.checkpoint import Checkpoint
    from synctools.local.build import load_pipe

    ddb = aws.client("dynamodb")
    put_order(ddb, "o1", "e1", "order.created", status="new")
    run, _ = backfill(
        aws, "orders", "--to", "db", "--db", sqldb.url, "--checkpoint", str(tmp_path / "o.json")
    )
    assert run.code == 0, run.err
    for line in range(1, 21):
        put_line(ddb, "o1", line, rev=1, qty=line)
    # GIVEN a slow backfill of order_items (pages of 1 item, 5 items a second) in a thread
    registry = load_registry(aws.build / "registry.json")
    arn = ddb.describe_table(TableName="order_items")["Table"]["LatestStreamArn"]
    raw = registry.raw["entities"]["order_items"]
    source = ScanSource(ddb, "order_items", page_size=1)
    engine = create_engine(sqldb.url)
    fill = Backfill(
        pipe=load_pipe(registry.raw, "order_items", aws.build, region=REGION, source_arn=arn),
        synthesizer=Synthesizer.of("order_items", raw, "0", REGION, arn),
        source=source,
        sink=DbSink(
            engine,
            registry,
            f"arn:aws:sqs:{REGION}:000000000000:{registry.entities['order_items'].queue}",
            REGION,
        ),
        checkpoint=BackfillCheckpoint(Checkpoint(tmp_path / "b.json"), "order_items", source.ident),
        summary=Summary("order_items", source.ident, "db", "0"),
        rate=RateLimit(5),
    )
    errors: list[BaseException] = []

    def run_fill() -> None:
        try:
            fill.run()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    worker = threading.Thread(target=run_fill)
    worker.start()
    # WHEN, while it runs, lines are updated and deleted and the stream is applied
    ckpt = tmp_path / "pump.json"
    for line in range(1, 21, 3):
        put_line(ddb, "o1", line, rev=2, qty=100 + line)
    for line in range(2, 21, 5):
        ddb.delete_item(TableName="order_items", Key={"order_id": {"S": "o1"}, "line_no": {"N": str(line)}})
    pump(aws, "order_items", ckpt)
    consume(aws, sqldb, "order_items")
    assert worker.is_alive()  # the stream's changes were applied while the backfill ran
    worker.join(60)
    assert not worker.is_alive() and not errors, errors
    c = fill.summary.counts
    assert fill.summary.complete and c.failed == 0 and c.applied + c.stale + c.duplicate == c.read, c.reasons
    pump(aws, "order_items", ckpt)
    consume(aws, sqldb, "order_items")
    engine.dispose()
    # THEN the database is the table's current state: reconcile finds no drift
    run, doc = reconcile(aws, sqldb, "order_items", "--format", "json")
    assert run.code == 0, run.out
    assert doc["summary"]["items_read"] == 16 and doc["summary"]["rows_scanned_for_extras"] == 16
    # WHEN rows are then corrupted, deleted and added in the database
    with sqldb.engine.begin() as conn:
        conn.execute(text("UPDATE order_items SET quantity = 0 WHERE line_no = 1"))
        conn.execute(text("DELETE FROM order_items WHERE line_no = 3"))
        conn.execute(
            text(
                "INSERT INTO order_items (order_id, line_no, sku, quantity, unit_price, row_version) "
                "VALUES ('o1', 2, 'SKU-2', 1, 2.50, 1)"
            )
        )
    # THEN reconcile names exactly those keys
    run, doc = reconcile(aws, sqldb, "order_items", "--format", "json")
    assert run.code == 1, run.out
    assert {(d["kind"], d["key"]["line_no"]) for d in doc["drift"]} == {
        ("differing", 1),
        ("missing", 3),
        ("extra", 2),
    }
    # AND --repair with --delete-extra puts them right: the next run is in step
    run, doc = reconcile(aws, sqldb, "order_items", "--format", "json", "--repair", "--delete-extra")
    assert all(d.get("repaired") for d in doc["drift"]), doc["drift"]
    run, doc = reconcile(aws, sqldb, "order_items", "--format", "json")
    assert run.code == 0 and doc["summary"]["rows_compared"] == 16, run.out


def customer_item(cid: str, event_id: str) -> dict[str, Any]:
    return {
        "customer_id": {"S": cid},
        "email": {"S": f"{cid}@example.com"},
        "given_name": {"S": "Ada"},
        "family_name": {"S": "Lovelace"},
        "status": {"S": "active"},
        "vip": {"BOOL": True},
        "registered_at": {"S": "2024-01-01T10:00:00.123456+02:00"},
        "profile": {"M": {"tier": {"S": "gold"}, "score": {"N": "1.50"}, "tags": {"L": [{"S": "a"}]}}},
        "outbox": {"M": {"id": {"S": event_id}, "type": {"S": "customer.registered"}}},
    }


def test_json_timestamps_and_booleans_compare_by_value_and_soft_deleted_rows_are_no_extras(
    aws: Aws,  # noqa: F811 - fixtures
    sqldb: Db,  # noqa: F811
    tmp_path: Path,
) -> None:
    ddb = aws.client("dynamodb")
    for cid in ("c1", "c2"):
        ddb.put_item(TableName="customers", Item=customer_item(cid, f"e-{cid}"))
    run, _ = backfill(
        aws, "customers", "--to", "db", "--db", sqldb.url, "--checkpoint", str(tmp_path / "b.json")
    )
    assert run.code == 0, run.err
    # GIVEN the rows as the runtime wrote them (jsonb / JSON, timestamps in UTC, booleans)
    run, doc = reconcile(aws, sqldb, "customers", "--format", "json")
    assert run.code == 0, run.out
    assert doc["summary"]["rows_compared"] == 2
    # WHEN c1's JSON, boolean and timestamp are changed; a soft-deleted row and a live row
    # without an item are added
    with sqldb.engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE customers SET is_vip = false, profile = :p, registered_at = :t WHERE external_id = 'c1'"
            ),
            {"p": '{"tier": "gold", "score": 2, "tags": ["a"]}', "t": "2024-01-01 08:00:01"},
        )
        conn.execute(
            text(
                "INSERT INTO customers (external_id, email, deleted_at) VALUES ('c8', 'x', NULL), ('c9', 'y', :t)"
            ),
            {"t": "2024-02-01 00:00:00"},
        )
    run, doc = reconcile(aws, sqldb, "customers", "--format", "json")
    assert run.code == 1
    drift = {
        (d["kind"], d["key"]["external_id"]): {c["column"] for c in d.get("columns", ())}
        for d in doc["drift"]
    }
    assert drift == {("differing", "c1"): {"is_vip", "profile", "registered_at"}, ("extra", "c8"): set()}
    run, doc = reconcile(aws, sqldb, "customers", "--format", "json", "--repair", "--delete-extra")
    assert run.code == 0, run.out
    run, _ = reconcile(aws, sqldb, "customers")
    assert run.code == 0, run.out
    assert sqldb.rows("SELECT external_id FROM customers ORDER BY external_id") == [("c1",), ("c2",), ("c9",)]


def _lines_in_step_and_exported(tools: Aws, db: Db, tmp_path: Path, *, lines: int, files: int) -> Path:
    """Order o1 with `lines` lines (line n: quantity n, rev 1) in DynamoDB, backfilled into the
    database, and exported in `files` files: the export's folder."""
    from datetime import UTC, datetime

    ddb = tools.client("dynamodb")
    put_order(ddb, "o1", "e1", "order.created", status="new")
    for line in range(1, lines + 1):
        put_line(ddb, "o1", line, rev=1, qty=line)
    for entity in ("orders", "order_items"):
        run, _ = backfill(
            tools, entity, "--to", "db", "--db", db.url, "--checkpoint", str(tmp_path / f"{entity}.json")
        )
        assert run.code == 0, run.err
    return write_export(
        tmp_path / "x",
        scan_all(tools, "order_items"),
        table="order_items",
        account_id=tools.account,
        export_time=datetime.now(UTC),
        files=files,
    )


def test_an_export_is_read_and_its_stale_states_settle_on_the_live_table(
    aws: Aws,  # noqa: F811 - fixtures
    sqldb: Db,  # noqa: F811
    tmp_path: Path,
) -> None:
    # GIVEN an export taken before line 1 was updated (the stream then brought the update)
    folder = _lines_in_step_and_exported(aws, sqldb, tmp_path, lines=3, files=2)
    ddb = aws.client("dynamodb")
    put_line(ddb, "o1", 1, rev=2, qty=50)
    with sqldb.engine.begin() as conn:  # as the stream's record applied it
        conn.execute(text("UPDATE order_items SET quantity = 50, row_version = 2 WHERE line_no = 1"))
    # WHEN reconcile reads the export
    run, doc = reconcile(aws, sqldb, "order_items", "--format", "json", "--export-dir", str(folder))
    # THEN line 1 looked drifted from the export, and the re-check (GetItem on the table) settled it
    assert run.code == 0, run.out + run.err
    s = doc["summary"]
    assert (s["items_read"], s["rows_compared"], s["rechecked"], s["settled_after_grace"]) == (3, 3, 1, 1)


def test_a_key_found_drifted_is_counted_only_if_it_still_is_after_the_grace_period(
    aws: Aws,  # noqa: F811 - fixtures
    sqldb: Db,  # noqa: F811
    tmp_path: Path,
) -> None:
    ddb = aws.client("dynamodb")
    for oid in ("o1", "o2"):
        put_order(ddb, oid, f"e-{oid}", "order.created", status="new")
    run, _ = backfill(
        aws, "orders", "--to", "db", "--db", sqldb.url, "--checkpoint", str(tmp_path / "b.json")
    )
    assert run.code == 0, run.err
    with sqldb.engine.begin() as conn:
        conn.execute(text("UPDATE orders SET status = 'old' WHERE order_id IN ('o1', 'o2')"))
    rec = _reconciler(aws, sqldb)
    waited: list[float] = []

    def grace(seconds: float) -> None:  # o1's change arrives while reconcile waits; o2's never does
        waited.append(seconds)
        with sqldb.engine.begin() as conn:
            conn.execute(text("UPDATE orders SET status = 'new' WHERE order_id = 'o1'"))

    rec.grace, rec.sleep = 7.0, grace
    suspects = rec.run()
    assert sorted(d.key["order_id"] for d in suspects) == ["o1", "o2"]
    left = rec.settle(suspects)
    assert waited == [7.0]
    assert [(d.kind, d.key["order_id"], [c for c, _, _ in d.columns]) for d, _ in left] == [
        ("differing", "o2", ["status"])
    ]
    assert (rec.report.rechecked, rec.report.settled) == (2, 1)


def test_worker_processes_find_exactly_what_one_process_finds(
    aws: Aws,  # noqa: F811 - fixtures
    sqldb: Db,  # noqa: F811
    tmp_path: Path,
) -> None:
    folder = _lines_in_step_and_exported(aws, sqldb, tmp_path, lines=30, files=6)
    # GIVEN drift spread over the export's six files: three rows changed, two deleted
    with sqldb.engine.begin() as conn:
        conn.execute(text("UPDATE order_items SET quantity = 0 WHERE line_no IN (2, 13, 29)"))
        conn.execute(text("DELETE FROM order_items WHERE line_no IN (7, 20)"))
    # WHEN reconcile compares the export in 3 worker processes, then in one
    docs = {}
    for workers in ("3", "1"):
        run, docs[workers] = reconcile(
            aws, sqldb, "order_items", "--format", "json", "--export-dir", str(folder), "--workers", workers
        )
        assert run.code == 1, run.out + run.err
    # THEN both report the same five keys and the same counts
    lines = {
        (d["kind"], d["key"]["line_no"], tuple(c["column"] for c in d.get("columns", ())))
        for d in docs["3"]["drift"]
    }
    assert lines == {
        ("differing", 2, ("quantity",)),
        ("differing", 13, ("quantity",)),
        ("differing", 29, ("quantity",)),
        ("missing", 7, ()),
        ("missing", 20, ()),
    }
    assert docs["3"]["drift"] == docs["1"]["drift"]  # in the same (sorted) order
    assert docs["3"]["summary"] == {**docs["1"]["summary"], "seconds": docs["3"]["summary"]["seconds"]}
    # AND worker processes find the same whether forked (the command's choice in a process of
    # one thread, on Linux) or spawned (its choice otherwise), whatever this process runs
    recipe = _export_recipe(aws, sqldb, folder)
    for start in ("fork", "spawn"):
        rec = recipe.reconciler(dynamodb=False)
        try:
            found = rec.run(recipe, 3, extras=False, start=start)
        finally:
            rec.engine.dispose()
        assert {(d.kind, d.key["line_no"], tuple(c for c, _, _ in d.columns)) for d in found} == lines, start
        summary = docs["1"]["summary"]
        assert (rec.report.items, rec.report.compared) == (summary["items_read"], summary["rows_compared"])


def _export_recipe(tools: Aws, db: Db, folder: Path) -> Any:
    """The command's recipe for a reconcile of order_items from the export in `folder`."""
    from synctools.aws.commands.options import SourceOptions
    from synctools.aws.commands.reconcile import ReconcileRecipe

    return ReconcileRecipe(
        build=str(tools.build),
        entity="order_items",
        db=db.url,
        source=SourceOptions(None, REGION, None, str(folder), None, 1, False),
        page_size=500,
        grace=0,
        show_values=False,
    )


def _invoice(ddb: Any, invoice_id: str, lines: list[tuple[str, int, str]]) -> None:
    ddb.put_item(
        TableName="invoices",
        Item={
            "invoice_id": {"S": invoice_id},
            "customer_id": {"S": "c1"},
            "currency": {"S": "EUR"},
            "lines": {
                "L": [
                    {"M": {"sku": {"S": sku}, "qty": {"N": str(qty)}, "price": {"N": price}}}
                    for sku, qty, price in lines
                ]
            },
        },
    )


def test_a_child_table_is_reconciled_like_any_other(aws: Aws, sqldb: Db, tmp_path: Path) -> None:  # noqa: F811
    ddb = aws.client("dynamodb")
    _invoice(ddb, "i1", [("A", 1, "1.50"), ("B", 2, "2.00"), ("C", 3, "3.25")])
    _invoice(ddb, "i2", [("D", 4, "4.00"), ("E", 5, "5.00")])
    run, _ = backfill(
        aws, "invoices", "--to", "db", "--db", sqldb.url, "--checkpoint", str(tmp_path / "b.json")
    )
    assert run.code == 0, run.err
    run, doc = reconcile(aws, sqldb, "invoices", "--format", "json")
    assert run.code == 0, run.out + run.err
    assert doc["summary"]["rows_compared"] == 7 and "invoice_lines" not in doc["extras_not_checked"]

    # GIVEN a line changed, a line deleted, a line the item no longer has (i1 line 9) and the lines
    # of an invoice DynamoDB does not have (i3)
    with sqldb.engine.begin() as conn:
        conn.execute(text("UPDATE invoice_lines SET qty = 40 WHERE invoice_id = 'i2' AND line_no = 1"))
        conn.execute(text("DELETE FROM invoice_lines WHERE invoice_id = 'i1' AND line_no = 2"))
        conn.execute(text("INSERT INTO invoices (invoice_id, currency) VALUES ('i3', 'EUR')"))
        for inv, line in (("i1", 9), ("i3", 1)):
            conn.execute(
                text(
                    "INSERT INTO invoice_lines (invoice_id, line_no, sku, qty, price) VALUES (:i, :n, 'X', 1, 1)"
                ),
                {"i": inv, "n": line},
            )
    # WHEN reconcile runs
    run, doc = reconcile(aws, sqldb, "invoices", "--format", "json")
    # THEN it names exactly those child rows (and the parent row of i3)
    assert run.code == 1, run.out + run.err
    found = {
        (
            d["table"],
            d["kind"],
            d["key"]["invoice_id"],
            d["key"].get("line_no"),
            tuple(c["column"] for c in d.get("columns", ())),
        )
        for d in doc["drift"]
    }
    assert found == {
        ("invoice_lines", "differing", "i2", 1, ("qty",)),
        ("invoice_lines", "missing", "i1", 2, ()),
        ("invoice_lines", "extra", "i1", 9, ()),
        ("invoice_lines", "extra", "i3", 1, ()),
        ("invoices", "extra", "i3", None, ()),
    }
    # WHEN it repairs and deletes the extras  THEN a run after it finds the two in step
    run, doc = reconcile(aws, sqldb, "invoices", "--format", "json", "--repair", "--delete-extra")
    assert all(d.get("repaired") for d in doc["drift"]), [
        (d["key"], d["kind"], d.get("repaired")) for d in doc["drift"]
    ]
    run, _ = reconcile(aws, sqldb, "invoices")
    assert run.code == 0, run.out + run.err
    assert sqldb.rows("SELECT invoice_id, line_no, sku, qty FROM invoice_lines ORDER BY invoice_id, line_no") == [
        ("i1", 1, "A", 1), ("i1", 2, "B", 2), ("i1", 3, "C", 3), ("i2", 1, "D", 4), ("i2", 2, "E", 5),
    ]  # fmt: skip


def test_the_entities_of_a_single_table_design_backfill_and_reconcile_apart(
    aws: Aws,  # noqa: F811 - fixtures
    sqldb: Db,  # noqa: F811
    tmp_path: Path,
) -> None:
    ddb = aws.client("dynamodb")

    def put(**attrs: Any) -> None:
        ddb.put_item(
            TableName="shop",
            Item={k: ({"N": str(v)} if isinstance(v, int) else {"S": v}) for k, v in attrs.items()},
        )

    # GIVEN one shop table holding a customer, two orders and three lines (and an item of a
    # type no mapping takes)
    put(PK="CUSTOMER#c1", SK="PROFILE", customer_id="c1", email="a@example.com", name="Ann", status="active")
    for o in ("o1", "o2"):
        put(PK=f"ORDER#{o}", SK=f"ORDER#{o}", order_id=o, customer_id="c1", status="placed", total=30)
    for n in (1, 2, 3):
        put(PK="ORDER#o1", SK=f"LINE#{n}", order_id="o1", line_no=n, sku=f"S{n}", quantity=n, unit_price=10)
    put(PK="ORDER#o1", SK="NOTE#1", text="not an entity of the mappings")
    # WHEN each entity is backfilled from the one table (one Scan each, the entity's own filter)
    read = {}
    for entity in ("shop_customers", "shop_orders", "shop_order_lines"):
        run, doc = backfill(
            aws, entity, "--to", "db", "--db", sqldb.url, "--checkpoint", str(tmp_path / f"{entity}.json")
        )
        assert run.code == 0, run.err
        read[entity] = (doc["read"], doc["filtered"], doc["applied"])
    # THEN each took its own items only
    assert read == {"shop_customers": (7, 6, 1), "shop_orders": (7, 5, 2), "shop_order_lines": (7, 4, 3)}
    assert sqldb.rows("SELECT order_id, line_no, quantity FROM shop_order_lines ORDER BY line_no") == [
        ("o1", 1, 1), ("o1", 2, 2), ("o1", 3, 3),
    ]  # fmt: skip
    # AND reconcile finds each in step, then names a changed order and no other entity's row
    for entity in ("shop_customers", "shop_orders", "shop_order_lines"):
        run, doc = reconcile(aws, sqldb, entity, "--format", "json")
        assert run.code == 0, (entity, run.out + run.err)
    with sqldb.engine.begin() as conn:
        conn.execute(text("UPDATE shop_orders SET status = 'lost' WHERE order_id = 'o2'"))
    run, doc = reconcile(aws, sqldb, "shop_orders", "--format", "json")
    assert run.code == 1 and [(d["kind"], d["key"]) for d in doc["drift"]] == [
        ("differing", {"order_id": "o2"})
    ]
    run, _ = reconcile(aws, sqldb, "shop_customers")
    assert run.code == 0, run.out


def test_a_page_of_keys_finds_exactly_its_rows_and_never_a_key_cut_to_fit(sqldb: Db) -> None:  # noqa: F811
    """reconcile.keyed_read: one array a key column where the database takes arrays (PostgreSQL),
    an IN list elsewhere; the rows of exactly the page's keys, by the whole key or its parent."""
    from sqlalchemy import Column, Integer, MetaData, PrimaryKeyConstraint, String, Table

    from runtime import dialects
    from synctools.aws.reconcile import keyed_read

    md = MetaData()
    t = Table(
        "reconcile_keyed",
        md,
        Column("k", String(4), nullable=False),
        Column("n", Integer, nullable=False),
        Column("v", String(8)),
        PrimaryKeyConstraint("k", "n"),
    )
    md.drop_all(sqldb.engine)
    md.create_all(sqldb.engine)
    try:
        # GIVEN rows (k, n) for k in aaaa..eeee and n in 1, 2
        with sqldb.engine.begin() as conn:
            conn.execute(t.insert(), [{"k": k * 4, "n": n, "v": f"{k}{n}"} for k in "abcde" for n in (1, 2)])
        arrays = dialects.of(sqldb.engine).binds_arrays
        assert arrays is (sqldb.engine.dialect.name == "postgresql")
        by_key = keyed_read([t.c.k, t.c.n, t.c.v], [t.c.k, t.c.n], arrays)
        by_parent = keyed_read([t.c.k, t.c.n, t.c.v], [t.c.k], arrays)
        # WHEN pages are read: keys there, one not there, and one longer than the column whose
        # first four characters are a row's key (a cast to the column's length would find it)
        with sqldb.engine.connect() as conn:
            rows = conn.execute(
                by_key.stmt, by_key.params([("aaaa", 1), ("cccc", 2), ("zzzz", 1), ("bbbbb", 1)])
            ).all()
            children = conn.execute(by_parent.stmt, by_parent.params([("dddd",), ("eeeee",)])).all()
        # THEN exactly the rows of the keys there come back
        assert sorted(tuple(r) for r in rows) == [("aaaa", 1, "a1"), ("cccc", 2, "c2")]
        assert sorted(tuple(r) for r in children) == [("dddd", 1, "d1"), ("dddd", 2, "d2")]
        # AND with arrays a page is one parameter a key column, whatever its size
        sql = str(by_key.stmt.compile(sqldb.engine))
        assert ("unnest" in sql and sql.count("%(") == 2) if arrays else "unnest" not in sql
    finally:
        md.drop_all(sqldb.engine)


# -- the stand-in event id of an export's items ------------------------------------------------


def _export_reconciler(entity: str, folder: Path, pipe: Any = None) -> Any:
    """A Reconciler of the project's build over an export's folder (SQLite: only derived rows
    are looked at)."""
    from sqlalchemy import create_engine

    from runtime.registry import load_registry
    from synctools.aws.backfill import ExportSource, Synthesizer
    from synctools.aws.export import open_dir
    from synctools.aws.reconcile import Reconciler
    from synctools.local.build import load_pipe

    registry = load_registry(BUILD / "registry.json")
    return Reconciler(
        registry=registry,
        entity=entity,
        pipe=pipe or load_pipe(registry.raw, entity, BUILD),
        synthesizer=Synthesizer.of(entity, registry.raw["entities"][entity], "1"),
        source=ExportSource(open_dir(folder)),
        engine=create_engine("sqlite://"),
        ddb=None,
        grace=0,
    )


def _items_of(entity: str) -> list[dict[str, Any]]:
    if entity == "orders":
        return [
            {
                "order_id": {"S": f"o{i}"},
                "customer_id": {"N": str(i)},
                "order_details": {"M": {"total_amount": {"N": f"{i}.25"}, "status": {"S": s}}},
                "event": {"M": {"event_id": {"S": f"e{i}"}, "event_type": {"S": t}}},
            }
            for i, (s, t) in enumerate(
                [("new", "order.created"), ("paid", "order.updated"), ("gone", "order.deleted")] * 3
            )
        ] + [{"order_id": {"S": "no-event"}, "customer_id": {"N": "1"}}]  # filtered out
    if entity == "order_items":
        return _line_items("o1", 12)
    return [
        {
            "invoice_id": {"S": f"i{i}"},
            "customer_id": {"S": "c1"},
            "currency": {"S": "EUR"},
            "lines": {
                "L": [
                    {"M": {"sku": {"S": f"S{j}"}, "qty": {"N": str(j)}, "price": {"N": "1.50"}}}
                    for j in range(i)
                ]
            },
        }
        for i in range(4)
    ]


@pytest.mark.parametrize("entity", ["orders", "order_items", "invoices"])
def test_an_exports_items_derive_the_same_rows_with_the_stand_in_event_id(
    tmp_path: Path, entity: str
) -> None:
    from datetime import UTC, datetime

    items = _items_of(entity)
    folder = write_export(
        tmp_path, items, table=entity, account_id="000000000000", export_time=datetime.now(UTC), files=1
    )
    rec = _export_reconciler(entity, folder)
    # GIVEN a mapping whose eventID reaches only the ledger: an export's items take the stand-in
    assert rec.page_synth.stand_in_ids and not rec.synth.stand_in_ids
    # WHEN the same items are derived both ways
    full = rec.expected(items)
    counted = (rec.report.filtered, rec.report.undecodable)
    fast = rec.expected(items, synth=rec.page_synth)
    # THEN the rows, the child sets and the counts are the same
    assert sum(len(rows) for rows in full.rows.values()) >= 3
    assert fast.rows == full.rows and fast.sets == full.sets
    assert (rec.report.filtered, rec.report.undecodable) == (counted[0] * 2, counted[1] * 2)


def test_the_whole_synthesis_stays_where_the_event_id_or_size_can_reach_a_row(tmp_path: Path) -> None:
    import copy
    import dataclasses
    from datetime import UTC, datetime

    from runtime.registry import load_registry
    from synctools.aws.reconcile import ids_read_only_as_event_id
    from synctools.local.build import load_pipe
    from synctools.local.patterns import FilterSet
    from synctools.local.transform import PipeTarget, Template

    registry = load_registry(BUILD / "registry.json")
    raw = registry.raw["entities"]["orders"]
    pipe = load_pipe(registry.raw, "orders", BUILD)
    assert ids_read_only_as_event_id(pipe, raw)

    def templated(text_: str) -> Any:
        t = pipe.target
        return dataclasses.replace(
            pipe, target=PipeTarget(Template(text_), t.group.value, t.dedup.value, t.ctx)
        )

    body = pipe.target.template.text
    refused = {
        "a filter on SizeBytes": dataclasses.replace(
            pipe, filters=FilterSet([{"dynamodb": {"SizeBytes": [{"numeric": ["<", 4000]}]}}])
        ),
        "a filter on eventID": dataclasses.replace(pipe, filters=FilterSet([{"eventID": [{"prefix": "a"}]}])),
        "SizeBytes placed": templated(body.replace("<$.eventName>", "<$.dynamodb.SizeBytes>")),
        "the whole dynamodb placed": templated(body.replace("<$.eventName>", "<$.dynamodb>")),
        "the whole record placed": templated(body.replace("<$.eventName>", "<aws.pipes.event.json>")),
        "no template": templated(""),
    }
    for why, changed in refused.items():
        assert not ids_read_only_as_event_id(changed, raw), why
    other = copy.deepcopy(raw)
    other["fields"]["eventName"]["source"] = "$.eventID"  # a second field reads the event id
    assert not ids_read_only_as_event_id(pipe, other)

    # AND then an export's items take the whole synthesis
    folder = write_export(
        tmp_path,
        _items_of("orders"),
        table="orders",
        account_id="000000000000",
        export_time=datetime.now(UTC),
    )
    rec = _export_reconciler("orders", folder, pipe=refused["a filter on SizeBytes"])
    assert rec.page_synth is rec.synth and not rec.synth.stand_in_ids


# -- the last export files in pieces -------------------------------------------------------------


@pytest.mark.parametrize("count_off_by", [0, -700, 900])
def test_pieces_of_the_last_files_hold_every_line_once_whatever_the_manifest_counts(
    tmp_path: Path, count_off_by: int
) -> None:
    import dataclasses
    from datetime import UTC, datetime

    from synctools.aws.backfill import ExportSource
    from synctools.aws.export import open_dir

    # GIVEN an export of three files of 2,000 lines, whose manifest may miscount them
    folder = write_export(
        tmp_path,
        _line_items("A", 6000),
        table="order_items",
        account_id="0",
        export_time=datetime.now(UTC),
        files=3,
    )
    export = open_dir(folder)
    export.files = [
        dataclasses.replace(f, item_count=(f.item_count or 0) + count_off_by) for f in export.files
    ]
    source = ExportSource(export, page_size=300)
    # WHEN the last two files are cut into four pieces each
    units = source.pieces(tail=2, parts=4, smallest=100)
    # THEN the first file stays whole, the others are pieces, and the pieces' pages hold every
    # line of the whole files, once, in the same order
    assert len(units) == 1 + 2 * 4 and units[0] == export.files[0].key
    assert all("#lines=" in u for u in units[1:]) and units[4].endswith("-") and units[8].endswith("-")
    whole = [i["line_no"]["N"] for u in source.units() for page, _ in source.pages(u, None) for i in page]
    cut = [i["line_no"]["N"] for u in units for page, _ in source.pages(u, None) for i in page]
    assert len(whole) == 6000 and cut == whole
    # AND a file too small to be worth cutting stays whole
    assert source.pieces(tail=2, parts=4, smallest=1000) == source.units()


def test_the_last_files_compared_in_pieces_find_exactly_what_whole_files_find(
    aws: Aws,  # noqa: F811 - fixtures
    sqldb: Db,  # noqa: F811
    tmp_path: Path,
) -> None:
    from datetime import UTC, datetime

    # GIVEN 9,000 order lines exported in two files (large enough to be cut) and backfilled
    folder = write_export(
        tmp_path / "x",
        _line_items("A", 9000),
        table="order_items",
        account_id=aws.account,
        export_time=datetime.now(UTC),
        files=2,
    )
    sqldb.reset()
    with sqldb.engine.begin() as conn:  # the lines' order (a foreign key)
        conn.execute(text("INSERT INTO orders (order_id) VALUES ('A')"))
    run, _ = backfill(
        aws, "order_items", "--export-dir", str(folder), "--to", "db", "--db", sqldb.url,
        "--checkpoint", str(tmp_path / "b.json"),
    )  # fmt: skip
    assert run.code == 0, run.err
    # AND drift in several pieces of both files
    with sqldb.engine.begin() as conn:
        conn.execute(text("UPDATE order_items SET quantity = 0 WHERE line_no IN (2, 2600, 4501, 8999)"))
        conn.execute(text("DELETE FROM order_items WHERE line_no IN (1200, 7777)"))
    recipe = _export_recipe(aws, sqldb, folder)
    found = {}
    for workers in (2, 1):  # two processes: the files in pieces; one: whole files
        rec = recipe.reconciler(dynamodb=False)
        try:
            drift = rec.run(recipe, workers, extras=False)
        finally:
            rec.engine.dispose()
        found[workers] = {(d.kind, d.key["line_no"]) for d in drift}
        assert (rec.report.items, rec.report.compared) == (9000, 9000), workers
    assert len(rec.source.pieces(tail=2)) == 8  # what the two processes were given
    assert (
        found[2]
        == found[1]
        == {
            ("differing", 2),
            ("differing", 2600),
            ("differing", 4501),
            ("differing", 8999),
            ("missing", 1200),
            ("missing", 7777),
        }
    )
