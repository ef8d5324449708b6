"""Factories for SQS events in the exact shape Lambda delivers them (AWS: services-sqs-configure), with message
bodies shaped like the generated input templates of the bundled mappings."""

from __future__ import annotations

import itertools
import json
import uuid
from typing import Any

REGION = "ap-northeast-1"
ACCOUNT = "123456789012"
_counter = itertools.count(1)


def queue_arn(queue: str) -> str:
    return f"arn:aws:sqs:{REGION}:{ACCOUNT}:{queue}"


def sqs_record(
    body: dict[str, Any] | str,
    *,
    group: str,
    queue: str = "orders-sync.fifo",
    message_id: str | None = None,
    receive_count: int = 1,
    dedup_id: str | None = None,
) -> dict[str, Any]:
    n = next(_counter)
    text = body if isinstance(body, str) else json.dumps(body)
    return {
        "messageId": message_id or str(uuid.uuid4()),
        "receiptHandle": f"AQEB{n:08d}handle",
        "body": text,
        "attributes": {
            "ApproximateReceiveCount": str(receive_count),
            "SentTimestamp": str(1700000000000 + n),
            "SequenceNumber": str(18800000000000000000 + n),
            "MessageGroupId": group,
            "SenderId": "AROAEXAMPLE:pipes",
            "MessageDeduplicationId": dedup_id
            or (body.get("eventID", str(n)) if isinstance(body, dict) else str(n)),
            "ApproximateFirstReceiveTimestamp": str(1700000000100 + n),
        },
        "messageAttributes": {},
        "md5OfBody": "0" * 32,
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn(queue),
        "awsRegion": REGION,
    }


def redelivered(record: dict[str, Any]) -> dict[str, Any]:
    """The same message received again: same id and body, a new receipt, one more receive."""
    again = json.loads(json.dumps(record))
    again["receiptHandle"] += "-again"
    again["attributes"]["ApproximateReceiveCount"] = str(
        int(record["attributes"]["ApproximateReceiveCount"]) + 1
    )
    return again


def event(records: list[dict[str, Any]]) -> dict[str, Any]:
    return {"Records": records}


_seq = itertools.count(100000000000000000000)


def next_sequence() -> str:
    return str(next(_seq))


def order_body(
    order_id: str,
    event_type: str = "order.created",
    *,
    status: str = "pending",
    total: str = "3000",
    customer: str = "999",
    seq: str | None = None,
    changed_at: int = 1700000000,
    event_id: str | None = None,
) -> dict[str, Any]:
    return {
        "eventType": event_type,
        "orderID": order_id,
        "customerID": customer,
        "orderDetails": {"totalAmount": total, "status": status},
        "eventID": event_id or uuid.uuid4().hex,
        "eventName": "INSERT" if event_type == "order.created" else "MODIFY",
        "sequenceNumber": seq or next_sequence(),
        "changedAt": changed_at,
    }


def order_record(order_id: str, event_type: str = "order.created", **kw: Any) -> dict[str, Any]:
    return sqs_record(order_body(order_id, event_type, **kw), group=order_id, queue="orders-sync.fifo")


def item_body(
    order_id: str,
    line_no: int,
    event_name: str = "INSERT",
    *,
    sku: str = "SKU-1",
    quantity: str = "2",
    unit_price: str = "10.50",
    rev: int = 1,
    event_id: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "eventID": event_id or uuid.uuid4().hex,
        "eventName": event_name,
        "changedAt": 1700000000,
        "orderID": order_id,
        "lineNo": str(line_no),
    }
    if event_name == "REMOVE":
        # A REMOVE record has no new image: its placeholders render as "" (facts 1.3).
        body.update(
            {"sku": "", "quantity": "", "unitPrice": "", "options": "", "rev": "", "oldRev": str(rev)}
        )
    else:
        body.update(
            {
                "sku": sku,
                "quantity": quantity,
                "unitPrice": unit_price,
                "options": {"gift": {"BOOL": True}, "note": {"S": "leave at door"}},
                "rev": str(rev),
                "oldRev": str(rev - 1) if event_name == "MODIFY" else "",
            }
        )
    return body


def item_record(order_id: str, line_no: int, event_name: str = "INSERT", **kw: Any) -> dict[str, Any]:
    return sqs_record(
        item_body(order_id, line_no, event_name, **kw), group=order_id, queue="order_items-sync.fifo"
    )


def customer_body(
    customer_id: str,
    event_type: str = "customer.registered",
    *,
    event_name: str | None = None,
    email: str | None = None,
    status: str = "active",
    vip: bool = False,
    seq: str | None = None,
    changed_at: int = 1700000000,
    event_id: str | None = None,
) -> dict[str, Any]:
    remove = event_name == "REMOVE"
    return {
        "eventID": event_id or uuid.uuid4().hex,
        "eventName": event_name or ("INSERT" if event_type == "customer.registered" else "MODIFY"),
        "sequenceNumber": seq or next_sequence(),
        "changedAt": changed_at,
        "eventType": "" if remove else event_type,
        "customerID": customer_id,
        "email": "" if remove else (email or f"{customer_id.lower()}@example.com"),
        "name": {"given": "" if remove else "Hanako", "family": "" if remove else "Yamada"},
        "status": "" if remove else status,
        "vip": "" if remove else vip,
        "registeredAt": "" if remove else "2024-01-02T03:04:05Z",
        "profile": "" if remove else {"M": {"plan": {"S": "gold"}, "points": {"N": "120.5"}}},
    }


def customer_record(customer_id: str, event_type: str = "customer.registered", **kw: Any) -> dict[str, Any]:
    return sqs_record(
        customer_body(customer_id, event_type, **kw), group=customer_id, queue="customers-sync.fifo"
    )


def invoice_body(
    invoice_id: str,
    lines: list[dict[str, Any]] | None,
    *,
    event_name: str = "INSERT",
    seq: str | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    """A body of mappings/invoices.yaml's template: `lines` as the Pipe renders a list of maps
    (each element its DynamoDB attribute value); None: the attribute is missing ("")."""

    def typed(v: Any) -> dict[str, Any]:
        return {"S": v} if isinstance(v, str) else {"N": str(v)}

    return {
        "eventID": event_id or uuid.uuid4().hex,
        "eventName": event_name,
        "sequenceNumber": seq or next_sequence(),
        "invoiceID": invoice_id,
        "customerID": {"S": "C-1"} if event_name != "REMOVE" else "",
        "currency": "",
        "lines": "" if lines is None else [{"M": {k: typed(v) for k, v in e.items()}} for e in lines],
    }


def invoice_record(invoice_id: str, lines: list[dict[str, Any]] | None, **kw: Any) -> dict[str, Any]:
    return sqs_record(invoice_body(invoice_id, lines, **kw), group=invoice_id, queue="invoices-sync.fifo")
