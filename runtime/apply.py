"""Apply one SQS FIFO batch to the database: exactly once, in order, nothing half committed.

Fast path (a clean batch, a constant number of round trips):
  1. read, in one round trip: the ledger rows of the batch's event ids, the current version
     of every row the batch touches, and their tombstones;
  2. plan every message in order against that state (duplicate / stale / applied), so the
     counts are exact and stale writes are not even sent;
  3. send every write plus the ledger rows in one round trip, as one transaction (see
     runtime.sql for how each driver sends a phase).
On PostgreSQL a batch of new messages first tries a single round trip: step 3 alone, planned
against no state, every write asserting its premise in the SQL; anything unexpected rolls
that back and the batch takes steps 1-3 (see _fast).
The SQL still carries the version guard and tombstone check, so the result stays right even
if the plan's snapshot were outdated.

Slow path (the fast path hit an error): the same plan, one SAVEPOINT per message, to isolate
the culprit; its group stops there and every other group goes on (facts 6.4).

A connection lost, or a transaction the database rolled back by itself (MySQL deadlock),
retries the whole batch once on a fresh connection: safe, because the ledger absorbs what
may already have committed. After that the whole batch is reported failed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from runtime.decode import (
    SEQUENCE_WIDTH,
    Change,
    DecodeError,
    SqsRecord,
    Write,
    decode,
    entity_for,
    parse_sqs_record,
    row_key,
)
from runtime.errors import PERMANENT, TRANSIENT, Classified, classify
from runtime.registry import Registry, TableSpec
from runtime.sql import Executor, FastSession, Item, Op, PremiseMissed, Result, Statements, fast_session

APPLIED, DUPLICATE, STALE, IGNORED, SKIPPED, FAILED, BLOCKED = (
    "applied",
    "duplicate",
    "stale",
    "ignored",
    "skipped",
    "failed",
    "blocked",
)
READ_CHUNK = 100


@dataclass(slots=True)
class Outcome:
    message_id: str
    group_id: str
    entity: str = ""
    event_id: str = ""
    event_type: str = ""
    status: str = ""
    kind: str = ""  # permanent | transient, for failed and blocked
    reason: str = ""
    lag_seconds: float | None = None

    @property
    def reported_failed(self) -> bool:
        return self.status in (FAILED, BLOCKED)


@dataclass
class BatchResult:
    outcomes: list[Outcome]
    path: str = "none"  # fast | slow | none
    attempts: int = 0
    round_trips: int = 0
    duration_ms: float = 0.0

    def response(self) -> dict[str, list[dict[str, str]]]:
        """The partial batch response Lambda reads (facts 6.4, 6.5)."""
        return {
            "batchItemFailures": [
                {"itemIdentifier": o.message_id} for o in self.outcomes if o.reported_failed
            ]
        }

    def counts(self) -> dict[str, int]:
        keys = (APPLIED, DUPLICATE, STALE, IGNORED, SKIPPED, "failed_permanent", "failed_transient", BLOCKED)
        out = dict.fromkeys(keys, 0)
        for o in self.outcomes:
            out[f"failed_{o.kind}" if o.status == FAILED else o.status] += 1
        return out


class _TransactionLost(Exception):
    def __init__(self, classified: Classified) -> None:
        super().__init__(classified.reason)
        self.classified = classified


ABSENT = (False, None)
UNKNOWN = (None, None)


def _vtext(version: Any) -> str:
    return version if isinstance(version, str) else str(version).zfill(SEQUENCE_WIDTH)


@dataclass
class _State:
    ledger: set[tuple[str, str]] = field(default_factory=set)
    rows: dict[tuple[str, str], tuple[bool | None, Any]] = field(default_factory=dict)
    tombs: dict[tuple[str, str], str] = field(default_factory=dict)


@dataclass
class _Plan:
    status: str
    ops: list[Op] = field(default_factory=list)
    rows: dict[tuple[str, str], tuple[bool | None, Any]] = field(default_factory=dict)
    tombs: dict[tuple[str, str], str] = field(default_factory=dict)
    reason: str = ""


def _needs_row(w: Write, family: str) -> bool:
    """Whether planning needs to know the row's current version or existence."""
    if w.table.version is not None or w.action in ("update", "soft_delete"):
        return True
    return family == "mysql" and w.action == "upsert"


_NAMES: dict[tuple[str, str], str] = {}


