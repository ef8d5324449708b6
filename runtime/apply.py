"""Apply one SQS FIFO batch to the database: exactly once, in order, nothing half committed.

Fast path (a clean batch, a constant number of round trips):
  1. read, in one round trip: the ledger rows of the batch's event ids, the current version
     of every row the batch touches, and their tombstones;
  2. plan every message in order against that state (duplicate / stale / applied), so the
     counts are exact and stale writes are not even sent;
  3. send every write plus the ledger rows in one round trip, as one transaction (each
     database's session sends a phase its own way: runtime.dialects).
On PostgreSQL a batch of new messages first tries a single round trip: step 3 alone, planned
against no state, every write asserting its premise in the SQL; anything unexpected rolls
that back and the batch takes steps 1-3 (see _fast).
The SQL still carries the version guard and tombstone check, so the result stays right even
if the plan's snapshot were outdated.

Slow path (the fast path hit an error): the same plan, one SAVEPOINT per message, to isolate
the culprit; its group stops there and every other group goes on (an SQS FIFO event
source's partial batch response: a group is retried from its first failed message). Each message
inserts its ledger row first: a row another invocation recorded meanwhile (its visibility
timeout ran out while this one worked) makes the message a duplicate, not a failure.

A connection lost, or a transaction the database rolled back by itself (MySQL deadlock),
retries the whole batch once on a fresh connection: safe, because the ledger absorbs what
may already have committed. After that the whole batch is reported failed.

Failure model: whatever concerns one message (its body, its values, a constraint it breaks,
an exception while binding it) fails that message alone, permanently, and holds back the
rest of its group; only what concerns the whole batch (no connection, a refused login, the
deadline) fails every message, transiently. A connection that saw an exception nobody
expected is closed, never reused. apply_batch never raises.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from runtime import dialects
from runtime.config import connect_floor_s, limits_of
from runtime.deadline import CURRENT, WATCHDOG, Deadline
from runtime.decode import Change, DecodeError, RefusedValue, SqsRecord, decode, entity_for, parse_sqs_record
from runtime.dialects.base import BindError, Executor, FastSession, Item, PremiseMissed, statement_index
from runtime.errors import Classified, SetupError, unexpected
from runtime.kinds import (
    APPLIED as APPLIED,
)
from runtime.kinds import (
    BLOCKED as BLOCKED,
)
from runtime.kinds import (
    DUPLICATE as DUPLICATE,
)
from runtime.kinds import (
    FAILED as FAILED,
)
from runtime.kinds import (
    IGNORED as IGNORED,
)
from runtime.kinds import (
    OP_FILL,
    OP_UPDATE,
    WHEN_MISSING_NULL,
    WHEN_MISSING_RETRY,
    Kind,
    Status,
)
from runtime.kinds import (
    PERMANENT as PERMANENT,
)
from runtime.kinds import (
    SKIPPED as SKIPPED,
)
from runtime.kinds import (
    STALE as STALE,
)
from runtime.kinds import (
    TRANSIENT as TRANSIENT,
)
from runtime.plan import Op, Plan, State, plan_change, read_state
from runtime.redact import cut
from runtime.redact import reason as short_reason
from runtime.registry import Registry
from runtime.schema import EVENT_ID_TEXT
from runtime.statements import LEDGER_COLUMNS, Statements, ledger_params
from runtime.wire import BatchResponse, SqsEventRecord

# The least time worth starting an attempt with (a pooled connection; a new one needs the
# driver's least connect timeout on top), and what a message of the per-message path may take
# beyond one lock wait.
MIN_ATTEMPT_S = 0.3
PER_MESSAGE_SLACK_S = 0.2
NOT_STARTED = "not started: the invocation's time ran out (deadline); SQS delivers it again"
CUT_AT_DEADLINE = (
    "not confirmed by the database before the invocation's deadline (the connection was cut); "
    "SQS delivers it again and the ledger absorbs a repeat"
)


@dataclass(slots=True)
class Outcome:
    message_id: str
    group_id: str
    entity: str = ""
    event_id: str = ""
    event_type: str = ""
    status: Status | None = None  # None until the batch decides
    kind: Kind | None = None  # for failed and blocked messages
    reason: str = ""
    lag_seconds: float | None = None

    @property
    def reported_failed(self) -> bool:
        return self.status is FAILED or self.status is BLOCKED

    def fail(self, kind: Kind, why: str, status: Status = FAILED) -> None:
        self.status, self.kind, self.reason = status, kind, short_reason(why)

    def reset(self) -> None:
        self.status = self.kind = None
        self.reason = ""


COUNTS = (
    "applied",
    "duplicate",
    "stale",
    "ignored",
    "skipped",
    "failed_permanent",
    "failed_transient",
    "blocked",
)


@dataclass
class BatchResult:
    outcomes: list[Outcome]
    path: str = "none"  # fast | slow | none
    attempts: int = 0
    round_trips: int = 0
    duration_ms: float = 0.0
    failure: Classified | None = None  # why the batch as a whole was not applied
    committed: bool = False

    def response(self) -> BatchResponse:
        """The partial batch response Lambda reads (AWS Lambda Developer Guide, "Handling
        errors for an SQS event source"). A record without a message id (Lambda never sends
        one) cannot be named, and naming "" would make Lambda retry every message of the
        batch."""
        return {
            "batchItemFailures": [
                {"itemIdentifier": o.message_id} for o in self.outcomes if o.reported_failed and o.message_id
            ]
        }

    def counts(self) -> dict[str, int]:
        """Messages per outcome (COUNTS): failures split by kind."""
        out = dict.fromkeys(COUNTS, 0)
        for o in self.outcomes:
            out[f"failed_{o.kind}" if o.status is FAILED else str(o.status)] += 1
        return out


class _TransactionLost(Exception):
    """The batch's transaction is gone (or its outcome unknown): nothing of it stands."""

    def __init__(self, classified: Classified) -> None:
        super().__init__(classified.reason)
        self.classified = classified


