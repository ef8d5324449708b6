"""source.expected_writes_per_second against what the pipeline carries (generator.capacity)."""

from __future__ import annotations

from pathlib import Path

import pytest

from generator import resolve
from generator.diagnostics import Severity
from generator.yamlload import load_file
from runtime import dialects
from runtime.aws_limits import SQS_FIFO_CALLS_PER_SECOND
from tests.test_checks import BASE, diagnose

REPO_ROOT = Path(__file__).resolve().parent.parent


def with_settings(rate: float, pipeline: str) -> str:
    text = BASE.replace(
        "  stream_view_type: NEW_AND_OLD_IMAGES\n",
        f"  stream_view_type: NEW_AND_OLD_IMAGES\n  expected_writes_per_second: {rate}\n",
    )
    return text.replace(
        "pipeline:\n  queue: {visibility_timeout_seconds: 180, max_receive_count: 5}\n", pipeline
    )


def capacity_warnings(text: str) -> list[str]:
    return [d.message for d in diagnose(text) if d.code == "capacity" and d.severity is Severity.WARNING]


PIPELINE = """\
pipeline:
  pipe: {batch_size: %d}
  queue: {visibility_timeout_seconds: 180, max_receive_count: 5, high_throughput: %s}
  consumer: {batch_size: %d, maximum_concurrency: %d}
"""


def test_a_rate_the_settings_carry_stays_silent() -> None:
    # GIVEN 200 writes/s, a queue that takes 3,000 and ten consumers
    text = with_settings(200, PIPELINE % (10, "false", 10, 10))
    # THEN no capacity warning
    assert capacity_warnings(text) == []


def test_no_declared_rate_no_capacity_check() -> None:
    assert capacity_warnings(BASE) == []


def test_a_queue_without_high_throughput_binds_first() -> None:
    # GIVEN pipe batches of 1: at most 300 sends/s, so 300 messages/s
    text = with_settings(1000, PIPELINE % (1, "false", 10, 50))
    warnings = capacity_warnings(text)
    # THEN the queue is named, with its ceiling
    assert len(warnings) == 1, warnings
    assert "the queue carries, about 300 events/s" in warnings[0]
    assert f"{SQS_FIFO_CALLS_PER_SECOND} calls/s" in warnings[0]


def test_high_throughput_lifts_the_queue_ceiling() -> None:
    text = with_settings(1000, PIPELINE % (1, "true", 10, 50))
    assert capacity_warnings(text) == []


def test_too_few_consumers_bind() -> None:
    # GIVEN two consumers with batches of 2 against 100,000 writes/s (high throughput queue)
    text = with_settings(100000, PIPELINE % (10, "true", 2, 2))
    warnings = capacity_warnings(text)
    # THEN the consumer is named, with 2 x the per-connection rate x 2/10
    project = resolve.resolve_project(load_file(REPO_ROOT / "project.yaml", "project.yaml"))
    rate = dialects.for_name(project.database.dialect).measured_events_per_second
    assert rate is not None
    assert len(warnings) == 1, warnings
    assert f"the consumer carries, about {2 * rate * 2 / 10:,.0f} events/s" in warnings[0]
    assert "2 concurrent consumer(s)" in warnings[0]


@pytest.mark.parametrize("name", ["postgresql", "mysql"])
def test_every_deployable_dialect_has_a_measured_rate(name: str) -> None:
    assert (dialects.for_name(name).measured_events_per_second or 0) > 0
