"""The Lambda SQS event source mapping in front of a FIFO queue (AWS: services-sqs-parameters).

One `poll()` receives a batch (at most batch_size <= 10 messages, possibly from several
message groups: AWS: services-sqs-parameters, services-sqs-configure), invokes `handler(event, context)` and reads the answer the
way Lambda does (AWS: services-sqs-errorhandling):

- complete success (every message deleted): a null response, `{}`, or a null or empty
  `batchItemFailures`;
- partial failure: the listed messages stay, every other message is deleted (so a message
  listed after an unlisted one is still deleted: AWS: services-sqs-errorhandling is the handler's job);
- complete failure (nothing deleted): an exception, an answer that is not a JSON object, a
  `batchItemFailures` that is not a list, an item with a bad key name, an empty or null
  `itemIdentifier`, or one naming a message that is not in the batch.

Messages not deleted become visible again when their visibility timeout expires; the
poller never sleeps, the caller advances the virtual clock.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from runtime.aws_limits import LAMBDA_FIFO_BATCH
from synctools import awsdocs
from synctools.local.fifo import FifoQueue

Handler = Callable[[dict[str, Any], Any], Any]


@dataclass
class LambdaContext:
    """The few context attributes handlers commonly read."""

    function_name: str = "sync-local"
    aws_request_id: str = ""
    invoked_function_arn: str = ""
    memory_limit_in_mb: int = 256
    timeout_ms: int = 30_000

    def get_remaining_time_in_millis(self) -> int:
        return self.timeout_ms


@dataclass
class PollResult:
    records: list[dict[str, Any]]
    deleted: list[str] = field(default_factory=list)  # message ids
    failed: list[str] = field(default_factory=list)  # message ids left for redelivery
    delete_lost: list[str] = field(default_factory=list)  # succeeded, but the delete never happened
    complete_failure: str = ""  # why the whole batch failed ("" when it did not)
    response: Any = None
    error: BaseException | None = None


def _plain_json(value: Any) -> bool:
    """Already JSON-shaped (dicts with str keys, lists, str, int, float, bool, None)? Then the
    serialise / parse round trip below would change nothing and can be skipped."""
    t = type(value)
    if t is dict:
        return all(type(k) is str and _plain_json(v) for k, v in value.items())
    if t is list:
        return all(_plain_json(v) for v in value)
    return (
        value is None
        or t in (str, int, bool)
        or (t is float and value == value and abs(value) != float("inf"))
    )


def read_response(response: Any, message_ids: list[str]) -> tuple[set[str] | None, str]:
    """(ids reported failed, "") or (None, reason) for a complete failure (AWS: services-sqs-errorhandling)."""
    if response is None:
        return set(), ""
    if not _plain_json(response):
        try:
            # Lambda serialises the return value; what does not survive JSON is an invalid answer.
            response = json.loads(json.dumps(response))
        except (TypeError, ValueError) as exc:
            return None, f"invalid JSON response ({exc})"
    if not isinstance(response, dict):
        return None, f"invalid response: a JSON {type(response).__name__}, not an object"
    items = response.get("batchItemFailures")
    if items is None:
        return set(), ""
    if not isinstance(items, list):
        return None, "batchItemFailures is not a list"
    known = set(message_ids)
    failed: set[str] = set()
    for item in items:
        if not isinstance(item, dict) or "itemIdentifier" not in item:
            return None, f"batch item failure with a bad key name: {item!r:.80}"
        ident = item["itemIdentifier"]
        if ident is None or ident == "":
            return None, "empty or null itemIdentifier"
        if not isinstance(ident, str) or ident not in known:
            return None, f"itemIdentifier {ident!r:.60} is not a message of the batch"
        failed.add(ident)
    return failed, ""


class Poller:
    """One event source mapping: `queue` -> `handler`."""

    def __init__(
        self,
        queue: FifoQueue,
        handler: Handler,
        *,
        batch_size: int = LAMBDA_FIFO_BATCH,
        function_name: str = "sync-local",
        lose_response: Callable[[list[dict[str, Any]]], bool] | None = None,
        lose_delete: Callable[[dict[str, Any]], bool] | None = None,
    ) -> None:
        if not 1 <= batch_size <= LAMBDA_FIFO_BATCH:
            raise ValueError(
                f"batch_size {batch_size}: a FIFO queue's event source mapping takes 1..{LAMBDA_FIFO_BATCH} (see {awsdocs.LAMBDA_SQS_PARAMETERS})"
            )
        self.queue = queue
        self.handler = handler
        self.batch_size = batch_size
        self.function_name = function_name
        self.lose_response = lose_response  # fault injection: processed, never acknowledged
        self.lose_delete = lose_delete  # fault injection: one message's DeleteMessage is lost
        self.invocations = 0

    def poll(self) -> PollResult | None:
        """One receive + invoke + acknowledge; None when nothing was receivable."""
        records = self.queue.receive(self.batch_size)
        if not records:
            return None
        self.invocations += 1
        ids = [r["messageId"] for r in records]
        result = PollResult(records)
        context = LambdaContext(self.function_name, aws_request_id=f"local-{self.invocations:012d}")
        try:
            result.response = self.handler({"Records": records}, context)
        except Exception as exc:  # facts 6.5: an exception fails the whole batch
            result.error = exc
            result.complete_failure = f"function error: {type(exc).__name__}: {exc}"
        if not result.complete_failure:
            failed, reason = read_response(result.response, ids)
            if failed is None:
                result.complete_failure = reason
            else:
                result.failed = [i for i in ids if i in failed]
        if result.complete_failure:
            result.failed = ids
            return result
        if self.lose_response is not None and self.lose_response(records):
            # The invocation succeeded but its answer never reached the poller: nothing is
            # deleted, the whole batch reappears after the visibility timeout.
            result.failed = ids
            result.complete_failure = "response lost"
            return result
        failed_ids = set(result.failed)
        for r in records:
            mid = r["messageId"]
            if mid in failed_ids:
                continue
            if self.lose_delete is not None and self.lose_delete(r):
                result.delete_lost.append(mid)
            elif self.queue.delete(r["receiptHandle"]):
                result.deleted.append(mid)
        return result
