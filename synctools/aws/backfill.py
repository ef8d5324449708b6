"""`ddb-sql-sync backfill ENTITY`: every current item of the entity's table, as the stream
INSERT record of that item would be, through the Pipe's filter and input template, into the
database (runtime.apply.apply_batch) or the entity's FIFO queue (for the deployed Lambda).

The version rule (docs/aws-tools.md, "Backfill"): a synthesized record carries
- for SequenceNumber versions, the WATERMARK W: the highest SequenceNumber in the stream when
  the backfill starts (before the first item is read), or for an export, the highest of the
  records created before the export's exportTime. Every stream record written after an item
  was read has a higher sequence number, so it wins over the backfilled row in either order
  (the runtime's guard `current >= version` makes the older one stale; a delete leaves a
  tombstone at its own, higher, sequence number); every change applied before W loses to it.
- for item-attribute versions, the item's own attribute, as the stream record would.
The eventID is a hash of the entity and the item's image: the same item state gives the same
id, so a re-run (or the same state arriving twice) is a duplicate in the ledger.

Sources are split into units, each with a checkpoint entry (synctools.aws.checkpoint): a Scan
segment (resumed from its LastEvaluatedKey) or an export data file (resumed at its line).
A unit's position is written after its page is applied or sent, never before.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, cast

from runtime.kinds import (
    APPLIED,
    BLOCKED,
    DO_FILL,
    DO_INSERT,
    DO_UPDATE,
    DO_UPSERT,
    DUPLICATE,
    FAILED,
    IF_MISSING_IGNORE,
    IF_MISSING_UPSERT,
    STALE,
    TRANSIENT,
    VERSION_SEQUENCE,
)
from runtime.registry import EntitySpec, Registry
from runtime.wire import SqsAttributes, SqsEventRecord
from synctools.aws.checkpoint import Checkpoint
from synctools.aws.export import DataFile, Export
from synctools.aws.pipe import Outgoing, Sender
from synctools.aws.pipe import batches as fifo_batches
from synctools.aws.session import INCOMPLETE, ToolError, error_code
from synctools.aws.streams import describe_shards, normalize, shard_iterator
from synctools.local.build import Pipe
from synctools.local.transform import TargetError, compact_encoder

THROTTLES = frozenset(
    {"ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded"}
)
EVENT_ID_PREFIX = "backfill-"
PROGRESS_EVERY_S = 2.0

# -- the synthesized stream record ------------------------------------------------------------


def _canonical(value: Any) -> Any:
    """An attribute value with its set members sorted (a set has no order; its JSON does)."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k in ("SS", "NS", "BS") and isinstance(v, list):
                out[k] = sorted(str(x) for x in v)
            else:
                out[k] = _canonical(v)
        return out
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    return value


def _image_text(image: dict[str, Any]) -> tuple[str, bool]:
    """The image as canonical JSON text (keys sorted, set members sorted, bytes as hex), and
    whether it holds bytes. Fast path: plain JSON, unless a set or bytes make it differ."""
    try:
        text = _DUMPS(image)
    except TypeError:  # bytes (B, BS) from a Scan through boto3
        return _DUMPS(_canonical(image)), True
    if '"SS"' in text or '"NS"' in text or '"BS"' in text:
        return _DUMPS(_canonical(image)), False
    return text, False


# The canonical image text of an event id: keys sorted, compact (transform.compact_encoder).
_DUMPS = compact_encoder(sort_keys=True)


def _hash(entity: str, salt: str, text: str) -> str:
    return EVENT_ID_PREFIX + hashlib.blake2b(f"{entity}\0{salt}\0{text}".encode(), digest_size=16).hexdigest()


STAND_IN_EVENT_ID = EVENT_ID_PREFIX + "0" * 32  # Synthesizer.stand_in_ids


def event_id(entity: str, image: dict[str, Any], salt: str = "") -> str:
    """A synthetic eventID, stable per item state: `backfill-` and 32 hex digits (a stream
    eventID has 32 hex digits; the prefix keeps them apart in the ledger). `salt` tells apart
    writes of another kind for the same state (--columns: the columns chosen)."""
    return _hash(entity, salt, _image_text(image)[0])


