"""`ddb-sql-sync backfill` (synctools/aws/backfill.py): every current item through the Pipe's
filter and template into the database or the FIFO queue, safe beside the live stream.

The end-to-end tests run the real command against a moto server (DynamoDB Scan with segments,
DynamoDB Streams, SQS, S3 holding export files written here in the DYNAMODB_JSON export layout)
and real PostgreSQL and MariaDB. The live stream is the real path: `pump` (the Pipe) and
`consume` (the Lambda). The version rule is checked in both orders: backfill then stream, and
stream then backfill (an export holding an item's older state).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

pytest.importorskip("boto3")

from runtime.registry import parse_registry  # noqa: E402
from runtime.schema import build_metadata  # noqa: E402
from synctools.aws.backfill import (  # noqa: E402
    Backoff,
    RateLimit,
    ScanSource,
    Synthesizer,
    event_id,
)
from synctools.aws.session import ToolError  # noqa: E402
from tests.conftest import scratch_url  # noqa: E402
from tests.test_aws_tools import (  # noqa: E402, F401 - `account` is a fixture
    REGION,
    REGISTRY,
    Aws,
    Run,
    account,
    create_resources,
    put_order,
    update_order,
)

# --- helpers -------------------------------------------------------------------------------


@dataclass
class Db:
    url: str
    engine: Any

    def rows(self, sql: str, **params: Any) -> list[tuple[Any, ...]]:
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql), params)]

    def reset(self) -> None:
        metadata = build_metadata(parse_registry(REGISTRY))
        metadata.drop_all(self.engine)
        metadata.create_all(self.engine)


@pytest.fixture(params=["postgresql", "mysql"])
def sqldb(request: pytest.FixtureRequest) -> Iterator[Db]:
    """A scratch database on the real PostgreSQL, then on the real MariaDB."""
    url = scratch_url(
        request.getfixturevalue(f"{request.param if request.param != 'postgresql' else 'postgres'}_url"),
        "backfill",
    )
    engine = create_engine(url)
    db = Db(url, engine)
    db.reset()
    yield db
    engine.dispose()


@pytest.fixture
def pgdb(postgres_url: str) -> Iterator[Db]:
    url = scratch_url(postgres_url, "backfill")
    engine = create_engine(url)
    db = Db(url, engine)
    db.reset()
    yield db
    engine.dispose()


@pytest.fixture
def aws(account: Aws) -> Aws:  # noqa: F811 - the fixture imported above
    create_resources(account)
    return account


def s3_client() -> Any:
    import boto3

    return boto3.Session(region_name=REGION).client("s3")


def pump(aws: Aws, entity: str, ckpt: Path, *extra: str) -> Run:
    run = aws.run("pump", "--entity", entity, "--checkpoint", str(ckpt), *extra)
    assert run.code == 0, run.err
    return run


def consume(aws: Aws, db: Db, entity: str) -> Run:
    run = aws.run("consume", "--entity", entity, "--db", db.url, "--wait", "1")
    assert run.code == 0, run.err
    return run


def backfill(aws: Aws, entity: str, *extra: str) -> tuple[Run, dict[str, Any]]:
    run = aws.run("backfill", entity, "--format", "json", *extra)
    docs = run.lines()
    return run, (docs[-1] if docs else {})


def stream_seqs(aws: Aws, table: str) -> list[int]:
    streams = aws.client("dynamodbstreams")
    arn = aws.client("dynamodb").describe_table(TableName=table)["Table"]["LatestStreamArn"]
    seqs = []
    for shard in streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]:
        it = streams.get_shard_iterator(
            StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        seqs += [
            int(r["dynamodb"]["SequenceNumber"]) for r in streams.get_records(ShardIterator=it)["Records"]
        ]
    return seqs


def scan_all(aws: Aws, table: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for page in aws.client("dynamodb").get_paginator("scan").paginate(TableName=table):
        items += page["Items"]
    return items


def write_export(
    root: Path,
    items: list[dict[str, Any]],
    *,
    table: str,
    account_id: str,
    export_time: datetime,
    files: int = 2,
    prefix: str = "exports",
    bucket: str = "bf-exports",
) -> Path:
    """The files ExportTableToPointInTime writes (DYNAMODB_JSON), under root/<prefix>/: returns
    the export's folder (root/<prefix>/AWSDynamoDB/<export id>)."""
    export_id = f"{int(export_time.timestamp() * 1000):014d}-{hashlib.md5(table.encode()).hexdigest()[:8]}"
    base = f"{prefix}/AWSDynamoDB/{export_id}"
    folder = root / base
    (folder / "data").mkdir(parents=True)
    manifest = []
    for n in range(files):
        chunk = items[n::files]
        lines = "".join(json.dumps({"Item": item}) + "\n" for item in chunk).encode()
        name = f"{hashlib.sha1(f'{export_id}{n}'.encode()).hexdigest()[:26]}.json.gz"
        blob = gzip.compress(lines)
        (folder / "data" / name).write_bytes(blob)
        manifest.append(
            {
                "itemCount": len(chunk),
                "md5Checksum": base64.b64encode(hashlib.md5(blob).digest()).decode(),
                "etag": hashlib.md5(blob).hexdigest(),
                "dataFileS3Key": f"{base}/data/{name}",
            }
        )
    (folder / "manifest-files.json").write_text("".join(json.dumps(m) + "\n" for m in manifest))
    iso = export_time.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    table_arn = f"arn:aws:dynamodb:{REGION}:{account_id}:table/{table}"
    summary = {
        "version": "2020-06-30",
        "exportArn": f"{table_arn}/export/{export_id}",
        "startTime": iso,
        "endTime": iso,
        "tableArn": table_arn,
        "tableId": "00000000-0000-0000-0000-000000000000",
        "exportTime": iso,
        "s3Bucket": bucket,
        "s3Prefix": prefix,
        "s3SseAlgorithm": "AES256",
        "s3SseKmsKeyId": None,
        "manifestFilesS3Key": f"{base}/manifest-files.json",
        "billedSizeBytes": sum(len(json.dumps(i)) for i in items),
        "itemCount": len(items),
        "outputFormat": "DYNAMODB_JSON",
    }
    (folder / "manifest-summary.json").write_text(json.dumps(summary))
    return folder


