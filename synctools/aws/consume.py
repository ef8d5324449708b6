"""`ddb-sql-sync consume`: poll the entity's FIFO queue as the Lambda event source mapping
does (AWS: services-sqs-parameters) and apply each batch with the sync runtime.

- ReceiveMessage with MaxNumberOfMessages = the consumer batch size (<= 10 for FIFO, AWS: services-sqs-parameters),
  every system attribute, long polling of `--wait` seconds;
- each message becomes a Lambda SQS event record in the exact shape (AWS: services-sqs-configure);
- runtime.apply.apply_batch applies the batch (what runtime.handler.handler does with its
  configured engine); the partial batch response decides: every message not reported failed is
  deleted (DeleteMessageBatch, per-entry failures checked), every reported one is left to come
  back after the visibility timeout (AWS: services-sqs-errorhandling), or after `--failure-visibility` seconds;
  SQS moves it to the FIFO DLQ after maxReceiveCount receives (AWS: FIFO-queues);
- each failure (and each message held back behind one) is appended to `--failures-out` as a
  JSON line, with the reason the runtime logs, so `dlq show` can say why a message is there.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any, cast

from runtime.apply import FAILED, TRANSIENT, BatchResult, Outcome, apply_batch
from runtime.aws_limits import LAMBDA_FIFO_BATCH
from runtime.observe import batch_documents
from runtime.registry import Registry
from runtime.wire import SqsAttributes, SqsEventRecord
from synctools.aws.bodies import summarize

LAMBDA_ATTRIBUTES = (
    "ApproximateReceiveCount",
    "SentTimestamp",
    "SequenceNumber",
    "MessageGroupId",
    "SenderId",
    "MessageDeduplicationId",
    "ApproximateFirstReceiveTimestamp",
)


def lambda_record(message: dict[str, Any], queue_arn: str, region: str) -> SqsEventRecord:
    """An SQS ReceiveMessage message as the Lambda event carries it (AWS: services-sqs-configure)."""
    attrs = message.get("Attributes") or {}
    attributes = {k: str(attrs[k]) for k in LAMBDA_ATTRIBUTES if k in attrs}
    attributes.update({k: str(v) for k, v in attrs.items() if k not in attributes})
    message_attributes: dict[str, Any] = {}
    for name, value in (message.get("MessageAttributes") or {}).items():
        converted: dict[str, Any] = {
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": value.get("DataType", "String"),
        }
        if "StringValue" in value:
            converted["stringValue"] = value["StringValue"]
        if "BinaryValue" in value:
            raw = value["BinaryValue"]
            converted["binaryValue"] = (
                base64.b64encode(raw).decode("ascii") if isinstance(raw, bytes) else raw
            )
        message_attributes[name] = converted
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message.get("Body", ""),
        # Every attribute SQS returned, as Lambda passes them: the TypedDict names the usual ones.
        "attributes": cast(SqsAttributes, attributes),
        "messageAttributes": message_attributes,
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }


@dataclass
class ConsumeStats:
    batches: int = 0
    received: int = 0
    deleted: int = 0
    delete_failed: int = 0
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        return (
            self.counts.get("failed_permanent", 0)
            + self.counts.get("failed_transient", 0)
            + self.counts.get("blocked", 0)
        )

    def add(self, counts: dict[str, int]) -> None:
        for k, v in counts.items():
            self.counts[k] = self.counts.get(k, 0) + v

    def render(self, queue: str) -> str:
        parts = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in sorted(self.counts.items()) if v)
        extra = f", {self.delete_failed} deletes failed" if self.delete_failed else ""
        return (
            f"consume {queue}: {self.batches} batches, {self.received} messages received "
            f"({parts or 'nothing'}), {self.deleted} deleted{extra}"
        )


class Consumer:
    def __init__(
        self,
        *,
        sqs: Any,
        queue_url: str,
        queue_arn: str,
        region: str,
        registry: Registry,
        engine: Any,
        batch_size: int,
        wait_seconds: int = 1,
        failure_visibility: int | None = None,
        failures_out: IO[str] | None = None,
        dry_run: bool = False,
        out: IO[str] | None = None,
        log: Callable[[str], None] | None = None,
        log_documents: Callable[[str], None] | None = None,
    ) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.queue_arn = queue_arn
        self.queue = queue_arn.rsplit(":", 1)[-1]
        self.region = region
        self.registry = registry
        self.engine = engine
        self.batch_size = max(1, min(int(batch_size), LAMBDA_FIFO_BATCH))
        self.wait_seconds = wait_seconds
        self.failure_visibility = failure_visibility
        self.failures_out = failures_out
        self.dry_run = dry_run
        self.out = out
        self.log = log or (lambda line: None)
        self.log_documents = log_documents
        self.stats = ConsumeStats()

    def receive(self) -> list[dict[str, Any]]:
        response = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=self.batch_size,
            AttributeNames=["All"],
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
            WaitTimeSeconds=self.wait_seconds,
        )
        return list(response.get("Messages") or [])

    def poll(self) -> BatchResult | None:
        """One receive and, when it returned messages, one invocation. None when empty."""
        messages = self.receive()
        if not messages:
            return None
        records = [lambda_record(m, self.queue_arn, self.region) for m in messages]
        self.stats.batches += 1
        self.stats.received += len(records)
        if self.dry_run:
            self._dry(records)
            return BatchResult([])
        result = self._invoke(records)
        self.stats.add(result.counts())
        documents = batch_documents(result)
        if self.log_documents is not None:
            for doc in documents:
                self.log_documents(json.dumps(doc, default=str, separators=(",", ":")))
        failed = {o.message_id for o in result.outcomes if o.reported_failed}
        done = [r for r in records if r["messageId"] not in failed]
        self._delete(done)
        retry = [r for r in records if r["messageId"] in failed]
        if retry and self.failure_visibility is not None:
            self._change_visibility(retry, self.failure_visibility)
        if failed:
            self._record_failures(result, records, documents)
        counts = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in result.counts().items() if v)
        self.log(f"consume {self.queue}: batch of {len(records)}: {counts}")
        return result

    def _invoke(self, records: list[SqsEventRecord]) -> BatchResult:
        # What runtime.handler.handler does around apply_batch: a failure to run at all fails
        # every message of the batch, never half of it (facts 6.5).
        try:
            return apply_batch(records, self.engine, self.registry)
        except Exception as exc:
            return BatchResult(
                [
                    Outcome(
                        r["messageId"],
                        r["attributes"].get("MessageGroupId", ""),
                        status=FAILED,
                        kind=TRANSIENT,
                        reason=f"runtime not ready: {type(exc).__name__}: {exc}",
                    )
                    for r in records
                ]
            )

    def _delete(self, records: list[SqsEventRecord]) -> None:
        for i in range(0, len(records), 10):
            chunk = records[i : i + 10]
            entries = [{"Id": str(n), "ReceiptHandle": r["receiptHandle"]} for n, r in enumerate(chunk)]
            response = self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
            self.stats.deleted += len(response.get("Successful") or [])
            for bad in response.get("Failed") or []:
                # The message comes back after its visibility timeout; the ledger makes it a
                # duplicate then. Worth a line: it usually means the batch outlived the timeout.
                self.stats.delete_failed += 1
                rec = chunk[int(bad["Id"])]
                self.log(
                    f"consume {self.queue}: delete of {rec['messageId']} failed "
                    f"({bad.get('Code')}: {bad.get('Message')}); it will be redelivered"
                )

    def _change_visibility(self, records: list[SqsEventRecord], seconds: int) -> None:
        for i in range(0, len(records), 10):
            chunk = records[i : i + 10]
            entries = [
                {"Id": str(n), "ReceiptHandle": r["receiptHandle"], "VisibilityTimeout": seconds}
                for n, r in enumerate(chunk)
            ]
            self.sqs.change_message_visibility_batch(QueueUrl=self.queue_url, Entries=entries)

    def _record_failures(
        self, result: BatchResult, records: list[SqsEventRecord], documents: list[dict[str, Any]]
    ) -> None:
        if self.failures_out is None:
            return
        logged = {f["message_id"]: f["reason"] for doc in documents for f in doc["failures"]}
        by_id = {r["messageId"]: r for r in records}
        entity = self.registry.entity_for_queue(self.queue)
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        for o in result.outcomes:
            if not o.reported_failed:
                continue
            record = by_id[o.message_id]
            attrs = record["attributes"]
            event_id, event_type = o.event_id, o.event_type
            if not event_id and entity is not None:
                # The runtime leaves the event id empty when the body failed to decode (a value
                # a column refuses, say); the body usually still names it.
                about = summarize(record["body"], entity)
                event_id, event_type = about["eventId"] or "", event_type or about["eventType"] or ""
            doc = {
                "time": now,
                "queue": self.queue,
                "entity": o.entity,
                "message_id": o.message_id,
                "event_id": event_id,
                "event_type": event_type,
                "group_id": o.group_id,
                "status": o.status,
                "kind": o.kind,
                "reason": logged.get(o.message_id, o.reason),
                "receive_count": int(attrs.get("ApproximateReceiveCount", 0) or 0),
            }
            self.failures_out.write(json.dumps(doc, sort_keys=True) + "\n")
        self.failures_out.flush()

    def _dry(self, records: list[SqsEventRecord]) -> None:
        """Show what would be applied, then make the messages visible again at once. The
        receive itself still counts toward maxReceiveCount, as any receive does."""
        for r in records:
            if self.out is not None:
                self.out.write(
                    json.dumps(
                        {
                            "action": "apply",
                            "messageId": r["messageId"],
                            "MessageGroupId": r["attributes"].get("MessageGroupId"),
                            "ApproximateReceiveCount": r["attributes"].get("ApproximateReceiveCount"),
                            "body": r["body"],
                        },
                        sort_keys=True,
                    )
                    + "\n"
                )
        self._change_visibility(records, 0)


def run(
    consumer: Consumer,
    *,
    follow: bool,
    max_batches: int | None,
    stop: Callable[[], bool] = lambda: False,
    idle_sleep: Callable[[float], None] = time.sleep,
) -> ConsumeStats:
    """--once: until a receive comes back empty; --follow: until stopped."""
    while not stop():
        if max_batches is not None and consumer.stats.batches >= max_batches:
            break
        if consumer.poll() is None:
            if not follow:
                break
            if consumer.wait_seconds == 0:
                idle_sleep(1.0)
        if consumer.dry_run and not follow:
            # The released messages would come straight back: one look is what a dry run is.
            break
    return consumer.stats