def _name(prefix: str, column: str) -> str:
    """A bind parameter's name, p_<column> / k_<column> (kept: built once per column)."""
    name = _NAMES.get((prefix, column))
    if name is None:
        name = _NAMES[(prefix, column)] = f"{prefix}_{column}"
    return name


def _key_params(w: Write) -> dict[str, Any]:
    return {_name("k", k): v for k, v in zip(w.table.key, w.key, strict=True)}


def _upsert_params(w: Write) -> dict[str, Any]:
    spec = w.table
    values = w.values
    params = {_name("p", c): values.get(c) for c in spec.columns}
    if spec.version:
        params["v"] = w.version
    if spec.tombstones:
        params.update(tn=spec.qualified, rk=w.row_key, tv=_vtext(w.version))
    if spec.soft_delete:
        params["sd"] = None if spec.soft_delete.kind == "timestamp" else False
    return params


def plan_change(change: Change, state: _State, stmts: Statements) -> _Plan:
    """What one message does given the current state; pure, the state is not modified."""
    entity = change.entity
    if entity.ledger and (entity.name, change.event_id) in state.ledger:
        return _Plan(DUPLICATE)
    if change.ignored:
        return _Plan(IGNORED)
    plan = _Plan(APPLIED)
    applied = stale = 0
    for w in change.writes:
        spec = w.table
        k = (spec.qualified, w.row_key)
        exists, current = plan.rows.get(k, state.rows.get(k, UNKNOWN))
        tomb = plan.tombs.get(k, state.tombs.get(k))
        v = w.version
        tomb_newer = v is not None and tomb is not None and tomb >= _vtext(v)
        action = w.action
        if action == "update" and exists is False and w.if_missing == "upsert" and not tomb_newer:
            action = "upsert"
        if action in ("insert", "upsert"):
            if v is not None and (tomb_newer or (exists and current is not None and current >= v)):
                stale += 1
                continue
            params = _upsert_params(w)
            if action == "insert" or (stmts.family == "mysql" and not exists):
                kind = "insert"
            elif stmts.family == "mysql":
                kind = "upsert_as_update"  # see Statements._on_conflict for why not ODKU
                params.update(_key_params(w))
            else:
                kind = "upsert"
            plan.ops.append(Op(kind, spec, (), params, k))
            plan.rows[k] = (True, v if v is not None else current)
        elif action in ("update", "soft_delete"):
            if exists is False:
                if tomb_newer:
                    stale += 1
                    continue
                if w.if_missing == "ignore":
                    continue
                return _Plan(
                    FAILED,
                    reason=f"table {spec.name}: no row with key {w.row_key} to {action.replace('_', ' ')} "
                    "(if_missing: fail; set if_missing: ignore or upsert to accept this)",
                )
            # Deletes carry the version of the state they remove, so they apply on equality.
            newer = (
                current is not None
                and v is not None
                and (current > v if action == "soft_delete" else current >= v)
            )
            if newer:
                stale += 1
                continue
            params = _key_params(w)
            columns: tuple[str, ...] = ()
            if action == "update":
                columns = tuple(c for c in w.values if c not in spec.key)
                params.update({_name("p", c): w.values[c] for c in columns})
            else:
                assert spec.soft_delete is not None
                params["sd"] = w.values.get(spec.soft_delete.column)
            if v is not None:
                params["v"] = v
            plan.ops.append(Op(action, spec, columns, params, k))
            plan.rows[k] = (True, v if v is not None else current)
        elif action == "delete":
            if v is not None and (
                (exists and current is not None and current > v) or (not exists and tomb_newer)
            ):
                stale += 1
                continue
            params = _key_params(w)
            if v is not None:
                params["v"] = v
            plan.ops.append(Op("delete", spec, (), params, k))
            if v is not None and spec.tombstones:
                plan.ops.append(
                    Op("tombstone", None, (), {"tn": spec.qualified, "rk": w.row_key, "tv": _vtext(v)}, k)
                )
                plan.tombs[k] = max(_vtext(v), tomb or "")
            plan.rows[k] = ABSENT
        else:  # pragma: no cover - the registry schema admits no other action
            raise ValueError(f"unknown action {action!r}")
        applied += 1
    plan.status = APPLIED if applied else (STALE if stale else SKIPPED)
    return plan


def _chunks(seq: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(seq), size):
        yield seq[i : i + size]


