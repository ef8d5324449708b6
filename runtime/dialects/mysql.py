"""MySQL and MariaDB through PyMySQL: upserts chosen from a read, multi-statement batches,
error-number classification.

No ON DUPLICATE KEY UPDATE for mapped tables: it fires on a conflict with *any* unique key, so
a row clashing on a secondary unique index (an email, say) would silently overwrite another
row (confluentinc/kafka-connect-jdbc#575). The batch reads whether the row exists and sends an
UPDATE or a plain INSERT, which fails loudly on any other unique key (upsert_reads_first).
The tombstone table has no other unique key, so its upsert keeps the ON DUPLICATE KEY form.
"""

from __future__ import annotations

import math
import socket
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table, case, event, func
from sqlalchemy.dialects import mysql
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.dml import Insert
from sqlalchemy.types import TypeEngine

from runtime.deadline import CURRENT
from runtime.dialects.base import (
    BindError,
    Dialect,
    DriverSession,
    EngineOptions,
    FastSession,
    Result,
    mark_statement,
)
from runtime.errors import PERMANENT, TRANSIENT, Classified, first_line, foreign_key, login_refused
from runtime.tls import Tls, TlsMode

if TYPE_CHECKING:
    from runtime.config import Limits

# Error numbers (MySQL Server Error Message Reference; MariaDB Error Codes).
TRANSIENT_ERRORS = {
    1205,  # lock wait timeout
    1213,  # deadlock
    1040,
    1053,
    1077,
    1080,
    1152,
    1153,
    1158,
    1159,
    1160,
    1161,
    1317,
    1927,
    2002,
    2003,
    2006,
    2013,
    2055,
    4031,
    1146,
    1054,
    1049,  # missing table/column/database: a deployment problem, not the message's
    1045,  # access denied: the password rotated
    1698,
}
FOREIGN_KEY = {1451, 1452, 1216, 1217}
# "Subquery returns more than 1 row": how a lookup that found no row fails
# (Dialect.lookup_required); no other statement of the runtime has a scalar subquery.
SUBQUERY_ROWS = 1242
UNIQUE = {1062, 1586}
LOCK = {1205, 3024, 1969}  # lock wait timeout; max_execution_time / max_statement_time exceeded
AUTH = {1045, 1698}
# Errors after which the server has rolled the whole transaction back (InnoDB does so on a
# deadlock, not on a lock wait timeout) or the connection is gone (client errors, 2000+).
ENDS_TRANSACTION = {1213, 1927, 1053, 4031}
SQL_MODE = "STRICT_ALL_TABLES,NO_ZERO_DATE,NO_ENGINE_SUBSTITUTION"