def upload(root: Path, bucket: str) -> None:
    s3 = s3_client()
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    for path in root.rglob("*"):
        if path.is_file():
            s3.put_object(Bucket=bucket, Key=str(path.relative_to(root)), Body=path.read_bytes())


def put_line(ddb: Any, order_id: str, line: int, rev: int, qty: int) -> None:
    ddb.put_item(
        TableName="order_items",
        Item={
            "order_id": {"S": order_id},
            "line_no": {"N": str(line)},
            "sku": {"S": f"SKU-{line}"},
            "quantity": {"N": str(qty)},
            "unit_price": {"N": "2.50"},
            "rev": {"N": str(rev)},
        },
    )


def orders(db: Db) -> list[tuple[Any, ...]]:
    return db.rows("SELECT order_id, status, sync_version FROM orders ORDER BY order_id")


def padded(seq: int) -> str:
    return str(seq).zfill(40)


# --- units --------------------------------------------------------------------------------


def test_the_event_id_is_stable_per_item_state() -> None:
    a = {"k": {"S": "1"}, "tags": {"SS": ["b", "a"]}, "n": {"N": "1"}}
    b = {"n": {"N": "1"}, "tags": {"SS": ["a", "b"]}, "k": {"S": "1"}}
    assert event_id("orders", a) == event_id("orders", b)  # attribute and set order do not count
    assert event_id("orders", a) != event_id("orders", {**a, "n": {"N": "2"}})
    assert event_id("orders", a) != event_id("order_items", a)
    assert event_id("orders", a).startswith("backfill-") and len(event_id("orders", a)) == 41


