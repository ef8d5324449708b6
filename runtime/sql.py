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

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Table, and_, bindparam, case, cast, delete, exists, func, insert, or_, select, update
from sqlalchemy.dialects import mysql as mysql_dialect
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement
from sqlalchemy.types import Text

from runtime.registry import Registry, TableSpec
from runtime.schema import build_metadata

Item = tuple[ClauseElement, dict[str, Any]]
Result = list[tuple[Any, ...]] | int


def dialect_family(dialect: Dialect) -> str:
    name = dialect.name
    if name in ("mysql", "mariadb"):
        return "mysql"
    return name


class Statements:
    """Builds each statement shape once per (kind, table, columns) and keeps it."""

    def __init__(self, registry: Registry, dialect: Dialect) -> None:
        self.registry = registry
        self.family = dialect_family(dialect)
        self.metadata = build_metadata(registry, foreign_keys=False)
        self.ledger = self.metadata.tables[registry.ledger_table]
        self.tombstones = self.metadata.tables[registry.tombstone_table]
        self._cache: dict[tuple[Any, ...], ClauseElement] = {}

    def table(self, spec: TableSpec) -> Table:
        return self.metadata.tables[spec.qualified]

    def _memo(self, key: tuple[Any, ...], build: Callable[[], ClauseElement]) -> ClauseElement:
        stmt = self._cache.get(key)
        if stmt is None:
            stmt = self._cache[key] = build()
        return stmt

    # -- value expressions --------------------------------------------------------------

    def value(self, t: Table, spec: TableSpec, column: str, name: str) -> Any:
        """A bound value for a column; JSON travels as text (runtime.coerce.json_text)."""
        if spec.columns[column].type == "json":
            param = bindparam(name, type_=Text())
            return cast(param, pg_dialect.JSONB()) if self.family == "postgresql" else param
        return bindparam(name, type_=t.c[column].type)

    def _insert_construct(self, t: Table) -> Any:
        if self.family == "postgresql":
            return pg_dialect.insert(t)
        if self.family == "mysql":
            return mysql_dialect.insert(t)
        if self.family == "sqlite":
            return sqlite_dialect.insert(t)
        return insert(t)

    def _tombstone_guard(self, spec: TableSpec) -> Any:
        tb = self.tombstones
        return ~exists().where(
            tb.c.table_name == bindparam("tn", type_=tb.c.table_name.type),
            tb.c.row_key == bindparam("rk", type_=tb.c.row_key.type),
            tb.c.version >= bindparam("tv", type_=tb.c.version.type),
        )

    def _insert_columns(self, spec: TableSpec) -> list[str]:
        cols = list(spec.columns)
        if spec.version:
            cols.append(spec.version.column)
        if spec.soft_delete:
            cols.append(spec.soft_delete.column)
        return cols

    def _insert_values(self, t: Table, spec: TableSpec) -> list[Any]:
        exprs = [self.value(t, spec, c, f"p_{c}") for c in spec.columns]
        if spec.version:
            exprs.append(bindparam("v", type_=t.c[spec.version.column].type))
        if spec.soft_delete:
            exprs.append(bindparam("sd", type_=t.c[spec.soft_delete.column].type))
        return exprs

    # -- writes -------------------------------------------------------------------------

    def insert(self, spec: TableSpec) -> ClauseElement:
        def build() -> ClauseElement:
            t = self.table(spec)
            cols = self._insert_columns(spec)
            values = self._insert_values(t, spec)
            if spec.version:
                return insert(t).from_select(cols, select(*values).where(self._tombstone_guard(spec)))
            return insert(t).values(dict(zip(cols, values, strict=True)))

        return self._memo(("insert", spec.qualified), build)

    def upsert(self, spec: TableSpec) -> ClauseElement:
        def build() -> ClauseElement:
            t = self.table(spec)
            cols = self._insert_columns(spec)
            values = self._insert_values(t, spec)
            ins = self._insert_construct(t)
            if spec.version:
                ins = ins.from_select(cols, select(*values).where(self._tombstone_guard(spec)))
            else:
                ins = ins.values(dict(zip(cols, values, strict=True)))
            non_key = [c for c in cols if c not in spec.key]
            vcol = spec.version.column if spec.version else None
            if self.family == "mysql":
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
                    index_elements=[t.c[k] for k in spec.key],
                    set_={c: excluded[c] for c in non_key},
                    where=where,
                )
            raise NotImplementedError(f"upsert is not implemented for dialect {self.family!r}")

        return self._memo(("upsert", spec.qualified), build)

    def _key_match(self, t: Table, spec: TableSpec) -> list[Any]:
        return [t.c[k] == bindparam(f"k_{k}", type_=t.c[k].type) for k in spec.key]

    def update(self, spec: TableSpec, columns: Sequence[str]) -> ClauseElement:
        def build() -> ClauseElement:
            t = self.table(spec)
            values = {c: self.value(t, spec, c, f"p_{c}") for c in columns}
            where = self._key_match(t, spec)
            if spec.version:
                vcol = spec.version.column
                v = bindparam("v", type_=t.c[vcol].type)
                values[vcol] = v
                where.append(or_(t.c[vcol].is_(None), t.c[vcol] < v))
            return update(t).where(*where).values(values)

        return self._memo(("update", spec.qualified, tuple(columns)), build)

    def soft_delete(self, spec: TableSpec) -> ClauseElement:
        assert spec.soft_delete is not None

        def build() -> ClauseElement:
            t = self.table(spec)
            sd = spec.soft_delete.column  # type: ignore[union-attr]
            values: dict[str, Any] = {sd: bindparam("sd", type_=t.c[sd].type)}
            where = self._key_match(t, spec)
            if spec.version:
                vcol = spec.version.column
                v = bindparam("v", type_=t.c[vcol].type)
                values[vcol] = v
                # <=: a delete carries the version of the state it removes (an item attribute
                # read from the old image equals the row's version).
                where.append(or_(t.c[vcol].is_(None), t.c[vcol] <= v))
            return update(t).where(*where).values(values)

        return self._memo(("soft_delete", spec.qualified), build)

    def delete(self, spec: TableSpec) -> ClauseElement:
        def build() -> ClauseElement:
            t = self.table(spec)
            where = self._key_match(t, spec)
            if spec.version:
                vcol = spec.version.column
                where.append(or_(t.c[vcol].is_(None), t.c[vcol] <= bindparam("v", type_=t.c[vcol].type)))
            return delete(t).where(*where)

        return self._memo(("delete", spec.qualified), build)

    def tombstone(self) -> ClauseElement:
        def build() -> ClauseElement:
            tb = self.tombstones
            ins = self._insert_construct(tb).values(
                table_name=bindparam("tn", type_=tb.c.table_name.type),
                row_key=bindparam("rk", type_=tb.c.row_key.type),
                version=bindparam("tv", type_=tb.c.version.type),
            )
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
                index_elements=[tb.c.table_name, tb.c.row_key],
                set_={"version": ins.excluded.version, "deleted_at": func.current_timestamp()},
                where=tb.c.version < ins.excluded.version,
            )

        return self._memo(("tombstone",), build)

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
    """Runs statements through SQLAlchemy, one round trip each (SQLite, fallback, slow path)."""

    batched = False

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.round_trips = 0

    def run(self, items: Sequence[Item]) -> list[Result]:
        out: list[Result] = []
        for stmt, params in items:
            self.round_trips += 1
            result = self.conn.execute(stmt, params)
            out.append([tuple(r) for r in result.fetchall()] if result.returns_rows else result.rowcount)
        return out


