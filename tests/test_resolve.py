"""Raw YAML -> model: the defaults a mapping gets for what it leaves out."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

from generator import defaults, resolve
from generator.model import Entity
from generator.yamlload import load_file, load_yaml

REPO_ROOT = Path(__file__).resolve().parent.parent

MINIMAL = """\
entity: invoices
source:
  table: invoices
  partition_key: {name: invoice_no, type: N}
message:
  fields:
    eventID: {meta: eventID}
    eventName: {meta: eventName}
    invoiceNo: {key: invoice_no}
target:
  tables:
    - table: invoices
      key: [invoice_no]
      columns:
        invoice_no: {field: invoiceNo, type: bigint}
        note: {const: synced, type: string}
events:
  rules:
    - on: [INSERT, MODIFY]
      do: [{action: upsert, table: invoices}]
"""


def resolved(text: str, project: str = "name: legacy-sync\nregion: eu-west-1\n") -> Entity:
    proj = resolve.resolve_project(load_yaml(project, "project.yaml"))
    entity, problems = resolve.resolve_entity(load_yaml(text, "mappings/invoices.yaml"), proj)
    assert problems == []
    return entity


def test_routing_defaults_group_by_the_partition_key_and_dedup_by_event_id() -> None:
    # GIVEN a mapping without routing and a numeric partition key
    e = resolved(MINIMAL)

    # THEN each item keeps its order in its own group, and distinct records are never merged
    assert e.routing.message_group_id == "$.dynamodb.Keys.invoice_no.N"
    assert e.routing.deduplication_id == "$.eventID"


def test_pipeline_defaults_follow_the_aws_limits() -> None:
    # GIVEN no pipeline section and a name prefix  WHEN resolved  THEN defaults within the AWS limits
    p = resolved(MINIMAL, "name: legacy-sync\nregion: eu-west-1\nnaming: {prefix: prod-}\n").pipeline
    assert (p.pipe.name, p.pipe.dlq_name) == ("prod-invoices-pipe", "prod-invoices-pipes-dlq")
    assert (p.queue.name, p.queue.dlq_name) == ("prod-invoices-sync.fifo", "prod-invoices-sync-dlq.fifo")
    assert p.pipe.role_name == "prod-legacy-sync-invoices-pipe"
    # facts 1.7/3: at most 10 records per SQS batch; a finite retry and record age (facts 0.11)
    assert (p.pipe.batch_size, p.pipe.maximum_retry_attempts, p.pipe.maximum_record_age_in_seconds) == (
        10,
        3,
        300,
    )
    # facts 6.1: at most 10 per FIFO batch, no batching window, concurrency at least 2
    assert (p.consumer.batch_size, p.consumer.maximum_batching_window_in_seconds) == (10, None)
    assert p.consumer.maximum_concurrency == 2
    assert p.queue.dlq_retention_seconds > p.queue.message_retention_seconds


def test_filter_source_and_dispatch_defaults() -> None:
    # GIVEN a mapping without filter, view type or type_from  WHEN resolved  THEN the defaults
    e = resolved(MINIMAL)
    assert e.source.stream_view_type == "NEW_IMAGE"
    assert e.filter.event_names == ("INSERT", "MODIFY", "REMOVE")
    assert e.events.type_from == ("eventName",)  # no outbox: the stream event name
    assert e.events.unknown == "fail"
    assert e.idempotency.event_id_field == "eventID"  # the meta eventID field


def test_the_outbox_event_type_field_comes_before_the_event_name() -> None:
    # GIVEN an outbox type field and eventName  WHEN resolved  THEN type_from tries the outbox first
    text = MINIMAL.replace("  partition_key:", "  outbox: {attribute: event}\n  partition_key:").replace(
        "    eventName: {meta: eventName}\n",
        "    eventName: {meta: eventName}\n    eventType: {attribute: event.event_type, type: S}\n",
    )
    assert resolved(text).events.type_from == ("eventType", "eventName")


def test_key_columns_are_not_nullable_and_constants_are_kept() -> None:
    # GIVEN a key column and a constant  WHEN resolved  THEN the key is NOT NULL, the constant kept
    table = resolved(MINIMAL).tables[0]
    key, note = table.columns
    assert (key.name, key.nullable) == ("invoice_no", False)
    assert (note.name, note.nullable, note.has_const, note.const, note.fields) == (
        "note",
        True,
        True,
        "synced",
        (),
    )


def test_the_version_kind_follows_the_field_feeding_it() -> None:
    # GIVEN versions from SequenceNumber and from an N attribute  THEN sequence and integer kinds
    orders = resolve.resolve_entity(
        load_file(REPO_ROOT / "mappings" / "orders.yaml", "mappings/orders.yaml"),
        resolve.resolve_project(load_file(REPO_ROOT / "project.yaml", "project.yaml")),
    )[0]
    items = resolve.resolve_entity(
        load_file(REPO_ROOT / "mappings" / "order_items.yaml", "mappings/order_items.yaml"),
        resolve.resolve_project(load_file(REPO_ROOT / "project.yaml", "project.yaml")),
    )[0]
    assert orders.tables[0].version is not None and orders.tables[0].version.kind == "sequence"
    assert items.tables[0].version is not None and items.tables[0].version.kind == "integer"


# Every part that has a default somewhere under it, each left to its default.
WITH_EVERY_DEFAULTED_PART = (
    MINIMAL.replace(
        "  partition_key: {name: invoice_no, type: N}\n",
        "  partition_key: {name: invoice_no, type: N}\n  outbox: {attribute: outbox}\n"
        "filter:\n  require_attributes: [{path: total, type: N}]\n",
    )
    .replace(
        "    invoiceNo: {key: invoice_no}\n",
        "    invoiceNo: {key: invoice_no}\n    total: {attribute: total, type: N}\n"
        "    seq: {meta: SequenceNumber}\n    lines: {attribute: lines, type: L}\n",
    )
    .replace(
        "        note: {const: synced, type: string}\n",
        "        note: {const: synced, type: string}\n"
        "        customer_pk: {type: bigint, lookup: {table: customers, match: {external_id: invoiceNo}, select: id}}\n",
    )
    .replace(
        "events:\n",
        "    - table: invoice_lines\n      each: {field: lines}\n      key: [invoice_no, line_no]\n"
        "      columns:\n        invoice_no: {field: invoiceNo, type: bigint}\n"
        "        line_no: {position: true, type: integer}\n      version: {column: v, field: seq}\n"
        "events:\n",
    )
)


def test_every_default_resolve_applies_is_the_schemas(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a record of every default resolve asks generator.defaults for
    asked: set[tuple[str, tuple[str, ...]]] = set()
    for kind in ("mapping", "project"):
        real = getattr(defaults, kind)

        def spy(*path: str, kind: str = kind, real: Any = real) -> Any:
            asked.add((kind, path))
            return real(*path)

        monkeypatch.setattr(defaults, kind, spy)

    # WHEN a project and a mapping that leave everything optional out are resolved
    entity = resolved(WITH_EVERY_DEFAULTED_PART)

    # THEN resolve applied exactly the defaults the schemas state, each with the schema's value
    stated = {(kind, path) for kind in ("mapping", "project") for path, _ in defaults.schema_defaults(kind)}
    assert asked == stated
    assert entity.pipeline.pipe.batch_size == _schema_default("mapping", "pipeline", "pipe", "batch_size")
    assert entity.filter.require_attributes[0].image == _schema_default(
        "mapping", "filter", "require_attributes", "[]", "image"
    )


def test_resolve_writes_no_default_value_of_its_own() -> None:
    # GIVEN resolve's source
    tree = ast.parse((REPO_ROOT / "generator" / "resolve.py").read_text(encoding="utf-8"))
    # THEN no `.get(key, value)` falls back on a literal other than "nothing" ("", {}, (), [])
    literals = [
        ast.unparse(node)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "get"
        and len(node.args) == 2
        and isinstance(node.args[1], ast.Constant | ast.List | ast.Tuple | ast.Dict)
        and ast.literal_eval(node.args[1]) not in ("", None, (), [], {})
    ]
    assert literals == []


def test_a_path_without_a_schema_default_is_refused() -> None:
    # GIVEN a property whose default the schema does not state
    # THEN asking for it fails, naming where to add it
    with pytest.raises(LookupError, match="states no default for pipeline.pipe.name; add one there"):
        defaults.mapping("pipeline", "pipe", "name")


def _schema_default(kind: str, *path: str) -> Any:
    return dict(defaults.schema_defaults(kind))[path]