def test_the_synthesized_record_is_a_stream_insert() -> None:
    raw = REGISTRY["entities"]["order_items"]
    synth = Synthesizer.of("order_items", raw, "123", REGION, "arn:stream")
    item = {"order_id": {"S": "A"}, "line_no": {"N": "1"}, "sku": {"S": "x"}, "blob": {"B": b"\x00\x01"}}
    rec = synth.record(item, 1_700_000_000)
    assert rec["eventName"] == "INSERT" and rec["eventSourceARN"] == "arn:stream"
    d = rec["dynamodb"]
    assert d["Keys"] == {"order_id": {"S": "A"}, "line_no": {"N": "1"}}
    assert d["SequenceNumber"] == "123" and d["ApproximateCreationDateTime"] == 1_700_000_000
    assert d["NewImage"]["blob"] == {"B": "AAE="} and "OldImage" not in d  # bytes as the stream's base64
    with pytest.raises(ToolError):
        synth.record({"order_id": {"S": "A"}}, 0)


def test_the_rate_limit_spaces_items_over_time() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    limit = RateLimit(100.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(5):
        limit.take(50)  # 250 items at 100/s: 2 s of waiting after the first page
    assert sum(slept) == pytest.approx(2.0)


# --- moto + PostgreSQL/MariaDB: the version rule ------------------------------------------------


def test_scan_backfill_beats_an_older_streamed_change_and_loses_to_a_newer_one(
    aws: Aws, sqldb: Db, tmp_path: Path
) -> None:
    ddb = aws.client("dynamodb")
    ckpt = tmp_path / "pump.json"
    # GIVEN o1 created and streamed into the database, then confirmed (not streamed yet), o2 created
    put_order(ddb, "o1", "e1", "order.created", status="new")
    pump(aws, "orders", ckpt, "--max-records", "1")
    consume(aws, sqldb, "orders")
    put_order(ddb, "o2", "e2", "order.created", status="new")
    update_order(ddb, "o1", "e3", "order.confirmed", status="confirmed")
    s1, _, s3 = stream_seqs(aws, "orders")
    assert orders(sqldb) == [("o1", "new", padded(s1))]

    # WHEN the table is backfilled by a 2-segment Scan
    run, doc = backfill(
        aws,
        "orders",
        "--to",
        "db",
        "--db",
        sqldb.url,
        "--segments",
        "2",
        "--checkpoint",
        str(tmp_path / "b.json"),
    )
    assert run.code == 0, run.err
    # THEN the watermark is the stream's highest sequence number, and the backfill wins over the
    # older streamed state of o1 (a version above it) and creates o2
    assert doc["watermark"] == str(s3) and doc["read"] == 2 and doc["applied"] == 2 and doc["complete"]
    assert orders(sqldb) == [("o1", "confirmed", padded(s3)), ("o2", "new", padded(s3))]

    # WHEN o2 changes after the backfill and the stream catches up
    update_order(ddb, "o2", "e4", "order.shipped", status="shipped")
    pump(aws, "orders", ckpt)
    consume(aws, sqldb, "orders")
    s4 = max(stream_seqs(aws, "orders"))
    # THEN the newer stream event wins; the older records of the stream (o2's creation, o1's
    # confirmation, both at or below the watermark) change nothing
    assert orders(sqldb) == [("o1", "confirmed", padded(s3)), ("o2", "shipped", padded(s4))]

    # WHEN the backfill runs again (a new checkpoint: a new run, a new watermark)
    run, doc = backfill(
        aws, "orders", "--to", "db", "--db", sqldb.url, "--checkpoint", str(tmp_path / "b2.json")
    )
    assert run.code == 0, run.err
    # THEN o1's unchanged state is a duplicate in the ledger; o2's is not newer than its row
    assert (doc["duplicate"], doc["stale"], doc["applied"]) == (1, 1, 0)
    assert orders(sqldb) == [("o1", "confirmed", padded(s3)), ("o2", "shipped", padded(s4))]


def _lines(db: Db) -> list[tuple[Any, ...]]:
    return db.rows("SELECT order_id, line_no, quantity, row_version FROM order_items ORDER BY line_no")


def test_an_export_older_than_the_stream_never_undoes_an_update_or_a_delete(
    aws: Aws, sqldb: Db, tmp_path: Path
) -> None:
    ddb = aws.client("dynamodb")
    # GIVEN three lines (rev 1) exported, then line 1 updated (rev 2) and line 2 deleted
    for line in (1, 2, 3):
        put_line(ddb, "A", line, rev=1, qty=1)
    folder = write_export(
        tmp_path / "export",
        scan_all(aws, "order_items"),
        table="order_items",
        account_id=aws.account,
        export_time=datetime.now(UTC),
    )
    put_line(ddb, "A", 1, rev=2, qty=5)
    ddb.delete_item(TableName="order_items", Key={"order_id": {"S": "A"}, "line_no": {"N": "2"}})
    want = [("A", 1, 5, 2), ("A", 3, 1, 1)]

    def setup() -> None:
        sqldb.reset()
        with sqldb.engine.begin() as conn:  # the lines' order (a foreign key)
            conn.execute(text("INSERT INTO orders (order_id) VALUES ('A')"))

    def run_backfill(ckpt: str) -> dict[str, Any]:
        # An item-attribute version: no watermark, no AWS needed (--export-dir into the database)
        run, doc = backfill(
            aws,
            "order_items",
            "--export-dir",
            str(folder),
            "--to",
            "db",
            "--db",
            sqldb.url,
            "--checkpoint",
            ckpt,
        )
        assert run.code == 0, run.err
        assert doc["read"] == 3 and doc["units"] == 2 and doc["complete"]
        return doc

    # WHEN the stream is applied first, then the export is backfilled
    setup()
    pump(aws, "order_items", tmp_path / "p1.json")
    consume(aws, sqldb, "order_items")
    assert _lines(sqldb) == want
    doc = run_backfill(str(tmp_path / "b1.json"))
    # THEN line 1 stays at rev 2, line 2 stays deleted (its tombstone), line 3 is not older
    assert doc["stale"] == 3 and doc["applied"] == 0
    assert _lines(sqldb) == want

    # WHEN the export is backfilled first, then the stream is applied
    setup()
    doc = run_backfill(str(tmp_path / "b2.json"))
    assert doc["applied"] == 3
    assert _lines(sqldb) == [("A", 1, 1, 1), ("A", 2, 1, 1), ("A", 3, 1, 1)]
    pump(aws, "order_items", tmp_path / "p2.json")
    consume(aws, sqldb, "order_items")
    # THEN the stream's later update and delete win just the same
    assert _lines(sqldb) == want


def test_an_s3_export_takes_its_watermark_from_the_stream_before_the_export_time(
    aws: Aws, sqldb: Db, tmp_path: Path
) -> None:
    ddb = aws.client("dynamodb")
    # GIVEN o1 and o2 created, exported, and o1 confirmed after the export
    put_order(ddb, "o1", "e1", "order.created", status="new")
    put_order(ddb, "o2", "e2", "order.created", status="new")
    time.sleep(1.2)
    export_time = datetime.now(UTC)
    bucket = f"bf-exports-{aws.account}"  # bucket names are global, even across moto's accounts
    write_export(
        tmp_path / "s3",
        scan_all(aws, "orders"),
        table="orders",
        account_id=aws.account,
        export_time=export_time,
        bucket=bucket,
    )
    upload(tmp_path / "s3", bucket)
    time.sleep(1.2)
    update_order(ddb, "o1", "e3", "order.confirmed", status="confirmed")
    s1, s2, s3 = stream_seqs(aws, "orders")
    want = [("o1", "confirmed", padded(s3)), ("o2", "new", padded(s2))]

    def run_backfill(ckpt: str) -> dict[str, Any]:
        run, doc = backfill(
            aws, "orders", "--export", f"s3://{bucket}/exports", "--to", "db", "--db", sqldb.url,
            "--checkpoint", ckpt,
        )  # fmt: skip
        assert run.code == 0, run.err
        # the items carry the highest sequence number written before the export: s2
        assert doc["watermark"] == str(s2) and doc["read"] == 2 and doc["complete"]
        return doc

    # WHEN the export is backfilled from S3 before the stream reaches the database
    assert run_backfill(str(tmp_path / "b1.json"))["applied"] == 2
    pump(aws, "orders", tmp_path / "p1.json")
    consume(aws, sqldb, "orders")
    # THEN the confirmation written after the export wins; the creations change nothing
    assert orders(sqldb) == want

    # WHEN the stream reaches the database first, then the export is backfilled
    sqldb.reset()
    pump(aws, "orders", tmp_path / "p2.json")
    consume(aws, sqldb, "orders")
    doc = run_backfill(str(tmp_path / "b2.json"))
    # THEN the export's older o1 (s2 < s3) and its o2 (s2: the row's own version) are stale
    assert doc["stale"] == 2 and doc["applied"] == 0
    assert orders(sqldb) == want and s1 < s2


def test_backfill_to_the_queue_uses_the_pipes_routing(aws: Aws, pgdb: Db, tmp_path: Path) -> None:
    ddb = aws.client("dynamodb")
    for i in range(12):
        put_order(ddb, f"o{i:02d}", f"e{i}", "order.created", status="new")
    ddb.put_item(TableName="orders", Item={"order_id": {"S": "no-event"}, "customer_id": {"N": "1"}})

    run, doc = backfill(
        aws, "orders", "--to", "queue", "--segments", "3", "--checkpoint", str(tmp_path / "b.json")
    )
    assert run.code == 0, run.err
    # THEN the item the filter drops is not sent; the others are, in batches of at most 10
    assert (doc["read"], doc["filtered"], doc["sent"]) == (13, 1, 12)
    sqs = aws.client("sqs")
    url = aws.url("orders-sync.fifo")
    msgs = sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=1, AttributeNames=["MessageGroupId", "MessageDeduplicationId"],
        VisibilityTimeout=0,
    )["Messages"]  # fmt: skip
    body = json.loads(msgs[0]["Body"])
    assert msgs[0]["Attributes"]["MessageGroupId"] == body["orderID"]
    assert msgs[0]["Attributes"]["MessageDeduplicationId"] == body["eventID"]
    assert body["eventID"].startswith("backfill-") and body["eventName"] == "INSERT"
    # WHEN the Lambda (consume) takes them
    consume(aws, pgdb, "orders")
    assert len(orders(pgdb)) == 12


