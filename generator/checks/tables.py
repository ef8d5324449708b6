"""Checks of target.tables: conflict keys, managed columns, version, soft delete and sort key."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from generator.checks.columns import check_column
from generator.checks.filter import STREAM_EVENT_NAMES, passing_event_names
from generator.checks.identifiers import derived_name_problems, sql_identifier_problems
from generator.checks.problem import Problem, missing_field_hint, warn
from generator.model import Entity, Field, Project, Table
from runtime import dialects
from runtime.schema import sync_key_name


def check_tables(entity: Entity, project: Project) -> Iterator[Problem]:
    counts = Counter(t.name for t in entity.tables)
    for t in entity.tables:
        if counts[t.name] > 1:
            yield Problem(
                t.where + ("table",),
                f"table '{t.name}' is declared {counts[t.name]} times",
                "declare each table once and give it several actions in events.rules",
                "table-duplicate",
            )
        for ident_path, ident in [(t.where + ("table",), t.name)] + [(c.where, c.name) for c in t.columns]:
            yield from sql_identifier_problems(ident_path, ident)
        yield from _check_table(entity, t, project)


def _check_table(entity: Entity, t: Table, project: Project) -> Iterator[Problem]:
    col_names = [c.name for c in t.columns]
    for i, k in enumerate(t.key):
        col = t.column(k)
        if col is None:
            yield Problem(
                t.where + ("key", i),
                f"conflict column '{k}' is not written by this table's columns",
                f"add '{k}' under columns (with the message field feeding it)",
                "key-not-written",
            )
        elif col.has_const:
            yield Problem(
                col.where,
                f"conflict column '{k}' is a constant, so every message would hit the same row",
                "feed it from a message field",
                "key-const",
            )
        elif col.expr is not None:
            # The tools that find a row from an item (reconcile, the DLQ's key summary) read the
            # key columns' fields; a computed key is a follow-up, not silently half supported.
            yield Problem(
                col.where + ("expr",),
                f"conflict column '{k}' is computed; key columns must be fed by a message field",
                "feed the key column from a field (compute the value into a field upstream)",
                "key-expr",
            )
    reserved_cols = {
        t.version.column if t.version else None,
        t.soft_delete.column if t.soft_delete else None,
    } - {None}
    for rc in reserved_cols:
        if rc in col_names:
            yield Problem(
                t.where + ("columns", rc),
                f"'{rc}' is managed by the version/soft_delete settings and must not be listed as a column",
                "remove it from columns",
                "column-managed",
                key=True,
            )
    if t.version and t.soft_delete and t.version.column == t.soft_delete.column:
        yield Problem(
            t.soft_delete.where,
            "the soft-delete column and the version column are the same",
            "use two columns",
            "column-managed",
        )
    nul_ok = dialects.for_name(project.database.dialect).text_holds_nul
    for c in t.columns:
        yield from check_column(entity, t, c, nul_ok)
    if t.version:
        yield from _check_version(entity, t)
    yield from _check_sort_key(entity, t)
    if t.soft_delete and t.soft_delete.field:
        f = entity.field(t.soft_delete.field)
        if f is None:
            yield Problem(
                t.soft_delete.where + ("field",),
                f"field '{t.soft_delete.field}' is not in the message",
                missing_field_hint(entity, t.soft_delete.field, "add it under message.fields"),
                "field-missing",
            )
        else:
            yield from _check_soft_delete_field(t, f)


def _check_soft_delete_field(t: Table, f: Field) -> Iterator[Problem]:
    sd = t.soft_delete
    assert sd is not None
    where = sd.where + ("field",)
    if f.type not in {"number", "N", "S"}:
        yield Problem(
            where,
            f"soft-delete field '{f.name}' is {f.type}; a time is a number (epoch) or a string (ISO 8601)",
            "point at a timestamp field (meta: ApproximateCreationDateTime, an N or an S attribute)",
            "soft-delete-field",
        )
    elif sd.format == "iso8601" and f.type != "S":
        yield Problem(
            sd.where + ("format",),
            f"format iso8601 needs a string field; '{f.name}' is {f.type}",
            "use epoch_seconds or epoch_millis",
            "soft-delete-field",
        )
    elif sd.format is None and f.type == "N":
        yield warn(
            where,
            f"soft-delete field '{f.name}' is a number read as epoch seconds; a time in milliseconds would "
            "be refused for every delete (beyond year 9999)",
            "say which: format: epoch_seconds or format: epoch_millis",
            "soft-delete-format",
        )


def _check_version(entity: Entity, t: Table) -> Iterator[Problem]:
    v = t.version
    assert v is not None
    kinds = set()
    for name in v.fields:
        f = entity.field(name)
        if f is None:
            yield Problem(
                v.where + ("field",),
                f"version field '{name}' is not in the message",
                "add a field with meta: SequenceNumber, or a numeric item attribute (type N)",
                "version-missing",
            )
            continue
        if f.kind == "meta" and f.meta == "SequenceNumber":
            kinds.add("sequence")
        elif f.kind == "meta" and f.meta == "ApproximateCreationDateTime":
            kinds.add("integer")
            yield warn(
                v.where + ("field",),
                "ApproximateCreationDateTime has one-second resolution: two changes in one second compare equal and the second is dropped as stale",
                "use meta: SequenceNumber or an item version attribute",
                "version-coarse",
            )
        elif f.type in {"N", "number"}:
            kinds.add("integer")
        else:
            yield Problem(
                v.where + ("field",),
                f"version field '{name}' is {f.type}; a version must be the SequenceNumber or a number",
                "point at meta: SequenceNumber or an N attribute",
                "version-type",
            )
    if len(kinds) > 1:
        yield Problem(
            v.where + ("field",),
            "version fields mix the stream sequence number with item numbers, which do not compare",
            "use one kind of version",
            "version-mixed",
        )
    sources = [entity.field(n) for n in v.fields]
    old_only = sources and all(f is not None and f.kind == "attribute" and f.image == "old" for f in sources)
    if old_only and written_on(entity, t, "INSERT"):
        yield Problem(
            v.where + ("field",),
            f"INSERT records have no old image, so version field {' / '.join(v.fields)} is missing on every "
            "INSERT and each one fails",
            "list a new-image field first (field: [rev, oldRev]) or use meta: SequenceNumber",
            "version-old-image",
        )


def _check_sort_key(entity: Entity, t: Table) -> Iterator[Problem]:
    sk = entity.source.sort_key
    # A single-table entity is one item type of its partitions (one PROFILE item per customer),
    # so a row per partition is its usual shape, not a slip.
    if sk is None or not t.key or entity.source.discriminator is not None:
        return
    for k in t.key:
        col = t.column(k)
        for name in col.fields if col is not None else ():
            f = entity.field(name)
            if f is not None and (
                f.key == sk.name or (f.attribute is not None and f.attribute.text == sk.name)
            ):
                return
    yield warn(
        t.where + ("key",),
        f"the conflict key [{', '.join(t.key)}] leaves out the sort key '{sk.name}': every item of one "
        f"partition ('{entity.source.partition_key.name}') writes the same row",
        f"add a column fed by key: {sk.name} to key, unless the table keeps one row per partition on purpose",
        "key-sort-key",
    )


def written_on(entity: Entity, t: Table, event_name: str) -> bool:
    """Whether records with this stream event name can reach a rule that writes table t: the
    filter lets them through, and the rule is on that name or on outbox event types."""
    if event_name not in passing_event_names(entity)[1]:
        return False
    for rule in entity.events.rules:
        if any(a.table == t.name for a in rule.actions) and (
            event_name in rule.on or any(n not in STREAM_EVENT_NAMES for n in rule.on)
        ):
            return True
    return False


def check_surrogate_keys(entity: Entity, project: Project) -> Iterator[Problem]:
    """The sync never writes a surrogate key, so it must not also be a written column; the
    unique constraint the reference DDL puts on the conflict key beside it needs a name that fits."""
    for t in entity.tables:
        if t.surrogate_key:
            yield from derived_name_problems(
                t.where + ("table",), t.name, [sync_key_name(t.name)], "the unique key"
            )
        if t.surrogate_key and (
            t.column(t.surrogate_key)
            or t.surrogate_key
            in {t.version.column if t.version else "", t.soft_delete.column if t.soft_delete else ""}
        ):
            yield Problem(
                t.where + ("surrogate_key",),
                f"surrogate key '{t.surrogate_key}' is also a written column",
                "the sync never writes the surrogate key: remove it from columns or rename it",
                "column-managed",
            )


def check_append_only(entity: Entity, project: Project) -> Iterator[Problem]:
    """A table marked append_only is a log: only insert actions add to it (an update, upsert or
    delete would make its rows a function of something, which reconcile would then have to
    compare). A table only inserts write and that is not marked is most likely a log too:
    reconcile would compare it with the current item and find its older events extra."""
    actions = [a for rule in entity.events.rules for a in rule.actions]
    for t in entity.tables:
        writes = [a for a in actions if a.table == t.name]
        if t.append_only:
            for a in writes:
                if a.kind != "insert":
                    yield Problem(
                        a.where + ("action",),
                        f"table '{t.name}' is append_only (a log of events), but this rule would {a.kind} its rows",
                        "write a log table with action insert only, or drop append_only from the table",
                        "append-only-written",
                    )
        elif writes and all(a.kind == "insert" for a in writes):
            yield warn(
                t.where + ("table",),
                f"table '{t.name}' is written only by insert actions, so its rows look like a log of events; "
                "reconcile compares a table with the current item unless it is marked append_only",
                "add append_only: true to the table if each row is an event (reconcile then skips it)",
                "append-only-unmarked",
            )
