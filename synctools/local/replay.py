"""Replay DynamoDB stream records through a local model of the whole pipeline:

    stream records -> Pipe (filter, batch, input template, dynamic group/dedup ids)
        -> SQS FIFO queue (+ FIFO DLQ) -> event source mapping -> sync handler -> database

Everything is driven by build/ (registry.json, filters.json, input-template.txt), never by
the mappings. Time is virtual: visibility timeouts, the 5-minute dedup window and held-back
groups cost no wall time. Faults are injected from one seed, so a run is reproducible.

Memory stays flat as the input grows: records are streamed, the Pipe holds one batch, each
queue holds only undelivered messages (the reader stops `read_ahead` messages ahead of the
consumer), dedup ids live for their window, and DLQ messages are written out as they land.
"""

from __future__ import annotations

import heapq
import itertools
import json
import random
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sqlalchemy.engine import Engine

from runtime.apply import APPLIED, BLOCKED, DUPLICATE, FAILED, IGNORED, SKIPPED, STALE, apply_batch
from runtime.kinds import Status
from runtime.observe import batch_documents
from runtime.registry import Registry
from runtime.wire import BatchResponse
from synctools.local.build import Pipe, PipeError, load_pipe, shared_pipe
from synctools.local.fifo import FifoQueue, Message, VirtualClock
from synctools.local.poller import Poller, PollResult
from synctools.local.records import region_account, table_of
from synctools.local.transform import SqsEntry, TargetError

PIPE_BATCH_SECONDS = 0.01  # virtual time one Pipe batch takes
POLL_INTERVAL = 0.25  # a Pipe polls each shard 4 times a second (facts 3)
INVOCATION_SECONDS = 0.01  # virtual time one sync Lambda invocation takes
DEFAULT_REGION, DEFAULT_ACCOUNT = "us-east-1", "000000000000"
FINAL = (APPLIED, DUPLICATE, STALE, IGNORED, SKIPPED)


class ReplayError(Exception):
    """A configuration problem (unknown entity, unreadable build artifacts)."""


class InjectedCrash(RuntimeError):
    """The fault injector made the sync Lambda invocation fail."""


@dataclass
class Faults:
    """Fault probabilities; every decision comes from RNGs seeded by `seed` (one per kind, so
    changing one probability does not reshuffle the others)."""

    seed: int = 0
    duplicates: float = 0.0  # per record: the Pipe sends it twice / its delete is lost
    crashes: float = 0.0  # per invocation: raises before or after applying
    lost_responses: float = 0.0  # per invocation: processed, never acknowledged
    delay_groups: float = 0.0  # per group burst: held back for a while

    def __post_init__(self) -> None:
        for name in ("duplicates", "crashes", "lost_responses", "delay_groups"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ReplayError(f"--{name.replace('_', '-')} must be a probability in 0..1, got {p}")
        self.rng = {k: random.Random(f"{self.seed}:{k}") for k in ("dup", "crash", "lost", "delay", "ids")}


@dataclass
class Counts:
    passed: int = 0  # records that matched the filter
    filtered: int = 0  # records that matched no pattern (skipped for good: facts 2.6)
    pipe_batches: int = 0
    sent: int = 0  # first sends
    resent: int = 0  # injected duplicate sends
    dedup_dropped: int = 0  # sends SQS dropped as duplicates (facts 5)
    pipe_dlq: int = 0  # records the SQS target refused (to the Pipe's DLQ, facts 3.3)
    invocations: int = 0
    failed_attempts: int = 0  # message receives that ended without a delete
    crashes: int = 0
    lost_responses: int = 0
    lost_deletes: int = 0
    held_groups: int = 0
    final: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FINAL, 0))
    dlq: int = 0

    @property
    def delivered(self) -> int:
        return self.sent + self.resent - self.dedup_dropped

    def add(self, other: Counts) -> None:
        for k, v in vars(other).items():
            if k == "final":
                for s, n in v.items():
                    self.final[s] += n
            else:
                setattr(self, k, getattr(self, k) + v)


