"""The AWS tools (synctools/aws/): `ddb-sql-sync pump`, `consume` and `dlq`.

Unit tests drive the pump with small fakes of DynamoDB Streams and SQS (checkpoint resume,
shard order, SendMessageBatch partial failures). The end-to-end tests run the real commands
against a moto server and the real PostgreSQL: DynamoDB writes -> stream -> pump -> FIFO queue
-> consume -> rows, with duplicates, a poison message that ends in the FIFO DLQ, `dlq show`
giving its reason, a fix, and a redrive; and a redrive killed half-way.

Each moto test works in an AWS account of its own (STS AssumeRole into a fresh account id, which
moto honours), so tests never see each other's queues and nothing needs a reset.
"""

from __future__ import annotations

import contextlib
import copy
import io
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

pytest.importorskip("boto3")

from botocore.exceptions import ClientError  # noqa: E402

from synctools.aws.checkpoint import Checkpoint  # noqa: E402
from synctools.aws.pipe import Outgoing, Sender, SendError, batches, load_pipe  # noqa: E402
from synctools.aws.pump import Pump  # noqa: E402
from synctools.aws.session import ToolError  # noqa: E402
from synctools.aws.streams import Shard, ready_shards, shard_order  # noqa: E402
from synctools.local.transform import SqsEntry  # noqa: E402
from tests.conftest import scratch_url

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build"
REGION = "ap-northeast-1"
STREAM = "arn:aws:dynamodb:ap-northeast-1:123456789012:table/orders/stream/2024-01-01T00:00:00.000"
REGISTRY = json.loads((BUILD / "registry.json").read_text(encoding="utf-8"))
_accounts = itertools.count(int(time.time()) % 100_000 * 1000 + 200_000_000_000)


# --- stream records and fakes ------------------------------------------------------------------


def order_stream_record(
    order_id: str,
    seq: int,
    event_type: str | None = "order.created",
    *,
    status: str = "pending",
    total: str = "10.50",
    event_name: str = "INSERT",
) -> dict[str, Any]:
    """A NEW_IMAGE record of the orders table as GetRecords returns it through boto3 (a parsed
    datetime, no eventSourceARN)."""
    image: dict[str, Any] = {
        "order_id": {"S": order_id},
        "customer_id": {"N": "7"},
        "order_details": {"M": {"total_amount": {"N": total}, "status": {"S": status}}},
    }
    if event_type:
        image["event"] = {"M": {"event_id": {"S": f"ev-{order_id}-{seq}"}, "event_type": {"S": event_type}}}
    return {
        "eventID": f"{seq:032x}",
        "eventName": event_name,
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": REGION,
        "dynamodb": {
            "ApproximateCreationDateTime": datetime(2024, 1, 1, tzinfo=UTC),
            "Keys": {"order_id": {"S": order_id}},
            "NewImage": image,
            "SequenceNumber": str(seq),
            "SizeBytes": 100,
            "StreamViewType": "NEW_IMAGE",
        },
    }


class FakeStreams:
    """DynamoDB Streams over fixed shards: DescribeStream `describe_page` shards per page,
    GetRecords `page` records per call; a closed shard ends with no NextShardIterator."""

    def __init__(
        self,
        shards: list[dict[str, Any]],
        records: dict[str, list[dict[str, Any]]],
        *,
        page: int = 3,
        describe_page: int = 1,
    ) -> None:
        self.shards = shards
        self.records = records
        self.page = page
        self.describe_page = describe_page
        self.reads: list[tuple[str, int]] = []

    def describe_stream(self, StreamArn: str, ExclusiveStartShardId: str | None = None) -> dict[str, Any]:
        ids = [s["ShardId"] for s in self.shards]
        start = ids.index(ExclusiveStartShardId) + 1 if ExclusiveStartShardId else 0
        chunk = self.shards[start : start + self.describe_page]
        desc: dict[str, Any] = {"StreamArn": StreamArn, "Shards": copy.deepcopy(chunk)}
        if start + self.describe_page < len(self.shards):
            desc["LastEvaluatedShardId"] = chunk[-1]["ShardId"]
        return {"StreamDescription": desc}

    def _closed(self, shard_id: str) -> bool:
        shard = next(s for s in self.shards if s["ShardId"] == shard_id)
        return "EndingSequenceNumber" in shard["SequenceNumberRange"]

    def get_shard_iterator(
        self, StreamArn: str, ShardId: str, ShardIteratorType: str, SequenceNumber: str | None = None
    ) -> dict[str, Any]:
        recs = self.records[ShardId]
        seqs = [int(r["dynamodb"]["SequenceNumber"]) for r in recs]
        if ShardIteratorType == "TRIM_HORIZON":
            pos = 0
        elif ShardIteratorType == "LATEST":
            pos = len(recs)
        elif ShardIteratorType == "AFTER_SEQUENCE_NUMBER":
            pos = sum(1 for s in seqs if s <= int(SequenceNumber or 0))
        else:
            pos = sum(1 for s in seqs if s < int(SequenceNumber or 0))
        return {"ShardIterator": json.dumps([ShardId, pos])}

    def get_records(self, ShardIterator: str, Limit: int = 1000) -> dict[str, Any]:
        shard_id, pos = json.loads(ShardIterator)
        recs = self.records[shard_id]
        out = recs[pos : pos + min(Limit, self.page)]
        pos += len(out)
        self.reads.append((shard_id, len(out)))
        page: dict[str, Any] = {"Records": copy.deepcopy(out)}
        if not (self._closed(shard_id) and pos >= len(recs)):
            page["NextShardIterator"] = json.dumps([shard_id, pos])
        return page


class Crash(BaseException):
    """The process dying (SIGKILL) right after SQS accepted a batch: nothing after runs."""


