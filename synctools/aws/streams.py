"""DynamoDB Streams, read as a Pipe reads them.

- DescribeStream is paginated (ExclusiveStartShardId / LastEvaluatedShardId): every page is read.
- Shards form a tree: a shard splits into children when it closes. Records of one item are in
  order across the tree only if a parent is read to its end before its children start (AWS:
  Streams: records for an item are in modification order), so a child is ready once its parent is
  drained, or once the parent is gone from the stream (trimmed after 24 h).
- A record from GetRecords lacks what Pipes and Lambda add: `eventSourceARN` is set to the
  stream ARN; `ApproximateCreationDateTime`, which boto3 parses into a datetime, becomes epoch
  seconds as a JSON number (AWS: Streams); binary values (B, BS), which boto3 returns as bytes,
  become base64 text as in the stream's JSON.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from synctools.aws.session import INCOMPLETE, ToolError, error_code


@dataclass(frozen=True)
class Shard:
    shard_id: str
    parent_id: str | None
    start: str  # StartingSequenceNumber
    end: str | None  # EndingSequenceNumber, once the shard is closed

    @property
    def closed(self) -> bool:
        return self.end is not None


def describe_shards(streams: Any, stream_arn: str) -> list[Shard]:
    """Every shard of the stream, over all DescribeStream pages."""
    shards: list[Shard] = []
    kwargs: dict[str, Any] = {"StreamArn": stream_arn}
    while True:
        desc = streams.describe_stream(**kwargs)["StreamDescription"]
        for s in desc.get("Shards") or []:
            rng = s.get("SequenceNumberRange") or {}
            shards.append(
                Shard(
                    s["ShardId"],
                    s.get("ParentShardId"),
                    str(rng.get("StartingSequenceNumber") or "0"),
                    str(rng["EndingSequenceNumber"]) if rng.get("EndingSequenceNumber") else None,
                )
            )
        last = desc.get("LastEvaluatedShardId")
        if not last:
            return shards
        kwargs["ExclusiveStartShardId"] = last


def ready_shards(shards: list[Shard], drained: set[str]) -> list[Shard]:
    """Shards that may be read now: not drained, and whose parent is drained or no longer in
    the stream. Parents come before children; siblings by starting sequence number."""
    present = {s.shard_id for s in shards}
    ready = [
        s
        for s in shards
        if s.shard_id not in drained
        and (s.parent_id is None or s.parent_id not in present or s.parent_id in drained)
    ]
    return sorted(ready, key=lambda s: (int(s.start), s.shard_id))


def shard_order(shards: list[Shard]) -> list[Shard]:
    """A total order that drains every parent before its children (for reports and tests)."""
    out: list[Shard] = []
    drained: set[str] = set()
    while True:
        ready = ready_shards(shards, drained)
        if not ready:
            return out
        out.append(ready[0])
        drained.add(ready[0].shard_id)


def _plain(value: Any) -> Any:
    """boto3's parsed values back to the stream's JSON shapes."""
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def normalize(record: dict[str, Any], stream_arn: str) -> dict[str, Any]:
    """A GetRecords record in the shape Pipes hands to its filter and template (AWS: Streams)."""
    out: dict[str, Any] = _plain(record)  # a dict stays a dict
    ddb = out.get("dynamodb")
    if isinstance(ddb, dict):
        created = ddb.get("ApproximateCreationDateTime")
        if isinstance(created, datetime):
            # The Streams API rounds it down to the second; delivered events carry epoch seconds.
            ddb["ApproximateCreationDateTime"] = int(created.timestamp())
    out.setdefault("eventSourceARN", stream_arn)
    return out


def sequence_of(record: dict[str, Any]) -> str:
    return str((record.get("dynamodb") or {}).get("SequenceNumber") or "")


def shard_iterator(
    streams: Any, stream_arn: str, shard_id: str, kind: str, sequence: str | None = None
) -> str | None:
    kwargs: dict[str, Any] = {"StreamArn": stream_arn, "ShardId": shard_id, "ShardIteratorType": kind}
    if sequence is not None:
        kwargs["SequenceNumber"] = sequence
    try:
        iterator: str | None = streams.get_shard_iterator(**kwargs).get("ShardIterator")
        return iterator
    except Exception as exc:
        code = error_code(exc)
        if code == "TrimmedDataAccessException":
            raise ToolError(
                f"shard {shard_id}: sequence number {sequence} is older than the stream's 24 h "
                "retention; the records after it up to the trim horizon are gone",
                INCOMPLETE,
            ) from None
        if code == "ResourceNotFoundException":
            raise ToolError(f"stream {stream_arn} or shard {shard_id} no longer exists", INCOMPLETE) from None
        raise


def read_range(
    streams: Any, stream_arn: str, shard_id: str, start: str, end: str, *, limit: int = 10_000
) -> Iterator[dict[str, Any]]:
    """The records start..end (inclusive) of one shard, normalized, while the stream has them
    (AWS: eb-pipes-dynamodb: a Pipe's DLQ holds only these positions). Raises ToolError(exit 1) when they
    are gone."""
    it = shard_iterator(streams, stream_arn, shard_id, "AT_SEQUENCE_NUMBER", start)
    end_n = int(end)
    seen = 0
    empty = 0
    while it and seen < limit:
        page = streams.get_records(ShardIterator=it, Limit=1000)
        records = page.get("Records") or []
        for rec in records:
            seq = int(sequence_of(rec))
            if seq > end_n:
                return
            seen += 1
            yield normalize(rec, stream_arn)
            if seq == end_n:
                return
        it = page.get("NextShardIterator")
        empty = 0 if records else empty + 1
        if empty >= 3:  # an open shard at its tip: the end of the range is not there (yet)
            return