def test_an_interrupted_backfill_resumes_where_it_stopped(aws: Aws, pgdb: Db, tmp_path: Path) -> None:
    ddb = aws.client("dynamodb")
    for i in range(20):
        put_order(ddb, f"o{i:02d}", f"e{i}", "order.created", status="new")
    ckpt = str(tmp_path / "b.json")
    args = ("--to", "db", "--db", pgdb.url, "--segments", "3", "--batch-size", "3", "--checkpoint", ckpt)

    # WHEN a run stops after about 7 items (pages of 3)
    first, doc1 = backfill(aws, "orders", *args, "--max-items", "7", "--workers", "1")
    assert first.code == 0, first.err
    assert not doc1["complete"] and 7 <= doc1["read"] < 20
    saved = json.loads(Path(ckpt).read_text())
    assert saved["backfill"], saved
    # THEN the next run reads only what is left: completed segments skipped, the rest resumed
    # from their LastEvaluatedKey
    second, doc2 = backfill(aws, "orders", *args)
    assert second.code == 0, second.err
    assert doc2["complete"] and doc1["read"] + doc2["read"] == 20
    assert doc2["watermark"] == doc1["watermark"]  # the run's watermark is kept
    assert doc1["applied"] + doc2["applied"] == 20 and len(orders(pgdb)) == 20
    # AND a run after completion has nothing to do
    third, doc3 = backfill(aws, "orders", *args)
    assert third.code == 0 and doc3["read"] == 0 and doc3["units_skipped"] == 3