class FakeSqs:
    """SendMessageBatch into a list. `fail` maps a dedup id to the per-entry failures to report
    on its next sends, `raise_on` call numbers raise a ClientError for the whole call, and
    `crash_on` call numbers accept the batch and then kill the process."""

    def __init__(
        self,
        *,
        fail: dict[str, list[tuple[str, bool]]] | None = None,
        raise_on: set[int] | None = None,
        crash_on: set[int] | None = None,
    ) -> None:
        self.fail = fail or {}
        self.raise_on = raise_on or set()
        self.crash_on = crash_on or set()
        self.calls = 0
        self.queue: list[dict[str, Any]] = []
        self.batches: list[list[str]] = []
        self.pointers: list[dict[str, Any]] = []

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.calls += 1
        if self.calls in self.raise_on:
            raise ClientError({"Error": {"Code": "InternalError", "Message": "boom"}}, "SendMessageBatch")
        self.batches.append([e["MessageDeduplicationId"] for e in Entries])
        ok, failed = [], []
        for e in Entries:
            plan = self.fail.get(e["MessageDeduplicationId"])
            if plan:
                code, sender_fault = plan.pop(0)
                failed.append(
                    {"Id": e["Id"], "Code": code, "Message": "injected", "SenderFault": sender_fault}
                )
                continue
            self.queue.append(e)
            ok.append({"Id": e["Id"], "MessageId": f"m-{len(self.queue)}"})
        if self.calls in self.crash_on:
            raise Crash()
        return {"Successful": ok, "Failed": failed}

    def send_message(self, QueueUrl: str, MessageBody: str) -> dict[str, Any]:
        self.pointers.append(json.loads(MessageBody))
        return {"MessageId": f"p-{len(self.pointers)}"}

    def dedup_ids(self) -> list[str]:
        return [e["MessageDeduplicationId"] for e in self.queue]


def one_shard(records: list[dict[str, Any]], *, closed: bool = False, page: int = 3) -> FakeStreams:
    rng: dict[str, Any] = {"StartingSequenceNumber": records[0]["dynamodb"]["SequenceNumber"]}
    if closed:
        rng["EndingSequenceNumber"] = records[-1]["dynamodb"]["SequenceNumber"]
    return FakeStreams([{"ShardId": "shard-1", "SequenceNumberRange": rng}], {"shard-1": records}, page=page)


def make_pump(streams: Any, sqs: FakeSqs, checkpoint_path: Path, **kw: Any) -> Pump:
    pipe = load_pipe(REGISTRY, "orders", BUILD, source_arn=STREAM)
    return Pump(
        streams=streams,
        sender=Sender(sqs, "queue-url", attempts=kw.pop("attempts", 3), sleep=lambda s: None),
        pipe=pipe,
        stream_arn=STREAM,
        checkpoint=Checkpoint(checkpoint_path),
        pipe_dlq=lambda: (sqs, "pipe-dlq-url"),
        **kw,
    )


def stream_of(n: int, orders: int = 5) -> list[dict[str, Any]]:
    """n records over `orders` items, each item created then shipped, interleaved."""
    out = []
    for i in range(n):
        order = f"o{i % orders}"
        out.append(order_stream_record(order, 1000 + i, "order.created" if i < orders else "order.shipped"))
    return out


# --- unit: checkpoint, shard order, partial failures ----------------------------------------------


def test_checkpoint_resumes_without_skipping_after_a_failed_send(tmp_path: Path) -> None:
    # GIVEN 25 records, and an SQS whose 3rd SendMessageBatch and every retry of it fail
    records = stream_of(25)
    ckpt = tmp_path / "ckpt.json"
    sqs = FakeSqs(raise_on={3, 4, 5})
    # WHEN the pump runs, stops on the failure, and runs again against a healthy SQS
    with pytest.raises(SendError):
        make_pump(one_shard(records), sqs, ckpt).run_once()
    saved = json.loads(ckpt.read_text())
    position = saved["entities"]["orders"][STREAM]["shard-1"]["sequenceNumber"]
    sent_first = sqs.dedup_ids()
    assert int(position) == 1000 + len(sent_first) - 1  # exactly what SQS accepted, no further
    make_pump(one_shard(records), sqs, ckpt).run_once()
    # THEN every record went out once, in stream order
    assert sqs.dedup_ids() == [f"{1000 + i:032x}" for i in range(25)]
    assert not list(tmp_path.glob(".ckpt.json.*"))  # no temporary file left behind


def test_a_kill_after_sqs_accepted_a_batch_resends_at_most_that_batch(tmp_path: Path) -> None:
    # GIVEN a pump killed right after SQS accepted its 2nd batch, before the checkpoint moved
    records = stream_of(25)
    ckpt = tmp_path / "ckpt.json"
    sqs = FakeSqs(crash_on={2})
    with pytest.raises(Crash):
        make_pump(one_shard(records), sqs, ckpt).run_once()
    second_batch = sqs.batches[1]
    # WHEN it restarts from the checkpoint
    make_pump(one_shard(records), sqs, ckpt).run_once()
    ids = sqs.dedup_ids()
    # THEN nothing is missing, and the only repeats are the batch in flight at the kill
    assert sorted(set(ids)) == sorted(f"{1000 + i:032x}" for i in range(25))
    repeats = [i for i in set(ids) if ids.count(i) > 1]
    assert sorted(repeats) == sorted(second_batch)
    assert len(repeats) <= 10


def test_max_records_stops_with_a_checkpoint_the_next_run_continues_from(tmp_path: Path) -> None:
    records = stream_of(12)
    ckpt = tmp_path / "ckpt.json"
    sqs = FakeSqs()
    stats = make_pump(one_shard(records), sqs, ckpt, max_records=4).run_once()
    assert stats.read == 4 and sqs.dedup_ids() == [f"{1000 + i:032x}" for i in range(4)]
    make_pump(one_shard(records), sqs, ckpt).run_once()
    assert sqs.dedup_ids() == [f"{1000 + i:032x}" for i in range(12)]


