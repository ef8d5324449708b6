"""PostgreSQL through psycopg 3: ON CONFLICT upserts, writes that assert their premise in the
SQL, one pipelined round trip per batch, SQLSTATE classification."""

from __future__ import annotations

import copy
import math
import re
import select as io_select
import time
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table, event, literal_column, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.dml import Insert

from runtime.deadline import CURRENT, shutdown_socket
from runtime.dialects.base import (
    BindError,
    DriverSession,
    EngineOptions,
    FastSession,
    Item,
    OnConflictUpserts,
    PositionalCompiled,
    PremiseMissed,
    Result,
    mark_statement,
    positional,
)
from runtime.errors import PERMANENT, TRANSIENT, Classified, foreign_key, login_refused
from runtime.tls import Tls, TlsMode

if TYPE_CHECKING:
    from psycopg.pq.abc import PGresult

    from runtime.config import Limits

# SQLSTATE classes and codes (PostgreSQL documentation, Appendix A "PostgreSQL Error Codes").
TRANSIENT_CLASSES = ("08", "53", "57", "58")  # connection, resources, operator intervention, system
TRANSIENT_CODES = {"40001", "40P01", "55P03", "55006", "42P01", "42703", "3D000", "3F000"}
FOREIGN_KEY = {"23503"}
# cardinality_violation: a scalar subquery of two rows, how a lookup that found none fails
# (Dialect.lookup_required); no other statement of the runtime has a scalar subquery.
CARDINALITY = "21000"
UNIQUE = {"23505"}
LOCK = {"55P03", "57014"}  # lock_not_available (lock_timeout), query_canceled (statement_timeout)
AUTH_CLASS = "28"  # invalid authorization specification / invalid password
# A refused login arrives before any SQLSTATE can (psycopg reports libpq's connection error text).
AUTH_TEXT = re.compile(
    r"password authentication failed|role \"[^\"]*\" does not exist|no pg_hba\.conf entry|"
    r"authentication failed|PAM authentication|SCRAM"
)
# How a wrong premise shows: the assertion's division by zero (a refused write) or a unique
# violation (an event already in the ledger).
PREMISE_MISSED = {"22012", "23505"}

# Named statements this runtime prepared on each connection: (SQL, parameter types) -> name.
# Weak keys: a replaced connection takes its names with it.
_PREPARED: weakref.WeakKeyDictionary[Any, dict[tuple[bytes, tuple[int, ...]], bytes]] = (
    weakref.WeakKeyDictionary()
)
MAX_PREPARED = 400  # per connection; statements beyond it are sent unnamed (planned each time)
_STALE_PREPARED = {"26000", "0A000"}  # a name the server no longer knows; a cached plan after DDL

# Behind an RDS Proxy (SYNC_DB_PROXY=1), the limits each engine sets as SET LOCAL statements at
# the start of every transaction, instead of startup options (see PostgreSQL.engine_options).
_LOCAL_SETTINGS: weakref.WeakKeyDictionary[Engine, tuple[bytes, ...]] = weakref.WeakKeyDictionary()


def _timeouts(limits: Limits) -> dict[str, int]:
    """The server-side limits of the runtime's sessions, in milliseconds.
    idle_in_transaction_session_timeout: should a client ever vanish inside a transaction,
    the server ends it rather than keep its locks."""
    return {
        "lock_timeout": limits.lock_timeout_ms,
        "statement_timeout": limits.statement_timeout_ms,
        "idle_in_transaction_session_timeout": max(60_000, 2 * limits.statement_timeout_ms),
    }


def set_local_statements(limits: Limits) -> tuple[str, ...]:
    """The limits as SET LOCAL statements (they last until the transaction ends)."""
    return tuple(f"SET LOCAL {name} = {value}" for name, value in _timeouts(limits).items())