def read_state(
    run: Callable[[Sequence[Item]], list[Result]], stmts: Statements, changes: Sequence[Change]
) -> _State:
    """One round trip: ledger ids, current row versions and tombstones for the whole batch."""
    items: list[Item] = []
    readers: list[Callable[[Any], None]] = []
    state = _State()

    by_entity: dict[str, list[str]] = {}
    for ch in changes:
        if ch.entity.ledger:
            ids = by_entity.setdefault(ch.entity.name, [])
            if ch.event_id not in ids:
                ids.append(ch.event_id)
    for entity, ids in by_entity.items():
        for chunk in _chunks(ids, READ_CHUNK):
            params = {"e": entity, **{f"i{i}": eid for i, eid in enumerate(chunk)}}
            items.append((stmts.ledger_read(len(chunk)), params))
            readers.append(lambda rows, e=entity: state.ledger.update((e, r[0]) for r in rows))

    keys: dict[str, tuple[TableSpec, dict[str, Write]]] = {}
    tomb_keys: dict[tuple[str, str], None] = {}
    for ch in changes:
        for w in ch.writes:
            if not _needs_row(w, stmts.family):
                continue
            spec_keys = keys.setdefault(w.table.qualified, (w.table, {}))[1]
            spec_keys.setdefault(w.row_key, w)
            if w.table.tombstones:
                tomb_keys[(w.table.qualified, w.row_key)] = None
    for qualified, (spec, wanted) in keys.items():
        writes = list(wanted.values())
        for w in writes:
            state.rows[(qualified, w.row_key)] = ABSENT
        for chunk in _chunks(writes, READ_CHUNK):
            params = {
                f"r{i}_{k}": v for i, w in enumerate(chunk) for k, v in zip(spec.key, w.key, strict=True)
            }
            items.append((stmts.rows_read(spec, len(chunk)), params))

            def take(rows: Any, spec: TableSpec = spec) -> None:

                n = len(spec.key)
                for r in rows:
                    version = r[n] if spec.version else None
                    state.rows[(spec.qualified, row_key(spec, tuple(r[:n])))] = (True, version)

            readers.append(take)
    tkeys = list(tomb_keys)
    for chunk in _chunks(tkeys, READ_CHUNK):
        params = {}
        for i, (tn, rk) in enumerate(chunk):
            params[f"tn{i}"] = tn
            params[f"rk{i}"] = rk
        items.append((stmts.tombstones_read(len(chunk)), params))
        readers.append(lambda rows: state.tombs.update(((r[0], r[1]), r[2]) for r in rows))

    for reader, rows in zip(readers, run(items), strict=True):
        reader(rows)
    return state


def _ledger_item(stmts: Statements, rows: list[tuple[str, str, str, str]], *, multi_values: bool) -> Item:
    """The ledger rows: one multi-row INSERT for the driver sessions (their own SQL cache),
    an executemany through SQLAlchemy otherwise (a multi-VALUES statement has no SQLAlchemy
    cache key, so it would be recompiled on every batch)."""
    if not multi_values:
        keys = ("entity", "event_id", "message_id", "outcome")
        return stmts.ledger_insert_one(), [dict(zip(keys, row, strict=True)) for row in rows]
    params: dict[str, Any] = {}
    for i, (entity, event_id, message_id, outcome) in enumerate(rows):
        params.update({f"le{i}": entity, f"li{i}": event_id, f"lm{i}": message_id, f"lo{i}": outcome})
    return stmts.ledger_insert(len(rows)), params


def _plan_in_order(
    ch: Change, out: Outcome, state: _State, stmts: Statements, blocked: dict[str, tuple[str, str]]
) -> _Plan | None:
    """Plan one message unless its group already failed in this batch (then it is held back)."""
    group = ch.record.group_id
    if group in blocked:
        culprit, kind = blocked[group]
        out.status, out.kind, out.reason = (
            BLOCKED,
            kind,
            f"held back behind message {culprit} of group {group}",
        )
        return None
    plan = plan_change(ch, state, stmts)
    if plan.status == FAILED:
        out.status, out.kind, out.reason = FAILED, PERMANENT, plan.reason
        blocked[group] = (ch.record.message_id, PERMANENT)
        return None
    out.status = plan.status
    return plan


