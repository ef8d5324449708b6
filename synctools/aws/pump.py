"""`ddb-sql-sync pump`: a DynamoDB stream into the entity's FIFO queue, as the Pipe does.

Per shard (parents drained before their children, synctools.aws.streams), GetRecords pages are
read in order; each page's records go through the filter and the template and out in
SendMessageBatch calls (synctools.aws.pipe). After every batch SQS accepted, the checkpoint
advances to the last record that is handled (sent, filtered out, or pointed at from the Pipe's
DLQ) and is written atomically; nothing ahead of a record that was not sent is ever recorded.
A restart therefore resumes without skipping, re-sending at most the batch in flight.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

from runtime.aws_limits import DYNAMODB_GET_RECORDS_MAX
from synctools import awsdocs
from synctools.aws.checkpoint import Checkpoint
from synctools.aws.pipe import Outgoing, Refused, Sender, SendError, pointer_body
from synctools.aws.session import INCOMPLETE, ToolError, error_code
from synctools.aws.streams import (
    Shard,
    describe_shards,
    normalize,
    ready_shards,
    sequence_of,
    shard_iterator,
)
from synctools.local.build import Pipe
from synctools.local.transform import TargetError

DESCRIBE_EVERY_SECONDS = 10.0  # --follow: how often new shards are looked for
EMPTY_PAGE_PAUSE = 0.2  # between empty pages of a closed shard (a Pipe polls 4 times a second: facts 3)


@dataclass
class PumpStats:
    read: int = 0
    filtered: int = 0
    sent: int = 0
    batches: int = 0
    retried: int = 0
    refused: int = 0  # to the Pipe's DLQ
    shards_drained: int = 0

    def render(self, entity: str) -> str:
        return (
            f"pump {entity}: {self.read} records read, {self.filtered} filtered out, {self.sent} sent in "
            f"{self.batches} batches ({self.retried} entries retried), {self.refused} to the Pipe's DLQ, "
            f"{self.shards_drained} shards drained"
        )


class Pump:
    def __init__(
        self,
        *,
        streams: Any,
        sender: Sender,
        pipe: Pipe,
        stream_arn: str,
        checkpoint: Checkpoint,
        start: str = "TRIM_HORIZON",
        dry_run: bool = False,
        max_records: int | None = None,
        pipe_dlq: Callable[[], tuple[Any, str] | None] | None = None,
        out: TextIO | None = None,
        log: Callable[[str], None] | None = None,
        stop: Callable[[], bool] = lambda: False,
    ) -> None:
        if start not in ("TRIM_HORIZON", "LATEST"):
            raise ToolError(
                f"--from {start}: TRIM_HORIZON or LATEST (a DynamoDB stream source has no AT_TIMESTAMP: "
                f"see {awsdocs.PIPES_DYNAMODB_PARAMETERS})"
            )
        self.streams = streams
        self.sender = sender
        self.pipe = pipe
        self.stream_arn = stream_arn
        self.checkpoint = checkpoint
        self.start = start
        self.dry_run = dry_run
        self.max_records = max_records
        self.pipe_dlq = pipe_dlq or (lambda: None)
        self.out = out
        self.log = log or (lambda line: None)
        self.stop = stop
        self.stats = PumpStats()
        self.iterators: dict[str, str] = {}
        # In memory, so --dry-run walks the stream like a real run without writing anything.
        self.positions: dict[str, str | None] = {}
        self.drained: set[str] = set()
        self.shards: list[Shard] = []
        self._described = 0.0

    # -- positions ---------------------------------------------------------------------------

    def _position(self, shard: str) -> str | None:
        if shard not in self.positions:
            self.positions[shard] = self.checkpoint.position(self.pipe.name, self.stream_arn, shard)
        return self.positions[shard]

    def _advance(self, shard: str, sequence: str | None) -> None:
        if sequence is None:
            return
        current = self._position(shard)
        if current is not None and int(sequence) <= int(current):
            return
        self.positions[shard] = sequence
        if not self.dry_run:
            self.checkpoint.advance(self.pipe.name, self.stream_arn, shard, sequence)
            self.checkpoint.save()

    def _end(self, shard: Shard) -> None:
        self.drained.add(shard.shard_id)
        self.stats.shards_drained += 1
        self.log(f"pump {self.pipe.name}: shard {shard.shard_id} is closed and drained")
        if not self.dry_run:
            self.checkpoint.end(self.pipe.name, self.stream_arn, shard.shard_id)
            self.checkpoint.save()

    @property
    def limit_reached(self) -> bool:
        return self.max_records is not None and self.stats.read >= self.max_records

    # -- the loop -----------------------------------------------------------------------------

    def describe(self) -> list[Shard]:
        self.shards = describe_shards(self.streams, self.stream_arn)
        self._described = time.monotonic()
        for s in self.shards:
            if self.checkpoint.ended(self.pipe.name, self.stream_arn, s.shard_id):
                self.drained.add(s.shard_id)
        return self.shards

    def run_once(self) -> PumpStats:
        """Every ready shard until it is drained (closed) or caught up (open), children after
        their parents."""
        self.describe()
        while not self.stop() and not self.limit_reached:
            if not self.pass_(follow=False):
                break
        return self.stats

    def pass_(self, *, follow: bool) -> bool:
        """One round over the ready shards; True when a shard was drained (its children may
        now be ready, so another round is due at once)."""
        if follow and time.monotonic() - self._described >= DESCRIBE_EVERY_SECONDS:
            self.describe()
        progressed = False
        for shard in ready_shards(self.shards, self.drained):
            if self.stop() or self.limit_reached:
                break
            if self._read_shard(shard):
                self._end(shard)
                progressed = True
        return progressed

    def _iterator(self, shard: Shard) -> str | None:
        pos = self._position(shard.shard_id)
        if pos is not None:
            kind, seq = "AFTER_SEQUENCE_NUMBER", pos
        else:
            present = {s.shard_id for s in self.shards}
            # A child of a shard we read starts at its beginning: LATEST would skip records of
            # items whose earlier changes we sent (the Pipe's starting position applies once).
            known_parent = shard.parent_id is not None and (
                shard.parent_id in present or shard.parent_id in self.drained
            )
            kind, seq = ("TRIM_HORIZON" if known_parent else self.start), None
        return shard_iterator(self.streams, self.stream_arn, shard.shard_id, kind, seq)

    def _read_shard(self, shard: Shard) -> bool:
        """Read one shard until it ends (True) or is caught up (False)."""
        sid = shard.shard_id
        it = self.iterators.pop(sid, None) or self._iterator(shard)
        while it:
            if self.stop() or self.limit_reached:
                self.iterators[sid] = it
                return False
            limit = DYNAMODB_GET_RECORDS_MAX
            if self.max_records is not None:
                limit = max(1, min(limit, self.max_records - self.stats.read))
            try:
                page = self.streams.get_records(ShardIterator=it, Limit=limit)
            except Exception as exc:
                code = error_code(exc)
                if code == "ExpiredIteratorException":  # iterators live 15 minutes
                    it = self._iterator(shard)
                    continue
                if code == "TrimmedDataAccessException":
                    raise ToolError(
                        f"shard {sid}: the records after the checkpoint were trimmed (24 h retention) "
                        "and are lost to this pump",
                        INCOMPLETE,
                    ) from None
                raise
            records = page.get("Records") or []
            nxt = page.get("NextShardIterator")
            if records and self._page(shard, records) < len(records):
                return False  # cut by --max-records: the next run resumes from the checkpoint
            if nxt is None:
                return True  # the shard is closed and read to its end
            it = nxt
            if not records:
                if not shard.closed:
                    self.iterators[sid] = it  # caught up with an open shard
                    return False
                # A closed shard may answer empty pages before its end: keep going, gently.
                time.sleep(EMPTY_PAGE_PAUSE)
        return True

    def _page(self, shard: Shard, records: list[dict[str, Any]]) -> int:
        """Send one GetRecords page; returns how many of its records were handled."""
        sid = shard.shard_id
        done = 0
        batch: list[Outgoing] = []
        groups: set[str] = set()
        last_seen: str | None = None

        def flush() -> None:
            nonlocal batch, groups
            if batch:
                self._send(shard, batch)
                batch, groups = [], set()
            self._advance(sid, last_seen)

        for raw in records:
            self.stats.read += 1
            record = normalize(raw, self.stream_arn)
            seq = sequence_of(record)
            if not self.pipe.filters.matches(record):
                self.stats.filtered += 1  # skipped for good (facts 2.6)
                last_seen = seq
            else:
                try:
                    entry = self.pipe.entry(record)
                except TargetError as exc:
                    flush()
                    self._refuse(shard, [Refused(record, str(exc))])
                    last_seen = seq
                    flush()
                else:
                    if len(batch) >= self.pipe.batch_size or entry.group_id in groups:
                        flush()
                    batch.append(Outgoing(record, entry, seq))
                    groups.add(entry.group_id)
                    last_seen = seq
            done += 1
            if self.limit_reached:
                break
        flush()
        return done

    def _send(self, shard: Shard, batch: list[Outgoing]) -> None:
        self.stats.batches += 1
        if self.dry_run:
            for item in batch:
                self._print(
                    {
                        "action": "send",
                        "entity": self.pipe.name,
                        "queue": self.pipe.queue,
                        "shardId": shard.shard_id,
                        "sequenceNumber": item.sequence,
                        "MessageGroupId": item.entry.group_id,
                        "MessageDeduplicationId": item.entry.dedup_id,
                        "MessageBody": item.entry.body,
                    }
                )
            self.stats.sent += len(batch)
            return
        result = self.sender.send(batch)
        self.stats.sent += len(result.sent)
        self.stats.retried += result.retried
        if result.refused:
            self._refuse(shard, result.refused)
        self.log(
            f"pump {self.pipe.name}: sent {len(result.sent)} to {self.pipe.queue} "
            f"(shard {shard.shard_id}, up to {batch[-1].sequence})"
        )

    def _refuse(self, shard: Shard, refused: list[Refused]) -> None:
        """Records the SQS target will never take go to the Pipe's DLQ as stream positions
        (AWS: eb-pipes-dynamodb), one message each, so each can be resolved and redriven on its own."""
        self.stats.refused += len(refused)
        for r in refused:
            seq = sequence_of(r.record)
            if self.dry_run:
                self._print(
                    {
                        "action": "to-pipe-dlq",
                        "entity": self.pipe.name,
                        "queue": self.pipe.pipe_dlq,
                        "shardId": shard.shard_id,
                        "sequenceNumber": seq,
                        "reason": r.reason,
                    }
                )
                continue
            target = self.pipe_dlq()
            if target is None:
                raise SendError(
                    f"record {seq} of shard {shard.shard_id} is refused by SQS ({r.reason}) and the "
                    f"entity {self.pipe.name!r} has no Pipe DLQ queue to point at it; stopping before it"
                )
            sqs, url = target
            sqs.send_message(
                QueueUrl=url,
                MessageBody=pointer_body([r.record], shard.shard_id, self.stream_arn, r.reason),
            )
            self.log(
                f"pump {self.pipe.name}: record {seq} refused ({r.reason}); its position is in the Pipe's DLQ"
            )

    def _print(self, doc: dict[str, Any]) -> None:
        if self.out is not None:
            self.out.write(json.dumps(doc, sort_keys=True) + "\n")
            self.out.flush()