def test_filtered_records_advance_the_checkpoint_but_are_never_sent(tmp_path: Path) -> None:
    # A MODIFY without an outbox event matches no pattern (require_outbox): skipped for good.
    records = [
        order_stream_record("o1", 10),
        order_stream_record("o1", 11, None, event_name="MODIFY"),
        order_stream_record("o1", 12, "order.shipped", event_name="MODIFY"),
        order_stream_record("o2", 13, None, event_name="MODIFY"),
    ]
    ckpt = tmp_path / "ckpt.json"
    sqs = FakeSqs()
    stats = make_pump(one_shard(records), sqs, ckpt).run_once()
    assert (stats.read, stats.filtered, stats.sent) == (4, 2, 2)
    assert sqs.dedup_ids() == [f"{10:032x}", f"{12:032x}"]
    assert Checkpoint(ckpt).position("orders", STREAM, "shard-1") == "13"


def test_records_are_normalised_as_pipes_delivers_them(tmp_path: Path) -> None:
    sqs = FakeSqs()
    make_pump(one_shard([order_stream_record("o1", 10)]), sqs, tmp_path / "c.json").run_once()
    body = json.loads(sqs.queue[0]["MessageBody"])
    assert body["changedAt"] == int(datetime(2024, 1, 1, tzinfo=UTC).timestamp())  # epoch seconds
    assert body["sequenceNumber"] == "10" and body["eventType"] == {"S": "order.created"}
    assert sqs.queue[0]["MessageGroupId"] == "o1"


def test_closed_parents_are_drained_before_their_children(tmp_path: Path) -> None:
    # GIVEN a split history: A (closed) -> B (closed) -> C (open), plus an unrelated open shard D
    # whose records are older than C's; DescribeStream lists children first, one per page.
    a = [order_stream_record("x", 100), order_stream_record("y", 101)]
    b = [order_stream_record("x", 200, "order.confirmed", event_name="MODIFY")]
    c = [order_stream_record("x", 300, "order.shipped", event_name="MODIFY"), order_stream_record("y", 301)]
    d = [order_stream_record("z", 150)]

    def shard(sid: str, parent: str | None, recs: list[dict[str, Any]], closed: bool) -> dict[str, Any]:
        rng = {"StartingSequenceNumber": recs[0]["dynamodb"]["SequenceNumber"]}
        if closed:
            rng["EndingSequenceNumber"] = recs[-1]["dynamodb"]["SequenceNumber"]
        s: dict[str, Any] = {"ShardId": sid, "SequenceNumberRange": rng}
        if parent:
            s["ParentShardId"] = parent
        return s

    shards = [
        shard("C", "B", c, False),
        shard("B", "A", b, True),
        shard("D", None, d, False),
        shard("A", None, a, True),
    ]
    streams = FakeStreams(shards, {"A": a, "B": b, "C": c, "D": d}, page=1, describe_page=1)
    sqs = FakeSqs()
    ckpt = tmp_path / "ckpt.json"
    # WHEN the pump runs once
    make_pump(streams, sqs, ckpt).run_once()
    # THEN each parent is read to its end before its child starts, and item x stays in order
    order = [shard_id for shard_id, n in streams.reads if n]
    assert order.index("A") < order.index("B") < order.index("C")
    sent = [int(e["MessageDeduplicationId"], 16) for e in sqs.queue]
    assert [s for s in sent if s in (100, 200, 300)] == [100, 200, 300]
    assert sorted(sent) == [100, 101, 150, 200, 300, 301]
    saved = Checkpoint(ckpt)
    assert saved.ended("orders", STREAM, "A") and saved.ended("orders", STREAM, "B")
    assert not saved.ended("orders", STREAM, "C") and saved.position("orders", STREAM, "C") == "301"
    # AND a second run reads nothing again
    again = FakeSqs()
    make_pump(streams, again, ckpt).run_once()
    assert again.queue == []


def test_ready_shards_wait_for_parents_unless_the_parent_is_gone() -> None:
    shards = [
        Shard("child", "parent", "5", None),
        Shard("parent", None, "1", "4"),
        Shard("orphan", "trimmed", "9", None),
    ]
    assert [s.shard_id for s in ready_shards(shards, set())] == ["parent", "orphan"]
    assert [s.shard_id for s in ready_shards(shards, {"parent"})] == ["child", "orphan"]
    assert [s.shard_id for s in shard_order(shards)] == ["parent", "child", "orphan"]


def test_a_partial_send_failure_retries_only_the_failed_entries(tmp_path: Path) -> None:
    # GIVEN SQS fails one entry of the first batch once (an internal error: not the sender's fault)
    records = stream_of(10, orders=10)
    flaky = records[3]["eventID"]
    sqs = FakeSqs(fail={flaky: [("InternalError", False)]})
    # WHEN the pump sends
    stats = make_pump(one_shard(records, page=10), sqs, tmp_path / "c.json").run_once()
    # THEN only that entry is sent again, and everything arrives exactly once
    assert stats.retried == 1
    assert len(sqs.batches[0]) == 10 and sqs.batches[1] == [flaky]
    assert sorted(sqs.dedup_ids()) == sorted(r["eventID"] for r in records)
    assert len(sqs.dedup_ids()) == 10


def test_an_entry_sqs_refuses_for_good_goes_to_the_pipe_dlq_as_a_stream_position(tmp_path: Path) -> None:
    records = stream_of(4, orders=4)
    bad = records[1]["eventID"]
    sqs = FakeSqs(fail={bad: [("InvalidParameterValue", True)]})
    ckpt = tmp_path / "c.json"
    stats = make_pump(one_shard(records), sqs, ckpt).run_once()
    assert stats.refused == 1 and len(sqs.dedup_ids()) == 3
    info = sqs.pointers[0]["DDBStreamBatchInfo"]
    assert info == {
        **info,
        "shardId": "shard-1",
        "startSequenceNumber": "1001",
        "endSequenceNumber": "1001",
        "batchSize": 1,
        "streamArn": STREAM,
    }
    assert Checkpoint(ckpt).position("orders", STREAM, "shard-1") == "1003"