@dataclass(frozen=True)
class Synthesizer:
    """Builds the stream INSERT record of an item, in the shape Pipes hands to its filter and
    template (synctools.aws.streams.normalize)."""

    entity: str
    keys: tuple[str, ...]  # partition key, then sort key
    view_type: str
    sequence: str
    region: str = ""
    stream_arn: str = ""
    salt: str = ""
    # Items of JSON (an export: no bytes) whose eventID and SizeBytes nothing but the ledger
    # reads (reconcile's comparison: synctools.aws.reconcile.ids_read_only_as_event_id): a fixed id of the same shape
    # stands in, and the item is not written out as canonical JSON and hashed.
    stand_in_ids: bool = False

    @classmethod
    def of(
        cls,
        entity: str,
        entity_raw: dict[str, Any],
        sequence: str,
        region: str = "",
        stream_arn: str = "",
        salt: str = "",
    ) -> Synthesizer:
        src = entity_raw["source"]
        keys = [src["partition_key"]["name"]]
        if src.get("sort_key"):
            keys.append(src["sort_key"]["name"])
        return cls(
            entity,
            tuple(keys),
            str(src.get("stream_view_type") or "NEW_AND_OLD_IMAGES"),
            sequence,
            region,
            stream_arn,
            salt,
        )

    def record(self, item: dict[str, Any], created: int) -> dict[str, Any]:
        try:
            keys = {k: item[k] for k in self.keys}
        except KeyError:
            missing = [k for k in self.keys if k not in item]
            raise ToolError(
                f"an item without its key attribute(s) {', '.join(missing)}: {str(item)[:200]}"
            ) from None
        if self.stand_in_ids:
            event_id, size, has_bytes = STAND_IN_EVENT_ID, 0, False
        else:
            text, has_bytes = _image_text(item)
            event_id, size = _hash(self.entity, self.salt, text), len(text)
        ddb: dict[str, Any] = {
            "ApproximateCreationDateTime": created,
            "Keys": keys,
            "SequenceNumber": self.sequence,
            "SizeBytes": size,
            "StreamViewType": self.view_type,
        }
        if self.view_type in ("NEW_IMAGE", "NEW_AND_OLD_IMAGES"):
            ddb["NewImage"] = item  # an INSERT has no OldImage
        record = {
            "eventID": event_id,
            "eventName": "INSERT",
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": self.region,
            "dynamodb": ddb,
            "eventSourceARN": self.stream_arn,
        }
        # Bytes (B, BS, from a Scan through boto3) as the stream's base64 text; only then is the
        # record copied (an export's items are JSON already).
        return normalize(record, self.stream_arn) if has_bytes else record


# -- the watermark --------------------------------------------------------------------------


def uses_sequence_versions(entity: EntitySpec) -> bool:
    return any(t.version is not None and t.version.kind is VERSION_SEQUENCE for t in entity.tables.values())


@dataclass
class Watermark:
    sequence: str  # "0" when the stream holds no record (before `before`)
    records: int  # stream records looked at
    oldest_created: float | None  # creation time of the oldest record seen (epoch seconds)


def stream_watermark(streams: Any, stream_arn: str, *, before: float | None = None) -> Watermark:
    """The highest SequenceNumber of the stream's records (only those created before `before`,
    epoch seconds, when given): every shard read from TRIM_HORIZON to its end (a closed shard)
    or to its first empty page (an open one: caught up)."""
    best = 0
    seen = 0
    oldest: float | None = None
    for shard in describe_shards(streams, stream_arn):
        it = shard_iterator(streams, stream_arn, shard.shard_id, "TRIM_HORIZON")
        while it:
            page = streams.get_records(ShardIterator=it, Limit=1000)
            records = page.get("Records") or []
            for r in records:
                d = r.get("dynamodb") or {}
                created = d.get("ApproximateCreationDateTime")
                ts = float(created.timestamp()) if isinstance(created, datetime) else float(created or 0)
                seen += 1
                oldest = ts if oldest is None else min(oldest, ts)
                if before is not None and ts >= before:
                    continue
                best = max(best, int(d.get("SequenceNumber") or 0))
            it = page.get("NextShardIterator")
            if not records and not shard.closed:
                break
    return Watermark(str(best), seen, oldest)


# -- rate limit and throttling ------------------------------------------------------------


