"""Checks of a child table (a table with `each`): the list or map field it expands, its key
(the parent's key columns and one position column), its version, the actions on it, and
whether an item's elements can outgrow the SQS message the Pipe sends."""

from __future__ import annotations

from collections.abc import Iterator

from generator.checks.problem import Problem, missing_field_hint, warn
from generator.model import Column, Entity, Project, Table
from runtime.aws_limits import DYNAMODB_ITEM_BYTES, DYNAMODB_NUMBER_DIGITS, SQS_MESSAGE_BYTES
from synctools import awsdocs

POSITION_TYPES = {"L": {"integer", "bigint", "smallint"}, "M": {"string", "text"}}
CHILD_ACTIONS = {"upsert", "delete"}
# Bytes of the message's JSON per element and per attribute around the values: {"M":{...}},
# and "name":{"S":...}, (the Pipe sends each element as its DynamoDB attribute value).
ELEMENT_OVERHEAD = 10
ATTRIBUTE_OVERHEAD = 12
# The most the message's JSON can take per byte DynamoDB counts in an item: a list of NULLs or
# one-digit numbers ({"NULL":true}, is 14 bytes for DynamoDB's 2).
JSON_PER_ITEM_BYTE = 7
OWN_ITEMS_HINT = "or keep each element as its own DynamoDB item (mappings/order_items.yaml)"


def _value_bytes(c: Column) -> int | None:
    """The most bytes a value of column `c` takes in the message's JSON (UTF-8, 4 bytes a
    character), or None when nothing bounds it."""
    if c.type == "string" and c.length is not None:
        return 4 * c.length + 2
    if c.type in {"integer", "bigint", "smallint", "decimal", "float"}:
        return DYNAMODB_NUMBER_DIGITS + 8  # digits, sign, point, exponent, quotes
    if c.type == "boolean":
        return 5
    if c.type in {"timestamp", "date"}:
        return 40
    return None


def element_bytes(t: Table) -> tuple[int, list[Column]]:
    """The most bytes one element's mapped attributes take in the message, and the element
    columns that nothing bounds (left out of the figure)."""
    total, unbounded = ELEMENT_OVERHEAD, []
    for c in t.columns:
        if c.element is None:
            continue
        size = _value_bytes(c)
        if size is None:
            unbounded.append(c)
            continue
        total += ATTRIBUTE_OVERHEAD + len(".".join(c.element)) + size
    return total, unbounded


def check_children(entity: Entity, project: Project) -> Iterator[Problem]:
    child_tables = {t.name for t in entity.tables if t.each is not None}
    for t in entity.tables:
        if t.each is None:
            for c in t.columns:
                if c.element is not None or c.position:
                    key = "element" if c.element is not None else "position"
                    yield Problem(
                        c.where + (key,),
                        f"column '{c.name}' takes an element's {'attribute' if key == 'element' else 'position'}, but table '{t.name}' has no each",
                        "add each: {field: <a list or map field>} to the table, or feed the column from a field",
                        "each-missing",
                    )
            continue
        yield from _check_child(entity, t)
    for rule in entity.events.rules:
        for act in rule.actions:
            if act.table in child_tables and act.kind not in CHILD_ACTIONS:
                yield Problem(
                    act.where + ("action",),
                    f"table '{act.table}' is a child table: only upsert (write every element, delete the "
                    f"parent's rows the event no longer holds) and delete (delete them all) apply, not {act.kind}",
                    "use upsert or delete",
                    "each-action",
                )


