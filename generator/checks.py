"""Semantic checks: small `check_*` functions over the resolved model.

Each check yields problems as (path, message, hint, code[, severity]); `run_checks` turns them
into located diagnostics. The structural shape was already enforced by the JSON Schema.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

from generator.diagnostics import Diagnostic, PathT, Severity, format_path
from generator.emit import pipes
from generator.emit.registry import registry_column
from generator.model import PIPES_JSON_PATH, Column, Entity, Field, Model, Project, Table
from generator.yamlload import Located
from runtime import dialects
from runtime.aws_limits import (
    DYNAMODB_STREAM_READERS_PER_SHARD,
    LAMBDA_CONCURRENCY_MAX,
    LAMBDA_CONCURRENCY_MIN,
    LAMBDA_FIFO_BATCH,
    LAMBDA_MAX_RECEIVE_ADVICE,
    LAMBDA_VISIBILITY_FACTOR,
    PIPES_DYNAMIC_PARAMETER_CHARS,
    PIPES_FILTERS,
    PIPES_NAME_CHARS,
    PIPES_PATTERN_CHARS,
    PIPES_TEMPLATE_CHARS,
    SQS_BATCH,
    SQS_QUEUE_NAME_CHARS,
)
from synctools import awsdocs
from synctools.local.patterns import unsupported_operators


@dataclass(frozen=True)
class Problem:
    path: PathT
    message: str
    hint: str
    code: str
    severity: Severity = Severity.ERROR
    key: bool = False  # point at the key rather than the value


def warn(path: PathT, message: str, hint: str, code: str) -> Problem:
    return Problem(path, message, hint, code, Severity.WARNING)


EntityCheck = Callable[[Entity, Project], Iterator[Problem]]

# Which DynamoDB value types each column type accepts.
COLUMN_ACCEPTS: dict[str, set[str]] = {
    "string": {"S", "N", "BOOL", "number"},
    "text": {"S", "N", "BOOL", "number"},
    "integer": {"N", "S", "number", "BOOL"},
    "bigint": {"N", "S", "number", "BOOL"},
    "smallint": {"N", "S", "number", "BOOL"},
    "decimal": {"N", "S", "number"},
    "float": {"N", "S", "number"},
    "boolean": {"BOOL", "N", "S"},
    "timestamp": {"S", "N", "number"},
    "date": {"S", "N", "number"},
    "json": {"M", "L", "SS", "NS", "S", "N", "BOOL", "NULL", "number"},
}

# Words reserved in PostgreSQL or MySQL: legal as identifiers only when quoted.
RESERVED = {
    "all",
    "alter",
    "analyze",
    "and",
    "any",
    "as",
    "asc",
    "between",
    "both",
    "by",
    "case",
    "cast",
    "check",
    "collate",
    "column",
    "constraint",
    "create",
    "cross",
    "current_date",
    "current_time",
    "current_timestamp",
    "current_user",
    "default",
    "delete",
    "desc",
    "distinct",
    "drop",
    "else",
    "end",
    "except",
    "exists",
    "false",
    "fetch",
    "for",
    "foreign",
    "from",
    "grant",
    "group",
    "having",
    "in",
    "index",
    "inner",
    "insert",
    "interval",
    "into",
    "is",
    "join",
    "key",
    "keys",
    "leading",
    "left",
    "like",
    "limit",
    "not",
    "null",
    "offset",
    "on",
    "or",
    "order",
    "outer",
    "primary",
    "range",
    "references",
    "right",
    "select",
    "set",
    "table",
    "then",
    "to",
    "trailing",
    "true",
    "union",
    "unique",
    "update",
    "user",
    "using",
    "values",
    "when",
    "where",
    "with",
}


def _missing_field_hint(entity: Entity, name: str, action: str) -> str:
    """'did you mean ...?' for a close name, then what to do and the fields there are."""
    import difflib

    names = [f.name for f in entity.fields]
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    prefix = f"did you mean '{close[0]}'? " if close else ""
    return f"{prefix}{action} or use one of: {', '.join(names)}"


# --- message -------------------------------------------------------------------------------


def check_fields(entity: Entity, project: Project) -> Iterator[Problem]:
    names = {f.name for f in entity.fields}
    for f in entity.fields:
        parts = f.parts
        for i in range(1, len(parts)):
            prefix = ".".join(parts[:i])
            if prefix in names:
                yield Problem(
                    f.where,
                    f"field '{f.name}' nests under '{prefix}', which is itself a field",
                    f"rename one of them: '{prefix}' cannot be both a value and an object",
                    "field-nesting",
                    key=True,
                )
        if f.kind == "key" and entity.source.key(f.key or "") is None:
            keys = ", ".join(k.name for k in entity.source.keys)
            yield Problem(
                f.where + ("key",),
                f"'{f.key}' is not a key attribute of table '{entity.source.table}'",
                f"use one of: {keys}, or read it with attribute: instead",
                "field-key",
            )
        if f.kind != "attribute":
            continue
        if f.image not in entity.source.images:
            view = entity.source.stream_view_type
            needs = (
                "NEW_IMAGE or NEW_AND_OLD_IMAGES" if f.image == "new" else "OLD_IMAGE or NEW_AND_OLD_IMAGES"
            )
            yield Problem(
                f.where + ("attribute",),
                f"field '{f.name}' reads the {f.image} image, which stream_view_type {view} does not carry",
                f"set source.stream_view_type to {needs}, or read the value from a key",
                "stream-view-image",
            )


def check_field_options(entity: Entity, project: Project) -> Iterator[Problem]:
    raw_fields = entity.fields
    for f in raw_fields:
        if f.kind == "meta" and f.carry == "typed":
            yield Problem(
                f.where + ("carry",),
                "carry: typed applies to DynamoDB attribute values, not stream metadata",
                "remove carry",
                "field-carry",
            )
        if f.kind != "attribute" and f.image is not None:
            yield Problem(
                f.where + ("image",), "image applies to attribute: fields only", "remove image", "field-image"
            )


def check_template(entity: Entity, project: Project) -> Iterator[Problem]:
    text = pipes.input_template(entity)
    if len(text) > PIPES_TEMPLATE_CHARS:
        yield Problem(
            ("message", "fields"),
            f"the input template is {len(text)} characters even compact; Pipes allows {PIPES_TEMPLATE_CHARS} (see {awsdocs.PIPES_INPUT_TRANSFORM})",
            "carry fewer fields, or carry a whole map once with type: M instead of its members one by one",
            "limit-template",
        )


# --- filter --------------------------------------------------------------------------------


def _pattern_shape(pattern: Any, path: str) -> Iterator[str]:
    """Leaves of an EventBridge pattern must be arrays (facts 2.3)."""
    if isinstance(pattern, dict):
        for k, v in pattern.items():
            if k == "$or":
                yield f"{path}.$or: $or is not documented as supported by Pipes (see {awsdocs.PATTERN_OPERATORS})"
                continue
            sub = f"{path}.{k}" if path else k
            if isinstance(v, dict):
                yield from _pattern_shape(v, sub)
            elif not isinstance(v, list):
                yield f'{sub}: a pattern value must be a list such as ["x"] (a bare value is an error: see {awsdocs.EVENT_PATTERNS})'
            elif not v:
                yield f"{sub}: an empty list matches nothing"
    else:
        yield f"{path or '(pattern)'}: a pattern must be a mapping"


def _numeric_on_n(pattern: Any, path: tuple[str, ...] = ()) -> Iterator[str]:
    if isinstance(pattern, dict):
        for k, v in pattern.items():
            yield from _numeric_on_n(v, path + (k,))
    elif isinstance(pattern, list) and path and path[-1] in {"N", "NS"}:
        for item in pattern:
            if isinstance(item, dict) and "numeric" in item:
                yield ".".join(path)


def check_filter(entity: Entity, project: Project) -> Iterator[Problem]:
    flt = entity.filter
    src = entity.source
    if (flt.require_outbox or flt.event_types) and not src.outbox:
        key = "require_outbox" if flt.require_outbox else "event_types"
        yield Problem(
            ("filter", key),
            f"filter.{key} needs source.outbox",
            "declare source.outbox (attribute, event_id, event_type)",
            "filter-outbox",
        )
    if (flt.require_outbox or flt.event_types) and "new" not in src.images:
        yield Problem(
            ("filter",),
            f"the outbox is read from the new image, which stream_view_type {src.stream_view_type} does not carry",
            "use NEW_IMAGE or NEW_AND_OLD_IMAGES",
            "stream-view-image",
        )
    for cond in flt.require_attributes:
        if cond.image not in src.images:
            yield Problem(
                cond.where,
                f"condition on the {cond.image} image, which stream_view_type {src.stream_view_type} does not carry",
                "change source.stream_view_type or the condition's image",
                "stream-view-image",
            )
        if cond.image == "new" and not {"INSERT", "MODIFY"} & set(flt.event_names):
            yield warn(
                cond.where,
                "a new-image condition only applies to INSERT/MODIFY records, which the filter excludes",
                "remove it or use image: old",
                "filter-dead-condition",
            )
    if flt.and_pattern is not None:
        for msg in _pattern_shape(flt.and_pattern, ""):
            yield Problem(
                ("filter", "and_pattern"),
                f"invalid pattern fragment: {msg}",
                "fix the fragment",
                "filter-pattern",
            )
    for i, pat in enumerate(flt.or_patterns):
        for msg in _pattern_shape(pat, ""):
            yield Problem(
                ("filter", "or_patterns", i), f"invalid pattern: {msg}", "fix the pattern", "filter-pattern"
            )
    for where, pat in [(("filter", "and_pattern"), flt.and_pattern)] + [
        (("filter", "or_patterns", i), p) for i, p in enumerate(flt.or_patterns)
    ]:
        for leaf in _numeric_on_n(pat or {}):
            yield Problem(
                where,
                f"numeric matching on {leaf} never matches: DynamoDB N values are strings (see {awsdocs.PIPES_FILTERING})",
                "match exact strings, prefixes, or filter in the runtime instead",
                "filter-numeric-n",
            )
        for op in unsupported_operators(pat or {}):
            if op.operator == "$or":
                continue  # _pattern_shape reports $or as an error already
            yield Problem(
                where + op.path,
                f"{op.operator}: {op.why}",
                "express the condition with operators Pipes supports and the local model implements: "
                "exact values, prefix, suffix, equals-ignore-case, anything-but with values, numeric, exists",
                "filter-operator-unsupported",
                Severity.WARNING,
                key=True,
            )
    try:
        patterns = pipes.filter_patterns(entity)
    except pipes.PatternConflict as exc:
        yield Problem(
            ("filter", "and_pattern"),
            f"and_pattern sets '{exc}' which the generated filter already sets differently",
            "express that condition in one place only",
            "filter-conflict",
        )
        return
    if len(patterns) > PIPES_FILTERS:
        yield Problem(
            ("filter", "or_patterns") if flt.or_patterns else ("filter",),
            f"the filter compiles to {len(patterns)} patterns; Pipes allows {PIPES_FILTERS} (see {awsdocs.PIPES_FILTERING})",
            "merge or_patterns, or drop conditions that split event names",
            "limit-filters",
        )
    generated = len(patterns) - len(flt.or_patterns)
    for i, pat in enumerate(patterns):
        text = pipes.pattern_text(pat)
        if len(text) > PIPES_PATTERN_CHARS:
            yield Problem(
                ("filter", "or_patterns", i - generated)
                if i >= generated
                else ("filter", "event_types")
                if flt.event_types
                else ("filter",),
                f"filter pattern {i + 1} is {len(text)} characters; Pipes allows {PIPES_PATTERN_CHARS} (see {awsdocs.PIPES_FILTERING})",
                "shorten event_types or the escape-hatch patterns",
                "limit-pattern",
            )


# --- routing -------------------------------------------------------------------------------


def check_routing(entity: Entity, project: Project) -> Iterator[Problem]:
    for key, value in (
        ("message_group_id", entity.routing.message_group_id),
        ("deduplication_id", entity.routing.deduplication_id),
    ):
        path = ("routing", key)
        if not value.startswith("$"):
            yield Problem(
                path,
                f"{value!r} is not a JSON path; Pipes would send it literally",
                f"the whole value must be one JSON path such as $.dynamodb.Keys.order_id.S (see {awsdocs.PIPES_SQS_TARGET})",
                "routing-path",
            )
            continue
        if not PIPES_JSON_PATH.fullmatch(value):  # fullmatch: '$' alone allows a trailing newline
            yield Problem(
                path,
                f"{value!r} is not one whole JSON path of the form Pipes accepts",
                "write a single path of '.name' segments with optional [n], e.g. $.dynamodb.Keys.order_id.S; "
                f"prefixes, suffixes and concatenation are not evaluated (see {awsdocs.PIPES_SQS_TARGET})",
                "routing-path",
            )
        if len(value) > PIPES_DYNAMIC_PARAMETER_CHARS:
            yield Problem(
                path,
                f"{key} is {len(value)} characters; the Pipes API allows {PIPES_DYNAMIC_PARAMETER_CHARS} (see {awsdocs.PIPES_SQS_TARGET})",
                "point at a shorter path",
                "routing-length",
            )
        if (
            value.startswith("$.dynamodb.NewImage")
            and "new" in entity.source.images
            and "REMOVE" in entity.filter.event_names
        ):
            yield warn(
                path,
                f"{key} reads the new image, which REMOVE records do not have",
                "read it from $.dynamodb.Keys so every record has it",
                "routing-remove",
            )
    dedup = entity.routing.deduplication_id
    if dedup not in ("$.eventID", "$.dynamodb.SequenceNumber"):
        yield warn(
            ("routing", "deduplication_id"),
            f"{dedup} may repeat across distinct stream records; SQS drops a repeat within 5 minutes (see {awsdocs.SQS_DEDUPLICATION})",
            "use $.eventID unless you mean to merge records",
            "routing-dedup",
        )
    group = entity.routing.message_group_id
    key_paths = {f"$.dynamodb.Keys.{k.name}.{k.type}" for k in entity.source.keys}
    if group.startswith("$.dynamodb.Keys.") and group not in key_paths:
        yield Problem(
            ("routing", "message_group_id"),
            f"{group} is not a key attribute of table '{entity.source.table}' with its type, so no record "
            f"has a value there; SQS refuses a FIFO message without a group id (see {awsdocs.PIPES_SQS_TARGET})",
            f"use one of: {', '.join(sorted(key_paths))}",
            "routing-group-key",
        )
    if group.startswith("$.") and group not in key_paths and not group.startswith("$.dynamodb.Keys."):
        yield warn(
            ("routing", "message_group_id"),
            f"{group} is not a key attribute; records of one item could land in different groups and overtake each other",
            "group by the partition key (the default)",
            "routing-group",
        )


# --- target --------------------------------------------------------------------------------


def _refusal(c: Column, value: Any, nul_ok: bool) -> str | None:
    """Why the runtime would refuse `value` for column `c` (its own coercion, run here on a
    value of the mapping file, shown in full), or None."""
    from runtime.coerce import refusal
    from runtime.redact import showing_values
    from runtime.registry import column_spec

    spec = column_spec({**registry_column(c), "map": None, "const": None})
    with showing_values():
        return refusal(spec, value, nul_ok=nul_ok)


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
            if ident.lower() in RESERVED:
                yield warn(
                    ident_path,
                    f"'{ident}' is a reserved word in PostgreSQL or MySQL; it will always be quoted",
                    "keep it if the legacy schema has it; otherwise choose another name",
                    "sql-reserved",
                )
            elif ident != ident.lower():
                yield warn(
                    ident_path,
                    f"'{ident}' has capitals; PostgreSQL folds unquoted names to lower case, so it is quoted and case-sensitive",
                    "use the exact lower-case name unless the legacy table really was created quoted",
                    "sql-case",
                )
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
        yield from _check_column(entity, t, c, nul_ok)
    if t.version:
        yield from _check_version(entity, t)
    yield from _check_sort_key(entity, t)
    if t.soft_delete and t.soft_delete.field:
        f = entity.field(t.soft_delete.field)
        if f is None:
            yield Problem(
                t.soft_delete.where + ("field",),
                f"field '{t.soft_delete.field}' is not in the message",
                _missing_field_hint(entity, t.soft_delete.field, "add it under message.fields"),
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


def _check_column(entity: Entity, t: Table, c: Column, nul_ok: bool) -> Iterator[Problem]:
    for name in c.fields:
        f = entity.field(name)
        if f is None:
            yield Problem(
                c.where + ("field",),
                f"field '{name}' is not in the message",
                _missing_field_hint(entity, name, "add it under message.fields"),
                "field-missing",
            )
            continue
        if c.value_map is None and f.type not in COLUMN_ACCEPTS[c.type]:
            yield Problem(
                c.where + ("type",),
                f"column type {c.type} cannot take field '{name}' of DynamoDB type {f.type}",
                f"use a column type that accepts {f.type} (e.g. json for maps and lists)",
                "column-type",
            )
    if c.length is not None and c.type != "string":
        yield Problem(
            c.where + ("length",),
            "length applies to string columns only",
            "remove length or use type: string",
            "column-option",
        )
    if (c.precision is not None or c.scale is not None) and c.type != "decimal":
        yield Problem(
            c.where + ("precision" if c.precision is not None else "scale",),
            "precision and scale apply to decimal columns only",
            "remove them or use type: decimal",
            "column-option",
        )
    if c.type == "decimal" and c.precision is not None and c.scale is not None and c.scale > c.precision:
        yield Problem(
            c.where + ("scale",),
            f"scale {c.scale} exceeds precision {c.precision}",
            "make scale <= precision",
            "column-option",
        )
    if c.format is not None and c.type not in {"timestamp", "date"}:
        yield Problem(
            c.where + ("format",),
            "format applies to timestamp and date columns only",
            "remove format",
            "column-option",
        )
    if c.type in {"timestamp", "date"} and c.format is None and c.fields:
        f = entity.field(c.fields[0])
        if f is not None and f.type in {"N", "number"}:
            yield Problem(
                c.where,
                f"a numeric field '{f.name}' feeds {c.type} column '{c.name}' without a format",
                "add format: epoch_seconds or epoch_millis",
                "column-format",
            )
    if c.on_unmapped != "fail" and c.value_map is None:
        yield Problem(
            c.where + ("on_unmapped",),
            "on_unmapped applies with map only",
            "remove it or add map",
            "column-option",
        )
    if c.on_unmapped == "default" and not c.has_default:
        yield Problem(
            c.where + ("on_unmapped",),
            "on_unmapped: default needs a default value",
            "add default:",
            "column-option",
        )
    # A value of the mapping itself that the runtime would refuse fails every event that uses it.
    for k, v in c.value_map or ():
        why = _refusal(c, v, nul_ok) if v is not None else None
        if why:
            yield Problem(
                c.where + ("map", k),
                f"map value {v!r} for {k!r} is refused by column '{c.name}': {why}",
                f"write a value column '{c.name}' ({c.type}) takes",
                "column-map",
            )
    for key, present, value in (("default", c.has_default, c.default), ("const", c.has_const, c.const)):
        why = _refusal(c, value, nul_ok) if present and value is not None else None
        if why:
            yield Problem(
                c.where + (key,),
                f"{'default' if key == 'default' else 'constant'} {value!r} is refused by column '{c.name}': {why}",
                f"write a value column '{c.name}' ({c.type}) takes",
                f"column-{key}",
            )
    if c.references:
        parent, _, _ = c.references.partition(".")
        if parent == t.name:
            yield warn(
                c.where + ("references",),
                "the column references its own table",
                "check the foreign key",
                "column-references",
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
    if old_only and _written_on(entity, t, "INSERT"):
        yield Problem(
            v.where + ("field",),
            f"INSERT records have no old image, so version field {' / '.join(v.fields)} is missing on every "
            "INSERT and each one fails",
            "list a new-image field first (field: [rev, oldRev]) or use meta: SequenceNumber",
            "version-old-image",
        )


def _check_sort_key(entity: Entity, t: Table) -> Iterator[Problem]:
    sk = entity.source.sort_key
    if sk is None or not t.key:
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


def _written_on(entity: Entity, t: Table, event_name: str) -> bool:
    """Whether records with this stream event name can reach a rule that writes table t: the
    filter lets them through, and the rule is on that name or on outbox event types."""
    if event_name not in _passing_event_names(entity)[1]:
        return False
    for rule in entity.events.rules:
        if any(a.table == t.name for a in rule.actions) and (
            event_name in rule.on or any(n not in STREAM_EVENT_NAMES for n in rule.on)
        ):
            return True
    return False


# --- events --------------------------------------------------------------------------------


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
                _missing_field_hint(entity, name, "add it under message.fields"),
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
    names, possible = _passing_event_names(entity)
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


STREAM_EVENT_NAMES = frozenset({"INSERT", "MODIFY", "REMOVE"})


def _passing_event_names(entity: Entity) -> tuple[set[str], set[str]]:
    """Event names that surely pass the filter, and those that may (facts 2.1: a record passes
    when any filter matches, so an or_pattern adds its eventName values; one that does not list
    eventName literally may let any name through)."""
    names = set(entity.filter.event_names)
    possible = set(names)
    for pat in entity.filter.or_patterns:
        listed = pat.get("eventName")
        if isinstance(listed, list) and all(isinstance(n, str) for n in listed):
            names |= STREAM_EVENT_NAMES & set(listed)
            possible |= STREAM_EVENT_NAMES & set(listed)
        else:
            possible |= STREAM_EVENT_NAMES
    return names, possible


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


# --- pipeline ------------------------------------------------------------------------------


def check_pipeline(entity: Entity, project: Project) -> Iterator[Problem]:
    p = entity.pipeline
    base = ("pipeline",)
    if p.pipe.batch_size > SQS_BATCH:
        yield Problem(
            base + ("pipe", "batch_size"),
            f"batch_size {p.pipe.batch_size} exceeds {SQS_BATCH}, the most an SQS target takes (see {awsdocs.PIPES_BATCHING})",
            f"set batch_size to {SQS_BATCH} or less",
            "limit-pipe-batch",
        )
    age = p.pipe.maximum_record_age_in_seconds
    if age != -1 and not 60 <= age <= 604800:
        yield Problem(
            base + ("pipe", "maximum_record_age_in_seconds"),
            f"{age} is not -1 or 60..604800 (see {awsdocs.PIPES_DYNAMODB_PARAMETERS})",
            "use -1 (no limit) or a value of at least 60",
            "pipe-record-age",
        )
    if age == -1 or age > 86400:
        yield warn(
            base + ("pipe", "maximum_record_age_in_seconds"),
            f"records are retried until the stream trims them (24 h), blocking the shard (see {awsdocs.PIPES_DYNAMODB_PARAMETERS})",
            "set a limit below 86400 so the Pipe DLQ can still resolve the record",
            "pipe-record-age",
        )
    if p.pipe.maximum_retry_attempts == -1:
        yield warn(
            base + ("pipe", "maximum_retry_attempts"),
            f"-1 retries a poison record until it expires, blocking its shard (see {awsdocs.PIPES_DYNAMODB_PARAMETERS})",
            "set a finite number such as 3",
            "pipe-retries",
        )
    if p.pipe.dlq_name.endswith(".fifo"):
        yield Problem(
            base + ("pipe", "dlq", "name"),
            f"the Pipe DLQ '{p.pipe.dlq_name}' is a FIFO queue; a stream source's DLQ must be a standard queue (see {awsdocs.PIPES_DYNAMODB})",
            "drop the .fifo suffix",
            "pipe-dlq-fifo",
        )
    q = p.queue
    if not q.name.endswith(".fifo"):
        yield Problem(
            base + ("queue", "name"),
            f"queue '{q.name}' must end in .fifo (see {awsdocs.SQS_FIFO})",
            f"name it {q.name}.fifo",
            "queue-name",
        )
    if not q.dlq_name.endswith(".fifo"):
        yield Problem(
            base + ("queue", "dlq", "name"),
            f"the DLQ of a FIFO queue must itself be FIFO: '{q.dlq_name}' (see {awsdocs.SQS_DEAD_LETTER_QUEUES})",
            f"name it {q.dlq_name}.fifo",
            "queue-dlq-fifo",
        )
    for where, name in (
        (("queue", "name"), q.name),
        (("queue", "dlq", "name"), q.dlq_name),
        (("pipe", "dlq", "name"), p.pipe.dlq_name),
    ):
        if len(name) > SQS_QUEUE_NAME_CHARS:
            yield Problem(
                base + where,
                f"queue name '{name}' is {len(name)} characters; SQS allows {SQS_QUEUE_NAME_CHARS} including .fifo (see {awsdocs.SQS_FIFO_QUOTAS})",
                "shorten the name or the project prefix",
                "queue-name-length",
            )
    if len(p.pipe.name) > PIPES_NAME_CHARS:
        yield Problem(
            base + ("pipe", "name"),
            f"pipe name is {len(p.pipe.name)} characters; Pipes allows {PIPES_NAME_CHARS} (see {awsdocs.PIPES_CREATE})",
            "shorten it",
            "pipe-name",
        )
    c = p.consumer
    if c.batch_size > LAMBDA_FIFO_BATCH:
        yield Problem(
            base + ("consumer", "batch_size"),
            f"batch_size {c.batch_size} exceeds {LAMBDA_FIFO_BATCH}, the maximum for a FIFO queue's event source mapping (see {awsdocs.LAMBDA_SQS_PARAMETERS})",
            f"set it to {LAMBDA_FIFO_BATCH} or less",
            "limit-consumer-batch",
        )
    if c.maximum_batching_window_in_seconds:
        yield Problem(
            base + ("consumer", "maximum_batching_window_in_seconds"),
            f"a batching window of {c.maximum_batching_window_in_seconds} s is refused by AWS on a FIFO queue's event source mapping (see {awsdocs.LAMBDA_SQS_PARAMETERS})",
            "remove the key (the seed article's maximum_batching_window_in_seconds = 5 fails at apply)",
            "consumer-batching-window",
        )
    if c.maximum_concurrency < LAMBDA_CONCURRENCY_MIN:
        yield Problem(
            base + ("consumer", "maximum_concurrency"),
            f"maximum_concurrency {c.maximum_concurrency} is below {LAMBDA_CONCURRENCY_MIN}; AWS accepts {LAMBDA_CONCURRENCY_MIN}..{LAMBDA_CONCURRENCY_MAX} (see {awsdocs.LAMBDA_SQS_PARAMETERS})",
            f"set it to {LAMBDA_CONCURRENCY_MIN} or more",
            "consumer-concurrency",
        )
    if q.visibility_timeout_seconds < LAMBDA_VISIBILITY_FACTOR * project.lambda_.timeout_seconds:
        yield warn(
            base + ("queue", "visibility_timeout_seconds"),
            f"visibility timeout {q.visibility_timeout_seconds}s is under {LAMBDA_VISIBILITY_FACTOR}x the Lambda timeout ({project.lambda_.timeout_seconds}s); a slow batch can reappear while still running (see {awsdocs.LAMBDA_SQS_CONFIGURE})",
            f"set it to at least {LAMBDA_VISIBILITY_FACTOR * project.lambda_.timeout_seconds}",
            "queue-visibility",
        )
    if q.max_receive_count < LAMBDA_MAX_RECEIVE_ADVICE:
        yield warn(
            base + ("queue", "max_receive_count"),
            f"maxReceiveCount {q.max_receive_count} is under {LAMBDA_MAX_RECEIVE_ADVICE}; messages held behind a failing one in their group use up receives too and reach the DLQ early (see {awsdocs.LAMBDA_SQS_ERRORS})",
            "set it to 5 or more",
            "queue-receive-count",
        )
    if q.dlq_retention_seconds <= q.message_retention_seconds:
        yield warn(
            base + ("queue", "dlq", "message_retention_seconds"),
            f"the DLQ keeps messages no longer than the queue; expiry counts from the original enqueue, so they can expire on arrival (see {awsdocs.SQS_DEAD_LETTER_QUEUES})",
            "give the DLQ a longer retention (default 14 days)",
            "queue-dlq-retention",
        )


TERRAFORM_FILE_NAMES = {"providers", "data", "lambda", "override"}


def check_names(entity: Entity, project: Project) -> Iterator[Problem]:
    if entity.name in TERRAFORM_FILE_NAMES or entity.name.endswith("_override"):
        yield Problem(
            ("entity",),
            f"entity name '{entity.name}' collides with a generated Terraform file (or makes it an override file)",
            "choose another entity name",
            "entity-name",
        )
    if len(entity.pipeline.pipe.role_name) > 64:
        yield Problem(
            ("entity",),
            f"the Pipe's IAM role name '{entity.pipeline.pipe.role_name}' is {len(entity.pipeline.pipe.role_name)} characters; IAM allows 64",
            "shorten the entity name, the project name or the prefix",
            "iam-role-name",
        )
    for t in entity.tables:
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


ENTITY_CHECKS: tuple[EntityCheck, ...] = (
    check_fields,
    check_field_options,
    check_template,
    check_filter,
    check_routing,
    check_tables,
    check_events,
    check_idempotency,
    check_pipeline,
    check_names,
)


# --- across entities -----------------------------------------------------------------------


def check_uniqueness(model: Model) -> Iterator[tuple[Entity, Problem]]:
    """Entity names, AWS names and SQL tables must not be claimed twice."""
    claims: dict[tuple[str, str], list[tuple[Entity, PathT]]] = defaultdict(list)
    for e in model.entities:
        claims[("entity", e.name)].append((e, ("entity",)))
        p = e.pipeline
        for where, name in (
            (("pipeline", "queue", "name"), p.queue.name),
            (("pipeline", "queue", "dlq", "name"), p.queue.dlq_name),
            (("pipeline", "pipe", "dlq", "name"), p.pipe.dlq_name),
        ):
            claims[("queue", name)].append((e, where))
        claims[("pipe", p.pipe.name)].append((e, ("pipeline", "pipe", "name")))
        if e.source.managed:
            claims[("dynamodb table", e.source.table)].append((e, ("source", "table")))
        for t in e.tables:
            claims[("SQL table", t.qualified)].append((e, t.where + ("table",)))
    for (kind, name), owners in sorted(claims.items()):
        entities = {o[0].name for o in owners}
        if len(owners) < 2:
            continue
        if kind == "SQL table" and len(entities) == 1:
            continue  # reported per entity
        for entity, where in owners:
            others = ", ".join(sorted(o[0].file for o in owners if o[0] is not entity)) or entity.file
            hint = {
                "entity": "rename one entity",
                "queue": "give each entity its own queue names",
                "pipe": "give each entity its own pipe name",
                "dynamodb table": "let one mapping manage the table and set managed: false in the others",
                "SQL table": "write a legacy table from one entity only: separate queues give no order between entities",
            }[kind]
            yield (
                entity,
                Problem(where, f"{kind} '{name}' is also claimed by {others}", hint, "duplicate-name"),
            )
    readers = Counter(e.source.table for e in model.entities)
    for e in model.entities:
        if readers[e.source.table] > DYNAMODB_STREAM_READERS_PER_SHARD:
            yield (
                e,
                warn(
                    ("source", "table"),
                    f"{readers[e.source.table]} Pipes read the stream of '{e.source.table}'; more than {DYNAMODB_STREAM_READERS_PER_SHARD} readers per shard risks throttling (see {awsdocs.DYNAMODB_STREAMS})",
                    "merge entities on one table, or accept throttling",
                    "stream-readers",
                ),
            )


def check_sources(model: Model) -> Iterator[tuple[Entity, Problem]]:
    """Entities reading one DynamoDB table must agree on what its stream carries."""
    by_table: dict[str, list[Entity]] = defaultdict(list)
    for e in model.entities:
        by_table[e.source.table].append(e)
    for table, entities in sorted(by_table.items()):
        views = {e.source.stream_view_type for e in entities}
        if len(views) > 1:
            for e in entities:
                others = ", ".join(f"{o.file} ({o.source.stream_view_type})" for o in entities if o is not e)
                yield (
                    e,
                    Problem(
                        ("source", "stream_view_type"),
                        f"table '{table}' has one stream, but its readers declare different view types: {others}",
                        "give every mapping of this table the same stream_view_type",
                        "stream-view-mismatch",
                    ),
                )
        keys = {(e.source.partition_key, e.source.sort_key) for e in entities}
        if len(keys) > 1:
            for e in entities:
                yield (
                    e,
                    Problem(
                        ("source", "partition_key"),
                        f"mappings of table '{table}' declare different keys",
                        "declare the table's real partition and sort key everywhere",
                        "source-key-mismatch",
                    ),
                )


def check_references(model: Model) -> Iterator[tuple[Entity, Problem]]:
    """A foreign key in the reference DDL must point at a column some mapping writes."""
    written = {(t.name, c.name) for e in model.entities for t in e.tables for c in t.columns}
    for e in model.entities:
        for t in e.tables:
            for c in t.columns:
                if c.references:
                    parent, _, column = c.references.partition(".")
                    if (parent, column) not in written:
                        yield (
                            e,
                            Problem(
                                c.where + ("references",),
                                f"'{c.references}' is not a column written by any mapping",
                                "reference a table.column declared under some mapping's target.tables (the DDL is generated from them)",
                                "column-references",
                            ),
                        )


def check_terraform_claims(model: Model) -> Iterator[tuple[Entity, Problem]]:
    """Two entities whose Terraform labels collide (orders + orders_dlq, say) cannot both exist."""
    from generator.emit import terraform

    try:
        terraform.terraform_files(model)
    except terraform.DuplicateLabel as exc:
        culprit = max(
            (e for e in model.entities if e.name in str(exc)), key=lambda e: len(e.name), default=None
        )
        if culprit is not None:
            yield (
                culprit,
                Problem(
                    ("entity",),
                    f"the entity's Terraform names collide with another entity's: {exc}",
                    "rename the entity (names ending in _dlq, _pipe or _pipe_dlq clash with the resources of the entity without the suffix)",
                    "entity-name",
                ),
            )


def run_checks(model: Model, docs: dict[str, Located], project_doc: Located | None) -> list[Diagnostic]:
    out: list[Diagnostic] = []

    def emit(entity_file: str, problem: Problem) -> None:
        doc = docs[entity_file]
        loc = doc.loc(problem.path, key=problem.key)
        out.append(
            Diagnostic(
                doc.file,
                loc.line,
                loc.col,
                problem.severity,
                format_path(problem.path),
                problem.message,
                problem.hint,
                problem.code,
            )
        )

    for entity in model.entities:
        for check in ENTITY_CHECKS:
            for problem in check(entity, model.project):
                emit(entity.file, problem)
    for model_check in (check_uniqueness, check_sources, check_references):
        for entity, problem in model_check(model):
            emit(entity.file, problem)
    if not any(d.severity is Severity.ERROR for d in out):
        for entity, problem in check_terraform_claims(model):
            emit(entity.file, problem)
    if project_doc is not None:
        for problem in check_project(model.project):
            loc = project_doc.loc(problem.path, key=problem.key)
            out.append(
                Diagnostic(
                    project_doc.file,
                    loc.line,
                    loc.col,
                    problem.severity,
                    format_path(problem.path),
                    problem.message,
                    problem.hint,
                    problem.code,
                )
            )
    return out


def check_project(project: Project) -> Iterator[Problem]:
    for key, value in project.lambda_.environment:
        upper = key.upper()
        if (
            any(word in upper for word in ("PASSWORD", "SECRET", "TOKEN", "CREDENTIAL"))
            or "://" in value
            and "@" in value
        ):
            yield Problem(
                ("lambda", "environment", key),
                f"'{key}' looks like a secret; environment values are written to build/ in clear",
                "put the credentials in Secrets Manager and set database.secret_arn",
                "secret-in-env",
            )
    for key, _ in project.lambda_.environment:
        if key in ("SYNC_REGISTRY", "SYNC_DB_SECRET_ARN", "SYNC_DATABASE_URL"):
            yield Problem(
                ("lambda", "environment", key),
                f"'{key}' is set by the generator (or would bypass the secret)",
                "remove it; use database.secret_arn for the connection",
                "env-reserved",
            )
    if len(project.lambda_.role_name) > 64:
        yield Problem(
            ("lambda",),
            f"the Lambda's IAM role name '{project.lambda_.role_name}' is longer than 64 characters",
            "shorten lambda.function_name or the project name",
            "iam-role-name",
        )
    if project.database.ledger_table == project.database.tombstone_table:
        yield Problem(
            ("database", "tombstone_table"),
            "ledger and tombstone tables share a name",
            "use two names",
            "database-tables",
        )
    if not project.alarm_topic_arns:
        yield warn(
            ("alarms",),
            "the generated CloudWatch alarms (DLQ depth, oldest message age) notify nobody: "
            "alarms.sns_topic_arns is empty",
            "add alarms: {sns_topic_arns: [arn:aws:sns:REGION:ACCOUNT:TOPIC]}; ignore this only if another "
            "system watches the alarms' states",
            "alarms-no-actions",
        )
    package = project.lambda_.package
    if (
        PurePosixPath(package).is_absolute()
        or PureWindowsPath(package).is_absolute()
        or ".." in PurePosixPath(package.replace("\\", "/")).parts
    ):
        yield Problem(
            ("lambda", "package"),
            f"the package path {package!r} leaves build/ (it is relative to build/, where the zip is written)",
            "give a path inside build/, such as lambda.zip",
            "lambda-package",
        )
    if not project.database.secret_arn:
        yield warn(
            ("database",),
            "no database.secret_arn: the Lambda will read SYNC_DATABASE_URL, which Terraform does not set",
            "set database.secret_arn to the RDS secret",
            "database-secret",
        )