def test_a_batch_never_holds_two_records_of_one_group() -> None:
    def item(group: str, n: int) -> Outgoing:
        return Outgoing({}, SqsEntry("{}", group, str(n)), str(n))

    items = [item(g, n) for n, g in enumerate("aabcdefghijklmb")]
    groups = [[i.entry.group_id for i in b] for b in batches(items, 10)]
    assert groups == [["a"], ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"], ["k", "l", "m", "b"]]
    assert [i for b in batches(items, 10) for i in b] == items  # stream order kept


def test_a_corrupt_checkpoint_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text("{not json")
    with pytest.raises(ToolError) as err:
        Checkpoint(path)
    assert err.value.exit_code == 2


# --- moto: resources, CLI runner --------------------------------------------------------------------


@dataclass
class Run:
    code: int
    out: str
    err: str

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out.splitlines() if line.startswith("{")]


def cli(*argv: str) -> Run:
    from generator.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exc:
            code = int(exc.code or 0)
    return Run(code, out.getvalue(), err.getvalue())


@dataclass
class Aws:
    build: Path
    clients: dict[str, Any]
    account: str

    def client(self, name: str) -> Any:
        return self.clients[name]

    def url(self, queue: str) -> str:
        return self.clients["sqs"].get_queue_url(QueueName=queue)["QueueUrl"]

    def count(self, queue: str) -> int:
        attrs = self.clients["sqs"].get_queue_attributes(
            QueueUrl=self.url(queue),
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])

    def run(self, *argv: str) -> Run:
        return cli(*argv, "--build", str(self.build))


@pytest.fixture
def account(aws_env: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Aws:
    """An AWS account of its own on the moto server, and a private copy of build/."""
    import boto3

    account_id = str(next(_accounts))
    sts = boto3.Session(region_name=REGION).client("sts")
    creds = sts.assume_role(
        RoleArn=f"arn:aws:iam::{account_id}:role/aws-tools-test", RoleSessionName="aws-tools"
    )["Credentials"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", creds["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", creds["SecretAccessKey"])
    monkeypatch.setenv("AWS_SESSION_TOKEN", creds["SessionToken"])
    session = boto3.Session(region_name=REGION)  # not boto3's default session: it caches credentials
    build = tmp_path / "build"
    shutil.copytree(BUILD, build, ignore=shutil.ignore_patterns("terraform", ".terraform", "*.zip"))
    clients = {name: session.client(name) for name in ("dynamodb", "sqs", "logs", "dynamodbstreams")}
    return Aws(build, clients, account_id)


def create_resources(aws: Aws, *, visibility: int = 1) -> None:
    """What the generated Terraform creates, from the registry: each entity's table with a stream
    of the mapping's view type, its FIFO queue with a RedrivePolicy to its FIFO DLQ at the
    registry's maxReceiveCount, and the Pipe's DLQ. A short visibility timeout keeps retries fast."""
    ddb, sqs = aws.client("dynamodb"), aws.client("sqs")
    made: set[str] = set()
    for entity in REGISTRY["entities"].values():
        src = entity["source"]
        # A single-table design's entities share their table and queues: create them once.
        if src["table"] in made and entity["queue"] in made:
            continue
        made |= {src["table"], entity["queue"]}
        keys = [(src["partition_key"], "HASH")] + (
            [(src["sort_key"], "RANGE")] if src.get("sort_key") else []
        )
        ddb.create_table(
            TableName=src["table"],
            KeySchema=[{"AttributeName": k["name"], "KeyType": t} for k, t in keys],
            AttributeDefinitions=[{"AttributeName": k["name"], "AttributeType": k["type"]} for k, _ in keys],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": src["stream_view_type"]},
        )
        dlq = sqs.create_queue(
            QueueName=entity["dlq"], Attributes={"FifoQueue": "true", "MessageRetentionPeriod": "1209600"}
        )
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq["QueueUrl"], AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": entity["consumer"]["max_receive_count"]}
        sqs.create_queue(
            QueueName=entity["queue"],
            Attributes={
                "FifoQueue": "true",
                "VisibilityTimeout": str(visibility),
                "RedrivePolicy": json.dumps(redrive),
            },
        )
        sqs.create_queue(QueueName=entity["pipe_dlq"])


@pytest.fixture
def pipeline(account: Aws) -> Aws:
    create_resources(account)
    return account


@dataclass
class Db:
    url: str
    engine: Any

    def rows(self, sql: str, **params: Any) -> list[tuple[Any, ...]]:
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql), params)]


@pytest.fixture
def db(postgres_url: str) -> Iterator[Db]:
    """A scratch PostgreSQL database, tables made by runtime.schema.build_metadata."""
    from sqlalchemy import create_engine

    from runtime.registry import parse_registry
    from runtime.schema import build_metadata

    scratch = scratch_url(postgres_url, "aws_e2e")
    engine = create_engine(scratch)
    metadata = build_metadata(parse_registry(REGISTRY))
    metadata.drop_all(engine)
    metadata.create_all(engine)
    yield Db(scratch, engine)
    engine.dispose()


def put_order(
    ddb: Any, order_id: str, event_id: str, event_type: str, *, status: str, total: str = "10.50"
) -> None:
    item = {
        "order_id": {"S": order_id},
        "customer_id": {"N": "7"},
        "order_details": {"M": {"total_amount": {"N": total}, "status": {"S": status}}},
        "event": {"M": {"event_id": {"S": event_id}, "event_type": {"S": event_type}}},
    }
    ddb.put_item(TableName="orders", Item=item)


def update_order(ddb: Any, order_id: str, event_id: str, event_type: str, *, status: str) -> None:
    ddb.update_item(
        TableName="orders",
        Key={"order_id": {"S": order_id}},
        UpdateExpression="SET order_details.#s = :s, #e = :e",
        ExpressionAttributeNames={"#s": "status", "#e": "event"},
        ExpressionAttributeValues={
            ":s": {"S": status},
            ":e": {"M": {"event_id": {"S": event_id}, "event_type": {"S": event_type}}},
        },
    )


def consume(aws: Aws, db: Db, entity: str, *extra: str) -> Run:
    return aws.run("consume", "--entity", entity, "--db", db.url, "--wait", "2", *extra)


def ledger_counts(db: Db) -> dict[str, int]:
    return {eid: n for eid, n in db.rows("SELECT event_id, count(*) FROM sync_ledger GROUP BY event_id")}


