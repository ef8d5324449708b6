"""An SQS FIFO queue (and its FIFO dead-letter queue) on a virtual clock: nothing sleeps.

Rules modelled (AWS: FIFO-queues, services-sqs-configure):
- strict order within a message group; a group with a message in flight is not returned to
  any receiver until that message is deleted or its visibility timeout expires;
- a receive fills the batch from one group as far as it can, then from the next;
- 5-minute deduplication on the MessageDeduplicationId: a second send with a used id inside
  the window is accepted (the original message id is returned) but never delivered;
- each receive increments ApproximateReceiveCount; a message received maxReceiveCount times
  and not deleted moves to the FIFO DLQ on the next receive attempt, its deduplication id
  replaced by its message id (AWS: FIFO-queues); order of its group is then broken, as in AWS;
- received messages are records in the exact shape Lambda's SQS event carries (AWS: services-sqs-configure).

The queue holds only messages not yet deleted; dedup ids live only for their window.
`hold_group` (no AWS equivalent) holds a group back for fault injection.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import random
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from runtime.aws_limits import SQS_BATCH, SQS_DEDUP_WINDOW_SECONDS, SQS_QUEUE_NAME_CHARS
from synctools import awsdocs

SQS_SEQUENCE_BASE = 18_800_000_000_000_000_000  # 20 digits, like real FIFO sequence numbers


class QueueError(ValueError):
    pass


class VirtualClock:
    """Epoch seconds that move only when told to."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = float(start)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("the clock does not go back")
        self.now += seconds

    def advance_to(self, t: float) -> None:
        if t > self.now:
            self.now = t


@dataclass(slots=True, eq=False)
class Message:
    message_id: str
    body: str
    group_id: str
    dedup_id: str
    sequence_number: str
    sent_ms: int
    receive_count: int = 0
    first_receive_ms: int = 0
    receipt: str | None = None  # set while in flight
    visible_at: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)  # free for the local tools' bookkeeping


@dataclass(slots=True)
class SendResult:
    message_id: str
    sequence_number: str
    duplicate: bool  # dropped by deduplication: accepted, never delivered


@dataclass(slots=True, eq=False)
class _Group:
    messages: deque[Message] = field(default_factory=deque)
    in_flight: int = 0
    hold_until: float = 0.0