def _line_items(order_id: str, n: int) -> list[dict[str, Any]]:
    return [
        {
            "order_id": {"S": order_id},
            "line_no": {"N": str(line)},
            "sku": {"S": f"SKU-{line}"},
            "quantity": {"N": str(line % 7 + 1)},
            "unit_price": {"N": "2.50"},
            "rev": {"N": "1"},
        }
        for line in range(1, n + 1)
    ]


def _line_export(tools: Aws, tmp_path: Path, lines: int, files: int) -> Path:
    """An export of order A's `lines` lines in `files` files (item-attribute versions)."""
    return write_export(
        tmp_path / "export",
        _line_items("A", lines),
        table="order_items",
        account_id=tools.account,
        export_time=datetime.now(UTC),
        files=files,
    )


def test_workers_apply_an_export_in_processes_and_resume_after_a_stop(
    aws: Aws, sqldb: Db, tmp_path: Path
) -> None:
    # GIVEN an export of 600 order lines in 6 files (an item-attribute version: no AWS needed)
    folder = _line_export(aws, tmp_path, 600, files=6)
    sqldb.reset()
    with sqldb.engine.begin() as conn:  # the lines' order (a foreign key)
        conn.execute(text("INSERT INTO orders (order_id) VALUES ('A')"))
    ckpt = tmp_path / "b.json"
    args = ("--export-dir", str(folder), "--to", "db", "--db", sqldb.url, "--checkpoint", str(ckpt))
    args += ("--workers", "3", "--batch-size", "5")

    # WHEN a run in 3 worker processes stops after about 40 items
    first, doc1 = backfill(aws, "order_items", *args, "--max-items", "40")
    assert first.code == 0, first.err
    # THEN what it applied is what its checkpoint says it did, no more and no less
    assert not doc1["complete"] and 40 <= doc1["read"] < 600 and doc1["applied"] == doc1["read"]
    assert sqldb.rows("SELECT count(*) FROM order_items") == [(doc1["read"],)]
    saved = json.loads(ckpt.read_text())["entities"]["order_items"]
    (units,) = saved.values()
    assert sum(int(u["sequenceNumber"] or 0) for u in units.values()) == doc1["read"]

    # WHEN it runs again
    second, doc2 = backfill(aws, "order_items", *args)
    assert second.code == 0, second.err
    # THEN it reads only what was left, and every line is there once
    assert doc2["complete"] and doc1["read"] + doc2["read"] == 600
    assert doc2["applied"] == doc2["read"] and doc2["duplicate"] == doc2["stale"] == 0
    assert sqldb.rows("SELECT count(*), sum(quantity) FROM order_items") == [
        (600, sum(line % 7 + 1 for line in range(1, 601)))
    ]
    third, doc3 = backfill(aws, "order_items", *args)
    assert third.code == 0 and doc3["read"] == 0 and doc3["units_skipped"] == 6


