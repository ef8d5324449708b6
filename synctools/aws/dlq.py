"""`ddb-sql-sync dlq list|show|redrive`: the entity's FIFO DLQ and the Pipe's DLQ.

Looking never consumes: messages are received with a short visibility timeout, kept in flight
while the rest is read (a FIFO queue returns nothing more of a group while a message of it is
in flight, AWS: FIFO-queues), then made visible again at once with ChangeMessageVisibility 0. A FIFO
queue therefore shows at most the messages of the first receive that reaches each group; the
queue's own count of what is hidden is printed beside.

Redrive (FIFO DLQ -> the entity's queue) uses StartMessageMoveTask where the service supports
it (AWS: FIFO-queues: FIFO redrive is supported by AWS now), else moves messages one at a time:
receive one, SendMessage it to the queue with its message group and a deduplication id derived
from its DLQ message id, and only then DeleteMessage it from the DLQ. One message in flight at
a time keeps each group's order even when the move is killed: the message in flight reappears
first in its group after the visibility timeout. A kill between the send and the delete leaves
the message in both queues; moving it again sends the same deduplication id (SQS drops it
within 5 minutes, AWS: FIFO-queues) and else the runtime's ledger absorbs the second copy.

The Pipe's DLQ (a standard queue) holds stream positions only (AWS: eb-pipes-dynamodb): `--pipe` resolves
them back to the stream records while the stream still has them (24 h), and redrives those
records through the entity's filter and template to its FIFO queue, then deletes the pointer.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from runtime.aws_limits import SQS_BATCH
from runtime.registry import EntitySpec
from synctools.aws.bodies import summarize
from synctools.aws.pipe import Outgoing, Sender, batches
from synctools.aws.session import INCOMPLETE, USAGE, Aws, ToolError, error_code, http_status
from synctools.aws.streams import read_range, sequence_of
from synctools.local.build import Pipe
from synctools.local.transform import TargetError

RECEIVE_ALL = {
    "AttributeNames": ["All"],
    "MessageSystemAttributeNames": ["All"],
    "MessageAttributeNames": ["All"],
}
# The move task is unknown to some endpoints (moto answers it with HTTP 500): fall back then.
_UNSUPPORTED = {
    "InvalidAction",
    "UnknownOperationException",
    "UnsupportedOperation",
    "AWS.SimpleQueueService.UnsupportedOperation",
    "NotImplemented",
    "InternalFailure",
    "InternalError",
}


def _receive_one(sqs: Any, url: str, visibility: int) -> list[dict[str, Any]]:
    """At most one message (long polling asks every server: a short poll may miss messages)."""
    return (
        sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=1,
            VisibilityTimeout=visibility,
            WaitTimeSeconds=1,
            **RECEIVE_ALL,
        ).get("Messages")
        or []
    )


# -- looking without consuming -------------------------------------------------------------------


def peek(sqs: Any, url: str, *, max_messages: int, visibility: int = 10) -> list[dict[str, Any]]:
    """Up to `max_messages` messages in receive order, all made visible again before returning."""
    seen: dict[str, dict[str, Any]] = {}
    try:
        while len(seen) < max_messages:
            got = (
                sqs.receive_message(
                    QueueUrl=url,
                    MaxNumberOfMessages=min(SQS_BATCH, max_messages - len(seen)),
                    VisibilityTimeout=visibility,
                    WaitTimeSeconds=1,  # long polling asks every server: a short poll may miss messages
                    **RECEIVE_ALL,
                ).get("Messages")
                or []
            )
            fresh = [m for m in got if m["MessageId"] not in seen]
            if not fresh:
                break
            for m in fresh:
                seen[m["MessageId"]] = m
    finally:
        release(sqs, url, list(seen.values()))
    return list(seen.values())


def release(sqs: Any, url: str, messages: list[dict[str, Any]]) -> None:
    for i in range(0, len(messages), 10):
        chunk = messages[i : i + 10]
        sqs.change_message_visibility_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
                for n, m in enumerate(chunk)
            ],
        )


def _iso_ms(ms: Any) -> str:
    try:
        t = int(ms) / 1000
    except (TypeError, ValueError):
        return ""
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def describe_message(message: dict[str, Any], entity: EntitySpec) -> dict[str, Any]:
    """What an operator needs to know of one FIFO DLQ message."""
    attrs = message.get("Attributes") or {}
    text = message.get("Body", "")
    about = summarize(text, entity)
    return {
        "entity": entity.name,
        "messageId": message["MessageId"],
        "eventId": about["eventId"],
        "eventType": about["eventType"],
        "group": attrs.get("MessageGroupId"),
        "key": about["key"],
        "receiveCount": int(attrs.get("ApproximateReceiveCount", 0) or 0),
        "sent": _iso_ms(attrs.get("SentTimestamp")),
        "deduplicationId": attrs.get("MessageDeduplicationId"),
        "sequenceNumber": attrs.get("SequenceNumber"),
        "bodyReadable": about["bodyReadable"],
        "body": text,
    }


# -- why it failed ---------------------------------------------------------------------------------


@dataclass
class Reasons:
    """Failure reasons by message id: from consume's --failures-out file and/or CloudWatch Logs."""

    by_message: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    by_event: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    logs: Any = None
    log_group: str | None = None

    def load_file(self, path: Path) -> None:
        try:
            fh = open(path, encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise ToolError(f"cannot read --failures-from {path}: {exc}") from None
        with fh:
            for line in fh:
                try:
                    doc = json.loads(line)
                except ValueError:
                    continue
                if isinstance(doc, dict) and doc.get("message_id"):
                    self._add(doc, "file")

    def _add(self, doc: dict[str, Any], source: str) -> None:
        entry = {**doc, "source": source}
        self.by_message.setdefault(str(doc["message_id"]), []).append(entry)
        if doc.get("event_id"):
            self.by_event.setdefault(str(doc["event_id"]), []).append(entry)

    def lookup(self, message_id: str, event_id: str | None) -> list[dict[str, Any]]:
        if message_id not in self.by_message and self.logs is not None:
            self._from_logs(message_id)
        found = self.by_message.get(message_id)
        if not found and event_id:
            # A message redriven before gets a new message id; its event id stays.
            found = self.by_event.get(event_id)
        return list(found or [])

    def _from_logs(self, message_id: str) -> None:
        """The runtime logs one JSON line per batch listing each failure with its message id
        (runtime.observe); find the lines that name this one."""
        kwargs: dict[str, Any] = {"logGroupName": self.log_group, "filterPattern": f'"{message_id}"'}
        pages = 0
        while pages < 10:
            pages += 1
            try:
                response = self.logs.filter_log_events(**kwargs)
            except Exception as exc:
                if error_code(exc) == "ResourceNotFoundException":
                    raise ToolError(f"log group {self.log_group!r} does not exist") from None
                raise
            for event in response.get("events") or []:
                text = event.get("message", "")
                start = text.find("{")
                try:
                    doc = json.loads(text[start:]) if start >= 0 else None
                except ValueError:
                    continue
                for f in (doc or {}).get("failures") or []:
                    if f.get("message_id") == message_id:
                        self._add({**f, "status": "failed", "time": _iso_ms(event.get("timestamp"))}, "logs")
                if message_id in ((doc or {}).get("blocked") or []):
                    self._add(
                        {
                            "message_id": message_id,
                            "status": "blocked",
                            "reason": "held back behind a failed message of its group",
                            "time": _iso_ms(event.get("timestamp")),
                        },
                        "logs",
                    )
            token = response.get("nextToken")
            if not token:
                return
            kwargs["nextToken"] = token


def last_reason(history: list[dict[str, Any]]) -> str | None:
    failed = [h for h in history if h.get("status", "failed") == "failed"]
    pick = (failed or history)[-1] if history else None
    if pick is None:
        return None
    kind = pick.get("kind")
    return f"{kind}: {pick.get('reason')}" if kind else str(pick.get("reason"))


# -- redrive: FIFO DLQ -> queue ----------------------------------------------------------------------


@dataclass
class RedriveStats:
    moved: int = 0
    method: str = "manual"
    left_in_flight: int = 0
    failed: int = 0


def start_move_task(aws: Aws, dlq_arn: str, queue_arn: str) -> str | None:
    """StartMessageMoveTask, or None where the endpoint does not implement it."""
    sqs = aws.client("sqs", retries=1)  # an unimplemented action must not be retried for long
    try:
        response = sqs.start_message_move_task(SourceArn=dlq_arn, DestinationArn=queue_arn)
    except AttributeError:  # a botocore too old to know the action
        return None
    except Exception as exc:
        code = error_code(exc)
        if code in _UNSUPPORTED or http_status(exc) >= 500 or code.isdigit():
            return None
        if not code:
            raise
        raise ToolError(f"StartMessageMoveTask refused: {exc}", INCOMPLETE) from None
    return str(response.get("TaskHandle", ""))


def wait_move_task(
    aws: Aws, dlq_arn: str, log: Callable[[str], None], *, timeout: float = 3600.0
) -> dict[str, Any]:
    sqs = aws.client("sqs")
    deadline = time.monotonic() + timeout
    while True:
        tasks = sqs.list_message_move_tasks(SourceArn=dlq_arn, MaxResults=1).get("Results") or []
        task = tasks[0] if tasks else {}
        status = task.get("Status", "")
        log(
            f"dlq redrive: move task {status or '?'}: {task.get('ApproximateNumberOfMessagesMoved', 0)} of "
            f"{task.get('ApproximateNumberOfMessagesToMove', '?')} moved"
        )
        if status in ("COMPLETED", "CANCELLED", "FAILED") or time.monotonic() > deadline:
            return task
        time.sleep(2.0)


def redrive_fifo(
    sqs: Any,
    dlq_url: str,
    queue_url: str,
    *,
    max_messages: int | None,
    pause: float,
    visibility: int,
    counts: Callable[[str], tuple[int, int]],
    out: Callable[[dict[str, Any]], None],
    log: Callable[[str], None],
    sleep: Callable[[float], None] = time.sleep,
) -> RedriveStats:
    """Receive one, send it, delete it; in DLQ order, one message in flight at a time."""
    stats = RedriveStats()
    waiting_until: float | None = None
    while max_messages is None or stats.moved < max_messages:
        got = _receive_one(sqs, dlq_url, visibility)
        if not got:
            visible, in_flight = counts(dlq_url)
            if visible == 0 and in_flight == 0:
                break
            now = time.monotonic()
            if waiting_until is None:
                # In flight: held by a `dlq list` or a move that was killed. It comes back
                # after its visibility timeout; its group waits for it (order).
                waiting_until = now + visibility + 5
                log(
                    f"dlq redrive: {in_flight} message(s) in flight in the DLQ; waiting up to {visibility + 5} s"
                )
            elif now > waiting_until:
                stats.left_in_flight = in_flight
                break
            continue
        waiting_until = None
        m = got[0]
        attrs = m.get("Attributes") or {}
        group = attrs.get("MessageGroupId")
        if not group:
            raise ToolError(f"DLQ message {m['MessageId']} has no MessageGroupId: is the DLQ a FIFO queue?")
        send: dict[str, Any] = {
            "QueueUrl": queue_url,
            "MessageBody": m.get("Body", ""),
            "MessageGroupId": group,
            # Derived from the DLQ message id: a second move of the same message (after a kill
            # between send and delete) carries the same id and SQS drops it (facts 5).
            "MessageDeduplicationId": f"redrive-{m['MessageId']}",
        }
        if m.get("MessageAttributes"):
            send["MessageAttributes"] = m["MessageAttributes"]
        response = sqs.send_message(**send)
        out(
            {
                "action": "sent",
                "messageId": m["MessageId"],
                "group": group,
                "newMessageId": response.get("MessageId"),
            }
        )
        if pause:
            sleep(pause)  # the window a rehearsal kills the move in: sent, not yet deleted
        sqs.delete_message(QueueUrl=dlq_url, ReceiptHandle=m["ReceiptHandle"])
        stats.moved += 1
        out({"action": "moved", "messageId": m["MessageId"], "group": group})
    return stats


# -- the Pipe's DLQ: stream positions ----------------------------------------------------------------


@dataclass
class Pointer:
    message_id: str
    receipt: str
    stream_arn: str
    shard_id: str
    start: str
    end: str
    batch_size: int | None
    condition: str | None
    attributes: dict[str, Any]
    body: str

    def describe(self) -> dict[str, Any]:
        return {
            "messageId": self.message_id,
            "streamArn": self.stream_arn,
            "shardId": self.shard_id,
            "startSequenceNumber": self.start,
            "endSequenceNumber": self.end,
            "batchSize": self.batch_size,
            "condition": self.condition,
            "receiveCount": int(self.attributes.get("ApproximateReceiveCount", 0) or 0),
            "sent": _iso_ms(self.attributes.get("SentTimestamp")),
        }


def parse_pointer(message: dict[str, Any]) -> Pointer | None:
    """A Pipe DLQ message (AWS: eb-pipes-dynamodb: DDBStreamBatchInfo), or None if it is something else."""
    try:
        doc = json.loads(message.get("Body", ""))
        info = doc["DDBStreamBatchInfo"]
        return Pointer(
            message["MessageId"],
            message.get("ReceiptHandle", ""),
            str(info["streamArn"]),
            str(info["shardId"]),
            str(int(info["startSequenceNumber"])),
            str(int(info["endSequenceNumber"])),
            int(info["batchSize"]) if info.get("batchSize") is not None else None,
            (doc.get("requestContext") or {}).get("condition"),
            message.get("Attributes") or {},
            message.get("Body", ""),
        )
    except (ValueError, KeyError, TypeError):
        return None


def resolve(streams: Any, pointer: Pointer) -> list[dict[str, Any]]:
    """The stream records a pointer names; ToolError(exit 1) when the stream no longer has them."""
    records = list(read_range(streams, pointer.stream_arn, pointer.shard_id, pointer.start, pointer.end))
    if not records or sequence_of(records[0]) != pointer.start:
        raise ToolError(
            f"pointer {pointer.message_id}: the stream no longer has records {pointer.start}..{pointer.end} "
            f"of {pointer.shard_id} (24 h retention, or the stream was replaced)",
            INCOMPLETE,
        )
    return records


def pipe_entries(pipe: Pipe, records: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """What the Pipe would do with each record (for show and dry runs)."""
    for r in records:
        doc: dict[str, Any] = {
            "eventID": r.get("eventID"),
            "eventName": r.get("eventName"),
            "sequenceNumber": sequence_of(r),
        }
        if not pipe.filters.matches(r):
            doc["action"] = "filtered-out"
        else:
            try:
                e = pipe.entry(r)
                doc.update(
                    action="send",
                    MessageGroupId=e.group_id,
                    MessageDeduplicationId=e.dedup_id,
                    MessageBody=e.body,
                )
            except TargetError as exc:
                doc.update(action="refused", reason=str(exc))
        yield doc


def redrive_pipe(
    sqs: Any,
    streams: Any,
    pipe_dlq_url: str,
    pipe: Pipe,
    sender: Sender,
    *,
    max_messages: int | None,
    pause: float,
    visibility: int,
    out: Callable[[dict[str, Any]], None],
    log: Callable[[str], None],
    sleep: Callable[[float], None] = time.sleep,
) -> RedriveStats:
    """Per pointer: resolve, send the records that pass the filter (the Pipe's batches and ids),
    then delete the pointer. A pointer that cannot be resolved or sent stays in the DLQ."""
    stats = RedriveStats()
    while max_messages is None or stats.moved + stats.failed < max_messages:
        got = _receive_one(sqs, pipe_dlq_url, visibility)
        if not got:
            break
        m = got[0]
        pointer = parse_pointer(m)
        if pointer is None:
            stats.failed += 1
            log(f"dlq redrive --pipe: message {m['MessageId']} holds no DDBStreamBatchInfo; left in place")
            continue  # stays in flight for `visibility` seconds, so this run does not see it again
        try:
            records = resolve(streams, pointer)
        except ToolError as exc:
            stats.failed += 1
            log(f"dlq redrive --pipe: {exc}")
            continue
        items: list[Outgoing] = []
        refused = []
        for r in records:
            if not pipe.filters.matches(r):
                continue
            try:
                items.append(Outgoing(r, pipe.entry(r), sequence_of(r)))
            except TargetError as exc:
                refused.append(f"{sequence_of(r)}: {exc}")
        if refused:
            stats.failed += 1
            log(
                f"dlq redrive --pipe: pointer {pointer.message_id}: SQS would refuse {'; '.join(refused)}; left in place"
            )
            continue
        for batch in batches(items, pipe.batch_size):
            result = sender.send(batch)
            if result.refused:
                stats.failed += 1
                raise ToolError(
                    f"pointer {pointer.message_id}: SQS refused {result.refused[0].reason}; the pointer stays",
                    INCOMPLETE,
                )
        out(
            {
                "action": "sent",
                "messageId": pointer.message_id,
                "records": len(records),
                "messages": len(items),
            }
        )
        if pause:
            sleep(pause)
        sqs.delete_message(QueueUrl=pipe_dlq_url, ReceiptHandle=pointer.receipt)
        stats.moved += 1
        out({"action": "moved", "messageId": pointer.message_id})
    return stats


def check_visibility(pause: float, visibility: int) -> None:
    if visibility < 1 or pause + 1 > visibility:
        raise ToolError(
            f"--visibility {visibility} must exceed --pause {pause} by at least 1 s: the DLQ message must "
            "stay in flight until it is deleted",
            USAGE,
        )
