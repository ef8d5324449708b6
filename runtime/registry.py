"""Load the registry written by `python -m generator build` into small typed records."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.kinds import Action, IfMissing, SoftDeleteKind, VersionKind, WhenMissing

SUPPORTED_VERSIONS = (1, 2, 3)  # 2: computed columns (a column's expr); 3: shared queues, child rows


class RegistryError(Exception):
    """The registry file is missing, unreadable, or of a version this runtime does not know."""


@dataclass(frozen=True, slots=True)
class FieldSpec:
    name: str
    path: tuple[str, ...]
    type: str  # DynamoDB type, or "number" for JSON-number metadata
    carry: str  # value | typed


@dataclass(frozen=True, slots=True)
class ColumnSpec:
    name: str
    type: str
    fields: tuple[str, ...]
    nullable: bool
    length: int | None
    precision: int | None
    scale: int | None
    format: str | None
    value_map: dict[str, Any] | None
    on_unmapped: str
    has_const: bool
    const: Any
    has_default: bool
    default: Any
    references: str | None
    # A computed column: its compiled expression (runtime.expr), evaluated on the message's fields.
    expr: list[Any] | None = None
    # A child table's column (a table with `each`): a path inside the element, or the
    # element's position (its index in a list, its key in a map).
    element: tuple[str, ...] | None = None
    position: bool = False
    lookup: LookupSpec | None = None


@dataclass(frozen=True, slots=True)
class LookupSpec:
    """The column's value is `select` of the row of `table` (qualified) whose `match` columns
    equal the message's values (each a ColumnSpec of that table, its fields the message's)."""

    table: str
    match: tuple[ColumnSpec, ...]
    select: str
    when_missing: WhenMissing


@dataclass(frozen=True, slots=True)
class VersionSpec:
    column: str
    fields: tuple[str, ...]
    kind: VersionKind


@dataclass(frozen=True, slots=True)
class SoftDeleteSpec:
    column: str
    field: str | None
    kind: SoftDeleteKind
    format: str | None = None  # iso8601 | epoch_seconds | epoch_millis; None: by the value's type


@dataclass(frozen=True, slots=True)
class EachSpec:
    """A child table: one row per element of a list (L) or map (M) message field."""

    field: str
    kind: str  # L | M
    position: str  # the column taking the element's position (list: start + index; map: key)
    parent_key: tuple[str, ...]  # the key columns that are not the position
    start: int = 1
    max_elements: int | None = None


@dataclass(frozen=True, slots=True)
class TableSpec:
    name: str
    schema: str | None
    surrogate_key: str | None
    key: tuple[str, ...]
    columns: dict[str, ColumnSpec]
    version: VersionSpec | None
    soft_delete: SoftDeleteSpec | None
    tombstones: bool = False  # some rule hard-deletes from this versioned table
    append_only: bool = False  # a log of events (insert actions only): reconcile skips it
    # The columns whose value a lookup finds (ColumnSpec.lookup), in column order.
    lookups: tuple[str, ...] = field(init=False, default=(), compare=False)
    each: EachSpec | None = None  # a child table: one row per element (runtime.children)
    # schema.name (or name): the plan and the statement cache key rows and statements by it.
    qualified: str = field(init=False, default="", compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "qualified", f"{self.schema}.{self.name}" if self.schema else self.name)
        object.__setattr__(self, "lookups", tuple(c.name for c in self.columns.values() if c.lookup))


@dataclass(frozen=True, slots=True)
class ActionSpec:
    action: Action
    table: str
    columns: tuple[str, ...]
    if_missing: IfMissing


@dataclass(frozen=True, slots=True)
class EntitySpec:
    name: str
    source_table: str
    queue: str
    dlq: str
    pipe_dlq: str
    batch_size: int
    max_receive_count: int
    visibility_timeout_seconds: int
    message_group_id: str
    deduplication_id: str
    fields: dict[str, FieldSpec]
    ledger: bool
    event_id_field: str | None
    lag_field: str | None
    type_from: tuple[str, ...]
    unknown: str
    rules: dict[str, tuple[ActionSpec, ...]]
    tables: dict[str, TableSpec]
    # How long its ledger rows and its tables' tombstones are kept (runtime.prune); None: kept
    # for ever (a registry written before retention).
    ledger_seconds: int | None = None
    tombstone_seconds: int | None = None


@dataclass(frozen=True, slots=True)
class SharedQueueSpec:
    """A queue of several entities (a single-table design's shared Pipe): the message field
    holding the discriminator, and each entity's attribute value or key prefix."""

    queue: str
    kind: str  # attribute: the value equals; key: the key's value starts with the prefix
    name: str  # the attribute or key attribute
    field: str  # the top-level message field carrying it
    values: tuple[tuple[str, str], ...]  # (value or prefix, entity)

    def entity_name(self, body: Any) -> tuple[str | None, str]:
        """The entity of a decoded message body, and the discriminator value read (for errors).
        An attribute travels per image ({"new": ..., "old": ...}: a REMOVE has only the old)."""
        raw = body.get(self.field) if isinstance(body, dict) else None
        if isinstance(raw, dict):
            raw = next((v for v in (raw.get("new"), raw.get("old")) if isinstance(v, str) and v), "")
        value = raw if isinstance(raw, str) else ""
        for expected, entity in self.values:
            if (value.startswith(expected) if self.kind == "key" else value == expected) and value:
                return entity, value
        return None, value


@dataclass(frozen=True, slots=True)
class RetiredSpec:
    """An entity whose mapping says `retired: true`: nothing syncs it; runtime.prune removes
    all its ledger rows, and the tombstones of `tables` (the tables no live entity writes)."""

    name: str
    tables: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Registry:
    version: int
    project: str
    dialect: str
    ledger_table: str
    tombstone_table: str
    foreign_key_transient: bool
    entities: dict[str, EntitySpec]
    queues: dict[str, str] = field(default_factory=dict)
    retired: dict[str, RetiredSpec] = field(default_factory=dict)
    shared_queues: dict[str, SharedQueueSpec] = field(default_factory=dict)
    prune_batch_rows: int = 1000  # rows per DELETE of runtime.prune, each its own transaction
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    # Built statements per dialect, kept with the registry they come from (warm invocations reuse them).
    cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def entity_for_queue(self, queue_name: str) -> EntitySpec | None:
        name = self.queues.get(queue_name)
        return self.entities.get(name) if name else None


def column_spec(raw: dict[str, Any]) -> ColumnSpec:
    """A column of the registry file (generator.emit.registry writes them) as a ColumnSpec."""
    return ColumnSpec(
        name=raw["name"],
        type=raw["type"],
        fields=tuple(raw.get("fields", ())),
        nullable=raw.get("nullable", True),
        length=raw.get("length"),
        precision=raw.get("precision"),
        scale=raw.get("scale"),
        format=raw.get("format"),
        value_map=raw.get("map"),
        on_unmapped=raw.get("on_unmapped", "fail"),
        has_const="const" in raw,
        const=raw.get("const"),
        has_default="default" in raw,
        default=raw.get("default"),
        references=raw.get("references"),
        expr=raw.get("expr"),
        element=tuple(raw["element"]) if raw.get("element") is not None else None,
        position=bool(raw.get("position", False)),
        lookup=_lookup(raw["lookup"]) if raw.get("lookup") else None,
    )


def _lookup(raw: dict[str, Any]) -> LookupSpec:
    return LookupSpec(
        table=raw["table"],
        match=tuple(column_spec(m) for m in raw["match"]),
        select=raw["select"],
        when_missing=WhenMissing(raw.get("when_missing", "retry")),
    )


def _table(name: str, raw: dict[str, Any]) -> TableSpec:
    v = raw.get("version")
    s = raw.get("soft_delete")
    return TableSpec(
        name=name,
        schema=raw.get("schema"),
        surrogate_key=raw.get("surrogate_key"),
        key=tuple(raw["key"]),
        columns={c["name"]: column_spec(c) for c in raw["columns"]},
        version=VersionSpec(v["column"], tuple(v["fields"]), VersionKind(v["kind"])) if v else None,
        soft_delete=SoftDeleteSpec(s["column"], s.get("field"), SoftDeleteKind(s["kind"]), s.get("format"))
        if s
        else None,
        tombstones=bool(raw.get("tombstones", v is not None)),
        append_only=bool(raw.get("append_only", False)),
        each=_each(raw["each"], tuple(raw["key"])) if raw.get("each") else None,
    )


def _each(raw: dict[str, Any], key: tuple[str, ...]) -> EachSpec:
    position = raw["position"]
    return EachSpec(
        field=raw["field"],
        kind=raw["kind"],
        position=position,
        parent_key=tuple(k for k in key if k != position),
        start=int(raw.get("start", 1)),
        max_elements=raw.get("max_elements"),
    )


def _entity(name: str, raw: dict[str, Any]) -> EntitySpec:
    return EntitySpec(
        name=name,
        source_table=(raw.get("source") or {}).get("table", ""),
        queue=raw["queue"],
        dlq=raw.get("dlq", ""),
        pipe_dlq=raw.get("pipe_dlq", ""),
        batch_size=raw["consumer"]["batch_size"],
        max_receive_count=raw["consumer"].get("max_receive_count", 3),
        visibility_timeout_seconds=raw["consumer"].get("visibility_timeout_seconds", 30),
        message_group_id=raw["routing"]["message_group_id"],
        deduplication_id=raw["routing"]["deduplication_id"],
        fields={n: FieldSpec(n, tuple(f["path"]), f["type"], f["carry"]) for n, f in raw["fields"].items()},
        ledger=raw.get("ledger", True),
        event_id_field=raw.get("event_id_field"),
        lag_field=raw.get("lag_field"),
        type_from=tuple(raw["type_from"]),
        unknown=raw.get("unknown", "fail"),
        rules={
            event_type: tuple(
                ActionSpec(
                    Action(a["action"]),
                    a["table"],
                    tuple(a["columns"]),
                    IfMissing(a.get("if_missing", "fail")),
                )
                for a in actions
            )
            for event_type, actions in raw["rules"].items()
        },
        tables={t: _table(t, spec) for t, spec in raw["tables"].items()},
        ledger_seconds=(raw.get("retention") or {}).get("ledger_seconds"),
        tombstone_seconds=(raw.get("retention") or {}).get("tombstone_seconds"),
    )


def _shared(queue: str, raw: dict[str, Any]) -> SharedQueueSpec:
    d = raw["discriminator"]
    return SharedQueueSpec(
        queue, d["kind"], d["name"], d["field"], tuple((v, e) for e, v in sorted(raw["entities"].items()))
    )


def parse_registry(raw: dict[str, Any]) -> Registry:
    version = raw.get("registry_version") if isinstance(raw, dict) else None
    if version not in SUPPORTED_VERSIONS:
        raise RegistryError(
            f"registry_version {version!r} is not supported by this runtime (supported: "
            f"{', '.join(map(str, SUPPORTED_VERSIONS))}); rebuild with a matching generator "
            "(python -m generator build) or deploy the runtime that came with it"
        )
    try:
        db = raw["database"]
        return Registry(
            version=version,
            project=raw.get("project", ""),
            dialect=db.get("dialect", "postgresql"),
            ledger_table=db["ledger_table"],
            tombstone_table=db["tombstone_table"],
            foreign_key_transient=db.get("foreign_key_violation", "transient") == "transient",
            entities={n: _entity(n, e) for n, e in raw["entities"].items()},
            queues=dict(raw.get("queues", {})),
            retired={
                n: RetiredSpec(n, tuple(r.get("tombstone_tables", ())))
                for n, r in raw.get("retired", {}).items()
            },
            prune_batch_rows=int((db.get("prune") or {}).get("batch_rows", 1000)),
            shared_queues={q: _shared(q, s) for q, s in (raw.get("shared_queues") or {}).items()},
            raw=raw,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise RegistryError(
            f"the registry is malformed ({type(exc).__name__}: {exc}); rebuild it with python -m generator build"
        ) from exc


def load_registry(path: str | os.PathLike[str] | None = None) -> Registry:
    """Read the registry from `path`, $SYNC_REGISTRY, or registry.json beside the package."""
    if path is None:
        path = os.environ.get("SYNC_REGISTRY", "registry.json")
    p = Path(path)
    if not p.is_absolute() and not p.exists():
        beside = Path(__file__).resolve().parent.parent / p
        if beside.exists():
            p = beside
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RegistryError(
            f"registry file {str(p)!r} not found; run python -m generator build, or set SYNC_REGISTRY"
        ) from None
    except json.JSONDecodeError as exc:
        raise RegistryError(
            f"registry file {str(p)!r} is not JSON ({exc}); rebuild it with python -m generator build"
        ) from None
    return parse_registry(raw)