# --- moto + PostgreSQL: end to end ------------------------------------------------------------------


def test_orders_end_to_end_with_duplicates_a_poison_message_and_a_redrive(
    pipeline: Aws, db: Db, tmp_path: Path
) -> None:
    aws, ddb = pipeline, pipeline.client("dynamodb")
    ckpt, old = tmp_path / "ckpt.json", tmp_path / "old-ckpt.json"
    failures = tmp_path / "failures.jsonl"

    # GIVEN orders written to DynamoDB (one without an outbox event, which the filter drops)
    put_order(ddb, "o1", "e-o1-1", "order.created", status="new")
    put_order(ddb, "o2", "e-o2-1", "order.created", status="new", total="99.00")
    update_order(ddb, "o1", "e-o1-2", "order.confirmed", status="confirmed")
    ddb.put_item(TableName="orders", Item={"order_id": {"S": "o4"}, "customer_id": {"N": "1"}})
    update_order(ddb, "o2", "e-o2-2", "order.shipped", status="shipped")

    # WHEN the pump runs in two goes (the first stopped after 2 records) and consume drains the queue
    first = aws.run("pump", "--entity", "orders", "--checkpoint", str(ckpt), "--max-records", "2")
    assert first.code == 0, first.err
    shutil.copy(ckpt, old)
    rest = aws.run("pump", "--entity", "orders", "--checkpoint", str(ckpt))
    assert rest.code == 0, rest.err
    assert "3 records read, 1 filtered out, 2 sent" in rest.err
    assert aws.count("orders-sync.fifo") == 4
    done = consume(aws, db, "orders", "--failures-out", str(failures))
    assert done.code == 0, done.err

    # THEN the rows are there
    assert db.rows("SELECT order_id, status, total_amount FROM orders ORDER BY order_id") == [
        ("o1", "confirmed", pytest.approx(10.5)),
        ("o2", "shipped", pytest.approx(99.0)),
    ]

    # WHEN the pump runs again from the old checkpoint (its records come again, after the queue
    # forgot their deduplication ids) and one message is re-sent by hand with a new dedup id
    again = aws.run("pump", "--entity", "orders", "--checkpoint", str(old))
    assert again.code == 0 and "2 sent" in again.err, again.err
    sqs = aws.client("sqs")
    # (a dry run from the stream's start prints every body; o1's creation is the first)
    fresh = aws.run("pump", "--entity", "orders", "--checkpoint", str(tmp_path / "none.json"), "--dry-run")
    body = fresh.lines()[0]["MessageBody"]
    sqs.send_message(
        QueueUrl=aws.url("orders-sync.fifo"),
        MessageBody=body,
        MessageGroupId="o1",
        MessageDeduplicationId="by-hand",
    )
    dup = consume(aws, db, "orders")
    # THEN the ledger absorbs every second copy: nothing applied twice
    assert dup.code == 0, dup.err
    assert "3 duplicate" in dup.err and "applied" not in dup.err
    assert set(ledger_counts(db).values()) == {1} and len(ledger_counts(db)) == 4

    # WHEN a poison message arrives (a status longer than the column) among good ones
    put_order(ddb, "o3", "e-o3-1", "order.created", status="x" * 40)
    put_order(ddb, "o5", "e-o5-1", "order.created", status="new")
    assert aws.run("pump", "--entity", "orders", "--checkpoint", str(ckpt)).code == 0
    poisoned = consume(aws, db, "orders", "--failures-out", str(failures), "--log")
    # THEN the rest is applied, and the poison message ends in the FIFO DLQ after maxReceiveCount
    assert poisoned.code == 1
    assert [r[0] for r in db.rows("SELECT order_id FROM orders ORDER BY order_id")] == ["o1", "o2", "o5"]
    assert aws.count("orders-sync.fifo") == 0 and aws.count("orders-sync-dlq.fifo") == 1
    logged = [json.loads(x) for x in failures.read_text().splitlines()]
    assert [f["receive_count"] for f in logged] == [1, 2, 3]

    # WHEN dlq list / show look at it, with the reasons consume wrote
    listed = aws.run(
        "dlq", "list", "--entity", "orders", "--failures-from", str(failures), "--format", "json"
    )
    assert listed.code == 0, listed.err
    [msg] = listed.lines()
    # (the event id is the stream record's eventID, the ledger's key)
    assert (msg["eventId"], msg["eventType"], msg["group"], msg["key"]) == (
        logged[0]["event_id"],
        "order.created",
        "o3",
        {"order_id": "o3"},
    )
    assert "status" in msg["reason"] and "32" in msg["reason"] and msg["reason"].startswith("permanent")
    shown = aws.run("dlq", "show", "--entity", "orders", "--failures-from", str(failures))
    assert "x" * 40 in shown.out and "reason: permanent" in shown.out
    # ... and from CloudWatch Logs, where the Lambda's batch lines would be
    logs = aws.client("logs")
    logs.create_log_group(logGroupName="/aws/lambda/sync")
    logs.create_log_stream(logGroupName="/aws/lambda/sync", logStreamName="s")
    events = [line for line in poisoned.out.splitlines() if line.startswith("{")]
    logs.put_log_events(
        logGroupName="/aws/lambda/sync",
        logStreamName="s",
        logEvents=[{"timestamp": int(time.time() * 1000), "message": line} for line in events],
    )
    from_logs = aws.run(
        "dlq", "list", "--entity", "orders", "--log-group", "/aws/lambda/sync", "--format", "json"
    ).lines()[0]
    assert from_logs["reason"] == msg["reason"]
    # AND looking consumed nothing
    assert aws.count("orders-sync-dlq.fifo") == 1

    # WHEN the data is fixed (the column and the mapping widened) and the DLQ is redriven
    registry = json.loads((aws.build / "registry.json").read_text())
    registry["entities"]["orders"]["tables"]["orders"]["columns"][3]["length"] = 64
    assert registry["entities"]["orders"]["tables"]["orders"]["columns"][3]["name"] == "status"
    (aws.build / "registry.json").write_text(json.dumps(registry))
    with db.engine.begin() as conn:
        conn.execute(text("ALTER TABLE orders ALTER COLUMN status TYPE varchar(64)"))
    moved = aws.run("dlq", "redrive", "--entity", "orders")
    assert moved.code == 0, moved.err
    assert "StartMessageMoveTask is not available" in moved.err  # moto: no move task
    assert aws.count("orders-sync-dlq.fifo") == 0
    fixed = consume(aws, db, "orders")
    # THEN it is applied, once
    assert fixed.code == 0, fixed.err
    assert db.rows("SELECT status FROM orders WHERE order_id = 'o3'") == [("x" * 40,)]
    assert set(ledger_counts(db).values()) == {1} and len(ledger_counts(db)) == 6