class FifoQueue:
    def __init__(
        self,
        name: str,
        *,
        clock: VirtualClock,
        visibility_timeout: float = 30.0,
        dlq: FifoQueue | None = None,
        max_receive_count: int | None = None,
        region: str = "us-east-1",
        account: str = "000000000000",
        rng: random.Random | None = None,
        dedup_window: float = SQS_DEDUP_WINDOW_SECONDS,
    ) -> None:
        if not name.endswith(".fifo") or len(name) > SQS_QUEUE_NAME_CHARS:
            raise QueueError(
                f"FIFO queue name {name!r} must end in .fifo within {SQS_QUEUE_NAME_CHARS} characters (see {awsdocs.SQS_FIFO_QUOTAS})"
            )
        if (dlq is None) != (max_receive_count is None):
            raise QueueError("a redrive policy needs both a DLQ and maxReceiveCount")
        if dlq is not None and not isinstance(dlq, FifoQueue):
            raise QueueError(f"the DLQ of a FIFO queue must be FIFO (see {awsdocs.SQS_DEAD_LETTER_QUEUES})")
        if max_receive_count is not None and max_receive_count < 1:
            raise QueueError("maxReceiveCount must be at least 1")
        self.name = name
        self.clock = clock
        self.visibility_timeout = float(visibility_timeout)
        self.dlq = dlq
        self.max_receive_count = max_receive_count
        self.region = region
        self.account = account
        self.arn = f"arn:aws:sqs:{region}:{account}:{name}"
        self.rng = rng or random.Random()
        self.dedup_window = dedup_window
        self._groups: dict[str, _Group] = {}
        self._ready: OrderedDict[str, None] = OrderedDict()  # groups that may be receivable
        self._in_flight: dict[str, Message] = {}  # receipt handle -> message
        self._timers: list[tuple[float, int, str]] = []  # (time, tiebreak, group) to re-check
        self._tick = itertools.count()
        self._dedup: dict[str, tuple[float, str, str]] = {}  # id -> (expiry, message id, sequence)
        self._dedup_order: deque[tuple[float, str]] = deque()
        self._seq = itertools.count(1)
        self._receipts = itertools.count(1)
        self.size = 0  # messages held (visible, in flight or held back)
        self.stats = {"sent": 0, "deduplicated": 0, "received": 0, "deleted": 0, "dead_lettered": 0}

    # -- sending --------------------------------------------------------------------------

    def _new_message_id(self) -> str:
        h = f"{self.rng.getrandbits(122):031x}"  # a version-4 UUID from the seeded RNG
        return f"{h[:8]}-{h[8:12]}-4{h[12:15]}-{'89ab'[int(h[15], 16) & 3]}{h[16:19]}-{h[19:31]}"

    def _prune_dedup(self) -> None:
        now = self.clock.now
        order = self._dedup_order
        while order and order[0][0] <= now:
            expiry, dedup_id = order.popleft()
            entry = self._dedup.get(dedup_id)
            if entry is not None and entry[0] <= now:
                del self._dedup[dedup_id]

    def send(self, body: str, group_id: str, dedup_id: str, *, message_id: str | None = None) -> SendResult:
        """SendMessage (FIFO): both ids are required (AWS: API_PipeTargetSqsQueueParameters)."""
        if not group_id:
            raise QueueError("The request must contain the parameter MessageGroupId")
        if not dedup_id:
            raise QueueError(
                f"no MessageDeduplicationId and content-based deduplication is off (see {awsdocs.SQS_DEDUPLICATION})"
            )
        self._prune_dedup()
        seen = self._dedup.get(dedup_id)
        if seen is not None:
            self.stats["deduplicated"] += 1
            return SendResult(seen[1], seen[2], True)
        now = self.clock.now
        msg = Message(
            message_id=message_id or self._new_message_id(),
            body=body,
            group_id=group_id,
            dedup_id=dedup_id,
            sequence_number=str(SQS_SEQUENCE_BASE + next(self._seq)),
            sent_ms=int(now * 1000),
        )
        expiry = now + self.dedup_window
        self._dedup[dedup_id] = (expiry, msg.message_id, msg.sequence_number)
        self._dedup_order.append((expiry, dedup_id))
        self._enqueue(msg)
        self.stats["sent"] += 1
        return SendResult(msg.message_id, msg.sequence_number, False)

    def send_batch(self, entries: Iterable[tuple[str, str, str]]) -> list[SendResult]:
        """SendMessageBatch: at most 10 entries, enqueued in the order sent (AWS: API_PipeTargetSqsQueueParameters)."""
        entries = list(entries)
        if not 1 <= len(entries) <= SQS_BATCH:
            raise QueueError(f"SendMessageBatch takes 1..{SQS_BATCH} entries, got {len(entries)}")
        return [self.send(body, group, dedup) for body, group, dedup in entries]

    def _enqueue(self, msg: Message) -> None:
        group = self._groups.get(msg.group_id)
        if group is None:
            group = self._groups[msg.group_id] = _Group()
        group.messages.append(msg)
        self.size += 1
        if len(group.messages) == 1:
            self._mark_ready(msg.group_id, group)

    # -- receiving ------------------------------------------------------------------------

    def _mark_ready(self, name: str, group: _Group) -> None:
        if group.hold_until > self.clock.now:
            self._timer(group.hold_until, name)
        elif group.in_flight == 0 and group.messages:
            self._ready[name] = None

    def _timer(self, t: float, name: str) -> None:
        heapq.heappush(self._timers, (t, next(self._tick), name))

    def _fire_timers(self) -> None:
        now = self.clock.now
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, _, name = heapq.heappop(timers)
            group = self._groups.get(name)
            if group is None:
                continue
            remaining = group.in_flight
            for m in group.messages:
                if remaining == 0:
                    break
                if m.receipt is not None:
                    remaining -= 1
                    if m.visible_at <= now:
                        # The visibility timeout expired: visible again, at its place in the group.
                        del self._in_flight[m.receipt]
                        m.receipt = None
                        group.in_flight -= 1
            if not group.messages and group.hold_until <= now:
                del self._groups[name]
            else:
                self._mark_ready(name, group)

    def receive(self, max_messages: int = SQS_BATCH) -> list[dict[str, Any]]:
        """ReceiveMessage: up to `max_messages` records, in the Lambda SQS event record shape.

        Groups with a message in flight, or held back, are skipped (AWS: FIFO-queues); a batch takes as
        many messages of one group as it can, then moves on to the next group."""
        if not 1 <= max_messages <= SQS_BATCH:
            raise QueueError(f"MaxNumberOfMessages must be 1..{SQS_BATCH}")
        self._fire_timers()
        now = self.clock.now
        out: list[Message] = []
        while self._ready and len(out) < max_messages:
            name = next(iter(self._ready))
            del self._ready[name]
            group = self._groups.get(name)
            if group is None or group.in_flight or group.hold_until > now:
                continue
            i = 0
            while i < len(group.messages) and len(out) < max_messages:
                msg = group.messages[i]
                if self.max_receive_count is not None and msg.receive_count >= self.max_receive_count:
                    # Received maxReceiveCount times and never deleted: this receive attempt
                    # moves it to the DLQ instead (facts 5); the group goes on without it.
                    del group.messages[i]
                    self._dead_letter(msg)
                    continue
                self._take(group, msg, now)
                out.append(msg)
                i += 1
            if group.in_flight:
                self._timer(now + self.visibility_timeout, name)
            elif not group.messages:
                del self._groups[name]
        return [self._record(m) for m in out]

    def _take(self, group: _Group, msg: Message, now: float) -> None:
        msg.receive_count += 1
        if msg.receive_count == 1:
            msg.first_receive_ms = int(now * 1000)
        msg.receipt = f"AQEB{next(self._receipts):012d}{msg.message_id.replace('-', '')[:20]}"
        msg.visible_at = now + self.visibility_timeout
        self._in_flight[msg.receipt] = msg
        group.in_flight += 1
        self.stats["received"] += 1

    def _dead_letter(self, msg: Message) -> None:
        self.size -= 1
        self.stats["dead_lettered"] += 1
        assert self.dlq is not None
        self.dlq._accept_moved(msg)

    def _accept_moved(self, msg: Message) -> None:
        # facts 5: moving to a FIFO DLQ replaces the dedup id with the message id; the
        # message keeps its id, body, group, sent time and receive count.
        msg.dedup_id = msg.message_id
        msg.receipt = None
        msg.sequence_number = str(SQS_SEQUENCE_BASE + next(self._seq))
        self.stats["sent"] += 1
        self._enqueue(msg)

    def _record(self, m: Message) -> dict[str, Any]:
        return {
            "messageId": m.message_id,
            "receiptHandle": m.receipt,
            "body": m.body,
            "attributes": {
                "ApproximateReceiveCount": str(m.receive_count),
                "SentTimestamp": str(m.sent_ms),
                "SequenceNumber": m.sequence_number,
                "MessageGroupId": m.group_id,
                "SenderId": "AROAEXAMPLELOCALPIPE:pipes",
                "MessageDeduplicationId": m.dedup_id,
                "ApproximateFirstReceiveTimestamp": str(m.first_receive_ms),
            },
            "messageAttributes": {},
            "md5OfBody": hashlib.md5(m.body.encode("utf-8")).hexdigest(),
            "eventSource": "aws:sqs",
            "eventSourceARN": self.arn,
            "awsRegion": self.region,
        }

    # -- acknowledging --------------------------------------------------------------------

    def in_flight_message(self, receipt_handle: str) -> Message | None:
        """The message a still-valid receipt handle names (None once it expired or was deleted)."""
        self._fire_timers()
        return self._in_flight.get(receipt_handle)

    def delete(self, receipt_handle: str) -> bool:
        """DeleteMessage. A receipt handle whose visibility timeout expired deletes nothing:
        the message was, or will be, received again."""
        self._fire_timers()
        m = self._in_flight.pop(receipt_handle, None)
        if m is None:
            return False
        group = self._groups[m.group_id]
        group.messages.remove(m)
        group.in_flight -= 1
        m.receipt = None
        self.size -= 1
        self.stats["deleted"] += 1
        if not group.messages and group.hold_until <= self.clock.now:
            del self._groups[m.group_id]
            self._ready.pop(m.group_id, None)
        else:
            self._mark_ready(m.group_id, group)
        return True

    # -- local-model extensions -----------------------------------------------------------

    def hold_group(self, group_id: str, until: float) -> None:
        """Hold a group back until `until` (fault injection: a delayed message group)."""
        group = self._groups.get(group_id)
        if group is None:
            group = self._groups[group_id] = _Group()
        group.hold_until = max(group.hold_until, until)
        self._ready.pop(group_id, None)
        self._timer(group.hold_until, group_id)

    def next_change(self) -> float | None:
        """When a held or in-flight message may next become receivable (None: nothing pending)."""
        now = self.clock.now
        while self._timers:
            t, _, name = self._timers[0]
            if name in self._groups:
                return max(t, now)
            heapq.heappop(self._timers)
        return None

    def has_group(self, group_id: str) -> bool:
        """Whether the queue holds a message of this group (or holds the group back)."""
        return group_id in self._groups

    def drain(self) -> list[Message]:
        """Take every message out of the queue (the local tools' DLQ reader)."""
        out = [m for g in self._groups.values() for m in g.messages]
        self._groups.clear()
        self._ready.clear()
        self._timers.clear()
        self.size = 0
        return out