class _FastFailed(Exception):
    """The fast path failed and left the connection clean; `known`: messages whose failure
    is already certain (a lock wait that would only be waited for again, a value the driver
    cannot send), by index in the batch."""

    def __init__(self, known: dict[int, Classified]) -> None:
        super().__init__("fast path failed")
        self.known = known


def _ledger_item(stmts: Statements, rows: list[tuple[str, str, str, str]], *, multi_values: bool) -> Item:
    """The ledger rows: one multi-row INSERT for the driver sessions (their own SQL cache),
    an executemany through SQLAlchemy otherwise (a multi-VALUES statement has no SQLAlchemy
    cache key, so it would be recompiled on every batch)."""
    if not multi_values:
        return stmts.ledger_insert_one(), [dict(zip(LEDGER_COLUMNS, row, strict=True)) for row in rows]
    return stmts.ledger_insert(len(rows)), ledger_params(rows)


Blocked = dict[str, tuple[str, Kind]]  # group -> (the message that failed, its failure's kind)


def _plan_in_order(
    ch: Change, out: Outcome, state: State, stmts: Statements, blocked: Blocked
) -> Plan | None:
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
    plan = plan_change(ch, state, stmts.dialect)
    if plan.status is FAILED:
        out.status, out.kind, out.reason = FAILED, PERMANENT, plan.reason
        blocked[group] = (ch.record.message_id, PERMANENT)
        return None
    out.status = plan.status
    return plan


def _commit_plan(ch: Change, plan: Plan, state: State) -> None:
    state.rows.update(plan.rows)
    state.tombs.update(plan.tombs)
    if ch.entity.ledger and plan.status is not DUPLICATE:
        state.ledger.add((ch.entity.name, ch.event_id))


def _ledger_row(ch: Change, plan: Plan) -> tuple[str, str, str, str] | None:
    if ch.entity.ledger and plan.status is not DUPLICATE:
        return (ch.entity.name, ch.event_id, ch.record.message_id, plan.status)
    return None


