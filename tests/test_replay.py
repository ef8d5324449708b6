"""Issue 4, done when: `ddb-sql-sync sample ENTITY --count N | ddb-sql-sync replay -`
(both as subprocesses) ends with a summary in which every generated change is accounted for,
and the database equals the last state of every item, with and without injected faults.

The expected state is computed here, independently of runtime/: from the sample records, by
the meaning of each mapping (which records its filter lets through, what each event type
writes). A change the replay reports in the DLQ is exempt only if it never reached the ledger
(i.e. was never applied); every other change must be in the ledger.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import scratch_url

ROOT = Path(__file__).resolve().parent.parent
STATUS_CODES = {"active": 1, "suspended": 2, "closed": 9}
CUSTOMER_TYPES = {"customer.registered", "customer.updated", "customer.status_changed"}


def run_pipeline(
    entity: str, count: int, seed: int, tmp: Path, *faults: str, db_url: str | None = None
) -> dict[str, Any]:
    """`sample | replay -` as two processes; the records the sample wrote are also kept (a tee
    in this process) for the expected state."""
    records = tmp / f"{entity}.jsonl"
    db_url = db_url or f"sqlite:///{tmp / f'{entity}.db'}"
    dlq = tmp / f"{entity}-dlq.jsonl"
    sample = subprocess.Popen(
        [sys.executable, "-m", "generator", "sample", entity, "--count", str(count), "--seed", str(seed)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
    )
    with (tmp / "replay.out").open("wb") as out, (tmp / "replay.err").open("wb") as err:
        replay = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "generator",
                "replay",
                "-",
                "--db",
                db_url,
                "--dlq-out",
                str(dlq),
                "--format",
                "json",
                "--seed",
                str(seed),
                *faults,
            ],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=err,
        )
        assert sample.stdout is not None and replay.stdin is not None
        with records.open("wb") as keep:
            while chunk := sample.stdout.read(1 << 16):
                keep.write(chunk)
                replay.stdin.write(chunk)
        replay.stdin.close()
        assert sample.wait(60) == 0
        code = replay.wait(120)
    stderr = (tmp / "replay.err").read_text()
    in_dlq = [json.loads(line) for line in dlq.read_text().splitlines()]
    # 0 when every message is accounted for and none is in a DLQ; 3 when some ended in a DLQ
    # (faults can use up a message's receives), which the summary still accounts for.
    assert code == (3 if in_dlq else 0), stderr
    assert "accounted for: yes" in stderr, stderr
    assert ("message(s) ended in a DLQ" in stderr) == bool(in_dlq), stderr
    summary = json.loads((tmp / "replay.out").read_text())
    return {
        "summary": summary,
        "records": [json.loads(line) for line in records.read_text().splitlines()],
        "dlq": in_dlq,
        "db": db_url,
    }


def db_rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql))]
    finally:
        engine.dispose()


def ts(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, UTC).replace(tzinfo=None)


def dt(value: Any) -> Any:
    """Naive UTC: SQLite hands timestamps back as text to a raw query, PostgreSQL as aware."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime) and value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


def js(value: Any) -> Any:
    """JSON columns: text on SQLite and MySQL, already parsed from PostgreSQL's JSONB."""
    return json.loads(value) if isinstance(value, str) else value


def version(record: dict[str, Any]) -> str:
    return record["dynamodb"]["SequenceNumber"].zfill(40)


def plain(av: dict[str, Any]) -> Any:
    """A DynamoDB attribute value as the JSON the sync stores (numbers as JSON numbers)."""
    ((kind, v),) = av.items()
    if kind == "N":
        return json.loads(v)
    if kind == "M":
        return {k: plain(x) for k, x in v.items()}
    if kind == "L":
        return [plain(x) for x in v]
    if kind == "NULL":
        return None
    return v


