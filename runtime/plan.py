"""The planner: what each message of a batch does, given what the database holds.

`read_state` gathers, in one phase, the ledger rows of the batch's event ids, the current
version (or existence) of every row the batch touches, and their tombstones; `plan_change`
then decides, message by message and without touching the database, whether the message is a
duplicate, stale, skipped or applied, and which statements (Op) apply it. The dialect says
what differs by database (runtime.dialects: `upsert_reads_first`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from runtime.decode import SEQUENCE_WIDTH, Change, Write, row_key
from runtime.kinds import (
    APPLIED,
    DO_DELETE,
    DO_FILL,
    DO_INSERT,
    DO_SOFT_DELETE,
    DO_UPDATE,
    DO_UPSERT,
    DUPLICATE,
    FAILED,
    IF_MISSING_IGNORE,
    IF_MISSING_UPSERT,
    IGNORED,
    OP_DELETE,
    OP_FILL,
    OP_INSERT,
    OP_PRUNE,
    OP_SOFT_DELETE,
    OP_TOMBSTONE,
    OP_UPDATE,
    OP_UPSERT,
    OP_UPSERT_AS_UPDATE,
    SKIPPED,
    SOFT_DELETE_TIMESTAMP,
    STALE,
    OpKind,
    Status,
)
from runtime.registry import TableSpec
from runtime.statements import (
    BIND_PRUNE_FROM,
    BIND_SOFT_DELETED,
    BIND_TOMB_ROW,
    BIND_TOMB_TABLE,
    BIND_TOMB_VERSION,
    BIND_VERSION,
    KEY_PREFIX,
    VALUE_PREFIX,
    bind_name,
    keep_bind,
    lookup_params,
    row_bind,
)

if TYPE_CHECKING:
    from runtime.dialects import Dialect
    from runtime.dialects.base import Item, Result
    from runtime.statements import Statements

READ_CHUNK = 100  # rows (or event ids) per read statement

RowKey = tuple[str, str]  # (qualified table, row key): writes to one row keep their order
# What is known of a row: (exists, version). exists None: not read (nothing known).
RowState = tuple[bool | None, Any]
ABSENT: RowState = (False, None)
UNKNOWN: RowState = (None, None)


@dataclass(slots=True)
class Op:
    """One planned write: which statement shape, for which row, with which values."""

    kind: OpKind
    spec: TableSpec | None  # None for a tombstone
    columns: tuple[str, ...]  # update: the columns it sets
    params: dict[str, Any]
    row: RowKey


@dataclass
class State:
    """What the database holds for a batch (read_state), or what a plan assumes it holds."""

    ledger: set[tuple[str, str]] = field(default_factory=set)  # (entity, event id)
    rows: dict[RowKey, RowState] = field(default_factory=dict)
    tombs: dict[RowKey, str] = field(default_factory=dict)  # row -> its tombstone's version text
    # A child table's rows the batch writes, by their parent's set: row -> its position (a
    # prune marks those it deletes absent, for the planning of the next events of the batch).
    members: dict[RowKey, dict[RowKey, Any]] = field(default_factory=dict)


@dataclass
class Plan:
    """One message's plan: its status, its writes, and the state they leave behind."""

    status: Status
    ops: list[Op] = field(default_factory=list)
    rows: dict[RowKey, RowState] = field(default_factory=dict)
    tombs: dict[RowKey, str] = field(default_factory=dict)
    reason: str = ""  # why it failed


def version_text(version: Any) -> str:
    """A version as the tombstone table stores it (text comparing as the version does)."""
    return version if isinstance(version, str) else str(version).zfill(SEQUENCE_WIDTH)


def needs_row(w: Write, dialect: Dialect) -> bool:
    """Whether planning `w` needs the row's current version or existence."""
    if w.table.version is not None or w.action in (DO_UPDATE, DO_SOFT_DELETE):
        return True
    return dialect.upsert_reads_first and w.action is DO_UPSERT


def _key_params(w: Write) -> dict[str, Any]:
    return {bind_name(KEY_PREFIX, k): v for k, v in zip(w.table.key, w.key, strict=True)}


def _set_params(spec: TableSpec, w: Write, params: dict[str, Any]) -> tuple[str, ...]:
    """The columns an update (or a fill) of `w` sets, their values (and their lookups'
    parameters) added to `params`."""
    columns = tuple(c for c in w.values if c not in spec.key)
    params.update({bind_name(VALUE_PREFIX, c): w.values[c] for c in columns})
    for c in spec.lookups:
        if c in w.values:
            params.update(lookup_params(spec, c, w.values[c]))
    return columns


def _tomb_params(spec: TableSpec, w: Write, version: Any) -> dict[str, Any]:
    return {
        BIND_TOMB_TABLE: spec.qualified,
        BIND_TOMB_ROW: w.tomb_row or w.row_key,
        BIND_TOMB_VERSION: version_text(version),
    }