class PostgreSQL(OnConflictUpserts):
    name = "postgresql"
    url_scheme = "postgresql+psycopg"
    requirement = "psycopg[binary]>=3.1.18,<4"
    measured_events_per_second = 3400.0
    text_holds_nul = False  # text and jsonb refuse U+0000
    binds_arrays = True
    min_connect_seconds = 2.0  # libpq treats any connect timeout below 2 s as 2 s
    default_port = 5432

    # -- statements -----------------------------------------------------------------------

    def insert(self, table: Table) -> Insert:
        return pg_insert(table)

    def bounded_delete(self, table: Table, where: Any, key: Sequence[str], limit: int) -> ClauseElement:
        """The batch's keys chosen in a MATERIALIZED CTE (a LIMIT inside `IN (subquery)` may be
        evaluated again per row and delete more than `limit`), FOR UPDATE SKIP LOCKED: a prune
        batch never waits for a row the sync holds."""
        from sqlalchemy import delete, select, tuple_

        columns = [table.c[k] for k in key]
        chosen = (
            select(*columns)
            .where(where)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .cte("prune_batch")
            .prefix_with("MATERIALIZED")
        )
        return delete(table).where(where, tuple_(*columns).in_(select(*[chosen.c[k] for k in key])))

    def asserted(self, write: ClauseElement, rows: int = 1) -> Any:
        """WITH w AS (<write> RETURNING 1) SELECT 1 / COUNT(*) FROM w: a write its guard
        refuses (an older version, a tombstone, a missing row) returns no row, the division
        fails, and the pipeline's transaction is rolled back with everything else it did.
        A write of several rows divides by whether it changed them all: 1 / (COUNT(*) = n)::int."""
        changed = write.returning(literal_column("1")).cte("w")  # type: ignore[attr-defined]
        divisor = "COUNT(*)" if rows == 1 else f"(COUNT(*) = {int(rows)})::int"
        return select(literal_column(f"1 / {divisor}")).select_from(changed)

    def lookup_missed(self, orig: BaseException) -> bool:
        return _sqlstate(orig) == CARDINALITY

    def json_value(self, param: Any) -> Any:
        from sqlalchemy import cast

        return cast(param, JSONB())

    # -- connections ----------------------------------------------------------------------

    def engine_options(self, limits: Limits, *, proxy: bool = False) -> EngineOptions:
        connect_args: dict[str, Any] = {
            "connect_timeout": max(2, math.ceil(limits.connect_timeout_s)),
            "application_name": "ddb-sql-sync",
            # A dead peer is found while waiting for an answer (keepalives) or while sent
            # data is never acknowledged (tcp_user_timeout, milliseconds; Linux).
            "keepalives": 1,
            "keepalives_idle": limits.keepalive_idle_s,
            "keepalives_interval": limits.keepalive_interval_s,
            "keepalives_count": limits.keepalive_count,
            "tcp_user_timeout": int(limits.network_timeout_s * 1000),
        }
        if proxy:
            # RDS Proxy takes only user, database, replication, application_name,
            # client_encoding, DateStyle, TimeZone and extra_float_digits in the startup
            # message (User Guide, "Connecting to a database through RDS Proxy"), so no
            # `options`: the timeouts are SET LOCAL in every transaction instead (on_engine,
            # PsycopgPipelineSession), which RDS Proxy does not pin on. The planner settings
            # below serve named statements' cached plans only, and behind a proxy every
            # statement is unnamed, planned at each execution with its values. psycopg's own
            # prepared statements (after 5 executions of a query) are off: they pin, and
            # psycopg clears them with DEALLOCATE ALL, which pins too.
            connect_args["prepare_threshold"] = None
            return EngineOptions(connect_args=connect_args, pool=self.LAMBDA_POOL)
        # Every statement the runtime sends finds rows by a unique key (the mapped key, the
        # ledger's and the tombstones' primary keys). On a young table without statistics the
        # planner would pick sequential scans, and a prepared statement would keep that plan
        # for the life of the connection; with sequential scans off, every plan is a key
        # lookup, so each statement shape is planned once per connection (generic plans)
        # instead of on every execution. The settings apply to this connection only.
        settings = {**_timeouts(limits), "enable_seqscan": "off", "plan_cache_mode": "force_generic_plan"}
        connect_args["options"] = " ".join(f"-c {name}={value}" for name, value in settings.items())
        return EngineOptions(connect_args=connect_args, pool=self.LAMBDA_POOL)

    def driver_tls_args(self, tls: Tls) -> dict[str, Any]:
        if tls.mode is TlsMode.REQUIRE:
            return {"sslmode": "require"}
        # libpq 16 and later read sslrootcert=system as the system's trust store.
        return {"sslmode": "verify-full", "sslrootcert": tls.ca_bundle or "system"}

    def on_engine(self, engine: Engine, limits: Limits, *, proxy: bool = False) -> None:
        """A new connection never waits past the batch's deadline (runtime.deadline.CURRENT):
        its connect timeout is clamped to the time left (libpq: whole seconds, at least 2).
        Behind an RDS Proxy, every transaction opened through SQLAlchemy (the per-message
        path, pruning) starts with the limits as SET LOCAL statements, in the one round trip
        that opens it (psycopg sends its BEGIN first)."""

        @event.listens_for(engine, "do_connect")
        def _clamp(_dialect: Any, _record: Any, _args: Any, params: dict[str, Any]) -> None:
            at = CURRENT.get()
            if at is None:
                return
            left = at - time.monotonic() - 0.25
            params["connect_timeout"] = max(2, int(min(limits.connect_timeout_s, left)))

        if not proxy:
            return
        statements = set_local_statements(limits)
        _LOCAL_SETTINGS[engine] = tuple(s.encode() for s in statements)
        text = "; ".join(statements)

        @event.listens_for(engine, "begin")
        def _local_limits(conn: Connection) -> None:
            conn.exec_driver_sql(text)

    def session(self, conn: Connection, compiled_cache: dict[Any, Any]) -> FastSession:
        if conn.dialect.driver == "psycopg":
            return PsycopgPipelineSession(
                conn, compiled_cache, local_settings=_LOCAL_SETTINGS.get(conn.engine)
            )
        return FastSession(conn)

    def interrupter(self, driver_connection: Any) -> Callable[[], None] | None:
        pgconn = getattr(driver_connection, "pgconn", None)  # psycopg 3
        if pgconn is None:
            return None
        return lambda: shutdown_socket(pgconn.socket)

    # -- errors ---------------------------------------------------------------------------

    def login_refused(self, orig: BaseException, reason: str) -> Classified | None:
        state = _sqlstate(orig)
        if state is not None and state.startswith(AUTH_CLASS):
            return login_refused(reason)
        if state is None and AUTH_TEXT.search(str(orig)):
            return login_refused(reason)
        return None

    def classify_error(
        self, exc: BaseException, orig: BaseException, reason: str, foreign_key_transient: bool
    ) -> Classified:
        state = _sqlstate(orig)
        if state is None:
            return super().classify_error(exc, orig, reason, foreign_key_transient)
        reason = f"{state} {reason}"
        if state in FOREIGN_KEY:
            return foreign_key(reason, foreign_key_transient)
        if state in UNIQUE:
            return Classified(PERMANENT, reason, unique=True)
        if state[:2] in TRANSIENT_CLASSES:
            ended = state[:2] == "08" or state.startswith("57P")
            return Classified(TRANSIENT, reason, ended, lock=state in LOCK)
        if state in TRANSIENT_CODES:
            return Classified(TRANSIENT, reason, lock=state in LOCK)
        return Classified(PERMANENT, reason)


