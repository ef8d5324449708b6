"""Retention of the bookkeeping tables: the processed-event ledger and the tombstones.

A ledger row only matters while a duplicate of its event can still arrive, and a tombstone
only while a write older than its delete can; the generator derives both windows from each
entity's pipeline settings (generator.resolve, `pipeline.retention`) and writes them into the
registry. `prune` deletes what is older, in batches of `Registry.prune_batch_rows` rows, each
batch one DELETE in its own short transaction, so the sync never waits long behind it (on
PostgreSQL a batch passes over rows the sync holds locked; elsewhere it holds its few locks
for one statement). Every value is a bound parameter.

A retired entity (`retired: true`) keeps nothing: all its ledger rows go, and the tombstones
of the tables no live entity writes.

The sync Lambda runs it on a prune event (PRUNE_EVENT, sent by the generated EventBridge
Scheduler schedule) within the invocation's time; `ddb-sql-sync prune` runs it locally.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import MetaData, Table, and_, bindparam, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from runtime import dialects
from runtime.kinds import Kind
from runtime.registry import Registry
from runtime.schema import ledger_table, tombstone_table

LEDGER = "ledger"
TOMBSTONES = "tombstones"
# The event the schedule sends the sync Lambda (an SQS event has "Records" instead).
PRUNE_EVENT_KEY = "ddb_sql_sync"
PRUNE_EVENT: dict[str, str] = {PRUNE_EVENT_KEY: "prune"}
MAX_CONFLICTS = 20  # batches of one prune refused by a lock conflict before it gives up


class PruneError(ValueError):
    """The prune was asked for something the registry does not have (an unknown entity)."""


def is_prune_event(event: Any) -> bool:
    return isinstance(event, dict) and event.get(PRUNE_EVENT_KEY) == PRUNE_EVENT[PRUNE_EVENT_KEY]


@dataclass(frozen=True)
class Target:
    """Rows of one bookkeeping table to prune: an entity's ledger rows or one table's tombstones."""

    kind: str  # LEDGER | TOMBSTONES
    name: str  # the entity (ledger) or the qualified target table (tombstones)
    seconds: int | None  # rows older than this go; None: every row (a retired entity's)
    retired: bool = False


@dataclass
class Pruned:
    target: Target
    cutoff: datetime | None
    rows: int = 0  # deleted (a dry run: that would be deleted)
    batches: int = 0
    complete: bool = False  # False: the deadline came first; the next run goes on

    def as_dict(self) -> dict[str, Any]:
        return {
            "table": self.target.kind,
            "name": self.target.name,
            "retired": self.target.retired,
            "cutoff": self.cutoff.isoformat() if self.cutoff else None,
            "rows": self.rows,
            "batches": self.batches,
            "complete": self.complete,
        }


@dataclass
class PruneResult:
    dry_run: bool
    pruned: list[Pruned] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(p.rows for p in self.pruned)

    @property
    def complete(self) -> bool:
        return all(p.complete for p in self.pruned)

    def as_dict(self) -> dict[str, Any]:
        return {
            "prune": "dry-run" if self.dry_run else "done" if self.complete else "partial",
            "rows": self.rows,
            "complete": self.complete,
            "targets": [p.as_dict() for p in self.pruned],
        }


def targets(
    registry: Registry, *, entities: Collection[str] | None = None, older_than: int | None = None
) -> list[Target]:
    """What to prune: each live entity's ledger rows older than its ledger window, each table's
    tombstones older than the longest tombstone window of the live entities that write it,
    and everything of a retired entity. `entities` narrows it to those entities (their ledger
    rows and their tables' tombstones); `older_than` replaces every window, retired ones too."""
    known = set(registry.entities) | set(registry.retired)
    if entities is not None:
        unknown = sorted(set(entities) - known)
        if unknown:
            raise PruneError(
                f"no entity {', '.join(unknown)} in the registry (known: {', '.join(sorted(known))})"
            )
    wanted = known if entities is None else set(entities)

    out: list[Target] = []
    windows: dict[str, list[int | None]] = {}  # table -> the tombstone windows of its live writers
    mine: set[str] = set()  # the tables of the wanted entities
    for name, entity in sorted(registry.entities.items()):
        for spec in entity.tables.values():
            if spec.tombstones:
                windows.setdefault(spec.qualified, []).append(entity.tombstone_seconds)
                if name in wanted:
                    mine.add(spec.qualified)
        if name in wanted and entity.ledger_seconds is not None:
            out.append(Target(LEDGER, name, older_than if older_than is not None else entity.ledger_seconds))
    for name in sorted(registry.retired):
        if name in wanted:
            out.append(Target(LEDGER, name, older_than, retired=True))
    for table, seconds in sorted(windows.items()):
        # A writer of a registry without retention keeps its tombstones: none go.
        if table in mine and None not in seconds:
            longest = max(s for s in seconds if s is not None)
            out.append(Target(TOMBSTONES, table, older_than if older_than is not None else longest))
    for name, retired in sorted(registry.retired.items()):
        if name in wanted:
            for table in retired.tables:
                if table not in windows:
                    out.append(Target(TOMBSTONES, table, older_than, retired=True))
    return out


def _tables(registry: Registry) -> tuple[Table, Table]:
    cached = registry.cache.get("prune_tables")
    if cached is None:
        metadata = MetaData()
        cached = registry.cache["prune_tables"] = (
            ledger_table(metadata, registry.ledger_table),
            tombstone_table(metadata, registry.tombstone_table),
        )
    ledger, tombs = cached
    assert isinstance(ledger, Table) and isinstance(tombs, Table)
    return ledger, tombs


def prune(
    engine: Engine,
    registry: Registry,
    *,
    entities: Collection[str] | None = None,
    older_than: int | None = None,
    now: datetime | None = None,
    batch_rows: int | None = None,
    deadline: float | None = None,
    dry_run: bool = False,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> PruneResult:
    """Prune the targets of `targets(registry, ...)`, each in batches of at most `batch_rows`
    rows (default: the registry's), one transaction per batch; stop starting batches once
    `clock()` reaches `deadline`. A batch refused by a transient conflict with the sync (a
    deadlock, a lock wait) is rolled back and tried again, up to MAX_CONFLICTS times. A dry run
    counts the rows instead, deleting nothing."""
    ledger, tombs = _tables(registry)
    dialect = dialects.of(engine)
    now = now or datetime.now(UTC)
    rows = batch_rows or registry.prune_batch_rows
    if rows < 1:
        raise PruneError(f"a batch must be at least one row, not {rows}")
    result = PruneResult(dry_run=dry_run)
    for target in targets(registry, entities=entities, older_than=older_than):
        if target.kind == LEDGER:
            table, name_col, time_col, key = (
                ledger,
                ledger.c.entity,
                ledger.c.applied_at,
                ("event_id", "entity"),
            )
        else:
            table, name_col, time_col, key = (
                tombs,
                tombs.c.table_name,
                tombs.c.deleted_at,
                ("row_key", "table_name"),
            )
        where: Any = name_col == bindparam("prune_name", type_=name_col.type)
        params: dict[str, Any] = {"prune_name": target.name}
        cutoff = None if target.seconds is None else now - timedelta(seconds=target.seconds)
        if cutoff is not None:
            where = and_(where, time_col < bindparam("prune_cutoff", type_=time_col.type))
            params["prune_cutoff"] = cutoff
        done = Pruned(target, cutoff)
        result.pruned.append(done)
        if dry_run:
            with engine.connect() as conn:
                done.rows = int(
                    conn.execute(select(func.count()).select_from(table).where(where), params).scalar_one()
                )
            done.complete = True
            continue
        statement: Any = dialect.bounded_delete(table, where, key, rows)
        conflicts = 0
        while deadline is None or clock() < deadline:
            try:
                with engine.begin() as conn:  # one short transaction per batch
                    deleted = conn.execute(statement, params).rowcount
            except DBAPIError as exc:
                # A deadlock or a lock wait with the sync (MySQL's gap locks): the sync's
                # transaction goes on, this batch is rolled back and tried again shortly.
                conflicts += 1
                if dialect.classify(exc).kind is not Kind.TRANSIENT or conflicts > MAX_CONFLICTS:
                    raise
                sleep(min(0.05 * 2**conflicts, 1.0))
                continue
            done.rows += max(deleted, 0)
            done.batches += 1
            if deleted < rows:
                done.complete = True
                break
    return result