def _upsert_params(w: Write) -> dict[str, Any]:
    spec = w.table
    values = w.values
    params = {bind_name(VALUE_PREFIX, c): values.get(c) for c in spec.columns}
    for c in spec.lookups:
        params.update(lookup_params(spec, c, values.get(c)))
    if spec.version:
        params[BIND_VERSION] = w.version
    if spec.tombstones:
        params.update(_tomb_params(spec, w, w.version))
    if spec.soft_delete:
        params[BIND_SOFT_DELETED] = None if spec.soft_delete.kind is SOFT_DELETE_TIMESTAMP else False
    return params


def plan_change(change: Change, state: State, dialect: Dialect) -> Plan:
    """What one message does given `state`; pure: the state is not modified (the plan's
    `rows` and `tombs` say what it changes)."""
    entity = change.entity
    if entity.ledger and (entity.name, change.event_id) in state.ledger:
        return Plan(DUPLICATE)
    if change.ignored:
        return Plan(IGNORED)
    plan = Plan(APPLIED)
    applied = stale = 0
    for w in change.writes:
        spec = w.table
        k = (spec.qualified, w.row_key)
        if w.prune is not None:
            if _plan_prune(w, plan, state):
                applied += 1
            else:
                stale += 1
            continue
        exists, current = plan.rows.get(k, state.rows.get(k, UNKNOWN))
        tk = (spec.qualified, w.tomb_row) if w.tomb_row else k
        tomb = plan.tombs.get(tk, state.tombs.get(tk))
        v = w.version
        tomb_newer = v is not None and tomb is not None and tomb >= version_text(v)
        action = w.action
        if action is DO_UPDATE and exists is False and w.if_missing is IF_MISSING_UPSERT and not tomb_newer:
            action = DO_UPSERT
        if action is DO_INSERT or action is DO_UPSERT:
            if v is not None and (tomb_newer or (exists and current is not None and current >= v)):
                stale += 1
                continue
            params = _upsert_params(w)
            if action is DO_INSERT or (dialect.upsert_reads_first and not exists):
                kind = OP_INSERT
            elif dialect.upsert_reads_first:
                kind = OP_UPSERT_AS_UPDATE  # the row is there: an UPDATE (runtime.dialects.mysql)
                params.update(_key_params(w))
            else:
                kind = OP_UPSERT
            plan.ops.append(Op(kind, spec, (), params, k))
            plan.rows[k] = (True, v if v is not None else current)
        elif action is DO_FILL:
            # Chosen columns of a row that is there and no newer than the write; the version
            # stays (runtime.statements: fill).
            if exists is False:
                continue
            if current is not None and v is not None and current > v:
                stale += 1
                continue
            params = _key_params(w)
            columns: tuple[str, ...] = _set_params(spec, w, params)
            if v is not None:
                params[BIND_VERSION] = v
            plan.ops.append(Op(OP_FILL, spec, columns, params, k))
            plan.rows[k] = (True, current)
        elif action is DO_UPDATE or action is DO_SOFT_DELETE:
            if exists is False:
                if tomb_newer:
                    stale += 1
                    continue
                if w.if_missing is IF_MISSING_IGNORE:
                    if action is DO_SOFT_DELETE and v is not None and spec.tombstones:
                        # Nothing to mark deleted, but the delete's version is kept, so an
                        # older write applied later (a redrive, a late copy) cannot bring
                        # the row back.
                        plan.ops.append(Op(OP_TOMBSTONE, None, (), _tomb_params(spec, w, v), k))
                        plan.tombs[k] = max(version_text(v), tomb or "")
                    continue
                return Plan(
                    FAILED,
                    reason=f"table {spec.name}: no row with key {w.row_key} to {action.replace('_', ' ')} "
                    "(if_missing: fail; set if_missing: ignore or upsert to accept this)",
                )
            # Deletes carry the version of the state they remove, so they apply on equality.
            newer = (
                current is not None
                and v is not None
                and (current > v if action is DO_SOFT_DELETE else current >= v)
            )
            if newer:
                stale += 1
                continue
            params = _key_params(w)
            columns = ()
            if action is DO_UPDATE:
                columns = _set_params(spec, w, params)
            else:
                assert spec.soft_delete is not None
                params[BIND_SOFT_DELETED] = w.values.get(spec.soft_delete.column)
            if v is not None:
                params[BIND_VERSION] = v
            plan.ops.append(
                Op(OP_UPDATE if action is DO_UPDATE else OP_SOFT_DELETE, spec, columns, params, k)
            )
            plan.rows[k] = (True, v if v is not None else current)
        elif action is DO_DELETE:
            if v is not None and (
                (exists and current is not None and current > v) or (not exists and tomb_newer)
            ):
                stale += 1
                continue
            params = _key_params(w)
            if v is not None:
                params[BIND_VERSION] = v
            plan.ops.append(Op(OP_DELETE, spec, (), params, k))
            if v is not None and spec.tombstones:
                plan.ops.append(Op(OP_TOMBSTONE, None, (), _tomb_params(spec, w, v), k))
                plan.tombs[k] = max(version_text(v), tomb or "")
            plan.rows[k] = ABSENT
        else:  # pragma: no cover - Action has no other member
            raise ValueError(f"unknown action {action!r}")
        applied += 1
    plan.status = APPLIED if applied else (STALE if stale else SKIPPED)
    return plan


