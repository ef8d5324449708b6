"""What every database dialect shares: the Dialect interface (runtime.dialects names the
three), the statements' bookkeeping, and the generic sessions through which a batch's phases
are sent.

A dialect owns what differs between databases, in the manner of SQLAlchemy's own dialects and
Debezium's DatabaseDialect: its statement forms (the insert construct, the upsert, a write
asserting its premise), its fast session, its connect arguments and engine hooks, and how its
errors are classified. Callers ask the dialect; no other module compares dialect names.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, cast

from sqlalchemy import Table, func, literal_column, null, or_, select
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.engine import Dialect as SQLAlchemyDialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.dml import Insert
from sqlalchemy.types import TypeEngine

from runtime.errors import PERMANENT, Classified, connection_lost, first_line

if TYPE_CHECKING:
    from runtime.config import Limits
    from runtime.tls import Tls

Params = dict[str, Any] | list[dict[str, Any]]  # a list: executemany
# A statement (a SQLAlchemy construct, or a dialect's wrapper of one) and its parameters.
Item = tuple[Any, Params]
Result = list[tuple[Any, ...]] | int


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


def mark_statement(exc: BaseException, index: int | None) -> BaseException:
    """Record on `exc` which statement failed (statement_index reads it back)."""
    exc.sync_statement = index  # type: ignore[attr-defined]
    return exc


class PremiseMissed(Exception):
    """The optimistic attempt's premise did not hold: a write its guard refused, or an event
    the ledger already holds. Raised by the sessions that try it (PostgreSQL, SQLite)."""


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
                mark_statement(exc, i)
                raise
        return out


class FastSession:
    """One fast-path transaction: `read` opens it, `write_commit` ends it.

    This generic form goes through SQLAlchemy, one round trip per statement (SQLite and
    unknown drivers); the driver forms below send each phase in one round trip.
    """

    driver_level = False
    optimistic = False  # whether a failed write leaves nothing behind without an explicit transaction
    merges_rows = False  # whether runs of inserts go as multi-row statements (Statements.merged_items)

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


class TextCompiled:
    __slots__ = ("sql", "processors")

    def __init__(self, stmt: ClauseElement, dialect: SQLAlchemyDialect) -> None:
        compiled: Any = stmt.compile(dialect=dialect)
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


class DriverSession(FastSession):
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
        raw = conn.connection.driver_connection
        assert raw is not None  # a connection checked out of the pool
        self.raw: Any = raw
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
                c = self._cache[id(stmt)] = TextCompiled(stmt, self.dialect)
            assert isinstance(params, dict)  # a driver session sends one row per statement
            out.append((c.sql, c.params(params)))
        return out

    def _wrap(self, exc: Any, sql: str) -> DBAPIError:
        """Raise driver errors the way SQLAlchemy would, invalidating a dead connection."""
        dbapi = self.dialect.loaded_dbapi
        # The connection the session started on: asking self.conn for it again would
        # reconnect an invalidated Connection and hide the disconnect.
        is_disconnect = self.broken or self.dialect.is_disconnect(exc, self.dbapi_conn, None)
        wrapped = cast(
            DBAPIError,
            DBAPIError.instance(
                sql, None, exc, dbapi.Error, connection_invalidated=is_disconnect, dialect=self.dialect
            ),
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
        return cast(
            DBAPIError,
            DBAPIError.instance(
                sql, None, lost, dbapi.Error, connection_invalidated=True, dialect=self.dialect
            ),
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
            raise mark_statement(self._wrap(exc, self._sql_of(statements, i)), index) from exc
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


class PositionalCompiled:
    """A statement compiled with positional placeholders ($1..$n for libpq, ? for sqlite3),
    its parameter order and SQLAlchemy's bind processors."""

    __slots__ = ("text", "sql", "order", "processors")

    def __init__(self, stmt: ClauseElement, dialect: SQLAlchemyDialect) -> None:
        compiled: Any = stmt.compile(dialect=dialect)
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


def positional(cache: dict[Any, Any], stmt: ClauseElement, dialect: SQLAlchemyDialect) -> PositionalCompiled:
    """The statement compiled for `dialect` once, kept in the Statements' compiled cache."""
    c = cache.get(("positional", id(stmt)))
    if c is None:
        c = cache[("positional", id(stmt))] = PositionalCompiled(stmt, dialect)
    return c


# Engines whose host is an RDS Proxy endpoint (runtime.config.make_engine, SYNC_DB_PROXY=1):
# their sessions avoid what would pin a client connection to one database connection.
_PROXIED: weakref.WeakSet[Engine] = weakref.WeakSet()


def mark_proxied(engine: Engine) -> None:
    _PROXIED.add(engine)


def proxied(bind: Engine | Connection) -> bool:
    """Whether `bind` (an engine, or a connection of one) talks to an RDS Proxy."""
    return (bind.engine if isinstance(bind, Connection) else bind) in _PROXIED


