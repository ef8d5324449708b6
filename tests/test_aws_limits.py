"""Each AWS limit is defined once (runtime/aws_limits.py), and the JSON Schemas' bounds agree."""

from __future__ import annotations

from generator.schema import load_schema
from runtime import aws_limits


def test_the_schemas_bounds_are_the_aws_limits() -> None:
    # GIVEN the mapping schema's bounds on what AWS limits
    defs = load_schema("mapping")["$defs"]["pipeline"]["properties"]
    consumer = defs["consumer"]["properties"]
    pipe = defs["pipe"]["properties"]
    # THEN they are the limits of runtime/aws_limits.py; the batch sizes, which the APIs allow up to
    # 10,000 but this pipeline's SQS FIFO hops to 10, say so (validate refuses more, explaining why)
    assert consumer["maximum_concurrency"]["maximum"] == aws_limits.LAMBDA_CONCURRENCY_MAX
    assert f"at most {aws_limits.LAMBDA_FIFO_BATCH} for a FIFO queue" in consumer["batch_size"]["description"]
    assert f"at most {aws_limits.SQS_BATCH}" in pipe["batch_size"]["description"]