def _sqlstate(orig: BaseException) -> str | None:
    state = getattr(orig, "sqlstate", None) or getattr(getattr(orig, "diag", None), "sqlstate", None)
    return state if isinstance(state, str) else None


class PsycopgPipelineSession(DriverSession):
    """PostgreSQL through psycopg 3's libpq binding in pipeline mode: every statement of a
    phase queued, one Sync, one flush, then every result: one network round trip.

    Why the libpq level rather than psycopg's `Connection.pipeline()`: the latter waits on
    the socket once per statement (a poll and a send each), which measured 3-4x the client
    CPU of this loop for a batch (benchmarks/RESULTS.md). Values are still adapted by
    psycopg's own Transformer and travel as bound parameters of named prepared statements,
    so the server parses and plans each statement shape once per connection (the
    connection's planner settings keep those plans to key lookups, PostgreSQL.engine_options).
    No BEGIN or COMMIT is sent. The writes' pipeline is one implicit transaction: the server
    commits everything before the Sync at once, or, when any statement fails, rolls it all
    back and skips the rest (PostgreSQL protocol, "Pipelining"; libpq, "Pipeline Mode").
    The reads need no transaction of their own: under READ COMMITTED each statement sees
    its own snapshot either way, and every write keeps its guards in the SQL (a row changed
    since it was read makes the guard refuse the write, and a ledger row written meanwhile
    fails the insert and sends the batch to the per-message path). psycopg's own
    transaction handling (autocommit off) never sends anything for the fast path.

    Behind an RDS Proxy (`local_settings` given) every statement is unnamed, since a named
    one is session state, and each pipeline is an explicit transaction that opens with the
    limits as SET LOCAL statements (SET LOCAL outside a transaction block makes the server
    warn in its log on every batch): BEGIN, the settings, the statements, COMMIT, in the same
    single round trip. A failed statement leaves that transaction aborted at the Sync, so
    one more round trip rolls it back before the error is raised.
    """

    optimistic = True  # the implicit transaction takes a failed write's whole pipeline back
    merges_rows = True  # a run of inserts or upserts goes as multi-row statements (Statements.merged_items)

    def __init__(
        self,
        conn: Connection,
        compiled_cache: dict[Any, Any],
        *,
        local_settings: tuple[bytes, ...] | None = None,
    ) -> None:
        super().__init__(conn, compiled_cache)
        from psycopg.adapt import PyFormat, Transformer

        self.pg = self.raw.pgconn
        self.tx = Transformer(self.raw)
        self._auto = PyFormat.AUTO
        names = _PREPARED.get(self.raw)
        if names is None:
            names = _PREPARED[self.raw] = {}
        self.names = names
        self.named = local_settings is None
        self._head: tuple[bytes, ...] = () if local_settings is None else (b"BEGIN", *local_settings)
        self._tail: tuple[bytes, ...] = () if local_settings is None else (b"COMMIT",)
        self._read = False  # writes sent before any read are the optimistic attempt

    def _compile(self, items: Sequence[Item]) -> list[tuple[Any, dict[str, Any] | None]]:
        cache = self._cache
        dollar = cache.get("positional dialect")
        if dollar is None:  # the connection's dialect, placeholders as $1..$n
            dollar = cache["positional dialect"] = copy.copy(self.dialect)
            dollar.paramstyle, dollar.positional = "numeric_dollar", True
        return [(positional(cache, stmt, dollar), params) for stmt, params in items]  # type: ignore[misc]

    def read(self, items: Sequence[Item]) -> list[Result]:
        self._read = True
        return self._run(self._compile(items), results=True, items=len(items))

    def write_commit(self, items: Sequence[Item]) -> list[Result]:
        try:
            self._run(self._compile(items), results=False, items=len(items))
        except DBAPIError as exc:
            missed = getattr(exc.orig, "sqlstate", None) in PREMISE_MISSED
            if missed and not self._read and not exc.connection_invalidated:
                raise PremiseMissed(str(exc.orig)) from exc
            raise
        return []

    def abort(self) -> None:
        """Nothing to roll back: a pipeline's implicit transaction ends at its Sync, and a
        session that could not read up to the Sync has dropped the connection."""

    def _send(self, statements: list[tuple[Any, dict[str, Any] | None]], results: bool) -> list[Result]:
        from psycopg import errors
        from psycopg.pq import ExecStatus, TransactionStatus

        tx, auto = self.tx, self._auto
        # Bind first: every value is adapted before anything is queued, so a value psycopg
        # cannot send fails with the connection untouched (BindError).
        bound: list[tuple[PositionalCompiled, Sequence[Any], tuple[int, ...], Any]] = []
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
            if self._tail and error is not None and self.pg.transaction_status != TransactionStatus.IDLE:
                self._rollback(errors, ExecStatus)  # the explicit transaction was left aborted
        except BaseException:
            self.broken = True
            raise
        if error is not None:  # the server's own error: every result was read, the connection is idle
            raise error
        return out

    def _rollback(self, errors: Any, status_of: Any) -> None:
        pg = self.pg
        pg.send_query(b"ROLLBACK")
        self._flush()
        while (res := self._result()) is not None:
            if res.status != status_of.COMMAND_OK:
                raise errors.error_from_result(res, encoding=self.raw.info.encoding)

    def _exchange(
        self, bound: list[Any], results: bool, errors: Any, status_of: Any
    ) -> tuple[list[Result], Exception | None]:
        pg, names = self.pg, self.names
        # (index of the statement, -1 for the session's own; the name a PREPARE queued for
        # it, None for its execution)
        queue: list[tuple[int, bytes | None]] = []
        pg.enter_pipeline_mode()
        for sql in self._head:
            pg.send_query_params(sql, None)
            queue.append((-1, None))
        for i, (c, dumped, types, formats) in enumerate(bound):
            key = (c.sql, types)
            name = names.get(key)
            if name is None and self.named and len(names) < MAX_PREPARED:
                name = b"dss_%d" % len(names)
                pg.send_prepare(name, c.sql, param_types=types)
                queue.append((i, name))
                names[key] = name  # taken back below if the PREPARE does not succeed
            if name is None:
                pg.send_query_params(c.sql, dumped, param_types=types, param_formats=formats)
            else:
                pg.send_query_prepared(name, dumped, param_formats=formats)
            queue.append((i, None))
        for sql in self._tail:
            pg.send_query_params(sql, None)
            queue.append((-1, None))
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
                    if results and new_name is None and i >= 0:
                        tx.set_pgresult(res)
                        out[i] = tx.load_rows(0, res.ntuples, tuple)
                elif status == status_of.COMMAND_OK:
                    if results and new_name is None and i >= 0:
                        out[i] = res.command_tuples or 0
                else:
                    if new_name is not None:  # never prepared: forget the name
                        self._forget(new_name)
                    if status == status_of.FATAL_ERROR and error is None:
                        error = errors.error_from_result(res, encoding=encoding)
                        mark_statement(error, i if i >= 0 else None)
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

    def _result(self) -> PGresult | None:
        pg = self.pg
        while pg.is_busy():
            self._wait(write=False)
            pg.consume_input()
        result: PGresult | None = pg.get_result()
        return result

    def _wait(self, *, write: bool) -> bool:
        """Block until the socket is readable (or writable); True when readable."""
        try:
            fd = self.pg.socket
            r, _, _ = io_select.select([fd], [fd] if write else [], [])
        except (OSError, ValueError) as exc:  # the socket went away under us
            import psycopg

            raise psycopg.OperationalError(f"waiting on the connection failed: {exc}") from exc
        return bool(r)


DIALECT = PostgreSQL()