class MySQL(Dialect):
    name = "mysql"
    url_scheme = "mysql+pymysql"
    requirement = "pymysql>=1.1,<2"
    measured_events_per_second = 2200.0
    upsert_reads_first = True
    naive_timestamps = True  # DATETIME keeps no zone: values are stored as UTC wall time
    min_connect_seconds = 0.5

    # -- statements -----------------------------------------------------------------------

    def insert(self, table: Table) -> Insert:
        return mysql_insert(table)

    def bounded_delete(self, table: Table, where: Any, key: Sequence[str], limit: int) -> ClauseElement:
        """DELETE ... WHERE ... LIMIT n: MySQL refuses a LIMIT inside an IN subquery and a
        subquery on the table being deleted from, and takes a LIMIT on a one-table DELETE. The
        LIMIT is the integer itself (SQLAlchemy renders MySQL's DELETE LIMIT as a literal)."""
        from sqlalchemy import delete

        return delete(table).where(where).with_dialect_options(mysql_limit=int(limit))

    def tombstone_upsert(self, ins: Any, table: Table) -> ClauseElement:
        """ON DUPLICATE KEY UPDATE keeping the newer version; the version column assigned
        last, because MySQL evaluates assignments left to right."""
        new = ins.inserted
        newer = table.c.version < new.version
        update: ClauseElement = ins.on_duplicate_key_update(
            [
                ("deleted_at", case((newer, func.current_timestamp()), else_=table.c.deleted_at)),
                ("version", case((newer, new.version), else_=table.c.version)),
            ]
        )
        return update

    def timestamp_type(self) -> TypeEngine[Any]:
        return mysql.DATETIME(fsp=6)  # microseconds kept (DATETIME drops them by default)

    # -- connections ----------------------------------------------------------------------

    def engine_options(self, limits: Limits) -> EngineOptions:
        from pymysql.constants import CLIENT

        return EngineOptions(
            connect_args={
                "connect_timeout": limits.connect_timeout_s,
                # A server that stops answering (or a path that freezes) fails the wait after
                # this long instead of never; a lock wait (innodb_lock_wait_timeout) always
                # ends well before it.
                "read_timeout": limits.network_timeout_s,
                "write_timeout": limits.network_timeout_s,
                # Multi-statement: a batch's writes go out in one round trip. SQLAlchemy always
                # sets FOUND_ROWS; connect_args replace its flags, so keep it.
                "client_flag": CLIENT.MULTI_STATEMENTS | CLIENT.FOUND_ROWS,
                "init_command": (
                    f"SET SESSION innodb_lock_wait_timeout={max(1, math.ceil(limits.lock_timeout_ms / 1000))}, "
                    f"SESSION sql_mode='{SQL_MODE}', SESSION time_zone='+00:00'"
                ),
                "charset": "utf8mb4",
            },
            pool=self.LAMBDA_POOL,
        )

    def tls_args(self, tls: Tls, url: URL) -> dict[str, Any]:
        """An SSLContext (PyMySQL then requires TLS: a server without it is refused)."""
        if not tls.applies_to(url.host) or any(k.startswith("ssl") for k in url.query):
            return {}
        import ssl

        ctx = ssl.create_default_context(cafile=tls.ca_bundle)
        if tls.mode is TlsMode.REQUIRE:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return {"ssl": ctx}

    def on_engine(self, engine: Engine, limits: Limits) -> None:
        """A new connection never waits past the batch's deadline (runtime.deadline.CURRENT):
        its connect timeout is clamped to the time left. PyMySQL reads the server's greeting
        with its read timeout, so that is clamped for the handshake too, and set back once
        connected."""
        floor = self.min_connect_seconds

        @event.listens_for(engine, "do_connect")
        def _clamp(_dialect: Any, _record: Any, _args: Any, params: dict[str, Any]) -> None:
            at = CURRENT.get()
            if at is None:
                return
            wanted = max(floor, min(limits.connect_timeout_s, at - time.monotonic() - 0.25))
            params["connect_timeout"] = wanted
            params["read_timeout"] = min(limits.network_timeout_s, wanted)
            params["write_timeout"] = min(limits.network_timeout_s, wanted)

        @event.listens_for(engine, "connect")
        def _restore(dbapi_connection: Any, _record: Any) -> None:
            if hasattr(dbapi_connection, "_read_timeout"):  # PyMySQL's own fields for them
                dbapi_connection._read_timeout = limits.network_timeout_s
                dbapi_connection._write_timeout = limits.network_timeout_s

    def session(self, conn: Connection, compiled_cache: dict[Any, Any]) -> FastSession:
        if conn.dialect.driver == "pymysql":
            from pymysql.constants import CLIENT

            raw = conn.connection.driver_connection
            if getattr(raw, "client_flag", 0) & CLIENT.MULTI_STATEMENTS:
                return PyMySQLMultiSession(conn, compiled_cache)
        return FastSession(conn)

    def interrupter(self, driver_connection: Any) -> Callable[[], None] | None:
        sock = getattr(driver_connection, "_sock", None)  # PyMySQL
        if sock is None:
            return None
        return lambda: sock.shutdown(socket.SHUT_RDWR)

    # -- errors ---------------------------------------------------------------------------

    def lookup_missed(self, orig: BaseException) -> bool:
        return _errno(orig) == SUBQUERY_ROWS

    def login_refused(self, orig: BaseException, reason: str) -> Classified | None:
        return login_refused(reason) if _errno(orig) in AUTH else None

    def classify_error(
        self, exc: BaseException, orig: BaseException, reason: str, foreign_key_transient: bool
    ) -> Classified:
        errno = _errno(orig)
        if errno is None:
            return super().classify_error(exc, orig, reason, foreign_key_transient)
        args = orig.args
        reason = f"({errno}) {first_line(str(args[1])) if len(args) > 1 else reason}"
        if errno in FOREIGN_KEY:
            return foreign_key(reason, foreign_key_transient)
        if errno in UNIQUE:
            return Classified(PERMANENT, reason, unique=True)
        if errno in TRANSIENT_ERRORS or errno in LOCK:
            ended = errno in ENDS_TRANSACTION or errno >= 2000
            return Classified(TRANSIENT, reason, ended, lock=errno in LOCK)
        return Classified(PERMANENT, reason)


def _errno(orig: BaseException) -> int | None:
    args = getattr(orig, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


class PyMySQLMultiSession(DriverSession):
    """MySQL multi-statement text: each statement rendered by the driver's own parameter
    escaping (PyMySQL always binds client-side), joined, sent once, results read in order."""

    BEGIN = "START TRANSACTION"

    def _send(self, statements: list[tuple[Any, dict[str, Any] | None]], results: bool) -> list[Result]:
        with self.raw.cursor() as cur:
            # Bind first: every statement rendered and checked to be valid UTF-8 before
            # anything is sent (PyMySQL would encode a lone surrogate with surrogateescape).
            texts: list[str] = []
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
                mark_statement(exc, i)
                raise


DIALECT = MySQL()
