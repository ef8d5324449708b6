"""Checks of events.*: what gives the event type, which rules run, and each rule's actions."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from generator.checks.filter import STREAM_EVENT_NAMES, passing_event_names
from generator.checks.problem import Problem, missing_field_hint, warn
from generator.diagnostics import PathT, Severity, format_path
from generator.model import Entity, Project


def check_events(entity: Entity, project: Project) -> Iterator[Problem]:
    ev = entity.events
    if not ev.type_from:
        yield Problem(
            ("events",),
            "no message field gives the event type",
            "set events.type_from, or add a field with meta: eventName or the outbox event_type attribute",
            "events-type-from",
        )
    for i, name in enumerate(ev.type_from):
        f = entity.field(name)
        if f is None:
            yield Problem(
                ("events", "type_from", i),
                f"field '{name}' is not in the message",
                missing_field_hint(entity, name, "add it under message.fields"),
                "field-missing",
            )
        elif f.type != "S":
            yield Problem(
                ("events", "type_from", i),
                f"field '{name}' is not a string (type {f.type})",
                "dispatch on a string field",
                "events-type-from",
            )
    seen: dict[str, PathT] = {}
    for rule in ev.rules:
        for j, name in enumerate(rule.on):
            where = rule.where + (("on", j) if len(rule.on) > 1 else ("on",))
            if name in seen:
                yield Problem(
                    where,
                    f"event type '{name}' already has a rule ({format_path(seen[name])})",
                    "give each event type one rule; list several actions under one 'do'",
                    "events-duplicate",
                )
            else:
                seen[name] = where
        for act in rule.actions:
            yield from _check_action(entity, rule, act)
    dispatch_by_name = any(
        (f := entity.field(n)) is not None and f.kind == "meta" and f.meta == "eventName"
        for n in ev.type_from
    )
    names, possible = passing_event_names(entity)
    if dispatch_by_name and ev.unknown == "fail":
        for name in sorted(names):
            if name not in seen and _name_reaches_fallback(entity, name):
                yield warn(
                    ("events", "rules"),
                    f"{name} records pass the filter but no rule handles them; they fail as unknown",
                    f"add a rule for {name} (do: ignore if nothing should happen)",
                    "events-unhandled",
                )
    for name, where in seen.items():
        if name in {"INSERT", "MODIFY", "REMOVE"} and dispatch_by_name and name not in possible:
            yield warn(
                where,
                f"the filter drops {name} records, so this rule never runs",
                f"add {name} to filter.event_names",
                "events-dead",
            )
    yield from _check_event_types_against_filter(entity, seen)
    removes = "REMOVE" in possible or "REMOVE" in seen
    fields = [f for f in (entity.field(n) for n in ev.type_from) if f is not None]
    if removes and fields and all(f.kind == "attribute" and f.image == "new" for f in fields):
        yield Problem(
            ("events", "type_from"),
            f"REMOVE records have no new image, so {', '.join(f.name for f in fields)} is missing on every "
            "REMOVE and each one fails as having no event type",
            "add a field with meta: eventName to type_from (and a rule on REMOVE, or do: ignore), "
            "or drop REMOVE from filter.event_names",
            "events-type-from-remove",
        )


def _check_event_types_against_filter(entity: Entity, seen: dict[str, PathT]) -> Iterator[Problem]:
    import difflib
    import unicodedata

    for name, where in seen.items():
        odd = [ch for ch in name if ord(ch) > 127 and unicodedata.category(ch).startswith("L")]
        if odd:
            yield warn(
                where,
                f"event type {name!r} holds {unicodedata.name(odd[0], 'a non-ASCII letter')} (U+{ord(odd[0]):04X}), "
                "which looks like an ASCII letter but never matches one",
                "retype the event type in ASCII if the service writes it so",
                "events-look-alike",
            )
    allowed = entity.filter.event_types
    if not allowed:
        return
    for name, where in seen.items():
        if name not in STREAM_EVENT_NAMES and name not in allowed:
            close = difflib.get_close_matches(name, list(allowed), n=1, cutoff=0.8)
            yield Problem(
                where,
                f"event type {name!r} can never arrive: filter.event_types passes only {', '.join(allowed)}",
                (f"did you mean '{close[0]}'? " if close else "")
                + "add it to filter.event_types, or remove the rule",
                "events-dead",
            )
    for t in allowed:
        if t in seen:
            continue
        if entity.events.unknown == "fail":
            yield Problem(
                ("filter", "event_types"),
                f"event type '{t}' passes the filter but no rule handles it: with unknown: fail, every one fails",
                "add a rule for it (do: ignore if nothing should happen), or remove it from filter.event_types",
                "events-unhandled",
            )
        else:
            yield warn(
                ("filter", "event_types"),
                f"event type '{t}' passes the filter but no rule handles it: with unknown: ignore, every one is "
                "acknowledged without being applied",
                "add a rule for it (do: ignore says so on purpose), or remove it from filter.event_types",
                "events-unhandled",
            )


def _name_reaches_fallback(entity: Entity, name: str) -> bool:
    """Whether a record with this eventName reaches dispatch by its name (earlier fields absent)."""
    for fname in entity.events.type_from:
        f = entity.field(fname)
        if f is None:
            continue
        if f.kind == "meta" and f.meta == "eventName":
            return True
        if f.kind == "attribute" and f.image == "new" and name != "REMOVE":
            return False
    return True


def _check_action(entity: Entity, rule: Any, act: Any) -> Iterator[Problem]:
    t = entity.table(act.table)
    if t is None:
        yield Problem(
            act.where + ("table",),
            f"table '{act.table}' is not declared in target.tables",
            f"use one of: {', '.join(x.name for x in entity.tables)}",
            "action-table",
        )
        return
    if act.columns and act.kind != "update":
        yield Problem(
            act.where + ("columns",),
            f"columns applies to update only, not {act.kind}",
            "remove columns",
            "action-option",
        )
    if act.kind == "update" and not act.columns:
        yield Problem(
            act.where, "an update names the columns it sets", "add columns: [...]", "action-columns"
        )
    for j, cname in enumerate(act.columns):
        col = t.column(cname)
        if col is None:
            yield Problem(
                act.where + ("columns", j),
                f"column '{cname}' is not a column of table '{t.name}'",
                f"use one of: {', '.join(c.name for c in t.columns)}",
                "action-columns",
            )
        elif cname in t.key:
            yield Problem(
                act.where + ("columns", j),
                f"'{cname}' is a conflict column; an update finds the row by it and cannot change it",
                "remove it from columns",
                "action-columns",
            )
    if act.if_missing != "fail" and act.kind not in {"update", "soft_delete"}:
        yield Problem(
            act.where + ("if_missing",),
            f"if_missing applies to update and soft_delete, not {act.kind}",
            "remove it",
            "action-option",
        )
    if act.if_missing == "upsert" and act.kind != "update":
        yield Problem(
            act.where + ("if_missing",),
            "if_missing: upsert applies to update only",
            "use fail or ignore",
            "action-option",
        )
    if act.kind == "soft_delete" and t.soft_delete is None:
        yield Problem(
            act.where,
            f"table '{t.name}' has no soft_delete column",
            "add soft_delete: {column: ...} to the table, or use delete",
            "action-soft-delete",
        )
    if act.kind == "delete" and t.version is None:
        yield warn(
            act.where,
            f"table '{t.name}' has no version, so a late, older insert can bring a deleted row back",
            "add version: to the table (a tombstone is then kept for each delete)",
            "action-delete-unguarded",
        )
    # Every value the action needs must be available on the records that reach it.
    needed = list(t.key)
    if act.kind in {"insert", "upsert"} or (act.kind == "update" and act.if_missing == "upsert"):
        needed = [c.name for c in t.columns]
    elif act.kind == "update":
        needed = list(t.key) + list(act.columns)
    remove = "REMOVE" in rule.on
    for cname in needed:
        col = t.column(cname)
        if col is None:
            continue
        for fname in col.fields:
            f = entity.field(fname)
            if f is None:
                continue
            if remove and f.kind == "attribute" and f.image == "new" and len(col.fields) == 1:
                sev = Severity.ERROR if cname in t.key else Severity.WARNING
                yield Problem(
                    col.where + ("field",),
                    f"REMOVE records have no new image, so field '{fname}' is missing for the {act.kind} on REMOVE",
                    "read it from key: or the old image (image: old), or list a fallback field",
                    "remove-new-image",
                    sev,
                )