def test_deletes_of_customers_and_order_items_reach_the_database(
    pipeline: Aws, db: Db, tmp_path: Path
) -> None:
    aws, ddb = pipeline, pipeline.client("dynamodb")
    # GIVEN an order, its lines (one updated, one deleted) and customers (one deleted)
    put_order(ddb, "o1", "e-o1-1", "order.created", status="new")

    def line(no: int, qty: str, rev: str) -> dict[str, Any]:
        return {
            "order_id": {"S": "o1"},
            "line_no": {"N": str(no)},
            "sku": {"S": f"SKU-{no}"},
            "quantity": {"N": qty},
            "unit_price": {"N": "3.25"},
            "rev": {"N": rev},
        }

    ddb.put_item(TableName="order_items", Item=line(1, "2", "1"))
    ddb.put_item(TableName="order_items", Item=line(1, "3", "2"))
    ddb.put_item(TableName="order_items", Item=line(2, "1", "1"))
    ddb.delete_item(TableName="order_items", Key={"order_id": {"S": "o1"}, "line_no": {"N": "2"}})

    def customer(cid: str, event_id: str) -> dict[str, Any]:
        return {
            "customer_id": {"S": cid},
            "email": {"S": f"{cid}@example.com"},
            "given_name": {"S": "Ada"},
            "family_name": {"S": "Lovelace"},
            "status": {"S": "active"},
            "vip": {"BOOL": True},
            "registered_at": {"S": "2024-01-01T00:00:00Z"},
            "profile": {"M": {"tier": {"S": "gold"}}},
            "outbox": {"M": {"id": {"S": event_id}, "type": {"S": "customer.registered"}}},
        }

    ddb.put_item(TableName="customers", Item=customer("c1", "e-c1-1"))
    ddb.put_item(TableName="customers", Item=customer("c2", "e-c2-1"))
    ddb.delete_item(TableName="customers", Key={"customer_id": {"S": "c1"}})
    ckpt = str(tmp_path / "ckpt.json")

    # WHEN every table is pumped (--table) and every queue consumed, parents first
    for table in ("orders", "order_items", "customers"):
        pumped = aws.run("pump", "--table", table, "--checkpoint", ckpt)
        assert pumped.code == 0, pumped.err
    for entity in ("orders", "order_items", "customers"):
        done = consume(aws, db, entity, "--wait", "1")
        assert done.code == 0, done.err

    # THEN the update, the hard delete (with its tombstone) and the soft delete are there
    assert db.rows("SELECT line_no, quantity, row_version FROM order_items ORDER BY line_no") == [(1, 3, 2)]
    assert db.rows("SELECT table_name, row_key FROM sync_tombstones") == [("order_items", '["o1","2"]')]
    deleted = dict(db.rows("SELECT external_id, deleted_at IS NOT NULL FROM customers"))
    assert deleted == {"c1": True, "c2": False}
    # AND a second pump from the same checkpoint sends nothing
    for table in ("orders", "order_items", "customers"):
        assert "0 sent" in aws.run("pump", "--table", table, "--checkpoint", ckpt).err