def _plan_and_write(
    session: FastSession,
    changes: list[tuple[int, Change]],
    stmts: Statements,
    outcomes: list[Outcome],
    state: State,
    *,
    asserted: bool,
) -> None:
    """Plan every message in order against `state`, then send the writes and ledger rows.
    An exception from the session names the message its failing statement came from
    (`sync_owner`, an index in the batch; None for the shared ledger insert)."""
    ops: list[Op] = []
    owners: list[int | None] = []
    ledger_rows: list[tuple[str, str, str, str]] = []
    blocked: Blocked = {}
    for idx, ch in changes:
        plan = _plan_in_order(ch, outcomes[idx], state, stmts, blocked)
        if plan is None:
            continue
        ops.extend(plan.ops)
        owners.extend([idx] * len(plan.ops))
        if (row := _ledger_row(ch, plan)) is not None:
            ledger_rows.append(row)
        _commit_plan(ch, plan, state)
    if session.merges_rows:
        items, owners = stmts.merged_items(ops, owners, asserted=asserted)
    else:
        items = stmts.items(ops, asserted=asserted)
    if ledger_rows:
        items.append(_ledger_item(stmts, ledger_rows, multi_values=session.driver_level))
        owners.append(None)
    try:
        session.write_commit(items)
    except BaseException as exc:
        i = exc.index if isinstance(exc, BindError) else statement_index(exc)
        exc.sync_owner = owners[i] if i is not None and 0 <= i < len(owners) else None  # type: ignore[attr-defined]
        raise


def _reset(changes: list[tuple[int, Change]], outcomes: list[Outcome]) -> None:
    for idx, _ in changes:
        outcomes[idx].reset()


def _fast(
    conn: Connection,
    changes: list[tuple[int, Change]],
    stmts: Statements,
    outcomes: list[Outcome],
    registry: Registry,
    *,
    optimistic: bool = False,
) -> int:
    """The whole batch in one transaction: read, plan, write + commit. Returns round trips.

    Optimistic first, where the session can (PostgreSQL, SQLite): plan as if every event were new and
    every write applicable, and send the writes alone, each asserting in the SQL that it
    changed its row (Statements.asserted, in the dialect's form); the ledger insert itself fails on an
    event already recorded. When every premise holds, that single round trip committed
    exactly what the read-then-write path would have. When one does not (a duplicate, a
    stale event, a missing row), the server rolled the whole pipeline back and the batch
    takes the read-then-write path below. Any other error (a lock wait, a constraint) would
    meet that path again, so it goes where a failed fast path goes: to the per-message path
    (_FastFailed), or, when the connection is not clean, to a retry (_TransactionLost).
    """
    session: FastSession = stmts.dialect.session(conn, stmts.compiled)
    optimism = optimism_for(registry, conn.engine)
    try:
        if optimistic and session.optimistic:
            try:
                _plan_and_write(session, changes, stmts, outcomes, State(), asserted=True)
                optimism.succeeded()
                return session.round_trips
            except PremiseMissed:
                session.abort()
                optimism.failed()
                _reset(changes, outcomes)
        state = read_state(session.read, stmts, [c for _, c in changes])
        _plan_and_write(session, changes, stmts, outcomes, state, asserted=False)
        return session.round_trips
    except BindError as exc:
        session.abort()
        owner = getattr(exc, "sync_owner", None)
        why = Classified(PERMANENT, unexpected(exc.cause, "the driver cannot send its values"))
        raise _FastFailed({owner: why} if owner is not None else {}) from exc
    except DBAPIError as exc:
        session.abort()
        c = stmts.dialect.classify(exc, foreign_key_transient=registry.foreign_key_transient)
        if c.whole_transaction or conn.invalidated:
            raise _TransactionLost(c) from exc
        owner = getattr(exc, "sync_owner", None)
        raise _FastFailed({owner: c} if owner is not None and c.lock else {}) from exc
    except Exception as exc:  # a driver's surprise or a defect: the connection's state is unknown
        _drop(conn, exc)
        raise _TransactionLost(
            Classified(TRANSIENT, unexpected(exc, "connection dropped after an unexpected error"), True)
        ) from exc
    except BaseException as exc:
        _drop(conn, exc)
        raise


def _drop(conn: Connection, exc: BaseException | None = None) -> None:
    """Close the connection (never returned to the pool): the server rolls back whatever it
    held uncommitted."""
    if not conn.invalidated:
        with contextlib.suppress(Exception):  # closing a dead socket
            conn.invalidate(exc if isinstance(exc, Exception) else None)


def _rollback_to(savepoint: Any, c: Classified, exc: BaseException) -> None:
    try:
        savepoint.rollback()
    except Exception as lost:  # the transaction is gone with the savepoint
        raise _TransactionLost(c if c.whole_transaction else Classified(TRANSIENT, c.reason, True)) from lost