def test_progress_shows_a_bar_the_rate_and_the_time_left() -> None:
    from synctools.aws.backfill import Backfill, Summary

    @dataclass
    class Counted:  # a source of which only the item count is asked
        estimate: int | None
        ident: str = "export:x"

    lines: list[str] = []
    now = [100.0]
    summary = Summary("orders", "export:x", "db", "0")
    source = Counted(1000)
    run = Backfill(
        pipe=None, synthesizer=None, source=source, sink=None, checkpoint=None, summary=summary,  # type: ignore[arg-type]
        log=lines.append, clock=lambda: now[0],
    )  # fmt: skip
    run._started = 100.0
    # GIVEN 250 of about 1,000 items applied in 10 s
    summary.counts.read = summary.counts.applied = 250
    now[0] = 110.0
    run.progress(force=True)
    # THEN the line shows a quarter done, the rate and 30 s left
    assert lines[-1] == (
        "backfill orders: [#####---------------] 25% 250 read, 250 applied, 0 filtered, 25 items/s, "
        "ETA 0:00:30 (of ~1,000 items)"
    )
    # AND a count the table's estimate is under shows full; none known, no bar
    summary.counts.read = 1200
    run.progress(force=True)
    assert lines[-1].startswith("backfill orders: [####################] 100% 1,200 read")
    source.estimate = None
    run.progress(force=True)
    assert lines[-1].startswith("backfill orders: 1,200 read") and lines[-1].endswith(
        "ETA unknown (no item count)"
    )