def _commit_plan(ch: Change, plan: _Plan, state: _State) -> None:
    state.rows.update(plan.rows)
    state.tombs.update(plan.tombs)
    if ch.entity.ledger and plan.status != DUPLICATE:
        state.ledger.add((ch.entity.name, ch.event_id))


def _ledger_row(ch: Change, plan: _Plan) -> tuple[str, str, str, str] | None:
    if ch.entity.ledger and plan.status != DUPLICATE:
        return (ch.entity.name, ch.event_id, ch.record.message_id, plan.status)
    return None


def _plan_and_write(
    session: FastSession,
    changes: list[tuple[int, Change]],
    stmts: Statements,
    outcomes: list[Outcome],
    state: _State,
    *,
    asserted: bool,
) -> None:
    """Plan every message in order against `state`, then send the writes and ledger rows."""
    ops: list[Op] = []
    ledger_rows: list[tuple[str, str, str, str]] = []
    blocked: dict[str, tuple[str, str]] = {}
    for idx, ch in changes:
        plan = _plan_in_order(ch, outcomes[idx], state, stmts, blocked)
        if plan is None:
            continue
        ops.extend(plan.ops)
        if (row := _ledger_row(ch, plan)) is not None:
            ledger_rows.append(row)
        _commit_plan(ch, plan, state)
    items = stmts.items(ops, asserted=asserted)
    if ledger_rows:
        items.append(_ledger_item(stmts, ledger_rows, multi_values=session.driver_level))
    session.write_commit(items)


def _fast(
    conn: Connection,
    changes: list[tuple[int, Change]],
    stmts: Statements,
    outcomes: list[Outcome],
    *,
    optimistic: bool = False,
) -> int:
    """The whole batch in one transaction: read, plan, write + commit. Returns round trips.

    Optimistic first, where the session can (PostgreSQL, SQLite): plan as if every event were new and
    every write applicable, and send the writes alone, each asserting in the SQL that it
    changed its row (runtime.sql, Statements.asserted); the ledger insert itself fails on an
    event already recorded. When every premise holds, that single round trip committed
    exactly what the read-then-write path would have. When one does not (a duplicate, a
    stale event, a missing row), the server rolled the whole pipeline back and the batch
    takes the read-then-write path below. Any other error (a lock wait, a constraint) would
    meet that path again, so it goes where a failed fast path goes: to the per-message path.
    """
    session: FastSession = fast_session(conn, stmts.compiled)
    if optimistic and session.optimistic:
        try:
            _plan_and_write(session, changes, stmts, outcomes, _State(), asserted=True)
            stmts.optimism.succeeded()
            return session.round_trips
        except PremiseMissed:
            session.abort()
            stmts.optimism.failed()
            for idx, _ in changes:
                o = outcomes[idx]
                o.status, o.kind, o.reason = "", "", ""
        except BaseException:
            session.abort()
            raise
    try:
        state = read_state(session.read, stmts, [c for _, c in changes])
        _plan_and_write(session, changes, stmts, outcomes, state, asserted=False)
    except BaseException:
        session.abort()
        raise
    return session.round_trips


def _slow(
    conn: Connection,
    changes: list[tuple[int, Change]],
    stmts: Statements,
    registry: Registry,
    outcomes: list[Outcome],
) -> int:
    """One transaction, one SAVEPOINT per message: a failing message is rolled back alone and
    stops its group; every other group goes on (facts 6.4)."""
    executor = Executor(conn)
    blocked: dict[str, tuple[str, str]] = {}
    with conn.begin():
        state = read_state(executor.run, stmts, [c for _, c in changes])
        for idx, ch in changes:
            out = outcomes[idx]
            plan = _plan_in_order(ch, out, state, stmts, blocked)
            if plan is None:
                continue
            items = stmts.items(plan.ops)
            if (row := _ledger_row(ch, plan)) is not None:
                items.append(_ledger_item(stmts, [row], multi_values=False))
            savepoint = conn.begin_nested()
            try:
                executor.run(items)
                savepoint.commit()
            except DBAPIError as exc:
                c = classify(exc, foreign_key_transient=registry.foreign_key_transient)
                try:
                    savepoint.rollback()
                except DBAPIError:
                    raise _TransactionLost(c) from exc
                if c.whole_transaction:
                    raise _TransactionLost(c) from exc
                out.status, out.kind, out.reason = FAILED, c.kind, c.reason
                blocked[ch.record.group_id] = (ch.record.message_id, c.kind)
                continue
            _commit_plan(ch, plan, state)
    return executor.round_trips + 1  # + COMMIT


