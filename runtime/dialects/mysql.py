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
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.dml import Insert
from sqlalchemy.types import TypeEngine

from runtime.aws_limits import RDS_PROXY_STATEMENT_BYTES
from runtime.deadline import CURRENT
from runtime.dialects.base import (
    BindError,
    Dialect,
    DriverSession,
    EngineOptions,
    FastSession,
    Result,
    mark_statement,
    proxied,
)
from runtime.errors import (
    PERMANENT,
    TRANSIENT,
    Classified,
    SetupError,
    first_line,
    foreign_key,
    login_refused,
)
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
TIME_ZONE = "+00:00"  # timestamps are stored as UTC wall time (naive_timestamps)
PINNING_DOC = "https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/rds-proxy-pinning.html"


def _lock_wait_s(limits: Limits) -> int:
    """innodb_lock_wait_timeout (whole seconds, at least 1) for the runtime's lock timeout."""
    return max(1, math.ceil(limits.lock_timeout_ms / 1000))


def _tracked_settings() -> str:
    """The session settings RDS Proxy tracks (sql_mode, time_zone): setting them does not pin
    a client connection; the proxy reuses a database connection for sessions whose values
    are the same ("Avoiding pinning an RDS Proxy", what RDS Proxy tracks for MySQL)."""
    return f"SESSION sql_mode='{SQL_MODE}', SESSION time_zone='{TIME_ZONE}'"


class MySQL(Dialect):
    name = "mysql"
    url_scheme = "mysql+pymysql"
    requirement = "pymysql>=1.1,<2"
    measured_events_per_second = 2200.0
    upsert_reads_first = True
    naive_timestamps = True  # DATETIME keeps no zone: values are stored as UTC wall time
    min_connect_seconds = 0.5
    default_port = 3306

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

    def session_init(self, limits: Limits) -> str:
        """The SET statement every session of the runtime starts with: on a direct connection
        its init_command; behind an RDS Proxy, the proxy's initialization query."""
        return f"SET SESSION innodb_lock_wait_timeout={_lock_wait_s(limits)}, {_tracked_settings()}"

    def proxy_init_query(self, limits: Limits) -> str | None:
        return self.session_init(limits)

    def engine_options(self, limits: Limits, *, proxy: bool = False) -> EngineOptions:
        from pymysql.constants import CLIENT

        # Behind an RDS Proxy, setting innodb_lock_wait_timeout (which the proxy does not
        # track) would pin every client connection: the proxy's initialization query sets it
        # on each database connection (session_init), and on_engine checks it at connect.
        init = f"SET {_tracked_settings()}" if proxy else self.session_init(limits)

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
                "init_command": init,
                "charset": "utf8mb4",
            },
            pool=self.LAMBDA_POOL,
        )

    def driver_tls_args(self, tls: Tls) -> dict[str, Any]:
        """An SSLContext (PyMySQL then requires TLS: a server without it is refused)."""
        import ssl

        ctx = ssl.create_default_context(cafile=tls.ca_bundle)
        if tls.mode is TlsMode.REQUIRE:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return {"ssl": ctx}

    def on_engine(self, engine: Engine, limits: Limits, *, proxy: bool = False) -> None:
        """A new connection never waits past the batch's deadline (runtime.deadline.CURRENT):
        its connect timeout is clamped to the time left. PyMySQL reads the server's greeting
        with its read timeout, so that is clamped for the handshake too, and set back once
        connected. Behind an RDS Proxy, a new connection's session settings are checked
        (check_proxy_session)."""
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

        if proxy:

            @event.listens_for(engine, "connect")
            def _check(dbapi_connection: Any, _record: Any) -> None:
                self.check_proxy_session(dbapi_connection, limits)

    def check_proxy_session(self, dbapi_connection: Any, limits: Limits) -> None:
        """Refuse a connection through an RDS Proxy whose session lacks the runtime's
        settings (SetupError, naming the initialization query to give the proxy): the lock
        wait it needs, the sql_mode the statements rely on, UTC for naive timestamps."""
        cur = dbapi_connection.cursor()
        try:
            cur.execute("SELECT @@SESSION.innodb_lock_wait_timeout, @@SESSION.sql_mode, @@SESSION.time_zone")
            wait, mode, zone = (v.decode() if isinstance(v, bytes) else v for v in cur.fetchone())
        finally:
            cur.close()
        dbapi_connection.rollback()  # no transaction left open: the proxy may lend its connection
        wrong = []
        if int(wait) > _lock_wait_s(limits):
            wrong.append(f"innodb_lock_wait_timeout is {wait} s (at most {_lock_wait_s(limits)} wanted)")
        lacking = [m for m in SQL_MODE.split(",") if m not in str(mode).split(",")]
        if lacking:
            wrong.append(f"sql_mode {mode!r} lacks {','.join(lacking)}")
        if zone != TIME_ZONE:
            wrong.append(f"time_zone is {zone!r} (not {TIME_ZONE!r})")
        if wrong:
            dbapi_connection.close()
            raise SetupError(
                f"behind an RDS Proxy (SYNC_DB_PROXY=1) the session's {'; '.join(wrong)}: the runtime "
                "cannot set these itself without pinning each connection; give the proxy's target group "
                f'the initialization query (init_query) "{self.proxy_init_query(limits)}" ({PINNING_DOC})'
            )

    def session(self, conn: Connection, compiled_cache: dict[Any, Any]) -> FastSession:
        if conn.dialect.driver == "pymysql":
            from pymysql.constants import CLIENT

            raw = conn.connection.driver_connection
            if getattr(raw, "client_flag", 0) & CLIENT.MULTI_STATEMENTS:
                limit = RDS_PROXY_STATEMENT_BYTES if proxied(conn) else None
                return PyMySQLMultiSession(conn, compiled_cache, text_limit=limit)
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