def _slow(
    conn: Connection,
    changes: list[tuple[int, Change]],
    stmts: Statements,
    registry: Registry,
    outcomes: list[Outcome],
    budget: Deadline,
    known: dict[int, Classified],
) -> int:
    """One transaction, one SAVEPOINT per message: a failing message is rolled back alone and
    stops its group; every other group goes on (AWS: services-sqs-errorhandling). A message is started only while
    its statements can still finish before the deadline (each may wait out one lock)."""
    executor = Executor(conn)
    blocked: Blocked = {}
    per_message_s = limits_of(conn.engine).lock_timeout_ms / 1000 + PER_MESSAGE_SLACK_S
    fk_transient = registry.foreign_key_transient
    with conn.begin():
        state = read_state(executor.run, stmts, [c for _, c in changes])
        for idx, ch in changes:
            out = outcomes[idx]
            group, message = ch.record.group_id, ch.record.message_id
            if group not in blocked:
                settled = known.get(idx)
                if settled is None and not budget.allows(per_message_s):
                    settled = Classified(TRANSIENT, NOT_STARTED)
                if settled is not None:
                    out.fail(settled.kind, settled.reason)
                    blocked[group] = (message, settled.kind)
                    continue
            plan = _plan_in_order(ch, out, state, stmts, blocked)
            if plan is None:
                continue
            ledger = _ledger_row(ch, plan)
            # The ledger row first: one recorded meanwhile by another invocation fails here,
            # before any write, and makes the message a duplicate.
            items = [_ledger_item(stmts, [ledger], multi_values=False)] if ledger else []
            items += stmts.items(plan.ops)
            if not items:
                _commit_plan(ch, plan, state)
                continue
            savepoint = conn.begin_nested()
            try:
                executor.run(items)
            except DBAPIError as exc:
                c = stmts.dialect.classify(exc, foreign_key_transient=fk_transient)
                _rollback_to(savepoint, c, exc)
                if c.lookup:
                    c = _missed_lookup(plan.ops, statement_index(exc), 1 if ledger else 0, c)
                if c.whole_transaction:
                    raise _TransactionLost(c) from exc
                if c.unique and ledger and statement_index(exc) == 0:
                    out.reset()
                    out.status = DUPLICATE
                    continue
                out.fail(c.kind, c.reason)
                blocked[group] = (message, c.kind)
                continue
            except Exception as exc:  # the driver could not send a value of this message
                _rollback_to(savepoint, Classified(TRANSIENT, unexpected(exc, "savepoint lost")), exc)
                out.fail(PERMANENT, unexpected(exc, "the driver cannot send its values"))
                blocked[group] = (message, PERMANENT)
                continue
            savepoint.commit()
            _commit_plan(ch, plan, state)
    return executor.round_trips + 1  # + COMMIT


def _missed_lookup(ops: list[Op], index: int | None, before: int, c: Classified) -> Classified:
    """A write whose lookup found no row, classified by the lookups of its columns: transient
    when one says when_missing: retry (the row may arrive later: the message and the rest of
    its group wait for SQS to deliver them again), else permanent (fail)."""
    i = index - before if index is not None else -1
    op = ops[i] if 0 <= i < len(ops) else None
    spec = op.spec if op is not None else None
    if op is None or spec is None:
        return c
    columns = [
        spec.columns[x] for x in spec.lookups if op.kind not in (OP_UPDATE, OP_FILL) or x in op.columns
    ]
    required = [
        col for col in columns if col.lookup is not None and col.lookup.when_missing is not WHEN_MISSING_NULL
    ]
    if not required:
        return c
    retry = any(col.lookup is not None and col.lookup.when_missing is WHEN_MISSING_RETRY for col in required)
    what = "; ".join(
        f"{spec.name}.{col.name} from {col.lookup.table} by {', '.join(m.name for m in col.lookup.match)}"
        for col in required
        if col.lookup is not None
    )
    then = "retry: SQS delivers it again" if retry else "fail"
    return Classified(
        TRANSIENT if retry else PERMANENT, f"lookup found no row: {what} (when_missing: {then})"
    )


def _event_id_of(record: SqsRecord, entity: Any) -> str:
    """The event id of a message that failed to decode, when its body still shows it (for the
    failure log line); empty when the body is not even JSON."""
    field = getattr(entity, "event_id_field", None)
    spec = entity.fields.get(field) if field else None
    if spec is None:
        return ""
    try:
        node: Any = json.loads(record.body)
    except (ValueError, RecursionError):
        return ""
    for part in spec.path:
        node = node.get(part) if isinstance(node, dict) else None
    return cut(node, EVENT_ID_TEXT) if isinstance(node, str) else ""


