"""SQL statements (SQLAlchemy Core, one dialect each) and the executors that send them.

Idempotency and ordering live in the SQL itself (STYLE lesson 9):
- upsert: INSERT ... SELECT ... WHERE NOT EXISTS (a tombstone at least as new)
  ON CONFLICT (key) DO UPDATE ... WHERE target.version < excluded.version
  (MySQL: ON DUPLICATE KEY UPDATE col = IF(target.version < VALUES(version), VALUES(col), col),
  the version column assigned last because MySQL evaluates assignments left to right);
- update / soft delete: ... WHERE key = :key AND (version IS NULL OR version < / <= :v);
- delete: DELETE ... WHERE key = :key AND version <= :v, plus a tombstone row so a late, older
  insert cannot bring the row back.
Every value is a bound parameter; every identifier comes from the validated registry.
"""

from __future__ import annotations

import copy
import select as io_select
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Table,
    and_,
    bindparam,
    case,
    cast,
    delete,
    exists,
    func,
    insert,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement
from sqlalchemy.types import Text

from runtime.registry import Registry, TableSpec
from runtime.schema import build_metadata

Item = tuple[ClauseElement, dict[str, Any] | list[dict[str, Any]]]  # a list: executemany
Result = list[tuple[Any, ...]] | int


def dialect_family(dialect: Dialect) -> str:
    name = dialect.name
    if name in ("mysql", "mariadb"):
        return "mysql"
    return name


@dataclass(slots=True)
class Op:
    """One planned write: which statement shape, for which row, with which values."""

    kind: str  # insert | upsert | upsert_as_update | update | soft_delete | delete | tombstone
    spec: TableSpec | None  # None for a tombstone
    columns: tuple[str, ...]  # update: the columns it sets
    params: dict[str, Any]
    row: tuple[str, str]  # (table, row key): writes to one row keep their order