def split_texts(texts: list[str], limit: int | None) -> list[tuple[int, list[str]]]:
    """The statements as the multi-statement texts to send: (index of the first statement,
    the statements) each, joined with semicolons, at most `limit` bytes long (None: one
    text); a statement longer than that goes alone."""
    if limit is None:
        return [(0, texts)]
    packets: list[tuple[int, list[str]]] = []
    size = 0
    for i, text in enumerate(texts):
        n = len(text.encode("utf-8")) + 2  # and the ";\n" that joins it to the next
        if packets and size + n <= limit:
            packets[-1][1].append(text)
            size += n
        else:
            packets.append((i, [text]))
            size = n
    return packets


class PyMySQLMultiSession(DriverSession):
    """MySQL multi-statement text: each statement rendered by the driver's own parameter
    escaping (PyMySQL always binds client-side), joined, sent once, results read in order.

    `text_limit` (behind an RDS Proxy, which pins a client connection on any statement text
    longer than 16 KB): a phase is sent as several multi-statement texts of at most that many
    bytes each, one round trip each, inside the same transaction; a single statement longer
    than that still goes alone (and pins)."""

    BEGIN = "START TRANSACTION"

    def __init__(
        self, conn: Connection, compiled_cache: dict[Any, Any], *, text_limit: int | None = None
    ) -> None:
        super().__init__(conn, compiled_cache)
        self.text_limit = text_limit

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
                packets = split_texts(texts, self.text_limit)
                self._trips += len(packets) - 1  # _run counted the phase's first
                for start, packet in packets:
                    i = start
                    cur.execute(";\n".join(packet))
                    for k in range(len(packet)):
                        if k:
                            i = start + k
                            cur.nextset()
                        out.append([tuple(r) for r in cur.fetchall()] if cur.description else cur.rowcount)
                return out
            except self.dialect.loaded_dbapi.Error as exc:
                mark_statement(exc, i)
                raise


DIALECT = MySQL()
