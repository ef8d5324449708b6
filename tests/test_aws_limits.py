"""Each AWS limit is defined once (runtime/aws_limits.py), and the JSON Schemas' bounds agree."""

from __future__ import annotations

from generator.schema import load_schema
from runtime import aws_limits


def test_the_schemas_bounds_are_the_aws_limits() -> None:
    # GIVEN the mapping schema's bounds on what AWS limits
    defs = load_schema("mapping")["$defs"]["pipeline"]["properties"]
    consumer = defs["consumer"]["properties"]
    pipe = defs["pipe"]["properties"]
    # THEN they are the limits of runtime/aws_limits.py
    concurrency = consumer["maximum_concurrency"]
    assert (concurrency["minimum"], concurrency["maximum"]) == (
        aws_limits.LAMBDA_CONCURRENCY_MIN,
        aws_limits.LAMBDA_CONCURRENCY_MAX,
    )
    assert f"({concurrency['minimum']}..{concurrency['maximum']})" in concurrency["description"]
    assert consumer["batch_size"]["maximum"] == aws_limits.LAMBDA_FIFO_BATCH
    assert pipe["batch_size"]["maximum"] == aws_limits.SQS_BATCH


def test_the_batch_size_descriptions_state_the_schemas_bounds() -> None:
    # GIVEN the batch sizes, which the APIs allow up to 10,000 but this pipeline's SQS FIFO hops to 10
    defs = load_schema("mapping")["$defs"]["pipeline"]["properties"]
    for settings in ("pipe", "consumer"):
        batch = defs[settings]["properties"]["batch_size"]
        # THEN the description's "at most N" is the bound validate holds a mapping to
        assert batch["description"].split(":")[1].startswith(f" at most {batch['maximum']},"), settings


# Every bound of the schemas' AWS settings -> the limits it must equal (None: not an AWS limit,
# the bound is the schema's own, such as -1 for "no limit").
P = "$defs/pipeline/properties"
AWS_BOUNDS = {
    ("mapping", "$defs/dlq/properties/message_retention_seconds"): (
        aws_limits.SQS_RETENTION_MIN,
        aws_limits.SQS_RETENTION_MAX,
    ),
    ("mapping", f"{P}/pipe/properties/batch_size"): (None, aws_limits.SQS_BATCH),
    ("mapping", f"{P}/pipe/properties/maximum_retry_attempts"): (None, aws_limits.PIPES_RETRY_ATTEMPTS_MAX),
    ("mapping", f"{P}/pipe/properties/maximum_record_age_in_seconds"): (
        None,
        aws_limits.PIPES_RECORD_AGE_MAX,
    ),
    ("mapping", f"{P}/pipe/properties/maximum_batching_window_in_seconds"): (
        None,
        aws_limits.PIPES_BATCHING_WINDOW_MAX,
    ),
    ("mapping", f"{P}/pipe/properties/parallelization_factor"): (None, aws_limits.PIPES_PARALLELIZATION_MAX),
    ("mapping", f"{P}/alarms/properties/transient_failure_minutes"): (
        None,
        aws_limits.CLOUDWATCH_ALARM_MINUTES_MAX,
    ),
    ("mapping", f"{P}/queue/properties/visibility_timeout_seconds"): (
        None,
        aws_limits.SQS_VISIBILITY_TIMEOUT_MAX,
    ),
    ("mapping", f"{P}/queue/properties/message_retention_seconds"): (
        aws_limits.SQS_RETENTION_MIN,
        aws_limits.SQS_RETENTION_MAX,
    ),
    ("mapping", f"{P}/queue/properties/max_receive_count"): (None, aws_limits.SQS_MAX_RECEIVE_COUNT_MAX),
    ("mapping", f"{P}/consumer/properties/batch_size"): (None, aws_limits.LAMBDA_FIFO_BATCH),
    ("mapping", f"{P}/consumer/properties/maximum_concurrency"): (
        aws_limits.LAMBDA_CONCURRENCY_MIN,
        aws_limits.LAMBDA_CONCURRENCY_MAX,
    ),
    ("mapping", f"{P}/consumer/properties/maximum_batching_window_in_seconds"): (
        None,
        aws_limits.LAMBDA_BATCHING_WINDOW_MAX,
    ),
    ("project", "properties/lambda/properties/memory_mb"): (
        aws_limits.LAMBDA_MEMORY_MIN,
        aws_limits.LAMBDA_MEMORY_MAX,
    ),
    ("project", "properties/lambda/properties/timeout_seconds"): (None, aws_limits.LAMBDA_TIMEOUT_MAX),
}
# Bounds that are the product's or a database's, not AWS's.
NOT_AWS = {
    "$defs/source/properties/read_capacity",
    "$defs/source/properties/write_capacity",
    "$defs/column/properties/length",
    "$defs/column/properties/precision",
    "$defs/column/properties/scale",
    f"{P}/alarms/properties/dlq_messages",
    f"{P}/alarms/properties/oldest_message_age_seconds",
    f"{P}/alarms/properties/stale_events_per_minute",
    "properties/lambda/properties/reserved_concurrency",
    "properties/prune/properties/batch_rows",  # rows per DELETE of runtime/prune.py
    "properties/database/properties/auth/properties/port",  # a TCP port
    "$defs/table/properties/each/properties/start",  # how the legacy table counts positions
    "$defs/table/properties/each/properties/max_elements",  # the user's bound; validate holds it to SQS's
}


def _bounded(node: object, path: str = "") -> dict[str, dict[str, int]]:
    found: dict[str, dict[str, int]] = {}
    if isinstance(node, dict):
        if "minimum" in node or "maximum" in node:
            found[path] = node
        for key, value in node.items():
            found.update(_bounded(value, f"{path}/{key}" if path else key))
    return found


def test_every_aws_bound_of_the_schemas_is_an_aws_limit() -> None:
    for schema in ("mapping", "project"):
        # GIVEN every bounded number of the schema
        for path, node in _bounded(load_schema(schema)).items():
            if path in NOT_AWS:
                continue
            # THEN it is one whose AWS limit is known, and its bounds are that limit
            assert (schema, path) in AWS_BOUNDS, f"{schema}: {path}: which AWS limit bounds it?"
            minimum, maximum = AWS_BOUNDS[schema, path]
            assert node["maximum"] == maximum, path
            if minimum is not None:
                assert node["minimum"] == minimum, path
