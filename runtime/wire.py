"""The shapes that cross the Lambda's boundary, as TypedDicts: the SQS event Lambda delivers
and the partial batch response it reads back (AWS Lambda Developer Guide, "Using Lambda with
Amazon SQS" and "Handling errors for an SQS event source")."""

from __future__ import annotations

from typing import Any, TypedDict


class SqsAttributes(TypedDict, total=False):
    ApproximateReceiveCount: str
    SentTimestamp: str
    SequenceNumber: str
    MessageGroupId: str
    SenderId: str
    MessageDeduplicationId: str
    ApproximateFirstReceiveTimestamp: str


class SqsEventRecord(TypedDict, total=False):
    messageId: str
    receiptHandle: str
    body: str
    attributes: SqsAttributes
    messageAttributes: dict[str, Any]
    md5OfBody: str
    eventSource: str
    eventSourceARN: str
    awsRegion: str


class SqsEvent(TypedDict):
    Records: list[SqsEventRecord]


class BatchItemFailure(TypedDict):
    itemIdentifier: str


class BatchResponse(TypedDict):
    batchItemFailures: list[BatchItemFailure]


class PruneEvent(TypedDict):
    """What the generated EventBridge Scheduler schedule sends (runtime.prune.PRUNE_EVENT)."""

    ddb_sql_sync: str


class PruneResponse(TypedDict):
    prune: str  # done | partial (the deadline came first)
    rows: int
    complete: bool
