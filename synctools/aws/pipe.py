"""What the EventBridge Pipe does between the stream and the FIFO queue, with the generated
artifacts of one entity (the Pipe synctools.local.build loads from build/: the local model's
filter and transformer), sending to SQS.

- filter first, then batch (AWS: eb-pipes-event-filtering: a record that matches no pattern is skipped for good);
- the template is rendered per record, never on the batch (AWS: eb-pipes-batching-concurrency);
- MessageGroupId / MessageDeduplicationId are evaluated on the original record (AWS: API_PipeTargetSqsQueueParameters);
- SendMessageBatch of at most the Pipe's batch size (<= 10: AWS: eb-pipes-batching-concurrency, API_PipeSourceDynamoDBStreamParameters), entries in stream
  order (FIFO enqueues a batch in order: AWS: API_PipeTargetSqsQueueParameters); per-entry failures are retried (AWS: eb-pipes-batching-concurrency,
  "Partial batch failure") and a record is never reported sent before SQS accepted it.

One deliberate difference from Pipes: a batch never holds two records of one message group.
If SQS accepted a group's later record but failed its earlier one, retrying the earlier one
would put it behind the later one and break the group's order; with one record per group per
batch, a retry always goes out before the group's next record. The queue's contents are the
same when nothing fails.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from synctools.aws.session import INCOMPLETE, ToolError, error_code
from synctools.local import build as local_build
from synctools.local.build import Pipe, PipeError
from synctools.local.transform import SqsEntry


@dataclass
class Outgoing:
    """One record on its way to the queue."""

    record: dict[str, Any]
    entry: SqsEntry
    sequence: str


@dataclass
class Refused:
    """A record SQS (or the target's rules) will never accept: it goes to the Pipe's DLQ."""

    record: dict[str, Any]
    reason: str


def load_pipe(
    registry_raw: dict[str, Any],
    entity: str,
    build: Path,
    *,
    region: str = "",
    account: str = "",
    source_arn: str = "",
    target_arn: str = "",
    whole: bool = False,
) -> Pipe:
    """The entity's Pipe from build/ (synctools.local.build), its problems as a ToolError;
    `whole`: an entity of a single-table design gets its table's shared Pipe."""
    try:
        return local_build.load_pipe(
            registry_raw,
            entity,
            build,
            region=region,
            account=account,
            source_arn=source_arn,
            target_arn=target_arn,
            whole=whole,
        )
    except PipeError as exc:
        raise ToolError(str(exc)) from None


def batches(items: Sequence[Outgoing], size: int) -> list[list[Outgoing]]:
    """Stream order kept; a batch ends when full or before a second record of one group."""
    out: list[list[Outgoing]] = []
    cur: list[Outgoing] = []
    groups: set[str] = set()
    for item in items:
        if len(cur) >= size or item.entry.group_id in groups:
            out.append(cur)
            cur, groups = [], set()
        cur.append(item)
        groups.add(item.entry.group_id)
    if cur:
        out.append(cur)
    return out


class SendError(ToolError):
    """SQS did not take a record after every retry: stop, and do not advance past it."""

    exit_code = INCOMPLETE


@dataclass
class SendResult:
    sent: list[tuple[Outgoing, str]] = field(default_factory=list)  # (item, message id)
    refused: list[Refused] = field(default_factory=list)
    retried: int = 0


class Sender:
    """SendMessageBatch with per-entry retries (AWS: eb-pipes-batching-concurrency). Entries SQS refuses as the sender's
    fault (SenderFault: an invalid id, a body over the queue's limit) are returned as refused:
    every retry would fail the same way, which is when a Pipe gives up on them (AWS: API_PipeSourceDynamoDBStreamParameters)."""

    def __init__(
        self,
        sqs: Any,
        queue_url: str,
        *,
        attempts: int = 5,
        backoff: float = 0.2,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self.sleep = sleep

    def send(self, batch: list[Outgoing]) -> SendResult:
        result = SendResult()
        pending = list(enumerate(batch))
        attempt = 0
        while pending:
            attempt += 1
            failed = self._call(pending, result)
            if not failed:
                break
            if attempt >= self.attempts:
                reasons = "; ".join(f"{batch[i].entry.dedup_id}: {why}" for i, why in failed)
                raise SendError(
                    f"SendMessageBatch to {self.queue_url}: {len(failed)} entries still failing after "
                    f"{attempt} attempts ({reasons})"
                )
            result.retried += len(failed)
            self.sleep(self.backoff * (2 ** (attempt - 1)))
            keep = {i for i, _ in failed}
            pending = [(i, item) for i, item in pending if i in keep]
        order = {id(item): n for n, item in enumerate(batch)}
        result.sent.sort(key=lambda pair: order[id(pair[0])])
        return result

    def _call(self, pending: list[tuple[int, Outgoing]], result: SendResult) -> list[tuple[int, str]]:
        entries = [
            {
                "Id": str(i),
                "MessageBody": item.entry.body,
                "MessageGroupId": item.entry.group_id,
                "MessageDeduplicationId": item.entry.dedup_id,
            }
            for i, item in pending
        ]
        by_id = dict(pending)
        try:
            response = self.sqs.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
        except Exception as exc:
            code = error_code(exc)
            if code.endswith("BatchRequestTooLong") and len(pending) > 1:
                # The entries together exceed the request limit: send them one by one, in order.
                failed: list[tuple[int, str]] = []
                for pair in pending:
                    failed.extend(self._call([pair], result))
                return failed
            if not code:
                raise
            # botocore already retried throttling and 5xx; what is left fails every entry.
            return [(i, f"{code}: {exc}") for i, _ in pending]
        for ok in response.get("Successful") or []:
            result.sent.append((by_id[int(ok["Id"])], str(ok.get("MessageId", ""))))
        failed = []
        for bad in response.get("Failed") or []:
            i = int(bad["Id"])
            why = f"{bad.get('Code', '?')}: {bad.get('Message', '')}"
            if bad.get("SenderFault"):
                result.refused.append(Refused(by_id[i].record, why))
            else:
                failed.append((i, why))
        return failed


def pointer_body(
    records: list[dict[str, Any]], shard_id: str, stream_arn: str, reason: str, pipe_arn: str = ""
) -> str:
    """The Pipe DLQ message for records the target refused: stream positions only, never the
    records (AWS: eb-pipes-dynamodb; the envelope of the Lambda ESM on-failure record, which LocalStack's
    shared poller also emits for Pipes)."""
    seqs = [int((r.get("dynamodb") or {}).get("SequenceNumber") or 0) for r in records]
    created = [(r.get("dynamodb") or {}).get("ApproximateCreationDateTime") for r in records]

    def iso(t: Any) -> str | None:
        if isinstance(t, (int, float)):
            return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return None

    doc = {
        "requestContext": {
            "requestId": "",
            "functionArn": pipe_arn,
            "condition": "RetryAttemptsExhausted",
            "approximateInvokeCount": 1,
        },
        "responseContext": {"statusCode": 400, "executedVersion": "", "functionError": reason[:1000]},
        "version": "1.0",
        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "DDBStreamBatchInfo": {
            "shardId": shard_id,
            "startSequenceNumber": str(min(seqs)),
            "endSequenceNumber": str(max(seqs)),
            "approximateArrivalOfFirstRecord": iso(created[0]),
            "approximateArrivalOfLastRecord": iso(created[-1]),
            "batchSize": len(records),
            "streamArn": stream_arn,
        },
    }
    return json.dumps(doc, sort_keys=True)