def _check_child(entity: Entity, t: Table) -> Iterator[Problem]:
    each = t.each
    assert each is not None
    f = entity.field(each.field)
    if f is None:
        yield Problem(
            each.where + ("field",),
            f"field '{each.field}' is not in the message",
            missing_field_hint(entity, each.field, "add it under message.fields with type: L"),
            "field-missing",
        )
    elif f.type not in POSITION_TYPES:
        yield Problem(
            each.where + ("field",),
            f"field '{each.field}' is of DynamoDB type {f.type}; each takes a list (L) or a map (M)",
            "give the field type: L (or M), or read the list attribute into another field",
            "each-field-type",
        )
        f = None
    if t.version is None:
        yield Problem(
            t.where + ("each",),
            f"child table '{t.name}' has no version: its rows carry the parent's version, which keeps an older event from overwriting or deleting newer rows",
            "add version: {column: sync_version, field: <the parent's version field>}",
            "each-version",
        )
    if t.soft_delete is not None:
        yield Problem(
            t.soft_delete.where,
            "a child table's rows are deleted with their parent's element, never soft deleted",
            "remove soft_delete",
            "each-soft-delete",
        )
    positions = [c for c in t.columns if c.position]
    if len(positions) != 1:
        yield Problem(
            t.where + ("columns",),
            f"child table '{t.name}' has {len(positions)} position columns; it needs exactly one",
            "mark the column taking the element's index (or map key) with position: true",
            "each-position",
        )
    for c in positions:
        if c.name not in t.key:
            yield Problem(
                c.where + ("position",),
                f"position column '{c.name}' is not in the key; a child row is found by the parent's key and its position",
                f"add '{c.name}' to key",
                "each-position",
            )
        if f is not None and c.type not in POSITION_TYPES[f.type]:
            yield Problem(
                c.where + ("type",),
                f"position column '{c.name}' of type {c.type} cannot take a {'list index' if f.type == 'L' else 'map key'}",
                f"use type {' or '.join(sorted(POSITION_TYPES[f.type]))}",
                "each-position",
            )
    for k in t.key:
        kc = t.column(k)
        if kc is not None and kc.element is not None:
            yield Problem(
                kc.where + ("element",),
                f"key column '{k}' takes an element's attribute; a child row's key is the parent's key columns and the position",
                "feed it from a message field, or make it the position column",
                "each-key",
            )
    if len([k for k in t.key if (pc := t.column(k)) is not None and pc.fields]) == 0:
        yield Problem(
            t.where + ("key",),
            f"child table '{t.name}' has no parent key column: every parent's rows would be one set",
            "add the parent's key columns (fed by message fields) to key",
            "each-key",
        )
    yield from _check_size(t, f.type if f is not None else None)


def _check_size(t: Table, kind: str | None) -> Iterator[Problem]:
    """Whether an item's elements can make the message outgrow SQS's limit."""
    each = t.each
    assert each is not None
    limit = f"SQS's {SQS_MESSAGE_BYTES:,}-byte message (see {awsdocs.SQS_MESSAGE_QUOTAS})"
    if each.max_elements is None:
        yield warn(
            each.where + ("field",),
            f"nothing bounds the elements of '{each.field}' but DynamoDB's {DYNAMODB_ITEM_BYTES:,}-byte item, "
            f"and in the message's JSON an item that size can take up to {JSON_PER_ITEM_BYTE}x as much, over {limit}",
            f"set each.max_elements (a message with more elements fails permanently, naming the limit), {OWN_ITEMS_HINT}",
            "each-size",
        )
        return
    per, unbounded = element_bytes(t)
    for c in unbounded:
        yield warn(
            c.where + ("type",),
            f"element column '{c.name}' ({c.type}) has no bound, so validate cannot tell whether "
            f"{each.max_elements:,} elements fit {limit}",
            "give it type: string with a length, or check the elements' size yourself",
            "each-size",
        )
    total = per * each.max_elements
    if total > SQS_MESSAGE_BYTES:
        fits = max(1, SQS_MESSAGE_BYTES // per)
        yield Problem(
            each.where + ("max_elements",),
            f"{each.max_elements:,} elements of up to {per:,} bytes each in the message's JSON can reach "
            f"{total:,} bytes, over {limit}",
            f"lower max_elements to at most {fits:,}, shorten the element columns' lengths, {OWN_ITEMS_HINT}",
            "each-size",
        )