def _event_id_of(record: SqsRecord, entity: Any) -> str:
    """The event id of a message that failed to decode, when its body still shows it (for the
    failure log line); empty when the body is not even JSON."""
    field = getattr(entity, "event_id_field", None)
    spec = entity.fields.get(field) if field else None
    if spec is None:
        return ""
    try:
        node: Any = json.loads(record.body)
    except ValueError:
        return ""
    for part in spec.path:
        node = node.get(part) if isinstance(node, dict) else None
    return node if isinstance(node, str) else ""


def statements_for(registry: Registry, engine: Engine) -> Statements:
    """Statements are built once per registry and dialect and kept with the registry."""
    key = f"statements:{engine.dialect.name}"
    stmts = registry.cache.get(key)
    if stmts is None:
        stmts = registry.cache[key] = Statements(registry, engine.dialect)
    return stmts


def apply_batch(
    records: Sequence[dict[str, Any]],
    engine: Engine,
    registry: Registry,
    *,
    attempts: int = 2,
    clock: Callable[[], float] = time.time,
) -> BatchResult:
    """Apply one SQS batch (the `Records` of a Lambda event); never raises for a bad message."""
    started = time.perf_counter()
    parsed: list[SqsRecord] = [parse_sqs_record(r) for r in records]
    outcomes = [Outcome(r.message_id, r.group_id) for r in parsed]
    result = BatchResult(outcomes)
    changes: list[tuple[int, Change]] = []
    failed_groups: dict[str, str] = {}
    for i, rec in enumerate(parsed):
        out = outcomes[i]
        entity = registry.entity_for_queue(rec.queue)
        out.entity = entity.name if entity else ""
        if rec.group_id in failed_groups:
            out.status, out.kind, out.reason = (
                BLOCKED,
                PERMANENT,
                f"held back behind message {failed_groups[rec.group_id]} of group {rec.group_id}",
            )
            continue
        try:
            entity = entity_for(rec, registry)
            out.entity = entity.name
            change = decode(rec, entity)
        except DecodeError as exc:
            out.status, out.kind, out.reason = FAILED, PERMANENT, f"undecodable message: {exc}"
            out.event_id = _event_id_of(rec, entity)
            failed_groups[rec.group_id] = rec.message_id
            continue
        out.event_id, out.event_type = change.event_id, change.event_type
        if change.created_at is not None:
            out.lag_seconds = round(max(0.0, clock() - float(change.created_at)), 3)
        changes.append((i, change))

    stmts = statements_for(registry, engine)
    # A message SQS delivers again most likely reached the database before (a duplicate): such
    # a batch reads first rather than guess (see _fast).
    optimistic = stmts.optimism.should_try() and all(r.receive_count <= 1 for r in parsed)

    last: Classified | None = None
    for attempt in range(1, attempts + 1):
        result.attempts = attempt
        for idx, _ in changes:
            o = outcomes[idx]
            o.status, o.kind, o.reason = "", "", ""
        try:
            with engine.connect() as conn:
                try:
                    result.round_trips += _fast(conn, changes, stmts, outcomes, optimistic=optimistic)
                    result.path = "fast"
                except DBAPIError as exc:
                    c = classify(exc, foreign_key_transient=registry.foreign_key_transient)
                    if c.whole_transaction:
                        raise _TransactionLost(c) from exc
                    for idx, _ in changes:
                        o = outcomes[idx]
                        o.status, o.kind, o.reason = "", "", ""
                    result.round_trips += _slow(conn, changes, stmts, registry, outcomes)
                    result.path = "slow"
            last = None
            break
        except _TransactionLost as exc:
            last = exc.classified
        except DBAPIError as exc:
            last = classify(exc, foreign_key_transient=registry.foreign_key_transient)
    if last is not None:
        for idx, _ in changes:
            o = outcomes[idx]
            o.status, o.kind, o.reason = FAILED, TRANSIENT, f"batch not applied: {last.reason}"
    for o in outcomes:
        if o.status == "":  # a message after an unapplied one cannot be left unreported
            o.status, o.kind, o.reason = FAILED, TRANSIENT, "not applied"
        if o.status != APPLIED:
            o.lag_seconds = None
    result.duration_ms = round((time.perf_counter() - started) * 1000, 3)
    return result