class _Handler:
    """The sync Lambda as the local mapping invokes it: runtime.apply.apply_batch on the
    replay's engine (what runtime.handler.handler does with its configured one), with the
    crash injection around it. Keeps the last batch's outcomes and logged failure reasons."""

    def __init__(self, engine: Engine, registry: Registry, faults: Faults) -> None:
        self.engine = engine
        self.registry = registry
        self.faults = faults
        self.last: dict[str, tuple[Status | None, str]] = {}  # message id -> (status, reason)

    def __call__(self, event: dict[str, Any], context: Any) -> BatchResponse:
        self.last = {}
        rng = self.faults.rng["crash"]
        crash = self.faults.crashes and rng.random() < self.faults.crashes
        before = crash and rng.random() < 0.5
        if before:
            raise InjectedCrash("injected crash before applying the batch")
        result = apply_batch(event["Records"], self.engine, self.registry)
        logged: dict[str, str] = {}
        if any(o.status == FAILED for o in result.outcomes):
            # The reasons exactly as the runtime logs them (runtime.observe), for the DLQ file.
            logged = {
                f["message_id"]: f["reason"] for doc in batch_documents(result) for f in doc["failures"]
            }
        for o in result.outcomes:
            self.last[o.message_id] = (o.status, logged.get(o.message_id, o.reason))
        if crash:
            raise InjectedCrash("injected crash after applying the batch")
        return result.response()