class BindError(Exception):
    """A value the driver could not send (adapt or encode), raised before anything of the
    phase reached the server: the connection is untouched. `index`: the statement."""

    def __init__(self, index: int, cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.index = index
        self.cause = cause


def statement_index(exc: BaseException) -> int | None:
    """Which statement of the items a session was given failed (None: not one of them)."""
    index = getattr(exc, "sync_statement", None)
    return index if isinstance(index, int) else None


def _at(exc: BaseException, index: int | None) -> BaseException:
    exc.sync_statement = index  # type: ignore[attr-defined]
    return exc


class PremiseMissed(Exception):
    """The optimistic attempt's premise did not hold: a write its guard refused, or an event
    the ledger already holds. Raised by the sessions that try it (PostgreSQL, SQLite)."""


# How PostgreSQL reports a wrong premise: the assertion's division by zero (a refused write)
# or a unique violation (an event already in the ledger).
PREMISE_MISSED = {"22012", "23505"}


@dataclass(frozen=True, slots=True)
class Asserted:
    """A write that must change exactly one row (SQLite's form of Statements.asserted)."""

    write: ClauseElement


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


class Statements:
    """Builds each statement shape once per (kind, table, columns) and keeps it."""

    def __init__(self, registry: Registry, dialect: Dialect) -> None:
        self.registry = registry
        self.family = dialect_family(dialect)
        self.metadata = build_metadata(registry, foreign_keys=False)
        self.ledger = self.metadata.tables[registry.ledger_table]
        self.tombstones = self.metadata.tables[registry.tombstone_table]
        self._cache: dict[tuple[Any, ...], ClauseElement] = {}
        self.compiled: dict[Any, Any] = {}  # driver-level SQL text of the statements above
        self.optimism = Optimism()

    @property
    def text_holds_nul(self) -> bool:
        """Whether text columns can store U+0000 (PostgreSQL's text and jsonb cannot)."""
        return self.family != "postgresql"

    def table(self, spec: TableSpec) -> Table:
        return self.metadata.tables[spec.qualified]

    def _memo(self, key: tuple[Any, ...], build: Callable[[], ClauseElement]) -> ClauseElement:
        stmt = self._cache.get(key)
        if stmt is None:
            stmt = self._cache[key] = build()
        return stmt

    # -- value sources ------------------------------------------------------------------

    def _param(self, spec: TableSpec | None, name: str, bind_name: str) -> Any:
        """A typed bind parameter; JSON travels as text (runtime.coerce.json_text)."""
        tb = self.tombstones
        if name in ("tn", "rk", "tv"):
            return bindparam(
                bind_name, type_=tb.c[{"tn": "table_name", "rk": "row_key", "tv": "version"}[name]].type
            )
        assert spec is not None
        t = self.table(spec)
        if name == "v":
            column = spec.version.column  # type: ignore[union-attr]
        elif name == "sd":
            column = spec.soft_delete.column  # type: ignore[union-attr]
        else:
            column = name[2:]  # p_<column> / k_<column>
            if name.startswith("p_") and spec.columns[column].type == "json":
                param = bindparam(bind_name, type_=Text())
                if self.family == "postgresql":
                    from sqlalchemy.dialects.postgresql import JSONB

                    return cast(param, JSONB())
                return param
        return bindparam(bind_name, type_=t.c[column].type)

    def _source(self, spec: TableSpec | None) -> Callable[[str], Any]:
        return lambda name: self._param(spec, name, name)

    # -- statements ---------------------------------------------------------------------

    def statement(self, kind: str, spec: TableSpec | None, columns: tuple[str, ...] = ()) -> ClauseElement:
        key = (kind, spec.qualified if spec else None, columns)
        return self._memo(key, lambda: self._build(kind, spec, columns))

    def _insert_construct(self, t: Table) -> Any:
        # The dialect's own insert construct (ON CONFLICT / ON DUPLICATE KEY), imported for the
        # dialect in use only: a cold start does not load the other two.
        if self.family == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        elif self.family == "mysql":
            from sqlalchemy.dialects.mysql import insert as dialect_insert
        elif self.family == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        else:
            return insert(t)
        return dialect_insert(t)

    def _build(self, kind: str, spec: TableSpec | None, columns: tuple[str, ...]) -> ClauseElement:
        src = self._source(spec)
        if kind == "tombstone":
            return self._tombstone(src)
        assert spec is not None
        t = self.table(spec)
        vcol = spec.version.column if spec.version else None
        if kind in ("insert", "upsert"):
            cols = [
                *spec.columns,
                *([vcol] if vcol else []),
                *([spec.soft_delete.column] if spec.soft_delete else []),
            ]
            values = (
                [src(f"p_{c}") for c in spec.columns]
                + ([src("v")] if vcol else [])
                + ([src("sd")] if spec.soft_delete else [])
            )
            ins = insert(t) if kind == "insert" else self._insert_construct(t)
            if spec.tombstones:
                tb = self.tombstones
                # A tombstone at least as new as this write keeps a deleted row deleted.
                guard = ~exists().where(
                    tb.c.table_name == src("tn"), tb.c.row_key == src("rk"), tb.c.version >= src("tv")
                )
                ins = ins.from_select(cols, select(*values).where(guard))
            else:
                ins = ins.values(dict(zip(cols, values, strict=True)))
            return ins if kind == "insert" else self._on_conflict(ins, t, spec, cols)
        if kind in ("update", "upsert_as_update"):
            if kind == "update":
                sets = {c: src(f"p_{c}") for c in columns}
            else:
                sets = {c: src(f"p_{c}") for c in spec.columns if c not in spec.key}
                if spec.soft_delete:
                    sets[spec.soft_delete.column] = src("sd")
            where = self._key_match(t, spec, src)
            if vcol:
                sets[vcol] = src("v")
                where.append(or_(t.c[vcol].is_(None), t.c[vcol] < src("v")))
            return update(t).where(*where).values(sets)
        if kind == "soft_delete":
            assert spec.soft_delete is not None
            sets = {spec.soft_delete.column: src("sd")}
            where = self._key_match(t, spec, src)
            if vcol:
                sets[vcol] = src("v")
                # <=: a delete carries the version of the state it removes (an item attribute
                # read from the old image equals the row's version).
                where.append(or_(t.c[vcol].is_(None), t.c[vcol] <= src("v")))
            return update(t).where(*where).values(sets)
        if kind == "delete":
            where = self._key_match(t, spec, src)
            if vcol:
                where.append(or_(t.c[vcol].is_(None), t.c[vcol] <= src("v")))
            return delete(t).where(*where)
        raise ValueError(f"unknown statement kind {kind!r}")

    @staticmethod
    def _key_match(t: Table, spec: TableSpec, src: Callable[[str], Any]) -> list[Any]:
        return [t.c[k] == src(f"k_{k}") for k in spec.key]

    def _on_conflict(self, ins: Any, t: Table, spec: TableSpec, cols: list[str]) -> ClauseElement:
        non_key = [c for c in cols if c not in spec.key]
        vcol = spec.version.column if spec.version else None
        if self.family == "mysql":
            # Not used by the batch: ON DUPLICATE KEY UPDATE fires on a conflict with *any*
            # unique key, so a row clashing on a secondary unique index (an email, say) would
            # silently overwrite another row (confluentinc/kafka-connect-jdbc#575). The batch
            # reads whether the row exists and sends an UPDATE (upsert_as_update) or a plain
            # INSERT, which fails loudly on any other unique key. Kept for direct callers.
            new = ins.inserted
            if vcol:
                guard = or_(t.c[vcol].is_(None), t.c[vcol] < new[vcol])
                # The version column last: MySQL evaluates assignments left to right.
                pairs = [(c, case((guard, new[c]), else_=t.c[c])) for c in non_key if c != vcol]
                pairs.append((vcol, case((guard, new[vcol]), else_=t.c[vcol])))
            else:
                pairs = [(c, new[c]) for c in non_key]
            return ins.on_duplicate_key_update(pairs)
        if self.family in ("postgresql", "sqlite"):
            excluded = ins.excluded
            where = or_(t.c[vcol].is_(None), t.c[vcol] < excluded[vcol]) if vcol else None
            return ins.on_conflict_do_update(
                index_elements=[t.c[k] for k in spec.key], set_={c: excluded[c] for c in non_key}, where=where
            )
        raise NotImplementedError(f"upsert is not implemented for dialect {self.family!r}")

    def _tombstone(self, src: Callable[[str], Any]) -> ClauseElement:
        tb = self.tombstones
        ins = self._insert_construct(tb).values(table_name=src("tn"), row_key=src("rk"), version=src("tv"))
        if self.family == "mysql":
            new = ins.inserted
            guard = tb.c.version < new.version
            return ins.on_duplicate_key_update(
                [
                    ("deleted_at", case((guard, func.current_timestamp()), else_=tb.c.deleted_at)),
                    ("version", case((guard, new.version), else_=tb.c.version)),
                ]
            )
        return ins.on_conflict_do_update(
            index_elements=[tb.c.row_key, tb.c.table_name],
            set_={"version": ins.excluded.version, "deleted_at": func.current_timestamp()},
            where=tb.c.version < ins.excluded.version,
        )

    def items(self, ops: Sequence[Op], *, asserted: bool = False) -> list[Item]:
        if asserted:
            return [
                (
                    self.asserted(op.kind, op.spec, op.columns)
                    if op.kind != "tombstone"
                    else self.statement(op.kind, None),
                    op.params,
                )
                for op in ops
            ]
        return [(self.statement(op.kind, op.spec, op.columns), op.params) for op in ops]

    def asserted(self, kind: str, spec: TableSpec | None, columns: tuple[str, ...] = ()) -> Any:
        """The write, failing unless it changed a row (for the optimistic path). PostgreSQL:
        WITH w AS (<write> RETURNING 1) SELECT 1 / COUNT(*) FROM w. A write its guard refuses
        (an older version, a tombstone, a missing row) returns no row, the division fails,
        and the pipeline's transaction is rolled back with everything else it did. SQLite
        (in-process, no SQL needed): the write marked for SQLiteSession to check its row count."""

        def build() -> Any:
            write: Any = self.statement(kind, spec, columns)
            if self.family == "sqlite":
                return Asserted(write)
            changed = write.returning(literal_column("1")).cte("w")
            return select(literal_column("1 / COUNT(*)")).select_from(changed)

        return self._memo(("asserted", kind, spec.qualified if spec else None, columns), build)

    def ledger_insert_one(self) -> ClauseElement:
        return self._memo(("ledger_insert_one",), lambda: insert(self.ledger))

    def ledger_insert(self, n: int) -> ClauseElement:
        def build() -> ClauseElement:
            lg = self.ledger
            rows = [
                {
                    "entity": bindparam(f"le{i}", type_=lg.c.entity.type),
                    "event_id": bindparam(f"li{i}", type_=lg.c.event_id.type),
                    "message_id": bindparam(f"lm{i}", type_=lg.c.message_id.type),
                    "outcome": bindparam(f"lo{i}", type_=lg.c.outcome.type),
                }
                for i in range(n)
            ]
            return insert(lg).values(rows)

        return self._memo(("ledger_insert", n), build)

    # -- reads --------------------------------------------------------------------------

    def ledger_read(self, n: int) -> ClauseElement:
        def build() -> ClauseElement:
            lg = self.ledger
            return select(lg.c.event_id).where(
                lg.c.entity == bindparam("e", type_=lg.c.entity.type),
                lg.c.event_id.in_([bindparam(f"i{i}", type_=lg.c.event_id.type) for i in range(n)]),
            )

        return self._memo(("ledger_read", n), build)

    def rows_read(self, spec: TableSpec, n: int) -> ClauseElement:
        def build() -> ClauseElement:
            t = self.table(spec)
            cols = [t.c[k] for k in spec.key]
            if spec.version:
                cols.append(t.c[spec.version.column])
            if len(spec.key) == 1:  # an IN list: the planner's best-known form
                (k,) = spec.key
                return select(*cols).where(
                    t.c[k].in_([bindparam(f"r{i}_{k}", type_=t.c[k].type) for i in range(n)])
                )
            match = [
                and_(*[t.c[k] == bindparam(f"r{i}_{k}", type_=t.c[k].type) for k in spec.key])
                for i in range(n)
            ]
            return select(*cols).where(or_(*match))

        return self._memo(("rows_read", spec.qualified, n), build)

    def tombstones_read(self, n: int) -> ClauseElement:
        def build() -> ClauseElement:
            tb = self.tombstones
            match = [
                and_(
                    tb.c.table_name == bindparam(f"tn{i}", type_=tb.c.table_name.type),
                    tb.c.row_key == bindparam(f"rk{i}", type_=tb.c.row_key.type),
                )
                for i in range(n)
            ]
            return select(tb.c.table_name, tb.c.row_key, tb.c.version).where(or_(*match))

        return self._memo(("tombstones_read", n), build)


# --- executors ---------------------------------------------------------------------------


class Executor:
    """Runs statements through SQLAlchemy, one round trip each (slow path, SQLite, fallback)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.round_trips = 0

    def run(self, items: Sequence[Item]) -> list[Result]:
        out: list[Result] = []
        for i, (stmt, params) in enumerate(items):
            self.round_trips += 1
            try:
                result = self.conn.execute(stmt, params)
                out.append([tuple(r) for r in result.fetchall()] if result.returns_rows else result.rowcount)
            except Exception as exc:
                _at(exc, i)
                raise
        return out


class FastSession:
    """One fast-path transaction: `read` opens it, `write_commit` ends it.

    This generic form goes through SQLAlchemy, one round trip per statement (SQLite and
    unknown drivers); the driver forms below send each phase in one round trip.
    """

    driver_level = False
    optimistic = False  # whether a failed write leaves nothing behind without an explicit transaction

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.executor = Executor(conn)
        self._trans: Any = None

    @property
    def round_trips(self) -> int:
        return self.executor.round_trips

    def read(self, items: Sequence[Item]) -> list[Result]:
        self._trans = self.conn.begin()
        return self.executor.run(items)

    def write_commit(self, items: Sequence[Item]) -> list[Result]:
        out = self.executor.run(items)
        self._trans.commit()
        self.executor.round_trips += 1
        return out

    def abort(self) -> None:
        if self._trans is not None and self._trans.is_active:
            self._trans.rollback()


class _Compiled:
    __slots__ = ("sql", "processors")

    def __init__(self, stmt: ClauseElement, dialect: Dialect) -> None:
        compiled = stmt.compile(dialect=dialect)
        self.sql = str(compiled)
        self.processors: dict[str, Callable[[Any], Any]] = {}
        for name, bp in compiled.binds.items():
            proc = bp.type.dialect_impl(dialect).bind_processor(dialect)
            if proc is not None:
                self.processors[name] = proc

    def params(self, values: dict[str, Any]) -> dict[str, Any]:
        if not self.processors:
            return values
        params = dict(values)
        for name, proc in self.processors.items():
            if name in params:
                params[name] = proc(params[name])
        return params


class _DriverSession(FastSession):
    """Compiles with SQLAlchemy, sends each phase as one network round trip at the driver.

    Here the transaction is opened by an explicit BEGIN sent with the reads and closed by a
    COMMIT sent with the writes, so a clean batch costs two round trips (the PostgreSQL
    session below needs neither statement).
    """

    driver_level = True

    BEGIN = "BEGIN"

    def __init__(self, conn: Connection, compiled_cache: dict[Any, Any]) -> None:
        super().__init__(conn)
        self.dialect = conn.dialect
        self.raw = conn.connection.driver_connection
        self.dbapi_conn = conn.connection.dbapi_connection
        self.broken = False  # the session left the connection in a state it cannot be reused in
        self._cache = compiled_cache
        self._trips = 0
        self._open = False

    @property
    def round_trips(self) -> int:
        return self._trips

    def _prepare(self, items: Sequence[Item]) -> list[tuple[str, dict[str, Any] | None]]:
        out: list[tuple[str, dict[str, Any] | None]] = []
        for stmt, params in items:
            c = self._cache.get(id(stmt))
            if c is None:
                c = self._cache[id(stmt)] = _Compiled(stmt, self.dialect)
            out.append((c.sql, c.params(params)))
        return out

    def _wrap(self, exc: Exception, sql: str) -> DBAPIError:
        """Raise driver errors the way SQLAlchemy would, invalidating a dead connection."""
        dbapi = self.dialect.loaded_dbapi
        # The connection the session started on: asking self.conn for it again would
        # reconnect an invalidated Connection and hide the disconnect.
        is_disconnect = self.broken or self.dialect.is_disconnect(exc, self.dbapi_conn, None)
        wrapped = DBAPIError.instance(
            sql, None, exc, dbapi.Error, connection_invalidated=is_disconnect, dialect=self.dialect
        )
        if is_disconnect and not self.conn.invalidated:
            self.conn.invalidate(exc)
        return wrapped

    def _dropped(self, exc: BaseException, sql: str) -> DBAPIError:
        """The connection after an exception nothing expected while a phase was on the wire:
        its state is unknown, so it is closed (the server rolls back whatever it held
        uncommitted) and never reused; reported as a lost connection."""
        self.broken = True
        if not self.conn.invalidated:
            self.conn.invalidate(exc)
        dbapi = self.dialect.loaded_dbapi
        lost = dbapi.OperationalError(f"connection dropped after {type(exc).__name__}: {exc}")
        return DBAPIError.instance(
            sql, None, lost, dbapi.Error, connection_invalidated=True, dialect=self.dialect
        )

    def _run(
        self,
        statements: list[tuple[Any, dict[str, Any] | None]],
        *,
        results: bool,
        offset: int = 0,
        items: int = 0,
    ) -> list[Result]:
        """Send one phase. Errors name the failing statement among the caller's `items`
        (those after `offset` leading statements of the session's own, such as BEGIN)."""
        if not statements:
            return []
        self._trips += 1
        try:
            return self._send(statements, results)
        except BindError as exc:
            exc.index -= offset
            raise
        except self.dialect.loaded_dbapi.Error as exc:
            i = statement_index(exc)
            index = i - offset if i is not None and 0 <= i - offset < items else None
            raise _at(self._wrap(exc, self._sql_of(statements, i)), index) from exc
        except Exception as exc:
            raise self._dropped(exc, self._sql_of(statements, None)) from exc
        except BaseException as exc:
            self._dropped(exc, "")
            raise

    @staticmethod
    def _sql_of(statements: list[tuple[Any, dict[str, Any] | None]], index: int | None) -> str:
        sql = statements[index if index is not None and 0 <= index < len(statements) else -1][0]
        return sql if isinstance(sql, str) else getattr(sql, "text", "")

    def read(self, items: Sequence[Item]) -> list[Result]:
        self._open = True
        return self._run(
            [(self.BEGIN, None), *self._prepare(items)], results=True, offset=1, items=len(items)
        )[1:]

    def write_commit(self, items: Sequence[Item]) -> list[Result]:
        self._run([*self._prepare(items), ("COMMIT", None)], results=False, items=len(items))
        self._open = False
        return []

    def abort(self) -> None:
        if not self._open or self.conn.invalidated:
            return
        self._open = False
        try:
            self.raw.rollback()
        except Exception as exc:  # a connection that cannot roll back is not reused
            self.conn.invalidate(exc)

    def _send(self, statements: list[tuple[Any, dict[str, Any] | None]], results: bool) -> list[Result]:
        raise NotImplementedError


class _PositionalCompiled:
    """A statement compiled with positional placeholders ($1..$n for libpq, ? for sqlite3),
    its parameter order and SQLAlchemy's bind processors."""

    __slots__ = ("text", "sql", "order", "processors")

    def __init__(self, stmt: ClauseElement, dialect: Dialect) -> None:
        compiled = stmt.compile(dialect=dialect)
        self.text = str(compiled)
        self.sql = self.text.encode()
        self.order: tuple[str, ...] = tuple(compiled.positiontup or ())
        self.processors: dict[str, Callable[[Any], Any]] = {}
        for name, bp in compiled.binds.items():
            proc = bp.type.dialect_impl(dialect).bind_processor(dialect)
            if proc is not None:
                self.processors[name] = proc

    def values(self, params: dict[str, Any]) -> list[Any]:
        procs = self.processors
        if not procs:
            return [params[n] for n in self.order]
        return [procs[n](params[n]) if n in procs else params[n] for n in self.order]


def _positional(cache: dict[Any, Any], stmt: ClauseElement, dialect: Dialect) -> _PositionalCompiled:
    """The statement compiled for `dialect` once, kept in the Statements' compiled cache."""
    c = cache.get(("positional", id(stmt)))
    if c is None:
        c = cache[("positional", id(stmt))] = _PositionalCompiled(stmt, dialect)
    return c


# Named statements this runtime prepared on each connection: (SQL, parameter types) -> name.
# Weak keys: a replaced connection takes its names with it.
_PREPARED: weakref.WeakKeyDictionary[Any, dict[tuple[bytes, tuple[int, ...]], bytes]] = (
    weakref.WeakKeyDictionary()
)
MAX_PREPARED = 400  # per connection; statements beyond it are sent unnamed (planned each time)
_STALE_PREPARED = {"26000", "0A000"}  # a name the server no longer knows; a cached plan after DDL


class PsycopgPipelineSession(_DriverSession):
    """PostgreSQL through psycopg 3's libpq binding in pipeline mode: every statement of a
    phase queued, one Sync, one flush, then every result: one network round trip.

    Why the libpq level rather than psycopg's `Connection.pipeline()`: the latter waits on
    the socket once per statement (a poll and a send each), which measured 3-4x the client
    CPU of this loop for a batch (benchmarks/RESULTS.md). Values are still adapted by
    psycopg's own Transformer and travel as bound parameters of named prepared statements,
    so the server parses and plans each statement shape once per connection (the
    connection's planner settings keep those plans to key lookups, runtime.config).
    No BEGIN or COMMIT is sent. The writes' pipeline is one implicit transaction: the server
    commits everything before the Sync at once, or, when any statement fails, rolls it all
    back and skips the rest (PostgreSQL protocol, "Pipelining"; libpq, "Pipeline Mode").
    The reads need no transaction of their own: under READ COMMITTED each statement sees
    its own snapshot either way, and every write keeps its guards in the SQL (a row changed
    since it was read makes the guard refuse the write, and a ledger row written meanwhile
    fails the insert and sends the batch to the per-message path). psycopg's own
    transaction handling (autocommit off) never sends anything for the fast path.
    """

    optimistic = True  # the implicit transaction takes a failed write's whole pipeline back

    def __init__(self, conn: Connection, compiled_cache: dict[int, Any]) -> None:
        super().__init__(conn, compiled_cache)
        from psycopg.adapt import PyFormat, Transformer

        self.pg = self.raw.pgconn
        self.tx = Transformer(self.raw)
        self._auto = PyFormat.AUTO
        names = _PREPARED.get(self.raw)
        if names is None:
            names = _PREPARED[self.raw] = {}
        self.names = names
        self._read = False  # writes sent before any read are the optimistic attempt

    def _prepare(self, items: Sequence[Item]) -> list[tuple[Any, dict[str, Any] | None]]:
        cache = self._cache
        dollar = cache.get("positional dialect")
        if dollar is None:  # the connection's dialect, placeholders as $1..$n
            dollar = cache["positional dialect"] = copy.copy(self.dialect)
            dollar.paramstyle, dollar.positional = "numeric_dollar", True
        return [(_positional(cache, stmt, dollar), params) for stmt, params in items]

    def read(self, items: Sequence[Item]) -> list[Result]:
        self._read = True
        return self._run(self._prepare(items), results=True, items=len(items))

    def write_commit(self, items: Sequence[Item]) -> list[Result]:
        try:
            self._run(self._prepare(items), results=False, items=len(items))
        except DBAPIError as exc:
            missed = getattr(exc.orig, "sqlstate", None) in PREMISE_MISSED
            if missed and not self._read and not exc.connection_invalidated:
                raise PremiseMissed(str(exc.orig)) from exc
            raise
        return []

    def abort(self) -> None:
        """Nothing to roll back: a pipeline's implicit transaction ends at its Sync, and a
        session that could not read up to the Sync has dropped the connection."""

    def _send(self, statements: list[Any], results: bool) -> list[Result]:
        from psycopg import errors
        from psycopg.pq import ExecStatus

        tx, auto = self.tx, self._auto
        # Bind first: every value is adapted before anything is queued, so a value psycopg
        # cannot send fails with the connection untouched (BindError).
        bound: list[tuple[Any, list[Any], tuple[int, ...], Any]] = []
        for i, (c, params) in enumerate(statements):
            try:
                values = c.values(params)
                dumped = tx.dump_sequence(values, [auto] * len(values))
            except Exception as exc:
                raise BindError(i, exc) from exc
            bound.append((c, dumped, tx.types or (), tx.formats))
        # From the first statement queued to the Sync's result, an exception of any kind
        # leaves the connection in a state nobody knows (a queued write that the next Sync
        # would commit): the session is then broken, and the connection dropped (_run).
        try:
            out, error = self._exchange(bound, results, errors, ExecStatus)
        except BaseException:
            self.broken = True
            raise
        if error is not None:  # the server's own error: every result was read, the connection is idle
            raise error
        return out

    def _exchange(
        self, bound: list[Any], results: bool, errors: Any, status_of: Any
    ) -> tuple[list[Result], Exception | None]:
        pg, names = self.pg, self.names
        # (index of the statement, the name a PREPARE queued for it; None for its execution)
        queue: list[tuple[int, bytes | None]] = []
        pg.enter_pipeline_mode()
        for i, (c, dumped, types, formats) in enumerate(bound):
            key = (c.sql, types)
            name = names.get(key)
            if name is None and len(names) < MAX_PREPARED:
                name = b"dss_%d" % len(names)
                pg.send_prepare(name, c.sql, param_types=types)
                queue.append((i, name))
                names[key] = name  # taken back below if the PREPARE does not succeed
            if name is None:
                pg.send_query_params(c.sql, dumped, param_types=types, param_formats=formats)
            else:
                pg.send_query_prepared(name, dumped, param_formats=formats)
            queue.append((i, None))
        pg.pipeline_sync()
        self._flush()
        out: list[Result] = [0] * len(bound)
        error: Exception | None = None
        encoding = self.raw.info.encoding
        tx = self.tx
        for i, new_name in queue:
            while True:
                res = self._result()
                if res is None:
                    break
                status = res.status
                if status == status_of.TUPLES_OK:
                    if results and new_name is None:
                        tx.set_pgresult(res)
                        out[i] = tx.load_rows(0, res.ntuples, tuple)
                elif status == status_of.COMMAND_OK:
                    if results and new_name is None:
                        out[i] = res.command_tuples or 0
                else:
                    if new_name is not None:  # never prepared: forget the name
                        self._forget(new_name)
                    if status == status_of.FATAL_ERROR and error is None:
                        error = _at(errors.error_from_result(res, encoding=encoding), i)
                        if getattr(error, "sqlstate", None) in _STALE_PREPARED:
                            names.clear()
        sync = self._result()
        if sync is None or sync.status != status_of.PIPELINE_SYNC:  # pragma: no cover - protocol
            raise errors.OperationalError("pipeline out of step: no Sync result")
        pg.exit_pipeline_mode()  # every result read: the connection is idle again
        return out, error

    def _forget(self, name: bytes) -> None:
        for k, v in list(self.names.items()):
            if v == name:
                del self.names[k]

    def _flush(self) -> None:
        """Send everything queued; read while waiting so neither side's buffer fills up."""
        pg = self.pg
        while pg.flush():
            if self._wait(write=True):
                pg.consume_input()

    def _result(self) -> Any:
        pg = self.pg
        while pg.is_busy():
            self._wait(write=False)
            pg.consume_input()
        return pg.get_result()

    def _wait(self, *, write: bool) -> bool:
        """Block until the socket is readable (or writable); True when readable."""
        try:
            fd = self.pg.socket
            r, _, _ = io_select.select([fd], [fd] if write else [], [])
        except (OSError, ValueError) as exc:  # the socket went away under us
            import psycopg

            raise psycopg.OperationalError(f"waiting on the connection failed: {exc}") from exc
        return bool(r)


class PyMySQLMultiSession(_DriverSession):
    """MySQL multi-statement text: each statement rendered by the driver's own parameter
    escaping (PyMySQL always binds client-side), joined, sent once, results read in order."""

    BEGIN = "START TRANSACTION"

    def _send(self, statements: list[tuple[str, dict[str, Any] | None]], results: bool) -> list[Result]:
        with self.raw.cursor() as cur:
            # Bind first: every statement rendered and checked to be valid UTF-8 before
            # anything is sent (PyMySQL would encode a lone surrogate with surrogateescape).
            texts = []
            for i, (sql, params) in enumerate(statements):
                try:
                    text = sql if params is None else cur.mogrify(sql, params)
                    text.encode("utf-8")
                except Exception as exc:
                    raise BindError(i, exc) from exc
                texts.append(text)
            out: list[Result] = []
            i = 0  # the statement whose result is read next: a server error names it
            try:
                cur.execute(";\n".join(texts))
                while True:
                    out.append([tuple(r) for r in cur.fetchall()] if cur.description else cur.rowcount)
                    if i == len(texts) - 1:
                        return out
                    i += 1
                    cur.nextset()
            except self.dialect.loaded_dbapi.Error as exc:
                _at(exc, i)
                raise


class SQLiteSession(FastSession):
    """SQLite, the local tools' database: no network, so no round trip to save, but
    SQLAlchemy's work per execution (~0.1 ms here) was a third of a local replay. The reads
    stay with SQLAlchemy (its result processing turns stored keys back into the decoded
    types); the writes, compiled by SQLAlchemy once per statement shape and with its bind
    processors applied, go straight to the sqlite3 cursor inside the same transaction."""

    driver_level = True  # the ledger rows as one multi-row INSERT
    # Writes without reads first: each asserted write's row count is checked here, and an
    # event already in the ledger fails its insert; either rolls the transaction back.
    optimistic = True

    def __init__(self, conn: Connection, compiled_cache: dict[Any, Any]) -> None:
        super().__init__(conn)
        self._cache = compiled_cache

    def write_commit(self, items: Sequence[Item]) -> list[Result]:
        cache, dialect = self._cache, self.conn.dialect
        unread = self._trans is None  # the optimistic attempt: nothing was read first
        if unread:
            self._trans = self.conn.begin()
        cursor = self.conn.connection.driver_connection.cursor()
        dbapi = dialect.loaded_dbapi
        try:
            for i, (stmt, params) in enumerate(items):
                expect_one = isinstance(stmt, Asserted)
                write: Any = stmt.write if expect_one else stmt  # type: ignore[attr-defined]
                c = _positional(cache, write, dialect)
                assert isinstance(params, dict)
                try:
                    values = c.values(params)
                except Exception as exc:
                    raise BindError(i, exc) from exc
                try:
                    cursor.execute(c.text, values)
                except dbapi.IntegrityError as exc:
                    if unread:  # the ledger already holds an event, or a row was there after all
                        raise PremiseMissed(str(exc)) from exc
                    raise _at(
                        DBAPIError.instance(c.text, None, exc, dbapi.Error, dialect=dialect), i
                    ) from exc
                except dbapi.Error as exc:
                    raise _at(
                        DBAPIError.instance(c.text, None, exc, dbapi.Error, dialect=dialect), i
                    ) from exc
                except Exception as exc:  # sqlite3 could not bind a value (a lone surrogate): nothing ran
                    raise BindError(i, exc) from exc
                if expect_one and cursor.rowcount != 1:
                    raise PremiseMissed(f"{c.text[:60]}... changed {cursor.rowcount} rows")
        finally:
            cursor.close()
        self.executor.round_trips += len(items) + 1  # in-process calls, counted as SQLAlchemy's would be
        self._trans.commit()
        return []


def fast_session(conn: Connection, compiled_cache: dict[Any, Any]) -> FastSession:
    """The fastest transaction the connection's driver supports."""
    family = dialect_family(conn.dialect)
    driver = conn.dialect.driver
    if family == "postgresql" and driver == "psycopg":
        return PsycopgPipelineSession(conn, compiled_cache)
    if family == "mysql" and driver == "pymysql":
        from pymysql.constants import CLIENT

        raw = conn.connection.driver_connection
        if getattr(raw, "client_flag", 0) & CLIENT.MULTI_STATEMENTS:
            return PyMySQLMultiSession(conn, compiled_cache)
    if family == "sqlite" and driver == "pysqlite":
        return SQLiteSession(conn, compiled_cache)
    return FastSession(conn)
