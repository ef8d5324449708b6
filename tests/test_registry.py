"""The runtime registry: the one contract between generator/ and runtime/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from generator import __version__
from generator.emit import registry
from generator.model import Model
from generator.output import dump_json
from runtime.registry import parse_registry

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def reg(model: Model) -> dict[str, Any]:
    return registry.registry(model)


def test_the_registry_is_versioned_and_names_the_project_and_database(reg: dict[str, Any]) -> None:
    # GIVEN the bundled model  WHEN registered  THEN version, project and database
    assert reg["registry_version"] == registry.REGISTRY_VERSION == 3
    assert reg["generator_version"] == __version__
    assert reg["project"] == "legacy-sync"
    assert reg["database"] == {
        "dialect": "postgresql",
        "ledger_table": "sync_ledger",
        "tombstone_table": "sync_tombstones",
        "foreign_key_violation": "transient",
        "prune": {"batch_rows": 1000},
    }


def test_each_queue_maps_to_its_entity(reg: dict[str, Any]) -> None:
    # GIVEN the bundled model  WHEN registered  THEN each queue names its entity
    assert reg["queues"] == {
        "orders-sync.fifo": "orders",
        "customers-sync.fifo": "customers",
        "order_items-sync.fifo": "order_items",
        "invoices-sync.fifo": "invoices",
    }


def test_fields_say_where_pipes_reads_them_and_how_they_nest(reg: dict[str, Any]) -> None:
    # GIVEN orders and customers fields  WHEN registered  THEN path, type, carry and source
    # (a string attribute travels as its attribute value, so that missing and "" stay apart)
    fields = reg["entities"]["orders"]["fields"]
    assert fields["orderDetails.status"] == {
        "path": ["orderDetails", "status"],
        "type": "S",
        "carry": "typed",
        "kind": "attribute",
        "image": "new",
        "source": "$.dynamodb.NewImage.order_details.M.status",
    }
    assert fields["orderDetails.totalAmount"]["carry"] == "value"
    assert fields["orderID"]["source"] == "$.dynamodb.Keys.order_id.S"
    assert fields["changedAt"]["type"] == "number"  # a JSON number in delivered events (facts 1.8)
    profile = reg["entities"]["customers"]["fields"]["profile"]
    assert (profile["carry"], profile["source"]) == ("typed", "$.dynamodb.NewImage.profile")


def test_rules_are_expanded_per_event_type_with_the_columns_each_action_writes(reg: dict[str, Any]) -> None:
    # GIVEN the orders rules: an upsert, and an update of three columns for three event types
    rules = reg["entities"]["orders"]["rules"]

    # THEN each event type has its own list; an upsert writes every column, an update its own
    assert sorted(rules) == ["order.cancelled", "order.confirmed", "order.created", "order.shipped"]
    assert rules["order.created"] == [
        {
            "action": "upsert",
            "table": "orders",
            "columns": ["order_id", "customer_id", "total_amount", "status", "updated_at"],
            "if_missing": "fail",
        }
    ]
    assert rules["order.shipped"] == [
        {
            "action": "update",
            "table": "orders",
            "columns": ["status", "total_amount", "updated_at"],
            "if_missing": "fail",
        }
    ]
    assert rules["order.shipped"] == rules["order.confirmed"] == rules["order.cancelled"]
    # two writes for one event keep their order; soft_delete's if_missing defaults to ignore
    customers = reg["entities"]["customers"]["rules"]
    assert [a["action"] for a in customers["customer.status_changed"]] == ["update", "insert"]
    assert customers["REMOVE"][0]["if_missing"] == "ignore"


def test_tables_carry_key_columns_version_and_soft_delete(reg: dict[str, Any]) -> None:
    # GIVEN the bundled tables  WHEN registered  THEN key, columns, version and soft delete
    customers = reg["entities"]["customers"]["tables"]["customers"]
    assert customers["key"] == ["external_id"]
    assert customers["surrogate_key"] == "id"
    assert customers["version"] == {
        "column": "sync_version",
        "fields": ["sequenceNumber"],
        "kind": "sequence",
    }
    assert customers["soft_delete"] == {
        "column": "deleted_at",
        "field": "changedAt",
        "kind": "timestamp",
        "format": None,
    }
    status = next(c for c in customers["columns"] if c["name"] == "status_code")
    assert status["map"] == {"active": 1, "suspended": 2, "closed": 9}
    source = next(c for c in customers["columns"] if c["name"] == "source_system")
    assert source["const"] == "dynamodb" and "default" not in source
    items = reg["entities"]["order_items"]["tables"]["order_items"]
    assert items["version"] == {"column": "row_version", "fields": ["rev", "oldRev"], "kind": "integer"}
    assert next(c for c in items["columns"] if c["name"] == "order_id")["references"] == "orders.order_id"


def test_the_consumer_contract_and_dispatch_settings(reg: dict[str, Any]) -> None:
    # GIVEN orders  WHEN registered  THEN the batch contract and dispatch settings
    orders = reg["entities"]["orders"]
    assert orders["consumer"]["function_response_types"] == ["ReportBatchItemFailures"]
    assert orders["type_from"] == ["eventType"]
    assert orders["event_id_field"] == "eventID"
    assert orders["lag_field"] == "changedAt"
    assert orders["ledger"] is True
    assert orders["pipe_dlq"] == "orders-pipes-dlq"


def test_the_runtime_parses_what_the_generator_writes(reg: dict[str, Any]) -> None:
    # GIVEN the registry as written to build/registry.json
    data = json.loads(dump_json(reg))

    # WHEN the runtime parses it
    parsed = parse_registry(data)

    # THEN it knows every entity by its queue, with the tables and rules the generator wrote
    assert data == reg
    assert sorted(parsed.entities) == [
        "customers",
        "invoices",
        "order_items",
        "orders",
        "shop_customers",
        "shop_order_lines",
        "shop_orders",
    ]
    orders = parsed.entity_for_queue("orders-sync.fifo")
    assert orders is not None and orders.name == "orders"
    assert orders.tables["orders"].key == ("order_id",)
    assert [a.action for a in orders.rules["order.created"]] == ["upsert"]
    assert parsed.entities["customers"].tables["customers"].soft_delete is not None


def test_the_registry_is_deterministic(model: Model) -> None:
    # GIVEN one model  WHEN registered twice  THEN the same text
    assert dump_json(registry.registry(model)) == dump_json(registry.registry(model))


def test_the_committed_registry_is_what_the_mappings_give(reg: dict[str, Any]) -> None:
    # GIVEN build/registry.json  WHEN compared with a fresh registry  THEN equal
    assert json.loads((REPO_ROOT / "build" / "registry.json").read_text(encoding="utf-8")) == reg