class EntityPipeline:
    """One entity's Pipe, FIFO queue, FIFO DLQ and event source mapping; or a single-table
    design's shared ones (`name` the shared Pipe, `entity` one of its entities)."""

    def __init__(
        self,
        name: str,
        registry_raw: dict[str, Any],
        build: Path,
        clock: VirtualClock,
        handler: _Handler,
        faults: Faults,
        region: str,
        account: str,
        source_arn: str,
        entity: str | None = None,
    ) -> None:
        self.name = name
        self.clock = clock
        self.faults = faults
        entity = entity or name
        raw = registry_raw["entities"][entity]
        consumer = raw["consumer"]
        ids = faults.rng["ids"]
        self.dlq = FifoQueue(raw["dlq"], clock=clock, region=region, account=account, rng=ids)
        self.queue = FifoQueue(
            raw["queue"],
            clock=clock,
            visibility_timeout=consumer.get("visibility_timeout_seconds", 30),
            dlq=self.dlq,
            max_receive_count=consumer.get("max_receive_count", 3),
            region=region,
            account=account,
            rng=ids,
        )
        try:
            self.pipe: Pipe = load_pipe(
                registry_raw,
                entity,
                build,
                whole=True,
                region=region,
                account=account,
                source_arn=source_arn,
                target_arn=self.queue.arn,
                clock=clock,
            )
        except PipeError as exc:
            raise ReplayError(str(exc)) from None
        self.pipe_dlq_name = self.pipe.pipe_dlq
        self.handler = handler
        self.poller = Poller(
            self.queue,
            handler,
            batch_size=int(consumer.get("batch_size", 10)),
            function_name=f"{name}-sync",
            lose_response=self._lose_response,
            lose_delete=self._lose_delete,
        )
        self.batch: list[dict[str, Any]] = []
        self.batch_since = 0.0  # virtual time of the pending batch's first record
        # A batch goes out when full, or when the batching window (at least one poll) is over.
        self.window = max(self.pipe.batching_window, POLL_INTERVAL)
        self.later: list[tuple[float, SqsEntry]] = []  # delayed duplicate sends
        self.counts = Counts()
        self._lose_delete_ids: set[str] = set()

    # -- the Pipe -------------------------------------------------------------------------

    def offer(self, record: dict[str, Any], sink: Callable[[dict[str, Any]], None]) -> bool:
        """One stream record; filtering happens before batching (AWS: eb-pipes-event-filtering). True when a batch
        went out."""
        if not self.pipe.filters.matches(record):
            self.counts.filtered += 1
            return False
        self.counts.passed += 1
        if not self.batch:
            self.batch_since = self.clock.now
        self.batch.append(record)
        if len(self.batch) >= self.pipe.batch_size:
            self.flush(sink)
            return True
        return False

    @property
    def batch_deadline(self) -> float | None:
        """When the pending batch goes out if it does not fill up first."""
        return self.batch_since + self.window if self.batch else None

    def flush(self, sink: Callable[[dict[str, Any]], None]) -> None:
        """Send the pending batch with SendMessageBatch (the template runs per record: AWS: eb-pipes-batching-concurrency).
        Delayed duplicate sends it decides on are left in `self.later` for the driver."""
        if not self.batch:
            return
        records, self.batch = self.batch, []
        self.counts.pipe_batches += 1
        self.clock.advance(PIPE_BATCH_SECONDS)
        entries: list[tuple[dict[str, Any], SqsEntry]] = []
        for record in records:
            try:
                entry = self.pipe.entry(record)
            except TargetError as exc:
                # Every retry fails the same way; after maximum_retry_attempts the Pipe sends
                # the batch's stream positions (never the record) to its DLQ (facts 3.3).
                self.counts.pipe_dlq += 1
                sink(self._pipe_dlq_entry(record, str(exc)))
                continue
            entries.append((record, entry))
        rng = self.faults.rng["dup"]
        again: list[SqsEntry] = []
        for _record, entry in entries:
            result = self._send(entry)
            self.counts.sent += 1
            if result is None:
                continue
            if self.faults.duplicates and rng.random() < self.faults.duplicates:
                mode = rng.randrange(3)
                if mode == 0:
                    again.append(entry)  # a Pipe retry right away: SQS deduplicates it (facts 5)
                elif mode == 1:
                    # A replay from an older checkpoint after the dedup window: a real second
                    # message with the same event id, which only the runtime's ledger catches.
                    self.later.append((self.clock.now + 300.0 + rng.uniform(1.0, 120.0), entry))
                else:
                    self._lose_delete_ids.add(result)  # the consumer's delete will be lost
        for entry in again:
            self.counts.resent += 1
            self._send(entry)

    def resend(self, entry: SqsEntry) -> None:
        self.counts.resent += 1
        self._send(entry)

    def _send(self, entry: SqsEntry) -> str | None:
        had_group = self.queue.has_group(entry.group_id)
        result = self.queue.send(entry.body, entry.group_id, entry.dedup_id)
        if result.duplicate:
            self.counts.dedup_dropped += 1
            return None
        if not had_group and self.faults.delay_groups:
            rng = self.faults.rng["delay"]
            if rng.random() < self.faults.delay_groups:
                self.counts.held_groups += 1
                self.queue.hold_group(entry.group_id, self.clock.now + rng.uniform(30.0, 600.0))
        return result.message_id

    def _pipe_dlq_entry(self, record: dict[str, Any], reason: str) -> dict[str, Any]:
        seq = str((record.get("dynamodb") or {}).get("SequenceNumber", ""))
        return {
            "queue": self.pipe_dlq_name,
            "entity": self.name,
            "kind": "pipe",
            "reason": reason,
            # facts 3.3: metadata only; the record itself must be fetched from the stream.
            "DDBStreamBatchInfo": {
                "startSequenceNumber": seq,
                "endSequenceNumber": seq,
                "batchSize": 1,
                "streamArn": record.get("eventSourceARN", ""),
            },
            "eventID": record.get("eventID"),
        }

    # -- fault hooks ----------------------------------------------------------------------

    def _lose_response(self, records: list[dict[str, Any]]) -> bool:
        p = self.faults.lost_responses
        return bool(p) and self.faults.rng["lost"].random() < p

    def _lose_delete(self, record: dict[str, Any]) -> bool:
        if not self._lose_delete_ids:
            return False
        mid = record["messageId"]
        if mid in self._lose_delete_ids:
            self._lose_delete_ids.discard(mid)
            return True
        return False

    # -- the consumer ---------------------------------------------------------------------

    def step(self) -> bool:
        """One poll; False when nothing was receivable."""
        res = self.poller.poll()
        if res is None:
            return False
        self.clock.advance(INVOCATION_SECONDS)
        self._account(res)
        return True

    def _account(self, res: PollResult) -> None:
        c = self.counts
        c.invocations += 1
        last = self.handler.last
        if res.complete_failure:
            if res.error is not None:
                c.crashes += isinstance(res.error, InjectedCrash)
            elif res.complete_failure == "response lost":
                c.lost_responses += 1
        for mid in res.deleted:
            status = last.get(mid, (APPLIED, ""))[0]
            c.final[status if status in c.final else APPLIED] += 1
        failed = set(res.failed)
        lost = set(res.delete_lost)
        c.lost_deletes += len(lost)
        for r in res.records:
            mid = r["messageId"]
            if mid not in failed and mid not in lost:
                continue
            c.failed_attempts += 1
            msg = self.queue.in_flight_message(r["receiptHandle"])
            if msg is None:
                continue
            outcome: str | None  # the runtime's status; "" when the handler never answered
            outcome, reason = last.get(mid, ("", ""))
            why: str | None
            if res.complete_failure:
                why = res.complete_failure
                if outcome in (FAILED, BLOCKED):
                    why = f"{why}; runtime: {reason}"
            elif mid in lost:
                why = "processed, but the DeleteMessage was lost"
            else:
                why = reason or outcome
            msg.meta["reason"] = why
            msg.meta["entity"] = self.name

    def drain_dlq(self, sink: Callable[[dict[str, Any]], None]) -> None:
        if not self.dlq.size:
            return
        for msg in self.dlq.drain():
            self.counts.dlq += 1
            self._lose_delete_ids.discard(msg.message_id)
            sink(_dlq_entry(self.dlq, msg, self.name))


