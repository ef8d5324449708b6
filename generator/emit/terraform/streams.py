"""The DynamoDB side: a managed table with its stream, or a data source (checked at plan) for a
table created elsewhere; either way, the stream ARN each entity's Pipe reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from generator.emit.terraform.files import DATA_FILE, EntityFile, Files, table_label
from generator.emit.terraform.hcl import Expr, escape, expr, hcl, interp
from generator.model import Entity, Model


@dataclass(frozen=True)
class Stream:
    """A source table's stream: its ARN, and whether the table is managed here or external."""

    arn: Expr
    output_note: str


def streams(files: Files, model: Model) -> dict[str, Stream]:
    """Stream ARN per source table name: the managed table, else one data source per table."""
    managed = {e.source.table: e for e in model.entities if e.source.managed}
    found = {
        table: Stream(expr("aws_dynamodb_table", e.name, "stream_arn"), "managed")
        for table, e in managed.items()
    }
    readers: dict[str, list[Entity]] = {}
    for e in model.live:  # a retired entity reads no stream
        if e.source.table not in managed:
            readers.setdefault(e.source.table, []).append(e)
    for table, entities in sorted(readers.items()):
        label = table_label(table)
        files.data(DATA_FILE, "aws_dynamodb_table", label, _external_table(table, entities))
        found[table] = Stream(expr("data", "aws_dynamodb_table", label, "stream_arn"), "external")
    return found


def _external_table(table: str, entities: list[Entity]) -> dict[str, Any]:
    """A data source for a table created elsewhere. A table without a stream has an empty
    stream_arn, and filters on an image the stream does not carry never match (AWS: Streams):
    fail the plan with a clear message instead."""
    view_types = sorted({e.source.stream_view_type for e in entities})
    condition = " && ".join(
        ["self.stream_enabled"] + [f"self.stream_view_type == {hcl(v)}" for v in view_types]
    )
    names = ", ".join(e.name for e in entities)
    return {
        "name": escape(table),
        "lifecycle": {
            "postcondition": [
                {
                    "condition": interp(Expr(condition)),
                    "error_message": escape(
                        f"DynamoDB table {table} must have its stream enabled with view type "
                        f"{' and '.join(view_types)} (read by: {names})."
                    ),
                }
            ]
        },
    }


def dynamodb_table(out: EntityFile, kms_key_arn: str | None) -> None:
    """The source table, when the mapping manages it (retired too: it is kept); encrypted with
    the project's KMS key when it names one (otherwise DynamoDB's AWS-owned key)."""
    if not out.entity.source.managed:
        return
    src = out.entity.source
    body: dict[str, Any] = {
        "name": escape(src.table),
        "billing_mode": src.billing_mode,
        "hash_key": escape(src.partition_key.name),
        # Only key attributes are declared: DynamoDB is schemaless otherwise, and an
        # attribute block without an index using it is rejected at plan.
        "attribute": [{"name": escape(k.name), "type": k.type} for k in src.keys],
        "stream_enabled": True,
        # facts 7.4 / 0.19: changing this re-creates the stream, so the pipe is replaced.
        "stream_view_type": src.stream_view_type,
    }
    if src.sort_key:
        body["range_key"] = escape(src.sort_key.name)
    # Nothing in a normal change can lose the source data: deletion protection refuses a
    # delete (a removed mapping, a replacing change), point-in-time recovery restores a bad write.
    body["deletion_protection_enabled"] = src.deletion_protection
    body["point_in_time_recovery"] = {"enabled": src.point_in_time_recovery}
    if kms_key_arn:
        body["server_side_encryption"] = {"enabled": True, "kms_key_arn": escape(kms_key_arn)}
    if out.entity.retired:
        # Retired: the sync is gone, the table stays (a plan that would destroy it fails).
        body["lifecycle"] = {"prevent_destroy": True}
    if src.billing_mode == "PROVISIONED":
        if src.read_capacity is not None:
            body["read_capacity"] = src.read_capacity
        if src.write_capacity is not None:
            body["write_capacity"] = src.write_capacity
    out.resource("aws_dynamodb_table", out.entity.name, body)