@dataclass
class EngineOptions:
    """What create_engine gets for a dialect: the driver's connect arguments and the pool's."""

    connect_args: dict[str, Any] = field(default_factory=dict)
    pool: dict[str, Any] = field(default_factory=dict)


class Dialect:
    """One database's ways. Subclasses: runtime.dialects.postgresql, mysql, sqlite."""

    name: ClassVar[str]
    # Whether text columns can store U+0000 (PostgreSQL's text and jsonb cannot).
    text_holds_nul: ClassVar[bool] = True
    # Whether an upsert must know if its row exists (MySQL: an UPDATE or a plain INSERT chosen
    # from the read, because ON DUPLICATE KEY UPDATE fires on any unique key).
    upsert_reads_first: ClassVar[bool] = False
    # The least time a new connection may take to fail (libpq: 2 s).
    min_connect_seconds: ClassVar[float] = 0.0
    # The server's default port; None: not a network server (no IAM authentication, no RDS Proxy).
    default_port: ClassVar[int | None] = None
    # Whether the driver binds a Python list as one array parameter (the tools' keyed reads:
    # synctools.aws.reconcile.keyed_read).
    binds_arrays: ClassVar[bool] = False
    # Whether timestamp columns keep no zone, so aware values are sent as UTC wall time.
    naive_timestamps: ClassVar[bool] = False
    # The SQLAlchemy URL scheme (dialect+driver) the runtime connects with, and the driver's
    # pip requirement for the Lambda's package (None: nothing to install).
    url_scheme: ClassVar[str]
    requirement: ClassVar[str | None] = None
    # Events per second one connection applies in batches of 10 with ~1 ms round trips (a
    # Lambda in a VPC, the database in the same AZ), as benchmarks/runtime_bench.py measured
    # it (benchmarks/RESULTS.md): for capacity planning (generator.capacity), None if not
    # measured.
    measured_events_per_second: ClassVar[float | None] = None
    # The pool a Lambda wants: one connection kept across warm invocations, recycled before
    # typical idle cutoffs. No pre-ping and no reset-on-return: each would cost a round trip
    # per invocation. A dead connection is found by the batch itself, invalidated, and the
    # batch retried on a fresh one; every transaction ends in an explicit COMMIT or ROLLBACK,
    # and a connection left in any other state is closed, never returned.
    LAMBDA_POOL: ClassVar[dict[str, Any]] = {
        "pool_size": 1,
        "max_overflow": 0,
        "pool_recycle": 280,
        "pool_pre_ping": False,
        "pool_reset_on_return": None,
    }

    def database_file(self, url: URL) -> str | None:
        """The file that holds the database named by `url`, for databases kept in one local
        file (None: a server, or an in-memory database)."""
        return None

    def tune_for_tools(self, engine: Engine) -> None:
        """Settings the local tools want on an engine of this database (none by default)."""

    def sqlalchemy_dialect(self) -> SQLAlchemyDialect:
        """SQLAlchemy's dialect for the runtime's driver, for compiling without a connection
        (reference DDL, statement tests); the driver itself is not imported."""
        from sqlalchemy.engine import make_url

        dialect: SQLAlchemyDialect = make_url(f"{self.url_scheme}://").get_dialect()()
        return dialect

    def timestamp_type(self) -> TypeEngine[Any]:
        """The column type a timestamp is stored in."""
        from sqlalchemy import DateTime

        return DateTime(timezone=True)

    # -- statements -----------------------------------------------------------------------

    def insert(self, table: Table) -> Insert:
        """The dialect's own insert construct (its ON CONFLICT or ON DUPLICATE KEY form)."""
        from sqlalchemy import insert

        return insert(table)

    def upsert(
        self, ins: Any, table: Table, key: Sequence[str], columns: Sequence[str], version: str | None
    ) -> ClauseElement:
        """INSERT ... that updates `columns` of the row with this `key` instead, only when its
        stored `version` is older (or NULL)."""
        raise NotImplementedError(f"{self.name} has no upsert statement")

    def tombstone_upsert(self, ins: Any, table: Table) -> ClauseElement:
        """The tombstone's INSERT ... keeping the newer of the stored and the new version."""
        raise NotImplementedError(f"{self.name} has no tombstone upsert")

    def asserted(self, write: ClauseElement, rows: int = 1) -> Any:
        """The write, failing unless it changed exactly `rows` rows (the optimistic path)."""
        raise NotImplementedError(f"{self.name} cannot assert a write's row count")

    def bounded_delete(self, table: Table, where: Any, key: Sequence[str], limit: int) -> ClauseElement:
        """DELETE of at most `limit` rows matching `where` (one batch of runtime.prune): the
        rows' keys chosen by a LIMITed subquery, `where` repeated on the DELETE itself so that a
        row the sync changed meanwhile (a tombstone renewed) is checked again and kept."""
        from sqlalchemy import delete, select, tuple_

        columns = [table.c[k] for k in key]
        chosen = select(*columns).where(where).limit(limit)
        return delete(table).where(where, tuple_(*columns).in_(chosen))

    def json_value(self, param: Any) -> Any:
        """How a bound JSON text becomes the column's value."""
        return param

    def lookup_required(self, query: Any, missing: Any) -> Any:
        """`query` (one column of at most one row) as a scalar subquery that fails the
        statement when it finds no row: UNION ALL two rows that exist only when nothing
        matches (`missing`), and a scalar subquery of two rows is an error the database
        raises inside the write (PostgreSQL SQLSTATE 21000, MySQL and MariaDB error 1242),
        so the write and everything of its transaction are refused (lookup_missed)."""
        two = select(literal_column("1").label("n")).union_all(select(literal_column("2"))).subquery("lk_two")
        miss = select(self._lookup_miss_value(two.c.n)).select_from(two).where(missing)
        return query.union_all(miss).scalar_subquery()

    def _lookup_miss_value(self, n: Any) -> Any:
        """What a missed lookup's rows hold (NULL: the second row is the error)."""
        return null()

    def lookup_missed(self, orig: BaseException) -> bool:
        """Whether the driver error is a lookup_required subquery that found no row."""
        return False

    # -- connections ----------------------------------------------------------------------

    def engine_options(self, limits: Limits, *, proxy: bool = False) -> EngineOptions:
        """create_engine's arguments; `proxy`: the host is an RDS Proxy endpoint."""
        return EngineOptions()

    def tls_args(self, tls: Tls, url: URL) -> dict[str, Any]:
        """The driver's connect arguments for `tls` (runtime.tls) on a connection to `url`:
        none for a loopback host, or when the URL sets TLS itself (sslmode=, ssl_*=)."""
        if not tls.applies_to(url.host) or any(k.startswith("ssl") for k in url.query):
            return {}
        return self.driver_tls_args(tls)

    def driver_tls_args(self, tls: Tls) -> dict[str, Any]:
        """The driver's connect arguments for `tls`, applied (a dialect without TLS: none)."""
        return {}

    def on_engine(self, engine: Engine, limits: Limits, *, proxy: bool = False) -> None:
        """Hook the engine's connection events (per-connection settings, timeouts)."""

    def proxy_init_query(self, limits: Limits) -> str | None:
        """What an RDS Proxy in front of this database must run on each database connection
        it opens (its target group's initialization query, init_query) for the runtime's
        sessions; None: nothing."""
        return None

    def session(self, conn: Connection, compiled_cache: dict[Any, Any]) -> FastSession:
        """The fastest transaction the connection's driver supports."""
        return FastSession(conn)

    def interrupter(self, driver_connection: Any) -> Callable[[], None] | None:
        """How to cut this driver connection from another thread (runtime.deadline)."""
        return None

    # -- errors ---------------------------------------------------------------------------

    def classify(self, exc: BaseException, *, foreign_key_transient: bool = True) -> Classified:
        """Transient or permanent, and what the error ended (runtime.errors)."""
        orig: BaseException = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
        reason = first_line(str(orig) or type(orig).__name__)
        refused = self.login_refused(orig, reason)
        if refused is not None:
            return refused
        if isinstance(exc, DBAPIError) and exc.connection_invalidated:
            return connection_lost(reason)
        if self.lookup_missed(orig):
            # Permanent until the runtime reads which lookup it was (runtime.apply).
            return Classified(PERMANENT, f"lookup found no row: {reason}", lookup=True)
        return self.classify_error(exc, orig, reason, foreign_key_transient)

    def login_refused(self, orig: BaseException, reason: str) -> Classified | None:
        return None

    def classify_error(
        self, exc: BaseException, orig: BaseException, reason: str, foreign_key_transient: bool
    ) -> Classified:
        from sqlalchemy.exc import DataError, IntegrityError

        from runtime.errors import PERMANENT, TRANSIENT

        if isinstance(exc, (IntegrityError, DataError)):
            return Classified(PERMANENT, reason)
        return Classified(TRANSIENT, reason)


class OnConflictUpserts(Dialect):
    """Upserts as INSERT ... ON CONFLICT, the form PostgreSQL and SQLite share."""

    def upsert(
        self, ins: Any, table: Table, key: Sequence[str], columns: Sequence[str], version: str | None
    ) -> ClauseElement:
        """ON CONFLICT (key) DO UPDATE SET <columns> WHERE the stored version is older."""
        excluded = ins.excluded
        where = or_(table.c[version].is_(None), table.c[version] < excluded[version]) if version else None
        update: ClauseElement = ins.on_conflict_do_update(
            index_elements=[table.c[k] for k in key], set_={c: excluded[c] for c in columns}, where=where
        )
        return update

    def tombstone_upsert(self, ins: Any, table: Table) -> ClauseElement:
        """The tombstone's form: the newer of the stored and the new version wins."""
        update: ClauseElement = ins.on_conflict_do_update(
            index_elements=[table.c.row_key, table.c.table_name],
            set_={"version": ins.excluded.version, "deleted_at": func.current_timestamp()},
            where=table.c.version < ins.excluded.version,
        )
        return update