@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_worker_processes_apply_every_item_once_however_they_start(
    aws: Aws, sqldb: Db, tmp_path: Path, start: str
) -> None:
    from synctools.aws.backfill import Backfill, BackfillCheckpoint, Summary
    from synctools.aws.checkpoint import Checkpoint
    from synctools.aws.commands.backfill import DbRecipe
    from synctools.aws.commands.options import SourceOptions

    # GIVEN an export of 120 order lines in 4 files, and the command's recipe for its workers
    folder = _line_export(aws, tmp_path, 120, files=4)
    sqldb.reset()
    with sqldb.engine.begin() as conn:  # the lines' order (a foreign key)
        conn.execute(text("INSERT INTO orders (order_id) VALUES ('A')"))
    recipe = DbRecipe(
        build=str(aws.build),
        entity="order_items",
        db=sqldb.url,
        columns=(),
        batch_size=7,
        source=SourceOptions(None, REGION, None, str(folder), None, 1, False),
        region="",
        stream_arn="",
        watermark="0",
        salt="",
        rate=None,
    )
    own = recipe.runner()  # the coordinator's source, Pipe and sink, as the command builds them
    summary = Summary("order_items", own.source.ident, "db", "0")
    # WHEN two worker processes, forked or spawned, apply its four units
    try:
        Backfill(
            pipe=own.pipe,
            synthesizer=own.synth,
            source=own.source,
            sink=own.sink,
            checkpoint=BackfillCheckpoint(
                Checkpoint(str(tmp_path / "c.json")), "order_items", own.source.ident
            ),
            summary=summary,
            workers=2,
            recipe=recipe,
            start=start,
        ).run()
    finally:
        own.sink.engine.dispose()  # type: ignore[union-attr]
    # THEN every line is applied once, and each unit is counted done
    c = summary.counts
    assert summary.complete and summary.units_done == 4, summary
    assert (c.read, c.applied, c.duplicate, c.failed) == (120, 120, 0, 0)
    assert sqldb.rows("SELECT count(*), sum(quantity) FROM order_items") == [
        (120, sum(line % 7 + 1 for line in range(1, 121)))
    ]