def _plan_prune(w: Write, plan: Plan, state: State) -> bool:
    """A child table's prune (runtime.decode, _child_writes): delete the parent's rows at the
    positions its event no longer holds, and renew the tombstone of the parent's set, which
    every later write to the set checks (so an older event neither overwrites nor brings
    back a row of a newer set). False: the set is newer than this event (stale)."""
    spec = w.table
    each = spec.each
    assert each is not None
    k = (spec.qualified, w.row_key)  # the parent's row key: the set's tombstone
    tomb = plan.tombs.get(k, state.tombs.get(k))
    v = w.version
    if tomb is not None and tomb >= version_text(v):
        return False
    params = {bind_name(KEY_PREFIX, c): value for c, value in zip(each.parent_key, w.key, strict=True)}
    params[BIND_VERSION] = v
    kept: tuple[str, ...] = ()
    if isinstance(w.prune, int):
        params[BIND_PRUNE_FROM] = each.start + w.prune
    else:
        kept = tuple(keep_bind(i) for i in range(len(w.prune)))
        params.update(zip(kept, w.prune, strict=True))
    plan.ops.append(Op(OP_PRUNE, spec, kept, params, k))
    for row, position in state.members.get(k, {}).items():
        if position >= params[BIND_PRUNE_FROM] if isinstance(w.prune, int) else position not in w.prune:
            plan.rows[row] = ABSENT
    plan.ops.append(Op(OP_TOMBSTONE, None, (), _tomb_params(spec, w, v), k))
    plan.tombs[k] = max(version_text(v), tomb or "")
    return True


def _chunks(seq: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(seq), size):
        yield seq[i : i + size]


def read_state(
    run: Callable[[Sequence[Item]], list[Result]], stmts: Statements, changes: Sequence[Change]
) -> State:
    """One phase (`run`): ledger ids, current row versions and tombstones for the whole batch."""
    items: list[Item] = []
    readers: list[Callable[[Any], None]] = []
    state = State()
    dialect = stmts.dialect

    by_entity: dict[str, list[str]] = {}
    for ch in changes:
        if ch.entity.ledger:
            ids = by_entity.setdefault(ch.entity.name, [])
            if ch.event_id not in ids:
                ids.append(ch.event_id)
    for entity, ids in by_entity.items():
        for chunk in _chunks(ids, READ_CHUNK):
            params = {"entity": entity, **{f"event_id_{i}": eid for i, eid in enumerate(chunk)}}
            items.append((stmts.ledger_read(len(chunk)), params))

            def take_ledger(rows: Any, entity: str = entity) -> None:
                state.ledger.update((entity, r[0]) for r in rows)

            readers.append(take_ledger)

    keys: dict[str, tuple[TableSpec, dict[str, Write]]] = {}
    tomb_keys: dict[RowKey, None] = {}
    for ch in changes:
        for w in ch.writes:
            if w.tomb_row is not None:  # a child table's write: its parent's set tombstone
                parent = (w.table.qualified, w.tomb_row)
                tomb_keys[parent] = None
                if w.prune is not None:
                    continue
                each = w.table.each
                assert each is not None
                state.members.setdefault(parent, {})[(w.table.qualified, w.row_key)] = w.values[each.position]
            if not needs_row(w, dialect):
                continue
            spec_keys = keys.setdefault(w.table.qualified, (w.table, {}))[1]
            spec_keys.setdefault(w.row_key, w)
            if w.table.tombstones and w.tomb_row is None:
                tomb_keys[(w.table.qualified, w.row_key)] = None
    for qualified, (spec, wanted) in keys.items():
        writes = list(wanted.values())
        for w in writes:
            state.rows[(qualified, w.row_key)] = ABSENT
        for chunk in _chunks(writes, READ_CHUNK):
            params = {
                row_bind(i, k): v for i, w in enumerate(chunk) for k, v in zip(spec.key, w.key, strict=True)
            }
            items.append((stmts.rows_read(spec, len(chunk)), params))

            def take_rows(rows: Any, spec: TableSpec = spec) -> None:
                n = len(spec.key)
                for r in rows:
                    version = r[n] if spec.version else None
                    state.rows[(spec.qualified, row_key(spec, tuple(r[:n])))] = (True, version)

            readers.append(take_rows)
    for chunk in _chunks(list(tomb_keys), READ_CHUNK):
        params = {}
        for i, (table, row) in enumerate(chunk):
            params[f"{BIND_TOMB_TABLE}_{i}"] = table
            params[f"{BIND_TOMB_ROW}_{i}"] = row
        items.append((stmts.tombstones_read(len(chunk)), params))

        def take_tombs(rows: Any) -> None:
            state.tombs.update(((r[0], r[1]), r[2]) for r in rows)

        readers.append(take_tombs)

    for reader, rows in zip(readers, run(items), strict=True):
        reader(rows)
    return state