def statements_for(registry: Registry, engine: Engine) -> Statements:
    """Statements are built once per registry and SQLAlchemy dialect and kept with the
    registry (warm invocations reuse them, and their compiled text)."""
    key = f"statements:{engine.dialect.name}"
    stmts: Statements | None = registry.cache.get(key)
    if stmts is None:
        stmts = registry.cache[key] = Statements(registry, dialects.of(engine))
    return stmts


class Optimism:
    """Whether the next batch should try the single-round-trip path. After a miss (the batch
    needed reading after all) the next batches read first, for a stretch that doubles with
    every further miss (up to 32) and resets on a success, so a workload full of duplicates
    or stale events does not pay a wasted round trip per batch."""

    MAX_SKIP = 32

    def __init__(self) -> None:
        self.skip = 0
        self.penalty = 1

    def should_try(self) -> bool:
        if self.skip:
            self.skip -= 1
            return False
        return True

    def succeeded(self) -> None:
        self.penalty = 1

    def failed(self) -> None:
        self.skip = self.penalty
        self.penalty = min(self.penalty * 2, self.MAX_SKIP)


def optimism_for(registry: Registry, engine: Engine) -> Optimism:
    """The optimism of the batches this registry applies through `engine`'s dialect (kept
    with the registry, beside its statements)."""
    key = f"optimism:{engine.dialect.name}"
    optimism: Optimism | None = registry.cache.get(key)
    if optimism is None:
        optimism = registry.cache[key] = Optimism()
    return optimism


def _decode_all(
    parsed: list[SqsRecord],
    outcomes: list[Outcome],
    registry: Registry,
    stmts: Statements,
    clock: Callable[[], float],
) -> list[tuple[int, Change]]:
    """Decode every message; one that cannot be decoded fails alone (permanently) and holds
    back the rest of its group."""
    changes: list[tuple[int, Change]] = []
    failed_groups: dict[str, str] = {}
    nul_ok = stmts.dialect.text_holds_nul
    for i, rec in enumerate(parsed):
        out = outcomes[i]
        entity = registry.entity_for_queue(rec.queue)
        out.entity = entity.name if entity else ""
        if rec.group_id in failed_groups:
            if entity is None:  # a shared queue: the entity is told by the message (its discriminator)
                with contextlib.suppress(Exception):
                    out.entity = entity_for(rec, registry).name
            out.fail(
                PERMANENT,
                f"held back behind message {failed_groups[rec.group_id]} of group {rec.group_id}",
                status=BLOCKED,
            )
            continue
        try:
            entity = entity_for(rec, registry)
            out.entity = entity.name
            change = decode(rec, entity, nul_ok=nul_ok)
        except Exception as exc:
            if isinstance(exc, RefusedValue):
                why = f"value refused: {exc}"
            elif isinstance(exc, DecodeError):
                why = f"undecodable message: {exc}"
            else:
                why = unexpected(exc, "undecodable message")
            out.fail(PERMANENT, why)
            out.event_id = _event_id_of(rec, entity)
            failed_groups[rec.group_id] = rec.message_id
            continue
        event_type = change.event_type
        out.event_id, out.event_type = (
            change.event_id,
            event_type if len(event_type) <= 128 else cut(event_type, 128),
        )
        if change.created_at is not None:
            out.lag_seconds = round(max(0.0, clock() - float(change.created_at)), 3)
        changes.append((i, change))
    return changes


def _attempt(
    engine: Engine,
    changes: list[tuple[int, Change]],
    stmts: Statements,
    registry: Registry,
    result: BatchResult,
    budget: Deadline,
    *,
    optimistic: bool,
) -> None:
    """One attempt on one connection, the watchdog armed for the deadline (if any)."""
    outcomes = result.outcomes
    with engine.connect() as conn:
        guard = None
        if budget.at is not None:
            cut_connection = stmts.dialect.interrupter(conn.connection.driver_connection)
            if cut_connection is not None:
                guard = WATCHDOG.arm(budget.at, cut_connection)
        try:
            try:
                result.round_trips += _fast(conn, changes, stmts, outcomes, registry, optimistic=optimistic)
                result.path = "fast"
            except _FastFailed as failed:
                _reset(changes, outcomes)
                result.round_trips += _slow(conn, changes, stmts, registry, outcomes, budget, failed.known)
                result.path = "slow"
        except BaseException as exc:
            if guard is not None:
                WATCHDOG.disarm(guard)
                if guard.fired:
                    _drop(conn)
                    raise _TransactionLost(Classified(TRANSIENT, CUT_AT_DEADLINE, True)) from exc
            if not isinstance(exc, (_TransactionLost, DBAPIError)):
                _drop(conn, exc)
                if isinstance(exc, Exception):
                    raise _TransactionLost(
                        Classified(TRANSIENT, unexpected(exc, "internal error, connection dropped"), True)
                    ) from exc
            raise
        if guard is not None:
            WATCHDOG.disarm(guard)
            if guard.fired:  # cut after the work ended: the result stands, the connection goes
                _drop(conn)


