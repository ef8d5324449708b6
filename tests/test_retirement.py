"""Retirement (`retired: true`), table protections, the retention windows and the scheduled
prune, as generated: what build/ holds and lacks, terraform validate, the validate message."""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from generator.emit.registry import registry
from generator.emit.terraform import terraform_files
from generator.load import load
from generator.model import Model
from generator.output import render
from runtime.prune import PRUNE_EVENT
from tests.conftest import copy_project, terraform_or_skip


def _retire(model: Model, name: str) -> Model:
    return replace(
        model, entities=tuple(replace(e, retired=e.name == name or e.retired) for e in model.entities)
    )


def test_defaults_protect_managed_tables_and_derive_the_windows(model: Model) -> None:
    for e in model.entities:
        assert e.source.point_in_time_recovery and e.source.deletion_protection
        q = e.pipeline.queue
        window = 86400 + 2 * q.message_retention_seconds + q.dlq_retention_seconds
        assert e.pipeline.retention.window == e.pipeline.retention.ledger_seconds == window == 1987200
    tables = {
        label: body
        for doc in terraform_files(model).values()
        for label, body in doc.get("resource", {}).get("aws_dynamodb_table", {}).items()
    }
    assert tables and all(
        b["deletion_protection_enabled"] is True and b["point_in_time_recovery"] == {"enabled": True}
        for b in tables.values()
    )
    assert all("lifecycle" not in b for b in tables.values())


def test_a_retired_entity_keeps_only_its_table(model: Model) -> None:
    retired = _retire(model, "orders")
    files = terraform_files(retired)
    orders = files["orders.tf.json"]
    # THEN its file holds the managed table alone, kept
    assert set(orders["resource"]) == {"aws_dynamodb_table"}
    assert orders["resource"]["aws_dynamodb_table"]["orders"]["lifecycle"] == {"prevent_destroy": True}
    assert "output" not in orders and "data" not in orders
    text = json.dumps(files)
    assert "orders-sync.fifo" not in text and "orders-pipe" not in text
    # AND the sync Lambda's role no longer consumes its queue
    lam = files["lambda.tf.json"]
    consume = next(
        s for s in lam["data"]["aws_iam_policy_document"]["sync"]["statement"] if s["sid"] == "ConsumeQueues"
    )
    assert not any("orders" in r and "order_items" not in r for r in consume["resources"])
    # AND the registry drops it, listing it as retired for the prune
    reg = registry(retired)
    assert "orders" not in reg["entities"] and "orders-sync.fifo" not in reg["queues"]
    assert reg["retired"] == {"orders": {"tombstone_tables": []}}
    # AND build/ has no Pipe description of it
    built = render(retired)
    assert not any(p.startswith("entities/orders/") for p in built)
    assert "entities/customers/filters.json" in built


def test_the_prune_schedule_invokes_the_sync_function_only(model: Model) -> None:
    lam = terraform_files(model)["lambda.tf.json"]
    schedule = lam["resource"]["aws_scheduler_schedule"]["prune"]
    assert schedule["schedule_expression"] == "rate(1 hour)"
    assert json.loads(schedule["target"]["input"]) == PRUNE_EVENT
    assert schedule["target"]["arn"] == "${aws_lambda_function.sync.arn}"
    (allowed,) = lam["data"]["aws_iam_policy_document"]["prune"]["statement"]
    assert allowed["actions"] == ["lambda:InvokeFunction"] and allowed["resources"] == [
        "${aws_lambda_function.sync.arn}"
    ]
    trust = lam["data"]["aws_iam_policy_document"]["prune_assume"]["statement"][0]
    assert trust["principals"] == [{"type": "Service", "identifiers": ["scheduler.amazonaws.com"]}]
    off = replace(model, project=replace(model.project, prune=replace(model.project.prune, enabled=False)))
    assert "aws_scheduler_schedule" not in terraform_files(off)["lambda.tf.json"]["resource"]


def test_validate_explains_a_retirement_and_a_short_window(tmp_path: Path) -> None:
    root = copy_project(tmp_path / "p")
    orders = root / "mappings" / "orders.yaml"
    orders.write_text(orders.read_text(encoding="utf-8") + "retired: true\n", encoding="utf-8")
    items = root / "mappings" / "order_items.yaml"
    # A lookup in a retired entity's table is an error (tests/test_lookups.py): the lines stop
    # looking up orders first.
    text, n = re.subn(r"        order_pk:\n(?:          .*\n)+", "", items.read_text(encoding="utf-8"))
    assert n == 1
    assert "\npipeline:\n" in text
    items.write_text(
        text.replace("\npipeline:\n", "\npipeline:\n  retention:\n    ledger_seconds: 86400\n", 1),
        encoding="utf-8",
    )
    loaded = load(root)
    assert loaded.model is not None, loaded.diagnostics.render_text()
    found = {d.code: d for d in loaded.diagnostics.items}
    retired = found["entity-retired"]
    assert retired.severity == "warning" and retired.path == "retired"
    assert "destroys the Pipe 'orders-pipe'" in retired.message and "'orders-sync.fifo'" in retired.message
    assert "keeps the DynamoDB table 'orders'" in retired.message and "prevent_destroy" in retired.message
    assert "ledger rows" in retired.message
    short = found["retention-window"]
    assert short.path == "pipeline.retention.ledger_seconds" and "1987200" in short.message


def _tf_env(tmp: Path) -> dict[str, str]:
    import os

    rc = tmp / "rc"
    rc.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TF_"))}
    env.update({"TF_CLI_CONFIG_FILE": str(rc), "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1"})
    return env


@pytest.mark.terraform
def test_terraform_validates_retirement_protections_and_the_schedule(model: Model, tmp_path: Path) -> None:
    binary, plugin_dir = terraform_or_skip()
    # GIVEN a retired managed entity, an unprotected table and a cron schedule
    variant = _retire(model, "orders")
    variant = replace(
        variant,
        project=replace(model.project, prune=replace(model.project.prune, schedule="cron(15 3 * * ? *)")),
        entities=tuple(
            replace(e, source=replace(e.source, deletion_protection=False, point_in_time_recovery=False))
            if e.name == "customers"
            else e
            for e in variant.entities
        ),
    )
    workdir = tmp_path / "tf"
    workdir.mkdir()
    for name, doc in terraform_files(variant).items():
        (workdir / name).write_text(json.dumps(doc, sort_keys=True, indent=2) + "\n")
    env = _tf_env(tmp_path)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [binary, *args], cwd=workdir, env=env, capture_output=True, text=True, timeout=300, check=False
        )

    init = run("init", "-backend=false", "-input=false", f"-plugin-dir={plugin_dir}")
    assert init.returncode == 0, init.stdout + init.stderr
    result: dict[str, Any] = json.loads(run("validate", "-json").stdout)
    assert result["valid"] is True, json.dumps(result["diagnostics"], indent=2)
    assert result["warning_count"] == 0, json.dumps(result["diagnostics"], indent=2)