class _Compiled:
    __slots__ = ("sql", "processors", "compiled")

    def __init__(self, stmt: ClauseElement, dialect: Dialect) -> None:
        self.compiled = stmt.compile(dialect=dialect)
        self.sql = str(self.compiled)
        self.processors: dict[str, Callable[[Any], Any]] = {}
        for name, bp in self.compiled.binds.items():
            proc = bp.type.dialect_impl(dialect).bind_processor(dialect)
            if proc is not None:
                self.processors[name] = proc

    def params(self, values: dict[str, Any]) -> dict[str, Any]:
        params = self.compiled.construct_params(values)
        for name, proc in self.processors.items():
            if name in params:
                params[name] = proc(params[name])
        return params


class _DriverExecutor(Executor):
    """Compiles with SQLAlchemy, sends many statements per network round trip at the driver."""

    batched = True
    _compiled_cache: dict[tuple[int, str], _Compiled] = {}

    def __init__(self, conn: Connection) -> None:
        super().__init__(conn)
        self.dialect = conn.dialect

    def compiled(self, stmt: ClauseElement) -> _Compiled:
        key = (id(stmt), self.dialect.name)
        c = self._compiled_cache.get(key)
        if c is None or c.compiled.statement is not stmt:
            c = self._compiled_cache[key] = _Compiled(stmt, self.dialect)
        return c

    def _wrap(self, exc: Exception, sql: str) -> DBAPIError:
        """Raise driver errors the way SQLAlchemy would, invalidating a dead connection."""
        dbapi = self.dialect.loaded_dbapi
        raw = self.conn.connection.dbapi_connection
        is_disconnect = self.dialect.is_disconnect(exc, raw, None)
        wrapped = DBAPIError.instance(
            sql, None, exc, dbapi.Error, connection_invalidated=is_disconnect, dialect=self.dialect
        )
        if is_disconnect:
            self.conn.invalidate(exc)
        return wrapped

    def run(self, items: Sequence[Item]) -> list[Result]:
        if not items:
            return []
        prepared = [(self.compiled(stmt), params) for stmt, params in items]
        self.round_trips += 1
        try:
            return self._send([(c.sql, c.params(p)) for c, p in prepared])
        except self.dialect.loaded_dbapi.Error as exc:
            raise self._wrap(exc, prepared[0][0].sql) from exc

    def _send(self, statements: list[tuple[str, dict[str, Any]]]) -> list[Result]:
        raise NotImplementedError