def exempt_and_check_ledger(result: dict[str, Any], entity: str, passing: list[dict[str, Any]]) -> set[str]:
    """Every change that passed the filter is in the ledger or in the DLQ; those in the DLQ and
    not in the ledger were never applied and are left out of the expected state."""
    ledger = {
        r[0] for r in db_rows(result["db"], f"SELECT event_id FROM sync_ledger WHERE entity = '{entity}'")
    }
    in_dlq = {json.loads(d["body"])["eventID"] for d in result["dlq"] if d["kind"] == "consumer"}
    lost = [r["eventID"] for r in passing if r["eventID"] not in ledger and r["eventID"] not in in_dlq]
    assert not lost, f"{len(lost)} changes neither applied nor in the DLQ, e.g. {lost[:3]}"
    summary = result["summary"]["total"]
    assert summary["passed"] == len(passing)
    assert summary["dlq"] == len(result["dlq"])
    return in_dlq - ledger


def check_summary(result: dict[str, Any], count: int) -> None:
    s = result["summary"]
    t = s["total"]
    assert s["accounted"] and s["records"] == count and s["remaining"] == 0 and s["unreadable"] == 0
    ended = t["applied"] + t["duplicate"] + t["stale"] + t["ignored"] + t["skipped"] + t["dlq"]
    assert ended == t["delivered"] == t["sent"] + t["resent"] - t["dedup_dropped"]
    assert t["passed"] + t["filtered"] == count


# --- orders --------------------------------------------------------------------------------