def test_a_worker_process_that_cannot_write_stops_the_run_with_the_reason(aws: Aws, tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    folder = _line_export(aws, tmp_path, 40, files=4)
    ckpt = tmp_path / "b.json"
    url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/test?connect_timeout=2"
    run, doc = backfill(
        aws, "order_items", "--export-dir", str(folder), "--to", "db", "--db", url, "--checkpoint", str(ckpt),
        "--workers", "2",
    )  # fmt: skip
    # THEN the run ends incomplete, saying why, with nothing counted as applied or saved as done
    assert run.code == 1, (run.code, run.err)
    assert "still failing after 5 attempts" in run.err and str(port) in run.err
    assert doc == {} or not doc["complete"]
    saved = json.loads(ckpt.read_text())
    assert not any(
        u.get("ended") for units in saved["entities"].get("order_items", {}).values() for u in units.values()
    )


def test_columns_updates_only_the_chosen_columns_under_the_version_guard(
    aws: Aws, pgdb: Db, tmp_path: Path
) -> None:
    ddb = aws.client("dynamodb")
    put_order(ddb, "o1", "e1", "order.created", status="new", total="10.50")
    pump(aws, "orders", tmp_path / "p.json")
    consume(aws, pgdb, "orders")
    (s1,) = stream_seqs(aws, "orders")
    # GIVEN a column the old mapping did not fill (status NULL) and one changed elsewhere
    with pgdb.engine.begin() as conn:
        conn.execute(text("UPDATE orders SET status = NULL, total_amount = 1"))
    base = ("--to", "db", "--db", pgdb.url)
    # WHEN --columns status runs with a watermark below the row's version (the row is newer)
    run, doc = backfill(
        aws, "orders", *base, "--columns", "status", "--watermark", str(s1 - 1),
        "--checkpoint", str(tmp_path / "a.json"),
    )  # fmt: skip
    assert run.code == 0, run.err
    # THEN nothing is written
    assert doc["stale"] == 1
    assert pgdb.rows("SELECT status FROM orders") == [(None,)]
    # WHEN it runs with the computed watermark (the stream's highest: the row is at it)
    run, doc = backfill(aws, "orders", *base, "--columns", "status", "--checkpoint", str(tmp_path / "b.json"))
    assert run.code == 0, run.err
    # THEN only status is written, and the row keeps its version
    assert doc["applied"] == 1
    assert pgdb.rows("SELECT status, total_amount, sync_version FROM orders") == [("new", 1, padded(s1))]
    # AND --columns cannot go through the queue (the Lambda writes what its registry says)
    bad, _ = backfill(
        aws, "orders", "--to", "queue", "--columns", "status", "--checkpoint", str(tmp_path / "c.json")
    )
    assert bad.code == 2 and "--columns needs --to db" in bad.err


def test_columns_leaves_the_version_so_a_change_still_in_the_queue_applies_after_it(
    aws: Aws, sqldb: Db, tmp_path: Path
) -> None:
    ddb = aws.client("dynamodb")
    sqldb.reset()
    put_order(ddb, "o1", "e1", "order.created", status="new", total="10.50")
    pump(aws, "orders", tmp_path / "p.json")
    consume(aws, sqldb, "orders")
    (s1,) = stream_seqs(aws, "orders")
    # GIVEN a column the old mapping did not fill (total_amount NULL), and a later change of the
    # item (confirmed) already in the queue but not yet applied when --columns runs
    with sqldb.engine.begin() as conn:
        conn.execute(text("UPDATE orders SET total_amount = NULL"))
    update_order(ddb, "o1", "e2", "order.confirmed", status="confirmed")
    pump(aws, "orders", tmp_path / "p.json")
    s2 = max(stream_seqs(aws, "orders"))
    # WHEN --columns total_amount runs (its watermark: the stream's highest, s2)
    run, doc = backfill(
        aws, "orders", "--to", "db", "--db", sqldb.url, "--columns", "total_amount",
        "--checkpoint", str(tmp_path / "b.json"),
    )  # fmt: skip
    assert run.code == 0, run.err
    assert doc["applied"] == 1 and int(doc["watermark"]) == s2
    # THEN the column is filled and the row's version is still s1
    assert orders(sqldb) == [("o1", "new", padded(s1))]
    # AND the change in the queue, older than the watermark, still applies after it
    consume(aws, sqldb, "orders")
    assert orders(sqldb) == [("o1", "confirmed", padded(s2))]
    assert [float(v) for (v,) in sqldb.rows("SELECT total_amount FROM orders")] == [10.5]


def test_scan_throttling_backs_off_and_is_counted(aws: Aws) -> None:
    import boto3
    from botocore.config import Config

    ddb = aws.client("dynamodb")
    for i in range(5):
        put_order(ddb, f"o{i}", f"e{i}", "order.created", status="new")
    client = boto3.Session(region_name=REGION).client("dynamodb", config=Config(retries={"max_attempts": 1}))
    calls = {"n": 0}

    class Throttled:
        status_code = 400
        headers: dict[str, str] = {}

    def throttle(**kwargs: Any) -> Any:  # botocore's before-call hook: the answer without a request
        calls["n"] += 1
        if calls["n"] <= 3:
            return Throttled(), {
                "Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"},
                "ResponseMetadata": {"HTTPStatusCode": 400},
            }
        return None

    client.meta.events.register("before-call.dynamodb.Scan", throttle)
    waits: list[float] = []
    source = ScanSource(client, "orders", backoff=Backoff(base=0.1, sleep=waits.append))
    items = [i for page, _ in source.pages("segment-0-of-1", None) for i in page]
    assert len(items) == 5
    assert source.backoff.throttled == 3 and waits == [0.1, 0.2, 0.4]

    calls["n"] = -100  # throttled for good
    source = ScanSource(client, "orders", backoff=Backoff(attempts=4, sleep=waits.append))
    with pytest.raises(ToolError) as err:
        list(source.pages("segment-0-of-1", None))
    assert err.value.exit_code == 1 and "lower --rate" in str(err.value)


def test_command_line_errors_exit_2(aws: Aws, tmp_path: Path) -> None:
    run, _ = backfill(aws, "orders", "--to", "db")
    assert run.code == 2 and "--db" in run.err
    run, _ = backfill(aws, "nope", "--to", "queue")
    assert run.code == 2 and "unknown entity" in run.err
    run, _ = backfill(aws, "orders", "--to", "db", "--db", "sqlite://", "--export-dir", str(tmp_path))
    assert run.code == 2 and "manifest-summary.json" in run.err
