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
