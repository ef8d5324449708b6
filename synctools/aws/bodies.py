"""What a queue message's body says about its event, read leniently (a poison body included):
the event id (the ledger's key), the event type and the item key, from the registry's fields."""

from __future__ import annotations

import json
from typing import Any

from runtime.coerce import MISSING
from runtime.decode import DecodeError, field_value
from runtime.registry import EntitySpec


def _field(body: Any, entity: EntitySpec, name: str | None) -> Any:
    spec = entity.fields.get(name or "")
    if spec is None or not isinstance(body, dict):
        return None
    try:
        value = field_value(body, spec)
    except DecodeError:
        return None
    return None if value is MISSING else value


def summarize(text: str, entity: EntitySpec) -> dict[str, Any]:
    """{"eventId", "eventType", "key", "bodyReadable"}; None where the body does not say."""
    try:
        body: Any = json.loads(text)
    except ValueError:
        body = None
    event_id = _field(body, entity, entity.event_id_field)
    event_type = next(
        (v for n in entity.type_from if isinstance(v := _field(body, entity, n), str) and v), None
    )
    key: dict[str, str] = {}
    for table in entity.tables.values():
        for col in table.key:
            for f in table.columns[col].fields:
                v = _field(body, entity, f)
                if v is not None:
                    key[col] = str(v)
                    break
        break  # the first table's key names the item
    return {
        "eventId": event_id if isinstance(event_id, str) else None,
        "eventType": event_type,
        "key": key,
        "bodyReadable": isinstance(body, dict),
    }
