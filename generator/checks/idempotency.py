"""Checks of idempotency.*: the ledger needs a string event id from the message."""

from __future__ import annotations

from collections.abc import Iterator

from generator.checks.problem import Problem
from generator.model import Entity, Project


def check_idempotency(entity: Entity, project: Project) -> Iterator[Problem]:
    idem = entity.idempotency
    if not idem.ledger:
        return
    if idem.event_id_field is None:
        yield Problem(
            ("message", "fields"),
            "the ledger needs an event id in the message and no field has meta: eventID",
            "add eventID: {meta: eventID} under message.fields",
            "idempotency-event-id",
        )
        return
    f = entity.field(idem.event_id_field)
    if f is None:
        yield Problem(
            ("idempotency", "event_id_field"),
            f"field '{idem.event_id_field}' is not in the message",
            "add it, or add a field with meta: eventID",
            "field-missing",
        )
    elif f.type != "S":
        yield Problem(
            ("idempotency", "event_id_field"),
            f"event id field '{f.name}' must be a string",
            "use meta: eventID",
            "idempotency-event-id",
        )
