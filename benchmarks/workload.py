"""A realistic SQS FIFO workload for the `orders` entity.

Each order gets an `order.created` event, then several `order.confirmed` / `order.shipped`
updates (a few end `order.cancelled`). Orders are live concurrently: the queue interleaves
the events of a sliding window of open orders, the way a FIFO queue fed by one stream
delivers them, so a batch of 10 carries several message groups, each in its own order.
DynamoDB stream sequence numbers are globally (hence per order) strictly increasing.

The schedule is compact (a few small tuples per event); SQS records are rendered on demand
so a long run does not have to keep 20,000 JSON bodies alive.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

QUEUE_ARN = "arn:aws:sqs:ap-northeast-1:123456789012:orders-sync.fifo"
REGION = "ap-northeast-1"
CHANGED_AT_BASE = 1_700_000_000
SEQ_BASE = 10**20  # 21 digits, like DynamoDB stream sequence numbers
SQS_SEQ_BASE = 18_800_000_000_000_000_000  # 20 digits, like SQS FIFO SequenceNumber


@dataclass(frozen=True, slots=True)
class Event:
    order: int  # index of the order
    event_type: str
    status: str
    total: str  # decimal text with 2 places
    seq: int  # DynamoDB stream sequence number
    changed_at: int
    customer: int


@dataclass
class Expected:
    customer_id: int
    total_amount: Decimal
    status: str
    updated_at: datetime
    version: str


@dataclass
class Workload:
    events: list[Event]
    n_orders: int
    seed: int
    batch_size: int = 10
    run_tag: str = "r0"
    # String attributes as the generated input template renders them: as attribute values
    # ({"S": "x"}, the default since missing attributes arrive as NULL) or bare (an older build).
    typed_strings: bool = True

    def order_id(self, order: int) -> str:
        return f"ORD-{order:06d}"

    def with_tag(self, tag: str) -> Workload:
        """The same events under fresh event ids / message ids (a new run on fresh tables)."""
        return Workload(self.events, self.n_orders, self.seed, self.batch_size, tag, self.typed_strings)

    def with_strings(self, typed: bool) -> Workload:
        """The same events with string attributes rendered typed or bare."""
        return Workload(self.events, self.n_orders, self.seed, self.batch_size, self.run_tag, typed)

    def record(self, i: int) -> dict:
        ev = self.events[i]
        oid = self.order_id(ev.order)
        event_id = (
            f"{self.run_tag}-{hashlib.blake2b(f'{self.seed}:{i}'.encode(), digest_size=16).hexdigest()}"
        )
        typed = (lambda v: {"S": v}) if self.typed_strings else (lambda v: v)
        body = json.dumps(
            {
                "eventType": typed(ev.event_type),
                "orderID": oid,
                "customerID": str(ev.customer),
                "orderDetails": {"totalAmount": ev.total, "status": typed(ev.status)},
                "eventID": event_id,
                "eventName": "INSERT" if ev.event_type == "order.created" else "MODIFY",
                "sequenceNumber": str(ev.seq),
                "changedAt": ev.changed_at,
            }
        )
        sent_ms = str(ev.changed_at * 1000 + 250)
        return {
            "messageId": f"{self.run_tag}-msg-{i:07d}",
            "receiptHandle": f"AQEB{hashlib.blake2b(f'rh{i}'.encode(), digest_size=24).hexdigest()}",
            "body": body,
            "attributes": {
                "ApproximateReceiveCount": "1",
                "SentTimestamp": sent_ms,
                "SequenceNumber": str(SQS_SEQ_BASE + i * 1000),
                "MessageGroupId": oid,
                "SenderId": "AROAEXAMPLE:pipes-orders",
                "MessageDeduplicationId": event_id,
                "ApproximateFirstReceiveTimestamp": str(int(sent_ms) + 40),
            },
            "messageAttributes": {},
            "md5OfBody": hashlib.md5(body.encode(), usedforsecurity=False).hexdigest(),
            "eventSource": "aws:sqs",
            "eventSourceARN": QUEUE_ARN,
            "awsRegion": REGION,
        }

    def batches(self, start: int = 0, stop: int | None = None) -> Iterator[list[dict]]:
        """Batches of `batch_size` consecutive queue messages, rendered on demand."""
        stop = len(self.events) if stop is None else stop
        for b in range(start, stop, self.batch_size):
            yield [self.record(i) for i in range(b, min(b + self.batch_size, stop))]

    def materialize(self) -> list[list[dict]]:
        return list(self.batches())

    def expected(self) -> dict[str, Expected]:
        """The last state of every order (the last event of each order wins)."""
        out: dict[str, Expected] = {}
        for ev in self.events:
            oid = self.order_id(ev.order)
            customer = ev.customer if ev.event_type == "order.created" else out[oid].customer_id
            out[oid] = Expected(
                customer,
                Decimal(ev.total),
                ev.status,
                datetime.fromtimestamp(ev.changed_at, UTC),
                str(ev.seq).zfill(40),
            )
        return out

    def group_stats(self) -> dict[str, float]:
        """How many message groups a batch carries, and how often a group repeats in a batch."""
        groups, repeats = [], 0
        for b in range(0, len(self.events), self.batch_size):
            orders = [e.order for e in self.events[b : b + self.batch_size]]
            groups.append(len(set(orders)))
            repeats += len(set(orders)) < len(orders)
        n = len(groups)
        return {
            "batches": n,
            "groups_per_batch_mean": sum(groups) / n,
            "groups_per_batch_min": min(groups),
            "groups_per_batch_max": max(groups),
            "batches_with_a_repeated_group": repeats / n,
        }


def _lifecycle(rng: random.Random, updates: int) -> list[tuple[str, str]]:
    """(event type, status) of the updates after `order.created`."""
    out = []
    shipped = False
    for u in range(updates):
        last = u == updates - 1
        if last and rng.random() < 0.05:
            out.append(("order.cancelled", "cancelled"))
        elif shipped or (u >= updates // 2 and rng.random() < 0.5):
            shipped = True
            out.append(("order.shipped", "shipped"))
        else:
            out.append(("order.confirmed", "confirmed"))
    return out


def generate(events: int = 20_000, *, orders: int | None = None, window: int = 24, seed: int = 7) -> Workload:
    """`events` events over `orders` orders (default events // 10), `window` orders open at once."""
    rng = random.Random(seed)
    n_orders = orders or max(1, events // 10)
    if events < 2 * n_orders:
        raise ValueError("need at least two events per order (created + one update)")
    # Updates per order: 5..13 (mean 9), then nudged so the total is exactly `events`.
    counts = [rng.randint(5, 13) for _ in range(n_orders)]
    target = events - n_orders
    while sum(counts) != target:
        i = rng.randrange(n_orders)
        if sum(counts) < target:
            counts[i] += 1
        elif counts[i] > 1:
            counts[i] -= 1
    plans: list[list[tuple[str, str, str]]] = []
    customers = []
    for o in range(n_orders):
        total = Decimal(rng.randint(500, 500_000)) / 100
        steps = [("order.created", "pending", f"{total:.2f}")]
        for typ, status in _lifecycle(rng, counts[o]):
            if typ == "order.confirmed" and rng.random() < 0.4:  # an edited order, re-confirmed
                total = Decimal(rng.randint(500, 500_000)) / 100
            steps.append((typ, status, f"{total:.2f}"))
        plans.append(steps)
        customers.append(rng.randint(1, 50_000))

    out: list[Event] = []
    seq = SEQ_BASE
    next_order = 0
    active: list[list[int]] = []  # [order, next step]
    while len(out) < events:
        while len(active) < window and next_order < n_orders:
            active.append([next_order, 0])
            next_order += 1
        slot = rng.randrange(len(active))
        o, step = active[slot]
        typ, status, total = plans[o][step]
        seq += rng.randint(1, 5_000)
        out.append(Event(o, typ, status, total, seq, CHANGED_AT_BASE + len(out), customers[o]))
        active[slot][1] += 1
        if active[slot][1] == len(plans[o]):
            active.pop(slot)
    return Workload(out, n_orders, seed)