def _dlq_entry(dlq: FifoQueue, msg: Message, entity: str) -> dict[str, Any]:
    return {
        "queue": dlq.name,
        "entity": entity,
        "kind": "consumer",
        "reason": msg.meta.get("reason", ""),
        "messageId": msg.message_id,
        "attributes": {
            "ApproximateReceiveCount": str(msg.receive_count),
            "SentTimestamp": str(msg.sent_ms),
            "SequenceNumber": msg.sequence_number,
            "MessageGroupId": msg.group_id,
            # facts 5: replaced by the message id when it moved to the FIFO DLQ
            "MessageDeduplicationId": msg.dedup_id,
        },
        "body": msg.body,
        "eventSourceARN": dlq.arn,
    }


@dataclass
class Summary:
    records: int = 0
    unreadable: int = 0  # input that is not UTF-8 or not JSON (told by the reader)
    invalid: int = 0  # JSON values that are not stream records (told by the reader)
    unrouted: int = 0
    entities: dict[str, Counts] = field(default_factory=dict)
    remaining: int = 0
    seconds: float = 0.0
    virtual_seconds: float = 0.0

    @property
    def total(self) -> Counts:
        t = Counts()
        for c in self.entities.values():
            t.add(c)
        return t

    @property
    def ended(self) -> int:
        t = self.total
        return sum(t.final.values()) + t.dlq

    @property
    def dlq(self) -> int:
        """Messages in a FIFO DLQ plus records refused into the Pipe's DLQ."""
        t = self.total
        return t.dlq + t.pipe_dlq

    @property
    def accounted(self) -> bool:
        t = self.total
        return (
            self.unreadable == 0
            and self.invalid == 0
            and self.remaining == 0
            and t.delivered == self.ended
            and t.passed == t.sent + t.pipe_dlq
        )

    def as_dict(self) -> dict[str, Any]:
        t = self.total

        def counts(c: Counts) -> dict[str, Any]:
            d = {k: v for k, v in vars(c).items() if k != "final"}
            d.update(c.final)
            d["delivered"] = c.delivered
            return d

        return {
            "records": self.records,
            "unreadable": self.unreadable,
            "invalid": self.invalid,
            "unrouted": self.unrouted,
            "remaining": self.remaining,
            "accounted": self.accounted,
            "seconds": round(self.seconds, 3),
            "virtual_seconds": round(self.virtual_seconds, 3),
            "total": counts(t),
            "entities": {n: counts(c) for n, c in sorted(self.entities.items())},
        }

    def render(self) -> str:
        t = self.total
        rate = self.records / self.seconds if self.seconds > 0 else 0.0
        lines = [
            f"replay summary ({self.seconds:.1f} s, {rate:,.0f} records/s; {self.virtual_seconds:,.0f} s of virtual time)",
            f"  records read        {self.records:>10,}",
        ]
        if self.unreadable:
            lines.append(f"  unreadable          {self.unreadable:>10,}   (not UTF-8 or not JSON; skipped)")
        if self.invalid:
            lines.append(
                f"  invalid records     {self.invalid:>10,}   (JSON values that are not stream records; skipped)"
            )
        if self.unrouted:
            lines.append(
                f"  for no entity       {self.unrouted:>10,}   (table in eventSourceARN not in the registry)"
            )
        lines += [
            f"  filtered out        {t.filtered:>10,}   (matched no filter pattern; skipped for good)",
            f"  passed the filter   {t.passed:>10,}",
            f"  messages sent       {t.sent + t.resent:>10,}   ({t.resent:,} injected duplicate sends)",
            f"  dedup-dropped       {t.dedup_dropped:>10,}   (SQS FIFO 5-minute deduplication)",
            f"  delivered           {t.delivered:>10,}",
            f"  applied             {t.final[APPLIED]:>10,}",
            f"  duplicates          {t.final[DUPLICATE]:>10,}   (already in the ledger)",
            f"  stale               {t.final[STALE]:>10,}   (an equal or newer version was there)",
            f"  ignored/skipped     {t.final[IGNORED] + t.final[SKIPPED]:>10,}",
            f"  sent to DLQ         {t.dlq:>10,}",
        ]
        if t.pipe_dlq:
            lines.append(f"  to the Pipe's DLQ   {t.pipe_dlq:>10,}   (the SQS target refused the record)")
        lines += [
            f"  invocations         {t.invocations:>10,}",
            f"  failed attempts     {t.failed_attempts:>10,}   (receives not ended by a delete: "
            f"{t.crashes:,} crashes, {t.lost_responses:,} lost responses, {t.lost_deletes:,} lost deletes)",
        ]
        if t.held_groups:
            lines.append(f"  held-back groups    {t.held_groups:>10,}")
        if self.remaining:
            lines.append(f"  still queued        {self.remaining:>10,}")
        if len(self.entities) > 1:
            for name, c in sorted(self.entities.items()):
                lines.append(
                    f"  [{name}] passed {c.passed:,}, delivered {c.delivered:,}, applied {c.final[APPLIED]:,}, "
                    f"duplicates {c.final[DUPLICATE]:,}, stale {c.final[STALE]:,}, DLQ {c.dlq:,}"
                )
        verdict = "yes" if self.accounted else "NO"
        lines.append(
            f"accounted for: {verdict} ({self.ended:,} of {t.delivered:,} delivered messages ended "
            "applied/duplicate/stale/ignored/skipped or in the DLQ"
            + (f"; {self.unreadable:,} unreadable input values" if self.unreadable else "")
            + (f"; {self.invalid:,} invalid records" if self.invalid else "")
            + (f"; {self.remaining:,} still queued" if self.remaining else "")
            + ")"
        )
        return "\n".join(lines)