class RateLimit:
    """At most `rate` items a second over the whole run (all segments together)."""

    def __init__(
        self,
        rate: float | None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = rate
        self.clock = clock
        self.sleep = sleep
        self._next = 0.0
        self._lock = threading.Lock()

    def take(self, n: int) -> None:
        if not self.rate or n <= 0:
            return
        with self._lock:
            now = self.clock()
            start = max(self._next, now)
            self._next = start + n / self.rate
        if start > now:
            self.sleep(start - now)


@dataclass
class Backoff:
    """Exponential backoff on DynamoDB throttling. The Scan client runs with botocore's retries
    off (one attempt): its standard mode gives up after 5 attempts within seconds, while a
    backfill should wait a throttled table out for as long as --max-backoff allows, and count
    the throttles for its summary."""

    base: float = 0.1
    cap: float = 20.0
    attempts: int = 12
    sleep: Callable[[float], None] = time.sleep
    throttled: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def call(self, fn: Callable[..., Any], **kwargs: Any) -> Any:
        attempt = 0
        while True:
            try:
                return fn(**kwargs)
            except Exception as exc:
                if error_code(exc) not in THROTTLES:
                    raise
                attempt += 1
                with self._lock:
                    self.throttled += 1
                if attempt >= self.attempts:
                    raise ToolError(
                        f"DynamoDB still throttling after {attempt} attempts ({error_code(exc)}); "
                        "the checkpoint keeps what was done: run again, with a lower --rate",
                        INCOMPLETE,
                    ) from None
                self.sleep(min(self.cap, self.base * 2 ** (attempt - 1)))


# -- sources -------------------------------------------------------------------------------

Page = tuple[list[dict[str, Any]], Any]  # (items, position after them; None: the unit is done)


class Source(Protocol):
    ident: str
    estimate: int | None
    created: int  # ApproximateCreationDateTime of the synthesized records (epoch seconds)

    def units(self) -> list[str]: ...

    def pages(self, unit: str, position: Any) -> Iterator[Page]: ...


class ScanSource:
    """A parallel Scan: unit `segment-I-of-N` is Scan Segment I of TotalSegments N."""

    def __init__(
        self,
        ddb: Any,
        table: str,
        *,
        segments: int = 1,
        consistent: bool = False,
        page_size: int = 500,
        backoff: Backoff | None = None,
    ) -> None:
        self.ddb = ddb
        self.table = table
        self.segments = segments
        self.consistent = consistent
        self.page_size = page_size
        self.backoff = backoff or Backoff()
        self.ident = f"scan:{table}:{segments}"
        self.estimate: int | None = None
        self.created = int(time.time())

    def describe(self) -> None:
        try:
            desc = self.ddb.describe_table(TableName=self.table)["Table"]
        except Exception as exc:
            if error_code(exc) == "ResourceNotFoundException":
                raise ToolError(f"DynamoDB table {self.table!r} does not exist") from None
            raise
        count = desc.get("ItemCount")  # updated about every six hours: an estimate
        self.estimate = int(count) if isinstance(count, int) and count > 0 else None

    def units(self) -> list[str]:
        return [f"segment-{i}-of-{self.segments}" for i in range(self.segments)]

    def pages(self, unit: str, position: Any) -> Iterator[Page]:
        segment = int(unit.split("-")[1])
        start = position
        while True:
            kwargs: dict[str, Any] = {
                "TableName": self.table,
                "Limit": self.page_size,
                "ConsistentRead": self.consistent,
            }
            if self.segments > 1:
                kwargs.update(Segment=segment, TotalSegments=self.segments)
            if start:
                kwargs["ExclusiveStartKey"] = start
            self.created = int(time.time())
            page = self.backoff.call(self.ddb.scan, **kwargs)
            start = page.get("LastEvaluatedKey")
            yield list(page.get("Items") or []), start
            if not start:
                return


PIECE = "#lines="  # ExportSource.pieces: a data file's key, then its lines "A-B"


class ExportSource:
    """A DynamoDB export: unit = a data file; a position = the lines done."""

    def __init__(self, export: Export, page_size: int = 500) -> None:
        self.export = export
        self.page_size = page_size
        self.ident = f"export:{export.ident}"
        self.estimate = export.item_count
        t = export.export_time
        self.created = int(t) if t is not None else int(time.time())
        self._files = {f.key: f for f in export.files}

    def units(self) -> list[str]:
        return list(self._files)

    def pieces(self, tail: int, parts: int = 4, smallest: int = 1000) -> list[str]:
        """The units, the last `tail` data files each cut into `parts` pieces of its lines
        (`KEY#lines=A-B`, the last one `KEY#lines=A-` to the file's end, whatever the
        manifest's itemCount says), so that processes taking units in this order end about
        together: a process freed early takes a small piece, not a whole file. For a pass
        that keeps no checkpoint (reconcile); a backfill's units stay whole files. A file
        whose itemCount is unknown, or under `parts * smallest`, stays whole."""
        keys = list(self._files)
        out: list[str] = []
        for i, key in enumerate(keys):
            n = self._files[key].item_count
            if i < len(keys) - tail or not n or n < parts * smallest:
                out.append(key)
                continue
            starts = [n * j // parts for j in range(parts)]
            ends = [str(b) for b in starts[1:]] + [""]
            out += [f"{key}{PIECE}{a}-{b}" for a, b in zip(starts, ends, strict=True)]
        return out

    def _unit(self, unit: str) -> tuple[DataFile, int, int | None]:
        """A unit's data file and its lines [start, stop) (stop None: to the end)."""
        f = self._files.get(unit)
        if f is not None:
            return f, 0, None
        key, _, lines = unit.rpartition(PIECE)
        start, _, stop = lines.partition("-")
        return self._files[key], int(start), int(stop) if stop else None

    def pages(self, unit: str, position: Any) -> Iterator[Page]:
        f, start, stop = self._unit(unit)
        done = int(position or 0)
        chunk: list[dict[str, Any]] = []
        for item in self.export.items(f, skip=start + done, stop=stop):
            chunk.append(item)
            if len(chunk) >= self.page_size:
                done += len(chunk)
                yield chunk, done
                chunk = []
        yield chunk, None


def open_source(
    aws: Any,
    table: str,
    *,
    export_dir: str | None,
    export: str | None,
    segments: int,
    consistent: bool,
    page_size: int,
    scan_page_size: int,
) -> Source:
    """The items to read: an export's files in a folder or in S3, else a parallel Scan of
    `table` (described first, so a missing table fails before anything is read)."""
    from synctools.aws.export import open_dir, open_s3

    if export_dir:
        return ExportSource(open_dir(export_dir), page_size=page_size)
    if export:
        return ExportSource(open_s3(aws.client("s3"), export), page_size=page_size)
    scan = ScanSource(
        aws.client("dynamodb", retries=1),
        table,
        segments=segments,
        consistent=consistent,
        page_size=scan_page_size,
        backoff=Backoff(),
    )
    scan.describe()
    return scan


# -- sinks --------------------------------------------------------------------------------


@dataclass
class Counts:
    read: int = 0
    filtered: int = 0
    refused: int = 0  # the template or SQS refused the record (over the size limit, bad id)
    sent: int = 0  # to the queue
    applied: int = 0
    stale: int = 0
    duplicate: int = 0
    skipped: int = 0  # the runtime had nothing to do (skipped / ignored)
    failed: int = 0
    retried: int = 0
    reasons: list[str] = field(default_factory=list)

    def note(self, why: str) -> None:
        if len(self.reasons) < 20:
            self.reasons.append(why)


class Sink(Protocol):
    def send(self, items: list[Outgoing], counts: Counts) -> None: ...


class QueueSink:
    """SendMessageBatch of at most 10 entries, ids as the Pipe's routing gives them."""

    def __init__(self, sender: Sender, batch_size: int = 10) -> None:
        self.sender = sender
        self.batch_size = batch_size

    def send(self, items: list[Outgoing], counts: Counts) -> None:
        for batch in fifo_batches(items, self.batch_size):
            result = self.sender.send(batch)
            counts.sent += len(result.sent)
            counts.retried += result.retried
            for r in result.refused:
                counts.refused += 1
                counts.note(f"SQS refused {r.record.get('eventID')}: {r.reason}")


class DbSink:
    """runtime.apply.apply_batch on batches of up to `batch_size` (no FIFO limit applies): the
    records are what the Lambda would receive from the entity's queue."""

    def __init__(
        self,
        engine: Any,
        registry: Registry,
        queue_arn: str,
        region: str,
        *,
        batch_size: int = 500,
        attempts: int = 5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.engine = engine
        self.registry = registry
        self.queue_arn = queue_arn
        self.region = region
        self.batch_size = batch_size
        self.attempts = attempts
        self.sleep = sleep
        self._n = 0

    def _record(self, o: Outgoing) -> SqsEventRecord:
        self._n += 1
        now = str(int(time.time() * 1000))
        attrs = cast(
            SqsAttributes,
            {
                "ApproximateReceiveCount": "1",
                "SentTimestamp": now,
                "SequenceNumber": str(self._n),
                "MessageGroupId": o.entry.group_id,
                "SenderId": "backfill",
                "MessageDeduplicationId": o.entry.dedup_id,
                "ApproximateFirstReceiveTimestamp": now,
            },
        )
        return {
            "messageId": f"backfill-{self._n}",
            "receiptHandle": "",
            "body": o.entry.body,
            "attributes": attrs,
            "messageAttributes": {},
            "md5OfBody": "",
            "eventSource": "aws:sqs",
            "eventSourceARN": self.queue_arn,
            "awsRegion": self.region,
        }

    def send(self, items: list[Outgoing], counts: Counts) -> None:
        from runtime.apply import apply_batch

        for i in range(0, len(items), self.batch_size):
            pending = [self._record(o) for o in items[i : i + self.batch_size]]
            attempt = 0
            while pending:
                attempt += 1
                result = apply_batch(pending, self.engine, self.registry)
                again: list[SqsEventRecord] = []
                for rec, out in zip(pending, result.outcomes, strict=True):
                    status = out.status
                    if status is FAILED and out.kind is not TRANSIENT:
                        counts.failed += 1
                        counts.note(f"{out.event_id or rec['messageId']}: {out.reason}")
                    elif status is FAILED or status is BLOCKED:
                        again.append(rec)
                    else:
                        if status is APPLIED:
                            counts.applied += 1
                        elif status is STALE:
                            counts.stale += 1
                        elif status is DUPLICATE:
                            counts.duplicate += 1
                        else:
                            counts.skipped += 1
                if again and attempt >= self.attempts:
                    reasons = {o.reason for o in result.outcomes if o.reported_failed}
                    raise ToolError(
                        f"{len(again)} record(s) still failing after {attempt} attempts "
                        f"({'; '.join(sorted(reasons))[:500]}); the checkpoint keeps what was done",
                        INCOMPLETE,
                    )
                if again:
                    counts.retried += len(again)
                    self.sleep(min(10.0, 0.2 * 2 ** (attempt - 1)))
                pending = again


def columns_registry(registry: Registry, entity: str, columns: Sequence[str]) -> Registry:
    """The registry with the entity's writing actions narrowed to a fill of `columns` only: an
    UPDATE of a row that is there and no newer than the watermark, which leaves the row's
    version as it is, so a change older than the watermark still on its way (in the queue)
    applies after it, as it would have (runtime.statements: fill). Deletes are dropped: a
    backfill record is an INSERT. Raises ToolError for a column no table of the entity has."""
    import dataclasses

    spec = registry.entities[entity]
    known = {c for t in spec.tables.values() for c in t.columns}
    unknown = [c for c in columns if c not in known]
    if unknown:
        raise ToolError(
            f"--columns {', '.join(unknown)}: not a column of {entity}'s tables ({', '.join(sorted(known))})"
        )
    rules = {}
    for event_type, actions in spec.rules.items():
        narrowed = []
        for act in actions:
            table = spec.tables[act.table]
            if act.action not in (DO_INSERT, DO_UPSERT, DO_UPDATE) or table.append_only or table.each:
                # a delete or soft delete (a backfill record is an INSERT); a log's rows are
                # events; a child table's rows are written as a whole set, never filled
                continue
            chosen = tuple(c for c in columns if c in table.columns and c not in table.key)
            if act.action is DO_UPDATE and act.if_missing is not IF_MISSING_UPSERT:
                chosen = tuple(c for c in chosen if c in act.columns)  # what the rule itself writes
            if chosen:
                narrowed.append(
                    dataclasses.replace(act, action=DO_FILL, columns=chosen, if_missing=IF_MISSING_IGNORE)
                )
        rules[event_type] = tuple(narrowed)
    entities = dict(registry.entities)
    entities[entity] = dataclasses.replace(spec, rules=rules)
    return dataclasses.replace(registry, entities=entities, cache={})


# -- the run ------------------------------------------------------------------------------


class BackfillCheckpoint:
    """Per unit (scan segment, export file): items done, where to resume, whether it ended; and
    the watermark of the run that started it. Kept in the pump's checkpoint file format."""

    def __init__(self, checkpoint: Checkpoint, entity: str, source: str) -> None:
        self.cp = checkpoint
        self.entity = entity
        self.source = source
        self._lock = threading.Lock()

    def _pos(self, unit: str) -> dict[str, Any]:
        shards = self.cp.data["entities"].setdefault(self.entity, {}).setdefault(self.source, {})
        pos: dict[str, Any] = shards.setdefault(unit, {"sequenceNumber": None, "ended": False})
        return pos

    def meta(self) -> dict[str, Any]:
        backfill: dict[str, Any] = self.cp.data.setdefault("backfill", {})
        m: dict[str, Any] = backfill.setdefault(f"{self.entity} {self.source}", {})
        return m

    def started(self) -> bool:
        return bool(self.cp.data["entities"].get(self.entity, {}).get(self.source))

    def ended(self, unit: str) -> bool:
        return self.cp.ended(self.entity, self.source, unit)

    def resume(self, unit: str) -> tuple[int, Any]:
        pos = self.cp.data["entities"].get(self.entity, {}).get(self.source, {}).get(unit) or {}
        return int(pos.get("sequenceNumber") or 0), pos.get("resume")

    def advance(self, unit: str, done: int, position: Any, *, save: bool) -> None:
        with self._lock:
            self.cp.advance(self.entity, self.source, unit, str(done))
            pos = self._pos(unit)
            if position is None:
                pos.pop("resume", None)
                self.cp.end(self.entity, self.source, unit)
            else:
                pos["resume"] = position
            self.cp.dirty = True
            if save:
                self.cp.save()


@dataclass
class Summary:
    entity: str
    source: str
    to: str
    watermark: str
    units: int = 0
    units_skipped: int = 0  # ended in the checkpoint before this run
    units_done: int = 0
    throttled: int = 0
    seconds: float = 0.0
    complete: bool = False
    dry_run: bool = False
    counts: Counts = field(default_factory=Counts)

    def as_dict(self) -> dict[str, Any]:
        c = self.counts
        return {
            "entity": self.entity,
            "source": self.source,
            "to": self.to,
            "watermark": self.watermark,
            "units": self.units,
            "units_skipped": self.units_skipped,
            "units_done": self.units_done,
            "complete": self.complete,
            "dry_run": self.dry_run,
            "read": c.read,
            "filtered": c.filtered,
            "refused": c.refused,
            "sent": c.sent,
            "applied": c.applied,
            "stale": c.stale,
            "duplicate": c.duplicate,
            "skipped": c.skipped,
            "failed": c.failed,
            "retried": c.retried,
            "throttled": self.throttled,
            "seconds": round(self.seconds, 3),
            "items_per_second": round(c.read / self.seconds, 1) if self.seconds > 0 else None,
            "problems": list(c.reasons),
        }

    def render(self) -> str:
        c = self.counts
        done = "complete" if self.complete else "NOT complete (run again to resume)"
        where = (
            f"{c.sent} sent to the queue"
            if self.to == "queue"
            else f"{c.applied} applied, {c.stale} stale, {c.duplicate} duplicate, {c.skipped} skipped"
        )
        rate = f"{c.read / self.seconds:,.0f} items/s" if self.seconds > 0 else "-"
        return (
            f"backfill {self.entity}: {done}: {c.read} items read, {c.filtered} filtered out, {where}, "
            f"{c.refused} refused, {c.failed} failed; {self.units_done}/{self.units} units done "
            f"({self.units_skipped} already done before), {self.throttled} throttled, "
            f"{self.seconds:.1f} s, {rate}; watermark {self.watermark}"
            + (" (dry run)" if self.dry_run else "")
        )


@dataclass
class UnitRunner:
    """One unit's pages: each item's synthesized record through the Pipe's filter and template,
    then into the sink; yields the counts of each page and the position after it, once the
    page is applied or sent (None: the unit is done)."""

    pipe: Pipe
    synth: Synthesizer
    source: Source
    sink: Sink | None  # None: --dry-run
    rate: RateLimit = field(default_factory=lambda: RateLimit(None))
    sink_lock: Any = field(default_factory=threading.Lock)

    def pages(self, unit: str, position: Any, halted: Callable[[], bool]) -> Iterator[tuple[Counts, Any]]:
        for items, after in self.source.pages(unit, position):
            if halted():
                return
            self.rate.take(len(items))
            outgoing: list[Outgoing] = []
            counts = Counts()
            counts.read = len(items)
            created = self.source.created
            for item in items:
                record = self.synth.record(item, created)
                if not self.pipe.filters.matches(record):
                    counts.filtered += 1
                    continue
                try:
                    entry = self.pipe.entry(record)
                except TargetError as exc:
                    counts.refused += 1
                    counts.note(f"{record['eventID']}: {exc}")
                    continue
                outgoing.append(Outgoing(record, entry, self.synth.sequence))
            if self.sink is not None and outgoing:
                with self.sink_lock:
                    self.sink.send(outgoing, counts)
            yield counts, after
            if after is None:
                return

    def throttled(self) -> int:
        backoff = getattr(self.source, "backoff", None)
        return backoff.throttled if backoff is not None else 0


class Recipe(Protocol):
    """What a worker process needs to build its own UnitRunner (picklable: the command's
    options, never an open connection or client)."""

    def runner(self) -> UnitRunner: ...


@dataclass(frozen=True)
class _Page:
    """A worker process's report of one page: applied, so its position may be saved."""

    unit: str
    counts: Counts
    after: Any
    throttled: int  # throttled Scan requests since the last report


@dataclass(frozen=True)
class _Ended:
    """A worker process's last report of a unit (after its pages: one queue keeps them in
    order); failed: it ended by an exception, which its future carries."""

    unit: str
    failed: bool


_QUEUE: Any = None  # in a worker process: where pages are reported
_HALT: Any = None  # in a worker process: set by the coordinator to stop at a page boundary


def _worker_init(queue: Any, halt: Any) -> None:
    import signal

    global _QUEUE, _HALT
    _QUEUE, _HALT = queue, halt
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the coordinator stops us, at a page boundary


def _runner(recipe: Recipe) -> UnitRunner:
    """This worker process's UnitRunner (procs.built_once)."""
    from synctools.aws import procs

    def engine(runner: UnitRunner) -> Any:
        return runner.sink.engine if isinstance(runner.sink, DbSink) else None

    return procs.built_once("backfill", recipe, recipe.runner, engine)


def _worker_unit(recipe: Recipe, unit: str, position: Any) -> None:
    failed = True
    try:
        if _HALT.is_set():
            failed = False
            return
        runner = _runner(recipe)
        throttled = runner.throttled()  # the count so far of this process's source (earlier units)
        for counts, after in runner.pages(unit, position, _HALT.is_set):
            now = runner.throttled()
            _QUEUE.put(_Page(unit, counts, after, now - throttled))
            throttled = now
        failed = False
    finally:
        _QUEUE.put(_Ended(unit, failed))


class Backfill:
    """Runs every unit not yet done: in threads of this process, or (with a recipe) each unit
    in a worker process of its own, so the CPU-bound part (the template, the runtime's decode
    and plan) uses every core. Checkpoint, progress and summary stay here."""

    def __init__(
        self,
        *,
        pipe: Pipe,
        synthesizer: Synthesizer,
        source: Source,
        sink: Sink | None,
        checkpoint: BackfillCheckpoint,
        summary: Summary,
        rate: RateLimit | None = None,
        workers: int = 1,
        recipe: Recipe | None = None,
        max_items: int | None = None,
        log: Callable[[str], None] = lambda line: None,
        stop: Callable[[], bool] = lambda: False,
        clock: Callable[[], float] = time.monotonic,
        start: str | None = None,
    ) -> None:
        self.runner = UnitRunner(pipe, synthesizer, source, sink, rate or RateLimit(None))
        self.start = start  # how worker processes start (procs.pool_context; None: its choice)
        self.source = source
        self.sink = sink
        self.checkpoint = checkpoint
        self.summary = summary
        self.workers = max(1, workers)
        self.recipe = recipe
        self.max_items = max_items
        self.log = log
        self.stop = stop
        self.clock = clock
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self._started = 0.0
        self._last_progress = 0.0

    def _halted(self) -> bool:
        if self._halt.is_set() or self.stop():
            return True
        return self.max_items is not None and self.summary.counts.read >= self.max_items

    def run(self) -> Summary:
        units = self.source.units()
        self.summary.units = len(units)
        todo = [u for u in units if not self.checkpoint.ended(u)]
        self.summary.units_skipped = len(units) - len(todo)
        self._started = self.clock()
        try:
            if self.recipe is not None and self.workers > 1 and len(todo) > 1:
                self._in_processes(todo)
            elif self.workers == 1 or len(todo) <= 1:
                for u in todo:
                    if self._halted():
                        break
                    self._unit(u)
            else:
                with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="backfill") as ex:
                    futures = [ex.submit(self._unit, u) for u in todo]
                    try:
                        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
                    except BaseException:  # Ctrl-C: let the workers finish their page
                        self._halt.set()
                        raise
                    self._halt.set()
                    for f in futures:
                        exc = f.exception()
                        if exc is not None:
                            raise exc
        finally:
            self._halt.set()
            self.summary.seconds = self.clock() - self._started
            self.summary.complete = self.summary.units_done + self.summary.units_skipped == len(units)
            self.progress(force=True)
        return self.summary

    def _unit(self, unit: str) -> None:
        done, position = self.checkpoint.resume(unit)
        for counts, after in self.runner.pages(unit, position, self._halted):
            done += counts.read
            self._page(unit, done, counts, after)
            if self._halted():
                return

    def _page(self, unit: str, done: int, counts: Counts, after: Any) -> None:
        self.checkpoint.advance(unit, done, after, save=self.sink is not None)
        with self._lock:
            self._add(counts)
            if after is None:
                self.summary.units_done += 1
        self.progress()

    def _in_processes(self, todo: list[str]) -> None:
        """Each unit in a worker process, which builds its own source, Pipe and sink from the
        recipe (procs.pool_context: nothing of this process's connections is used there). A
        worker reports each page after it is applied, then the unit's end, through one queue
        (so in order); a page's position is saved here, only then."""
        import queue as queues
        from concurrent.futures import ProcessPoolExecutor

        from synctools.aws import procs

        recipe = self.recipe
        assert recipe is not None
        ctx = procs.pool_context(self.start)
        reports = ctx.Queue()
        halt = ctx.Event()
        resumed = {u: self.checkpoint.resume(u) for u in todo}
        done = {u: n for u, (n, _) in resumed.items()}
        pool = ProcessPoolExecutor(
            min(self.workers, len(todo)), mp_context=ctx, initializer=_worker_init, initargs=(reports, halt)
        )
        try:
            futures = {u: pool.submit(_worker_unit, recipe, u, resumed[u][1]) for u in todo}
            ended: set[str] = set()
            while len(ended) < len(todo):
                if self._halted():
                    halt.set()
                try:
                    report = reports.get(timeout=0.2)
                except queues.Empty:
                    # a worker process that died reports nothing: its future says so
                    ended.update(u for u, f in futures.items() if f.done() and f.exception() is not None)
                    continue
                if isinstance(report, _Ended):
                    ended.add(report.unit)
                    if report.failed:
                        halt.set()
                    continue
                done[report.unit] += report.counts.read
                self.summary.throttled += report.throttled
                self._page(report.unit, done[report.unit], report.counts, report.after)
        except BaseException:
            halt.set()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        for f in futures.values():
            if not f.cancelled() and f.exception() is not None:
                raise f.exception()  # type: ignore[misc]

    def _add(self, c: Counts) -> None:
        s = self.summary.counts
        for name in ("read", "filtered", "refused", "sent", "applied", "stale", "duplicate", "skipped"):
            setattr(s, name, getattr(s, name) + getattr(c, name))
        s.failed += c.failed
        s.retried += c.retried
        for r in c.reasons:
            s.note(r)

    def progress(self, *, force: bool = False) -> None:
        now = self.clock()
        with self._lock:
            if not force and now - self._last_progress < PROGRESS_EVERY_S:
                return
            self._last_progress = now
            c = self.summary.counts
            elapsed = max(now - self._started, 1e-9)
            rate = c.read / elapsed
            written = c.sent if self.summary.to == "queue" else c.applied
            total = self.source.estimate
            if total and rate > 0 and c.read < total:
                eta = f"ETA {_clock((total - c.read) / rate)} (of ~{total:,} items)"
            elif total:
                eta = f"ETA - (of ~{total:,} items)"
            else:
                eta = "ETA unknown (no item count)"
            self.log(
                f"backfill {self.summary.entity}: {_bar(c.read, total)}{c.read:,} read, {written:,} "
                f"{'sent' if self.summary.to == 'queue' else 'applied'}, {c.filtered:,} filtered, "
                f"{rate:,.0f} items/s, {eta}"
            )


def _bar(done: int, total: int | None, width: int = 20) -> str:
    """`[#####---------------] 25% `, or nothing without an item count (an estimate: a count
    older than what was read shows as full)."""
    if not total:
        return ""
    share = min(done / total, 1.0)
    filled = int(share * width)
    return f"[{'#' * filled}{'-' * (width - filled)}] {share:.0%} "


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