class PsycopgPipelineExecutor(_DriverExecutor):
    """psycopg 3 pipeline mode: every statement, then one Sync, then every result."""

    def _send(self, statements: list[tuple[str, dict[str, Any]]]) -> list[Result]:
        raw = self.conn.connection.driver_connection
        cursors = []
        with raw.pipeline() as pipeline:
            for sql, params in statements:
                cur = raw.cursor()
                cur.execute(sql, params)
                cursors.append(cur)
            pipeline.sync()
        out: list[Result] = []
        for cur in cursors:
            out.append([tuple(r) for r in cur.fetchall()] if cur.description else cur.rowcount)
            cur.close()
        return out


class PyMySQLMultiExecutor(_DriverExecutor):
    """MySQL multi-statement text: each statement rendered by the driver's own parameter
    escaping (PyMySQL always binds client-side), joined, sent once, results read in order."""

    def _send(self, statements: list[tuple[str, dict[str, Any]]]) -> list[Result]:
        raw = self.conn.connection.driver_connection
        with raw.cursor() as cur:
            text = ";\n".join(cur.mogrify(sql, params) for sql, params in statements)
            cur.execute(text)
            out: list[Result] = []
            for i in range(len(statements)):
                out.append([tuple(r) for r in cur.fetchall()] if cur.description else cur.rowcount)
                if i < len(statements) - 1:
                    cur.nextset()
            return out


def executor_for(conn: Connection) -> Executor:
    """The fastest executor the connection supports."""
    family = dialect_family(conn.dialect)
    driver = conn.dialect.driver
    if family == "postgresql" and driver == "psycopg":
        return PsycopgPipelineExecutor(conn)
    if family == "mysql" and driver == "pymysql":
        from pymysql.constants import CLIENT

        raw = conn.connection.driver_connection
        if getattr(raw, "client_flag", 0) & CLIENT.MULTI_STATEMENTS:
            return PyMySQLMultiExecutor(conn)
    return Executor(conn)