class Replay:
    def __init__(
        self,
        registry: Registry,
        engine: Engine,
        build: Path,
        *,
        faults: Faults | None = None,
        entity: str | None = None,
        dlq_out: IO[str] | None = None,
        read_ahead: int = 100,
        progress: Callable[[str], None] | None = None,
        progress_every: int = 10_000,
    ) -> None:
        self.registry = registry
        self.raw = registry.raw.get("entities", {})
        if entity is not None and entity not in self.raw:
            raise ReplayError(
                f"entity {entity!r} is not in the registry (entities: {', '.join(sorted(self.raw))})"
            )
        self.engine = engine
        self.build = build
        self.faults = faults or Faults()
        self.forced = entity
        self.dlq_out = dlq_out
        self.read_ahead = max(1, read_ahead)
        self.progress = progress
        self.progress_every = progress_every
        self.clock = VirtualClock(0.0)
        self.handler = _Handler(engine, registry, self.faults)
        self.pipelines: dict[str, EntityPipeline] = {}
        self.by_table: dict[str, list[str]] = {}
        # The Pipe of each entity: its own, or its table's shared one (run once for all of them).
        self.pipe_of: dict[str, str] = {}
        self.entity_of: dict[str, str] = {}
        for name, raw in self.raw.items():
            key = shared_pipe(registry.raw, name) or name
            self.pipe_of[name] = key
            self.entity_of.setdefault(key, name)
            table = (raw.get("source") or {}).get("table")
            if table and key not in self.by_table.get(table, []):
                self.by_table.setdefault(table, []).append(key)
        self.later: list[tuple[float, int, str, SqsEntry]] = []
        self._tie = itertools.count()
        self.summary = Summary()
        self._started = 0.0
        self._first_time = 0.0

    def _sink(self, entry: dict[str, Any]) -> None:
        if self.dlq_out is not None:
            self.dlq_out.write(json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n")

    def _pipeline(self, name: str, record: dict[str, Any]) -> EntityPipeline:
        p = self.pipelines.get(name)
        if p is None:
            region, account = region_account(record) or (DEFAULT_REGION, DEFAULT_ACCOUNT)
            p = EntityPipeline(
                name,
                self.registry.raw,
                self.build,
                self.clock,
                self.handler,
                self.faults,
                region,
                account,
                str(record.get("eventSourceARN", "")),
                entity=self.entity_of.get(name, name),
            )
            self.pipelines[name] = p
            self.summary.entities[name] = p.counts
        return p

    def _route(self, record: dict[str, Any]) -> list[str]:
        if self.forced is not None:
            return [self.pipe_of[self.forced]]
        table = table_of(record)
        return self.by_table.get(table, []) if table else []

    def run(self, records: Iterable[dict[str, Any]]) -> Summary:
        self._started = time.perf_counter()
        s = self.summary
        first = True
        for record in records:
            s.records += 1
            if first:
                created = (record.get("dynamodb") or {}).get("ApproximateCreationDateTime")
                self.clock.advance_to(
                    float(created) if isinstance(created, (int, float)) else 1_700_000_000.0
                )
                self._first_time = self.clock.now
                first = False
            names = self._route(record)
            if not names:
                s.unrouted += 1
            created = (record.get("dynamodb") or {}).get("ApproximateCreationDateTime")
            if isinstance(created, (int, float)) and not isinstance(created, bool):
                # Batches whose window closed before this record was written went out then.
                for p in self.pipelines.values():
                    deadline = p.batch_deadline
                    if deadline is not None and deadline <= created:
                        self.clock.advance_to(deadline)
                        p.flush(self._sink)
                        self._after_send()
                self.clock.advance_to(float(created))  # the virtual clock follows the stream's time
            for name in names:
                p = self._pipeline(name, record)
                if p.offer(record, self._sink):
                    self._after_send()
            if self.progress and s.records % self.progress_every == 0:
                self._report()
        for p in self.pipelines.values():
            p.flush(self._sink)
        self._after_send()
        self._finish()
        s.remaining = sum(p.queue.size for p in self.pipelines.values())
        s.seconds = time.perf_counter() - self._started
        return s

    def _after_send(self) -> None:
        # The batch just sent may have scheduled delayed duplicates: collect them.
        for p in self.pipelines.values():
            for due, entry in p.later:
                heapq.heappush(self.later, (due, next(self._tie), p.name, entry))
            p.later.clear()
        self._send_due()
        for p in self.pipelines.values():
            self._pump(p)

    def _send_due(self) -> None:
        now = self.clock.now
        while self.later and self.later[0][0] <= now:
            _, _, name, entry = heapq.heappop(self.later)
            self.pipelines[name].resend(entry)

    def _pump(self, p: EntityPipeline) -> None:
        """Consume until the reader may go on: the queue is under `read_ahead` messages."""
        while p.queue.size >= self.read_ahead:
            if not p.step():
                t = p.queue.next_change()
                if t is None:
                    break
                self.clock.advance_to(t)
            p.drain_dlq(self._sink)
        p.drain_dlq(self._sink)

    def _finish(self) -> None:
        """End of input: deliver everything, advancing the clock whenever nothing is visible."""
        while True:
            progressed = False
            for p in self.pipelines.values():
                while p.step():
                    progressed = True
                    p.drain_dlq(self._sink)
                p.drain_dlq(self._sink)
            self._send_due()
            if progressed:
                continue
            times = [t for p in self.pipelines.values() if (t := p.queue.next_change()) is not None]
            if self.later:
                times.append(self.later[0][0])
            if not times:
                break
            self.clock.advance_to(min(times))
            self._send_due()
        self.summary.virtual_seconds = self.clock.now - self._first_time

    def _report(self) -> None:
        assert self.progress is not None
        s = self.summary
        t = s.total
        elapsed = time.perf_counter() - self._started
        self.progress(
            f"replay: {s.records:,} records read, {t.passed:,} passed the filter, {t.delivered:,} delivered, "
            f"{sum(t.final.values()):,} done, {t.dlq:,} in DLQ ({elapsed:.1f} s, "
            f"{s.records / elapsed if elapsed else 0:,.0f} records/s)"
        )


def stderr_progress(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
