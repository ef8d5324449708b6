"""SQLite, the local tools' database (and the tests' third): ON CONFLICT upserts, writes
whose row count the session checks, classification by message text (sqlite3 has no codes
SQLAlchemy passes on)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table, event, literal_column
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.dml import Insert

from runtime.dialects.base import (
    BindError,
    EngineOptions,
    FastSession,
    Item,
    OnConflictUpserts,
    PremiseMissed,
    Result,
    mark_statement,
    positional,
)
from runtime.errors import PERMANENT, TRANSIENT, Classified, foreign_key

if TYPE_CHECKING:
    from runtime.config import Limits


# The text of a missed lookup's row (SQLite.lookup_required): not JSON, so json() refuses it.
LOOKUP_MISSED = "no row found "


@dataclass(frozen=True, slots=True)
class Asserted:
    """A write that must change exactly one row (SQLite's form of Dialect.asserted: in
    process, no SQL needed; SQLiteSession checks the row count)."""

    write: ClauseElement
    rows: int = 1


class SQLite(OnConflictUpserts):
    name = "sqlite"
    url_scheme = "sqlite"
    naive_timestamps = True  # stored as text without a zone: values are stored as UTC wall time

    def database_file(self, url: URL) -> str | None:
        return None if url.database in (None, "", ":memory:") else url.database

    def tune_for_tools(self, engine: Engine) -> None:
        """WAL journal and synchronous=NORMAL.

        A replay commits once per batch; with the default rollback journal and synchronous=FULL
        each commit waits for several fsyncs, which is the whole cost of a local run. WAL with
        NORMAL keeps every commit atomic and durable against a process crash (only an OS crash
        can lose the last transactions), which is what a local replay needs.
        """

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

    def insert(self, table: Table) -> Insert:
        return sqlite_insert(table)

    def asserted(self, write: ClauseElement, rows: int = 1) -> Any:
        return Asserted(write, rows)

    def _lookup_miss_value(self, n: Any) -> Any:
        """SQLite takes the first row of a scalar subquery of several, so a missed lookup's
        row raises by itself: json() of text that is not JSON ("malformed JSON"), computed
        from the row (not a constant SQLite could evaluate before it is needed)."""
        from sqlalchemy import func

        return func.json(literal_column(f"'{LOOKUP_MISSED}'").concat(n))

    def lookup_missed(self, orig: BaseException) -> bool:
        return "malformed json" in str(orig).lower()

    def engine_options(self, limits: Limits, *, proxy: bool = False) -> EngineOptions:
        # SQLAlchemy's own pool for SQLite (one connection per thread for a file, a static
        # one for :memory:); a lock wait gives up after the lock timeout.
        return EngineOptions(connect_args={"timeout": limits.lock_timeout_ms / 1000})

    def on_engine(self, engine: Engine, limits: Limits, *, proxy: bool = False) -> None:
        # SQLite enforces foreign keys only when asked, per connection.
        @event.listens_for(engine, "connect")
        def _foreign_keys(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

    def session(self, conn: Connection, compiled_cache: dict[Any, Any]) -> FastSession:
        if conn.dialect.driver == "pysqlite":
            return SQLiteSession(conn, compiled_cache)
        return FastSession(conn)

    def interrupter(self, driver_connection: Any) -> Callable[[], None] | None:
        interrupt = getattr(driver_connection, "interrupt", None)  # aborts the running statement
        return interrupt if callable(interrupt) else None

    def classify_error(
        self, exc: BaseException, orig: BaseException, reason: str, foreign_key_transient: bool
    ) -> Classified:
        text = reason.lower()
        if "foreign key" in text:
            return foreign_key(reason, foreign_key_transient)
        if "unique constraint" in text or "primary key must be unique" in text:
            return Classified(PERMANENT, reason, unique=True)
        if "locked" in text or "busy" in text:
            return Classified(TRANSIENT, reason, lock=True)
        if "interrupted" in text:  # sqlite3_interrupt: SQLite rolls the whole transaction back
            return Classified(TRANSIENT, reason, True)
        if "disk i/o" in text or "no such table" in text:
            return Classified(TRANSIENT, reason)
        return super().classify_error(exc, orig, reason, foreign_key_transient)


class SQLiteSession(FastSession):
    """No network, so no round trip to save, but SQLAlchemy's work per execution (~0.1 ms
    here) was a third of a local replay. The reads stay with SQLAlchemy (its result
    processing turns stored keys back into the decoded types); the writes, compiled by
    SQLAlchemy once per statement shape and with its bind processors applied, go straight to
    the sqlite3 cursor inside the same transaction."""

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
        cursor = self.conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        dbapi = dialect.loaded_dbapi
        try:
            for i, (stmt, params) in enumerate(items):
                expect = stmt.rows if isinstance(stmt, Asserted) else None
                write: Any = stmt.write if isinstance(stmt, Asserted) else stmt
                c = positional(cache, write, dialect)
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
                    raise mark_statement(
                        DBAPIError.instance(c.text, None, exc, dbapi.Error, dialect=dialect), i
                    ) from exc
                except dbapi.Error as exc:
                    raise mark_statement(
                        DBAPIError.instance(c.text, None, exc, dbapi.Error, dialect=dialect), i
                    ) from exc
                except Exception as exc:  # sqlite3 could not bind a value (a lone surrogate): nothing ran
                    raise BindError(i, exc) from exc
                if expect is not None and cursor.rowcount != expect:
                    raise PremiseMissed(f"{c.text[:60]}... changed {cursor.rowcount} rows")
        finally:
            cursor.close()
        self.executor.round_trips += len(items) + 1  # in-process calls, counted as SQLAlchemy's would be
        self._trans.commit()
        return []


DIALECT = SQLite()