def test_a_redrive_killed_half_way_loses_nothing(pipeline: Aws, db: Db) -> None:
    # GIVEN a FIFO DLQ holding two orders' events, interleaved (two message groups)
    aws, sqs = pipeline, pipeline.client("sqs")
    pipe = load_pipe(REGISTRY, "orders", BUILD)
    history = {
        "oa": [("order.created", "new"), ("order.confirmed", "confirmed"), ("order.shipped", "shipped")],
        "ob": [("order.created", "new"), ("order.confirmed", "confirmed"), ("order.cancelled", "cancelled")],
    }
    seq = itertools.count(5000)
    dlq_url = aws.url("orders-sync-dlq.fifo")
    event_ids = []
    for step in range(3):
        for order, events in history.items():
            etype, status = events[step]
            rec = order_stream_record(
                order, next(seq), etype, status=status, event_name="INSERT" if step == 0 else "MODIFY"
            )
            rec["dynamodb"]["ApproximateCreationDateTime"] = 1_700_000_000
            entry = pipe.entry(rec)
            sqs.send_message(
                QueueUrl=dlq_url,
                MessageBody=entry.body,
                MessageGroupId=entry.group_id,
                MessageDeduplicationId=entry.dedup_id,
            )
            event_ids.append(json.loads(entry.body)["eventID"])

    # WHEN a redrive is killed (SIGKILL) after its 3rd send, before that message's delete
    cmd = [
        sys.executable,
        "-m",
        "generator",
        "dlq",
        "redrive",
        "--entity",
        "orders",
        "--build",
        str(aws.build),
    ]
    proc = subprocess.Popen(
        [*cmd, "--pause", "0.5", "--visibility", "5"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    sent = 0
    assert proc.stdout is not None
    for text_line in proc.stdout:
        if text_line.startswith("sent "):
            sent += 1
            if sent == 3:
                os.kill(proc.pid, signal.SIGKILL)
                break
    proc.wait(10)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""
    # (the message in flight is now in both queues)
    assert aws.count("orders-sync.fifo") == 3 and aws.count("orders-sync-dlq.fifo") == 4
    # ... what reached the queue is consumed, then the redrive runs again to the end
    assert consume(aws, db, "orders").code == 0
    rest = aws.run("dlq", "redrive", "--entity", "orders", "--visibility", "2", "--method", "manual")
    assert rest.code == 0, rest.err
    assert "in flight" in rest.err and "4 moved" in rest.err  # it waited for the one the kill left
    done = consume(aws, db, "orders")

    # THEN every event was applied exactly once, the re-sent copy was absorbed, nothing is left
    assert done.code == 0, done.err
    assert "1 duplicate" in done.err and "3 applied" in done.err
    assert ledger_counts(db) == dict.fromkeys(event_ids, 1)
    assert db.rows("SELECT order_id, status FROM orders ORDER BY order_id") == [
        ("oa", "shipped"),
        ("ob", "cancelled"),
    ]
    assert aws.count("orders-sync.fifo") == 0 and aws.count("orders-sync-dlq.fifo") == 0


def test_the_pipe_dlq_positions_are_resolved_and_redriven(pipeline: Aws, db: Db) -> None:
    # GIVEN two stream records the Pipe could not deliver: its DLQ holds only their positions
    aws, ddb, sqs = pipeline, pipeline.client("dynamodb"), pipeline.client("sqs")
    put_order(ddb, "o9", "e-o9-1", "order.created", status="new")
    update_order(ddb, "o9", "e-o9-2", "order.confirmed", status="confirmed")
    streams = aws.client("dynamodbstreams")
    arn = ddb.describe_table(TableName="orders")["Table"]["LatestStreamArn"]
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    it = streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON")[
        "ShardIterator"
    ]
    seqs = [r["dynamodb"]["SequenceNumber"] for r in streams.get_records(ShardIterator=it)["Records"]]
    pointer = {
        "requestContext": {"condition": "RetryAttemptsExhausted", "approximateInvokeCount": 4},
        "version": "1.0",
        "DDBStreamBatchInfo": {
            "shardId": shard,
            "startSequenceNumber": seqs[0],
            "endSequenceNumber": seqs[-1],
            "batchSize": 2,
            "streamArn": arn,
        },
    }
    sqs.send_message(QueueUrl=aws.url("orders-pipes-dlq"), MessageBody=json.dumps(pointer))

    # WHEN dlq show --pipe resolves them, and dlq redrive --pipe sends them on
    shown = aws.run("dlq", "show", "--entity", "orders", "--pipe", "--format", "json")
    assert shown.code == 0, shown.err
    [doc] = shown.lines()
    assert [(r["eventName"], r["action"], r["MessageGroupId"]) for r in doc["records"]] == [
        ("INSERT", "send", "o9"),
        ("MODIFY", "send", "o9"),
    ]
    moved = aws.run("dlq", "redrive", "--entity", "orders", "--pipe")
    assert moved.code == 0, moved.err
    assert aws.count("orders-pipes-dlq") == 0 and aws.count("orders-sync.fifo") == 2
    done = consume(aws, db, "orders")

    # THEN the order is in the database as the stream left it
    assert done.code == 0, done.err
    assert db.rows("SELECT order_id, status FROM orders") == [("o9", "confirmed")]


def test_follow_mode_streams_live_changes_and_stops_cleanly_on_sigterm(
    pipeline: Aws, db: Db, tmp_path: Path
) -> None:
    # GIVEN a pump and a consumer running with --follow
    aws, ddb = pipeline, pipeline.client("dynamodb")
    ckpt = tmp_path / "ckpt.json"
    base = [sys.executable, "-m", "generator"]
    pump = subprocess.Popen(
        [*base, "pump", "--entity", "orders", "--follow", "--poll", "0.2", "--checkpoint", str(ckpt)]
        + ["--build", str(aws.build)],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    consumer = subprocess.Popen(
        [*base, "consume", "--entity", "orders", "--follow", "--wait", "1", "--db", db.url]
        + ["--build", str(aws.build)],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # WHEN orders are written while they run
        put_order(ddb, "live1", "e-l1-1", "order.created", status="new")
        update_order(ddb, "live1", "e-l1-2", "order.shipped", status="shipped")
        put_order(ddb, "live2", "e-l2-1", "order.created", status="new")
        deadline = time.monotonic() + 20
        rows: list[tuple[Any, ...]] = []
        while time.monotonic() < deadline:
            rows = db.rows("SELECT order_id, status FROM orders ORDER BY order_id")
            if rows == [("live1", "shipped"), ("live2", "new")]:
                break
            time.sleep(0.2)
    finally:
        for proc in (pump, consumer):
            proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(15) for proc in (pump, consumer)]
    # THEN they reach the database, and both stop on SIGTERM with exit 0 and a checkpoint
    assert rows == [("live1", "shipped"), ("live2", "new")]
    assert codes == [0, 0], (
        pump.stderr.read() if pump.stderr else "",
        consumer.stderr.read() if consumer.stderr else "",
    )
    saved = json.loads(ckpt.read_text())
    [shards] = saved["entities"]["orders"].values()
    assert [pos["sequenceNumber"] is not None for pos in shards.values()] == [True]


# --- moto: dry runs, errors, help ----------------------------------------------------------------


def test_dry_runs_change_nothing(pipeline: Aws, tmp_path: Path) -> None:
    aws, sqs = pipeline, pipeline.client("sqs")
    put_order(aws.client("dynamodb"), "o1", "e-o1-1", "order.created", status="new")
    ckpt = tmp_path / "ckpt.json"
    # pump: prints the message it would send; sends nothing, writes no checkpoint
    pumped = aws.run("pump", "--entity", "orders", "--checkpoint", str(ckpt), "--dry-run")
    assert pumped.code == 0, pumped.err
    [would] = pumped.lines()
    assert (would["action"], would["MessageGroupId"], would["queue"]) == ("send", "o1", "orders-sync.fifo")
    assert aws.count("orders-sync.fifo") == 0 and not ckpt.exists()
    # consume: shows the message; it stays in the queue (no database needed)
    sqs.send_message(
        QueueUrl=aws.url("orders-sync.fifo"),
        MessageBody=would["MessageBody"],
        MessageGroupId="o1",
        MessageDeduplicationId="d1",
    )
    looked = aws.run("consume", "--entity", "orders", "--dry-run")
    assert looked.code == 0, looked.err
    assert [d["action"] for d in looked.lines()] == ["apply"] and aws.count("orders-sync.fifo") == 1
    # dlq redrive: lists what it would move; both queues unchanged
    sqs.send_message(
        QueueUrl=aws.url("orders-sync-dlq.fifo"),
        MessageBody=would["MessageBody"],
        MessageGroupId="o1",
        MessageDeduplicationId="d2",
    )
    redrive = aws.run("dlq", "redrive", "--entity", "orders", "--dry-run", "--format", "json")
    assert redrive.code == 0, redrive.err
    assert [d["action"] for d in redrive.lines()] == ["would-move"]
    assert aws.count("orders-sync-dlq.fifo") == 1 and aws.count("orders-sync.fifo") == 1


def test_clear_errors_exit_2(account: Aws, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    aws = account  # no resources created
    unknown = aws.run("pump", "--entity", "nope")
    assert unknown.code == 2 and "unknown entity 'nope'" in unknown.err
    assert aws.run("consume", "--queue", "nope.fifo").code == 2
    no_table = aws.run("pump", "--entity", "orders", "--checkpoint", str(tmp_path / "c.json"))
    assert no_table.code == 2 and "table 'orders' does not exist" in no_table.err
    aws.client("dynamodb").create_table(
        TableName="orders",
        KeySchema=[{"AttributeName": "order_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "order_id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    no_stream = aws.run("pump", "--entity", "orders", "--checkpoint", str(tmp_path / "c.json"))
    assert no_stream.code == 2 and "no stream" in no_stream.err
    no_queue = aws.run("dlq", "list", "--entity", "orders")
    assert no_queue.code == 2 and "orders-sync-dlq.fifo" in no_queue.err and "does not exist" in no_queue.err
    aws.client("sqs").create_queue(QueueName="orders-sync.fifo", Attributes={"FifoQueue": "true"})
    monkeypatch.delenv("SYNC_DATABASE_URL", raising=False)
    monkeypatch.delenv("SYNC_DB_SECRET_ARN", raising=False)
    no_db = aws.run("consume", "--entity", "orders")
    assert no_db.code == 2 and "no database configured" in no_db.err
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    no_creds = aws.run("dlq", "list", "--entity", "orders")
    assert no_creds.code == 2 and "no AWS credentials" in no_creds.err


def test_every_command_has_help() -> None:
    for argv in (
        ["pump"],
        ["consume"],
        ["dlq"],
        ["dlq", "list"],
        ["dlq", "show"],
        ["dlq", "redrive"],
        ["replay"],
        ["sample"],
    ):
        run = cli(*argv, "--help")
        assert run.code == 0 and "usage: python -m generator" in run.out, argv


def test_the_lambda_never_imports_the_aws_tools() -> None:
    code = (
        "import sys, runtime.handler, runtime.registry\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('synctools', 'generator') or m.startswith('boto3')]\n"
        "assert not bad, bad\n"
        "import synctools.aws.commands.pump, synctools.aws.commands.consume, synctools.aws.commands.dlq\n"
        "import synctools.aws.pump, synctools.aws.consume, synctools.aws.dlq\n"
        "assert not [m for m in sys.modules if m == 'generator' or m.startswith('generator.')]\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_the_terraform_deployed_pipeline_carries_changes_to_postgres(
    deployed_pipeline: Any, aws_env: str, db: Db, tmp_path: Path
) -> None:
    """The pieces together: resources created by the generated Terraform (terraform apply on
    the moto server), the stream pumped with the generated filter and template, the deployed
    FIFO queue consumed with the runtime, PostgreSQL updated."""
    import boto3

    build = str(deployed_pipeline.workdir.parent)
    ddb = boto3.client("dynamodb", endpoint_url=deployed_pipeline.endpoint)
    # moto runs the deployed event source mapping itself (without a Lambda to invoke), so the
    # trigger is switched off, as an operator does before consuming by hand in a rehearsal.
    lam = boto3.client("lambda", endpoint_url=deployed_pipeline.endpoint)
    queue_arn = deployed_pipeline.outputs["orders_queue_arn"]
    mappings = [
        m["UUID"]
        for m in lam.list_event_source_mappings()["EventSourceMappings"]
        if m["EventSourceArn"] == queue_arn
    ]
    for uuid in mappings:
        lam.update_event_source_mapping(UUID=uuid, Enabled=False)
    try:
        # GIVEN an order created, confirmed and then shipped in the deployed DynamoDB table
        put_order(ddb, "TF-1", "e-tf-1", "order.created", status="new", total="12.00")
        update_order(ddb, "TF-1", "e-tf-2", "order.confirmed", status="confirmed")
        update_order(ddb, "TF-1", "e-tf-3", "order.shipped", status="shipped")
        # WHEN the stream is pumped into the deployed queue and the queue consumed
        pumped = cli(
            "pump",
            "--entity",
            "orders",
            "--once",
            "--checkpoint",
            str(tmp_path / "ckpt.json"),
            "--build",
            build,
        )
        assert pumped.code == 0, pumped.err
        failures = tmp_path / "failures.jsonl"
        consumed = cli(
            "consume",
            "--entity",
            "orders",
            "--db",
            db.url,
            "--wait",
            "1",
            "--build",
            build,
            "--failures-out",
            str(failures),
        )
        assert consumed.code == 0, consumed.err + (failures.read_text() if failures.exists() else "")
        # THEN the legacy row holds the last state, each event applied once
        assert db.rows("SELECT order_id, status, total_amount FROM orders WHERE order_id = 'TF-1'") == [
            ("TF-1", "shipped", Decimal("12.00"))
        ]
    finally:
        for uuid in mappings:  # the deployment is shared by the session's tests
            lam.update_event_source_mapping(UUID=uuid, Enabled=True)
    # (the ledger keys are the stream records' eventIDs: three changes, each applied once)
    assert sorted(ledger_counts(db).values()) == [1, 1, 1]
