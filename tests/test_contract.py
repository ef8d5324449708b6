"""Contract tests: the generated artifacts agree with each other and with the runtime.

For every bundled mapping, the Pipe's filter and input template (build/entities/), applied by
the local model to sample stream records, yield bodies the runtime decodes; and the Terraform,
the registry and the runtime agree on queue names, batch sizes, redrive and
ReportBatchItemFailures.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from runtime.decode import decode, parse_sqs_record
from runtime.registry import load_registry
from synctools.local.build import shared_pipe
from synctools.local.patterns import load_filters
from synctools.local.sample import Sampler
from synctools.local.transform import PipeContext, PipeTarget, load_template
from tests.factories import sqs_record

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build"
REGISTRY = load_registry(BUILD / "registry.json")
ENTITIES = sorted(REGISTRY.entities)


def _terraform() -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for path in sorted((BUILD / "terraform").glob("*.tf.json")):
        for kind, blocks in json.loads(path.read_text()).get("resource", {}).items():
            merged.setdefault(kind, {}).update(blocks)
    return merged


TF = _terraform()


@pytest.mark.parametrize("entity", ENTITIES)
def test_template_output_decodes_in_the_runtime(entity: str) -> None:
    # GIVEN sample stream records of the entity and its generated Pipe artifacts
    records = list(Sampler(REGISTRY.raw, entity, seed=11).records(400))
    filters = load_filters(BUILD / "entities" / entity / "filters.json")
    template = load_template(BUILD / "entities" / entity / "input-template.txt")
    raw = REGISTRY.raw["entities"][entity]
    target = PipeTarget(
        template, raw["routing"]["message_group_id"], raw["routing"]["deduplication_id"], PipeContext()
    )
    spec = REGISTRY.entities[entity]
    passed = 0
    # WHEN each record that passes the filter is transformed and decoded
    for record in records:
        if not filters.matches(record):
            continue
        passed += 1
        entry = target.entry(record)
        change = decode(
            parse_sqs_record(sqs_record(entry.body, group=entry.group_id, queue=spec.queue)), spec
        )
        # THEN it decodes into writes, with the group id the item's key and the dedup id the eventID
        assert change.event_id == record["eventID"] == entry.dedup_id
        assert entry.group_id and len(entry.group_id) <= 128
    assert passed > 100


@pytest.mark.parametrize("entity", ENTITIES)
def test_terraform_registry_and_runtime_agree(entity: str) -> None:
    raw = REGISTRY.raw["entities"][entity]
    spec = REGISTRY.entities[entity]
    # A single-table design's entity: its table's shared Pipe and queues (labelled by the Pipe).
    shared = shared_pipe(REGISTRY.raw, entity)
    label = shared or entity
    queue = TF["aws_sqs_queue"][label]
    dlq = TF["aws_sqs_queue"][f"{label}_dlq"]
    pipe_dlq = TF["aws_sqs_queue"][f"{label}_pipe_dlq"]
    esm = TF["aws_lambda_event_source_mapping"][label]
    pipe = TF["aws_pipes_pipe"][label]
    # Queue names: Terraform creates what the registry routes by.
    assert queue["name"] == spec.queue and queue["fifo_queue"] is True
    assert dlq["name"] == spec.dlq and dlq["fifo_queue"] is True
    assert pipe_dlq["name"] == spec.pipe_dlq and not pipe_dlq.get("fifo_queue")
    if shared:
        assert REGISTRY.entity_for_queue(queue["name"]) is None
        assert dict(REGISTRY.shared_queues[queue["name"]].values)[raw["discriminator"]["value"]] == entity
    else:
        assert REGISTRY.entity_for_queue(queue["name"]) is spec
    # Batch sizes and the partial batch response contract.
    assert esm["batch_size"] == spec.batch_size == raw["consumer"]["batch_size"] <= 10
    assert (
        esm["function_response_types"]
        == raw["consumer"]["function_response_types"]
        == ["ReportBatchItemFailures"]
    )
    assert "maximum_batching_window_in_seconds" not in esm
    assert f"maxReceiveCount = {spec.max_receive_count}" in queue["redrive_policy"]
    assert queue["visibility_timeout_seconds"] == spec.visibility_timeout_seconds
    stream = pipe["source_parameters"]["dynamodb_stream_parameters"]
    assert stream["batch_size"] == raw["pipe"]["batch_size"]
    # The Pipe sends what the local model and the registry describe.
    target = pipe["target_parameters"]
    assert target["input_template"] + "\n" == (BUILD / "entities" / entity / "input-template.txt").read_text()
    assert target["sqs_queue_parameters"] == {
        "message_group_id": spec.message_group_id,
        "message_deduplication_id": spec.deduplication_id,
    }
    patterns = [json.loads(f["pattern"]) for f in pipe["source_parameters"]["filter_criteria"]["filter"]]
    filters = BUILD / ("pipes/" + shared if shared else "entities/" + entity) / "filters.json"
    assert patterns == json.loads(filters.read_text())