def _connect_time(engine: Engine) -> float:
    """The least time an attempt needs to get its connection: none when the pool holds one."""
    return 0.0 if getattr(engine.pool, "checkedin", lambda: 0)() else connect_floor_s(engine)


def _apply(
    parsed: list[SqsRecord],
    result: BatchResult,
    engine: Engine,
    registry: Registry,
    attempts: int,
    clock: Callable[[], float],
    budget: Deadline,
) -> None:
    outcomes = result.outcomes
    stmts = statements_for(registry, engine)
    changes = _decode_all(parsed, outcomes, registry, stmts, clock)
    if not changes:
        result.committed = True
        return
    # A message SQS delivers again most likely reached the database before (a duplicate): such
    # a batch reads first rather than guess (see _fast).
    optimistic = optimism_for(registry, engine).should_try() and all(r.receive_count <= 1 for r in parsed)
    last: Classified | None = None
    token = CURRENT.set(budget.at)
    try:
        for attempt in range(1, attempts + 1):
            if budget.at is not None and not budget.allows(MIN_ATTEMPT_S + _connect_time(engine)):
                last = last or Classified(TRANSIENT, NOT_STARTED, True)
                break
            result.attempts = attempt
            if attempt > 1:  # what the failed attempt planned did not happen
                _reset(changes, outcomes)
            try:
                _attempt(engine, changes, stmts, registry, result, budget, optimistic=optimistic)
                last = None
                result.committed = True
                break
            except _TransactionLost as exc:
                last = exc.classified
            except DBAPIError as exc:
                last = stmts.dialect.classify(exc, foreign_key_transient=registry.foreign_key_transient)
            except SetupError as exc:
                # No connection could be made as it must be (runtime.errors): trying again
                # at once would fail the same way.
                last = Classified(TRANSIENT, str(exc), True)
                break
            if last.auth or budget.passed:
                break
    finally:
        CURRENT.reset(token)
    if last is not None:
        result.failure = last
        why = (
            last.reason
            if last.reason in (NOT_STARTED, CUT_AT_DEADLINE)
            else f"batch not applied: {last.reason}"
        )
        for idx, _ in changes:
            outcomes[idx].fail(TRANSIENT, why)


def apply_batch(
    records: Sequence[SqsEventRecord],
    engine: Engine,
    registry: Registry,
    *,
    attempts: int = 2,
    clock: Callable[[], float] = time.time,
    deadline: float | None = None,
) -> BatchResult:
    """Apply one SQS batch (the `Records` of a Lambda event). Never raises, whatever the
    records hold. `deadline` (a time.monotonic() value): answer by then, reporting what could
    not be finished as transient failures."""
    started = time.perf_counter()
    parsed = [parse_sqs_record(r) for r in (records if isinstance(records, (list, tuple)) else [])]
    result = BatchResult([Outcome(r.message_id, r.group_id) for r in parsed])
    try:
        _apply(parsed, result, engine, registry, attempts, clock, Deadline(deadline))
    except Exception as exc:  # a defect of this runtime: Lambda must still get an answer
        why = unexpected(exc, "internal error")
        for o in result.outcomes:
            if o.status is None or (not result.committed and not o.reported_failed):
                o.fail(TRANSIENT, why)
    for o in result.outcomes:
        if o.status is None:  # a message after an unapplied one cannot be left unreported
            o.fail(TRANSIENT, "not applied")
        if o.status is not APPLIED:
            o.lag_seconds = None
    result.duration_ms = round((time.perf_counter() - started) * 1000, 3)
    return result