def orders_passing(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """orders' filter: INSERT/MODIFY whose new image has event.M.event_id.S."""
    out = []
    for r in records:
        outbox = (r["dynamodb"].get("NewImage") or {}).get("event", {}).get("M", {})
        if r["eventName"] in ("INSERT", "MODIFY") and "S" in outbox.get("event_id", {}):
            out.append(r)
    return out


def expected_orders(passing: list[dict[str, Any]], exempt: set[str]) -> dict[str, tuple[Any, ...]]:
    """order.created upserts the row; the other types update status, amount and time."""
    rows: dict[str, dict[str, Any]] = {}
    for r in passing:
        if r["eventID"] in exempt:
            continue
        new = r["dynamodb"]["NewImage"]
        oid = r["dynamodb"]["Keys"]["order_id"]["S"]
        details = new["order_details"]["M"]
        values = {
            "total_amount": Decimal(details["total_amount"]["N"]),
            "status": details["status"]["S"],
            "updated_at": ts(r["dynamodb"]["ApproximateCreationDateTime"]),
            "sync_version": version(r),
        }
        if new["event"]["M"]["event_type"]["S"] == "order.created":
            rows[oid] = {"customer_id": int(new["customer_id"]["N"]), **values}
        else:
            assert oid in rows, f"an update of {oid} before it was created"
            rows[oid].update(values)
    cols = ("customer_id", "total_amount", "status", "updated_at", "sync_version")
    return {k: tuple(v[c] for c in cols) for k, v in rows.items()}


@pytest.mark.parametrize(
    "faults",
    [(), ("--duplicates", "0.2", "--crashes", "0.05")],
    ids=["clean", "duplicates-and-crashes"],
)
def test_orders_10000_changes_end_in_the_last_state(tmp_path: Path, faults: tuple[str, ...]) -> None:
    # GIVEN 10,000 sampled stream records of orders  WHEN replayed (with or without faults)
    result = run_pipeline("orders", 10_000, 11, tmp_path, *faults)
    # THEN every change is accounted for and every order is in its last state
    check_summary(result, 10_000)
    passing = orders_passing(result["records"])
    exempt = exempt_and_check_ledger(result, "orders", passing)
    actual = {
        r[0]: (r[1], Decimal(str(r[2])), r[3], dt(r[4]), r[5])
        for r in db_rows(
            result["db"],
            "SELECT order_id, customer_id, total_amount, status, updated_at, sync_version FROM orders",
        )
    }
    assert actual == expected_orders(passing, exempt)
    t = result["summary"]["total"]
    if faults:
        assert t["duplicate"] > 0 and t["dedup_dropped"] > 0 and t["crashes"] > 0
        assert len(exempt) <= 10  # maxReceiveCount 3: a rare message can exhaust its receives
    else:
        assert t["applied"] == len(passing) and t["dlq"] == 0 and t["failed_attempts"] == 0


# --- customers: value maps, soft deletes, two tables ---------------------------------------


def customers_passing(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in records:
        outbox = (r["dynamodb"].get("NewImage") or {}).get("outbox", {}).get("M", {})
        if r["eventName"] == "REMOVE" or (
            "S" in outbox.get("id", {}) and outbox.get("type", {}).get("S") in CUSTOMER_TYPES
        ):
            out.append(r)
    return out


def expected_customers(
    passing: list[dict[str, Any]], exempt: set[str]
) -> tuple[dict[str, tuple[Any, ...]], set[tuple[Any, ...]]]:
    rows: dict[str, dict[str, Any]] = {}
    history = set()
    for r in passing:
        if r["eventID"] in exempt:
            continue
        d = r["dynamodb"]
        cid = d["Keys"]["customer_id"]["S"]
        when = ts(d["ApproximateCreationDateTime"])
        if r["eventName"] == "REMOVE":  # soft delete; a missing row is ignored
            if cid in rows:
                rows[cid].update(deleted_at=when, sync_version=version(r))
            continue
        new = d["NewImage"]
        kind = new["outbox"]["M"]["type"]["S"]
        status = STATUS_CODES[new["status"]["S"]]
        if kind == "customer.status_changed":
            assert cid in rows, f"a status change of {cid} before it was registered"
            rows[cid].update(status_code=status, sync_version=version(r))
            history.add((r["eventID"], cid, status, when))
            continue
        rows[cid] = {
            "email": new["email"]["S"],
            "given_name": new["given_name"]["S"],
            "family_name": new["family_name"]["S"],
            "status_code": status,
            "is_vip": new["vip"]["BOOL"],
            "registered_at": datetime.fromisoformat(new["registered_at"]["S"]).replace(tzinfo=None),
            "profile": plain(new["profile"]),
            "source_system": "dynamodb",
            "sync_version": version(r),
            "deleted_at": None,
        }
    cols = (
        "email",
        "given_name",
        "family_name",
        "status_code",
        "is_vip",
        "registered_at",
        "profile",
        "source_system",
        "sync_version",
        "deleted_at",
    )
    return {k: tuple(v[c] for c in cols) for k, v in rows.items()}, history


@pytest.mark.parametrize(
    "faults",
    [(), ("--duplicates", "0.2", "--crashes", "0.05", "--lost-responses", "0.02", "--delay-groups", "0.05")],
    ids=["clean", "all-faults"],
)
def test_customers_soft_deletes_and_status_history(tmp_path: Path, faults: tuple[str, ...]) -> None:
    result = run_pipeline("customers", 3_000, 5, tmp_path, *faults)
    check_customers(result, 3_000)


def check_customers(result: dict[str, Any], count: int) -> None:
    check_summary(result, count)
    passing = customers_passing(result["records"])
    exempt = exempt_and_check_ledger(result, "customers", passing)
    expected, history = expected_customers(passing, exempt)
    actual = {
        r[0]: (r[1], r[2], r[3], r[4], bool(r[5]), dt(r[6]), js(r[7]), r[8], r[9], dt(r[10]))
        for r in db_rows(
            result["db"],
            "SELECT external_id, email, given_name, family_name, status_code, is_vip, registered_at, "
            "profile, source_system, sync_version, deleted_at FROM customers",
        )
    }
    assert actual == expected
    assert any(v[-1] is not None for v in expected.values())  # soft deletes happened
    rows = db_rows(
        result["db"], "SELECT event_id, external_id, status_code, changed_at FROM customer_status_history"
    )
    assert {(*r[:3], dt(r[3])) for r in rows} == history


@pytest.mark.parametrize(
    "server",
    [pytest.param("postgresql", marks=pytest.mark.postgres), pytest.param("mysql", marks=pytest.mark.mysql)],
)
def test_replay_into_a_server_database(request: pytest.FixtureRequest, tmp_path: Path, server: str) -> None:
    """--db with a PostgreSQL or MariaDB URL (skipped when the server is not reachable)."""
    from runtime.registry import load_registry
    from runtime.schema import build_metadata

    scratch = scratch_url(
        request.getfixturevalue("postgres_url" if server == "postgresql" else "mysql_url"), "local_replay"
    )
    engine = create_engine(scratch)
    build_metadata(load_registry(ROOT / "build" / "registry.json")).drop_all(engine)  # a fresh start
    engine.dispose()
    result = run_pipeline(
        "customers", 1_500, 6, tmp_path, "--duplicates", "0.2", "--crashes", "0.05", db_url=scratch
    )
    check_customers(result, 1_500)


# --- order_items: composite keys, hard deletes, item-attribute versions --------------------


def order_items_passing(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in records:
        new = r["dynamodb"].get("NewImage") or {}
        if r["eventName"] == "REMOVE" or "S" in new.get("sku", {}):
            out.append(r)
    return out


def expected_order_items(
    passing: list[dict[str, Any]], exempt: set[str]
) -> dict[tuple[str, int], tuple[Any, ...]]:
    rows: dict[tuple[str, int], tuple[Any, ...] | None] = {}
    for r in passing:
        if r["eventID"] in exempt:
            continue
        d = r["dynamodb"]
        key = (d["Keys"]["order_id"]["S"], int(d["Keys"]["line_no"]["N"]))
        if r["eventName"] == "REMOVE":
            rows[key] = None
            continue
        new = d["NewImage"]
        rows[key] = (
            new["sku"]["S"],
            int(new["quantity"]["N"]),
            Decimal(new["unit_price"]["N"]),
            plain({"M": new["options"]["M"]}),
            int(new["rev"]["N"]),
        )
    return {k: v for k, v in rows.items() if v is not None}


@pytest.mark.parametrize(
    "faults",
    [(), ("--duplicates", "0.2", "--crashes", "0.05", "--delay-groups", "0.1")],
    ids=["clean", "duplicates-crashes-delays"],
)
def test_order_items_hard_deletes(tmp_path: Path, faults: tuple[str, ...]) -> None:
    result = run_pipeline("order_items", 3_000, 9, tmp_path, *faults)
    check_summary(result, 3_000)
    passing = order_items_passing(result["records"])
    exempt = exempt_and_check_ledger(result, "order_items", passing)
    expected = expected_order_items(passing, exempt)
    actual = {
        (r[0], r[1]): (r[2], r[3], Decimal(str(r[4])), js(r[5]), r[6])
        for r in db_rows(
            result["db"],
            "SELECT order_id, line_no, sku, quantity, unit_price, options, row_version FROM order_items",
        )
    }
    assert actual == expected
    assert any(r["eventName"] == "REMOVE" for r in passing)  # deletes happened


# --- the command line ----------------------------------------------------------------------


def test_replay_reads_a_getrecords_document_and_honours_entity(tmp_path: Path) -> None:
    """A GetRecords document from a table no mapping knows: nothing is routed, unless --entity."""
    from synctools.local.sample import Sampler

    registry = json.loads((ROOT / "build" / "registry.json").read_text())
    records = list(Sampler(registry, "orders", seed=1).records(50))
    for r in records:
        r["eventSourceARN"] = r["eventSourceARN"].replace("table/orders/", "table/legacy_orders/")
    doc = tmp_path / "page.json"
    doc.write_text(json.dumps({"Records": records, "NextShardIterator": "x"}, indent=2))
    base = [
        sys.executable,
        "-m",
        "generator",
        "replay",
        str(doc),
        "--db",
        f"sqlite:///{tmp_path / 'r.db'}",
        "--format",
        "json",
    ]
    base += ["--dlq-out", str(tmp_path / "dlq.jsonl"), "--quiet"]
    unrouted = subprocess.run(base, cwd=ROOT, capture_output=True, text=True, check=True)
    s = json.loads(unrouted.stdout)
    assert s["records"] == 50 and s["unrouted"] == 50 and s["total"]["delivered"] == 0
    forced = subprocess.run(
        [*base, "--entity", "orders"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    s = json.loads(forced.stdout)
    assert s["unrouted"] == 0 and s["total"]["passed"] + s["total"]["filtered"] == 50 and s["accounted"]


def test_replay_exit_codes_and_dlq_reasons(tmp_path: Path) -> None:
    """Exit 1 when input is unreadable; a poison change lands in the DLQ file with the reason
    the runtime logged, and without unreadable input the run exits 3 (accounted for, but
    messages in a DLQ); exit 2 for a bad entity."""
    from synctools.local.sample import Sampler

    registry = json.loads((ROOT / "build" / "registry.json").read_text())
    records = list(Sampler(registry, "customers", seed=4).records(20))
    first = records[0]
    first["dynamodb"]["NewImage"]["status"] = {"S": "banned"}  # not in the value map: permanent
    keyless = next(r for r in records[1:] if r["eventName"] == "INSERT")
    keyless["dynamodb"]["Keys"] = {"customer_id": {"N": "5"}}  # MessageGroupId $...customer_id.S: missing
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n{broken\n")
    cmd = [sys.executable, "-m", "generator", "replay", str(path), "--db", f"sqlite:///{tmp_path / 'r.db'}"]
    cmd += ["--dlq-out", str(tmp_path / "dlq.jsonl"), "--quiet"]
    done = subprocess.run([*cmd, "--format", "json"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 1, done.stderr
    assert "unreadable" in done.stderr and "accounted for: NO" in done.stderr
    summary = json.loads(done.stdout)
    assert summary["unreadable"] == 1 and summary["total"]["pipe_dlq"] == 1
    dlq = [json.loads(line) for line in (tmp_path / "dlq.jsonl").read_text().splitlines()]
    (pipe,) = [d for d in dlq if d["kind"] == "pipe"]  # facts 3.3: positions only, no record
    assert pipe["eventID"] == keyless["eventID"] and "MessageGroupId" in pipe["reason"]
    assert pipe["DDBStreamBatchInfo"]["startSequenceNumber"] == keyless["dynamodb"]["SequenceNumber"]
    poisoned = [
        d for d in dlq if d["kind"] == "consumer" and json.loads(d["body"])["eventID"] == first["eventID"]
    ]
    assert (
        poisoned and "status_code: a string of 6 characters is not in its value map" in poisoned[0]["reason"]
    )
    assert poisoned[0]["attributes"]["MessageDeduplicationId"] == poisoned[0]["messageId"]
    # Without the broken line: everything accounted for, two messages in DLQs: exit 3.
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    (tmp_path / "r.db").unlink()
    done = subprocess.run([*cmd, "--format", "json"], cwd=ROOT, capture_output=True, text=True)
    summary = json.loads(done.stdout)
    assert done.returncode == 3, done.stderr
    assert summary["accounted"] and summary["unreadable"] == 0 and "accounted for: yes" in done.stderr
    n_dlq = summary["total"]["dlq"] + summary["total"]["pipe_dlq"]
    assert n_dlq == len((tmp_path / "dlq.jsonl").read_text().splitlines()) >= 2
    assert (
        f"replay: {n_dlq} message(s) ended in a DLQ ({summary['total']['dlq']} in a FIFO DLQ, 1 in the "
        f"Pipe's DLQ), listed in {tmp_path / 'dlq.jsonl'}; exit status 3"
    ) in done.stderr.splitlines()
    bad = subprocess.run([*cmd, "--entity", "nope"], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "not in the registry" in bad.stderr


def test_replay_writes_its_default_outputs_into_a_git_ignored_folder(tmp_path: Path) -> None:
    # GIVEN a few stream records and no --db nor --dlq-out, in a directory of its own
    from synctools.local.sample import Sampler

    registry = json.loads((ROOT / "build" / "registry.json").read_text())
    records = tmp_path / "in.jsonl"
    records.write_text("".join(json.dumps(r) + "\n" for r in Sampler(registry, "orders", seed=1).records(20)))
    # WHEN replayed there
    done = subprocess.run(
        [sys.executable, "-m", "generator", "replay", "in.jsonl", "--build", str(ROOT / "build"), "--quiet"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    # THEN the database and the DLQ file are in .sync-local/, created for the run, and nothing
    # else appeared beside the input
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [".sync-local", "in.jsonl"]
    assert {p.name for p in (tmp_path / ".sync-local").iterdir()} >= {"replay.db", "replay-dlq.jsonl"}
    # AND git ignores that folder in a checkout
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    ignored = subprocess.run(
        ["git", "check-ignore", ".sync-local/replay.db", ".sync-local/replay-dlq.jsonl"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert ignored.stdout.split() == [".sync-local/replay.db", ".sync-local/replay-dlq.jsonl"]
