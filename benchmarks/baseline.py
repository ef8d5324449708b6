"""The comparison handler: a straightforward one-transaction-per-message SQS consumer, the
kind the seed article sketches. For each message: json-decode the body, open a transaction,
INSERT ... ON CONFLICT / ON DUPLICATE KEY UPDATE for `order.created`, a plain UPDATE for the
other event types, commit. SQLAlchemy Core on the same tables; no ledger, no version guard,
no tombstones, no batching (so also none of the runtime's guarantees).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Table, bindparam, update
from sqlalchemy.dialects import mysql, postgresql
from sqlalchemy.engine import Engine


class BaselineHandler:
    def __init__(self, engine: Engine, orders: Table) -> None:
        self.engine = engine
        t = orders
        if engine.dialect.name in ("mysql", "mariadb"):
            ins = mysql.insert(t)
            self.upsert = ins.on_duplicate_key_update(
                customer_id=ins.inserted.customer_id,
                total_amount=ins.inserted.total_amount,
                status=ins.inserted.status,
                updated_at=ins.inserted.updated_at,
            )
        else:
            ins = postgresql.insert(t)
            self.upsert = ins.on_conflict_do_update(
                index_elements=[t.c.order_id],
                set_={
                    "customer_id": ins.excluded.customer_id,
                    "total_amount": ins.excluded.total_amount,
                    "status": ins.excluded.status,
                    "updated_at": ins.excluded.updated_at,
                },
            )
        self.update = (
            update(t)
            .where(t.c.order_id == bindparam("k_order_id"))
            .values(
                status=bindparam("status"),
                total_amount=bindparam("total_amount"),
                updated_at=bindparam("updated_at"),
            )
        )

    def handle(self, records: list[dict[str, Any]]) -> dict[str, list[dict[str, str]]]:
        failures = []
        for rec in records:
            try:
                body = json.loads(rec["body"])
                details = body["orderDetails"]
                values = {
                    "total_amount": Decimal(details["totalAmount"]),
                    "status": _bare(details["status"]),
                    "updated_at": datetime.fromtimestamp(int(body["changedAt"]), UTC),
                }
                with self.engine.begin() as conn:
                    if _bare(body["eventType"]) == "order.created":
                        conn.execute(
                            self.upsert,
                            {"order_id": body["orderID"], "customer_id": int(body["customerID"]), **values},
                        )
                    else:
                        conn.execute(self.update, {"k_order_id": body["orderID"], **values})
            except Exception:
                failures.append({"itemIdentifier": rec["messageId"]})
        return {"batchItemFailures": failures}


def _bare(value: Any) -> Any:
    """A string attribute as the template renders it, {"S": "x"}, or bare."""
    return value["S"] if isinstance(value, dict) else value
