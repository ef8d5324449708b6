"""The database dialects and the planner, without a database: the SQL each dialect compiles
for each statement shape (as SQLAlchemy tests its own compiler), the plan for each state
(state in, plan out), how each dialect classifies its driver's errors, and that no other
module tells the databases apart by name. The same statements run against real PostgreSQL,
MariaDB and SQLite in test_runtime_scenarios.py and the fault tests."""

from __future__ import annotations

import ast
import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import psycopg.errors
import pymysql
import pytest
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from runtime import dialects
from runtime.decode import Change, SqsRecord, Write, row_key
from runtime.dialects.base import Dialect
from runtime.kinds import Action, IfMissing, Kind, OpKind, Status
from runtime.plan import ABSENT, State, plan_change, version_text
from runtime.registry import Registry, TableSpec, parse_registry
from runtime.statements import Statements

ROOT = Path(__file__).resolve().parent.parent


def _registry(dialect: str = "postgresql") -> Registry:
    columns = [
        {"name": "account_id", "type": "string", "length": 36, "nullable": False, "fields": ["accountID"]},
        {"name": "name", "type": "string", "length": 100, "fields": ["name"]},
        {"name": "balance", "type": "decimal", "precision": 12, "scale": 2, "fields": ["balance"]},
        {"name": "profile", "type": "json", "fields": ["profile"]},
    ]
    fields = ("accountID", "name", "balance", "profile", "eventID", "rev")
    return parse_registry(
        {
            "registry_version": 1,
            "database": {
                "dialect": dialect,
                "ledger_table": "sync_ledger",
                "tombstone_table": "sync_tombstones",
            },
            "queues": {"accounts-sync.fifo": "accounts"},
            "entities": {
                "accounts": {
                    "queue": "accounts-sync.fifo",
                    "consumer": {"batch_size": 10},
                    "routing": {"message_group_id": "accountID", "deduplication_id": "eventID"},
                    "fields": {n: {"path": [n], "type": "S", "carry": "value"} for n in fields},
                    "event_id_field": "eventID",
                    "type_from": ["eventName"],
                    "rules": {"INSERT": [{"action": "upsert", "table": "accounts", "columns": []}]},
                    "tables": {
                        "accounts": {
                            "key": ["account_id"],
                            "columns": columns,
                            "version": {"column": "row_version", "fields": ["rev"], "kind": "integer"},
                            "soft_delete": {"column": "deleted_at", "kind": "timestamp"},
                            "tombstones": True,
                        }
                    },
                }
            },
        }
    )


REGISTRY = _registry()
ACCOUNTS: TableSpec = REGISTRY.entities["accounts"].tables["accounts"]


def _sql(dialect_name: str, kind: OpKind, columns: tuple[str, ...] = ()) -> str:
    dialect = dialects.for_name(dialect_name)
    stmt = Statements(REGISTRY, dialect).statement(
        kind, None if kind is OpKind.TOMBSTONE else ACCOUNTS, columns
    )
    compiler = dialect.sqlalchemy_dialect()
    compiler.paramstyle, compiler.positional = "named", False  # bind names shown, as :name
    return " ".join(str(stmt.compile(dialect=compiler)).split())


# --- statements: the SQL per dialect ---------------------------------------------------

TOMB_GUARD = (
    "WHERE NOT (EXISTS (SELECT * FROM sync_tombstones WHERE sync_tombstones.table_name = {t} "
    "AND sync_tombstones.row_key = {r} AND sync_tombstones.version >= {v}))"
)
PG_VALUES = (
    "SELECT :value_account_id::VARCHAR AS anon_1, :value_name::VARCHAR AS anon_2, :value_balance AS anon_3, "
    "CAST(:value_profile::VARCHAR AS JSONB) AS anon_4, :version::BIGINT AS anon_5, "
    ":soft_deleted::TIMESTAMP WITH TIME ZONE AS anon_6 "
    + TOMB_GUARD.format(t=":tomb_table::VARCHAR", r=":tomb_row::VARCHAR", v=":tomb_version::VARCHAR")
)
PLAIN_VALUES = (
    "SELECT :value_account_id AS anon_1, :value_name AS anon_2, :value_balance AS anon_3, "
    ":value_profile AS anon_4, :version AS anon_5, :soft_deleted AS anon_6 "
)
PLAIN_GUARD = TOMB_GUARD.format(t=":tomb_table", r=":tomb_row", v=":tomb_version")
COLUMNS = "INSERT INTO accounts (account_id, name, balance, profile, row_version, deleted_at) "
ON_CONFLICT = (
    " ON CONFLICT (account_id) DO UPDATE SET name = excluded.name, balance = excluded.balance, "
    "profile = excluded.profile, row_version = excluded.row_version, deleted_at = excluded.deleted_at "
    "WHERE accounts.row_version IS NULL OR accounts.row_version < excluded.row_version"
)

STATEMENTS: list[tuple[str, OpKind, tuple[str, ...], str]] = [
    # PostgreSQL: typed binds, JSON cast to jsonb, ON CONFLICT guarded by the version.
    ("postgresql", OpKind.INSERT, (), COLUMNS + PG_VALUES),
    ("postgresql", OpKind.UPSERT, (), COLUMNS + PG_VALUES + ON_CONFLICT),
    (
        "postgresql",
        OpKind.UPDATE,
        ("name", "balance"),
        "UPDATE accounts SET name=:value_name::VARCHAR, balance=:value_balance, row_version=:version::BIGINT "
        "WHERE accounts.account_id = :key_account_id::VARCHAR "
        "AND (accounts.row_version IS NULL OR accounts.row_version < :version::BIGINT)",
    ),
    (
        "postgresql",
        OpKind.SOFT_DELETE,
        (),
        "UPDATE accounts SET row_version=:version::BIGINT, deleted_at=:soft_deleted::TIMESTAMP WITH TIME ZONE "
        "WHERE accounts.account_id = :key_account_id::VARCHAR "
        "AND (accounts.row_version IS NULL OR accounts.row_version <= :version::BIGINT)",
    ),
    (
        "postgresql",
        OpKind.DELETE,
        (),
        "DELETE FROM accounts WHERE accounts.account_id = :key_account_id::VARCHAR "
        "AND (accounts.row_version IS NULL OR accounts.row_version <= :version::BIGINT)",
    ),
    (
        "postgresql",
        OpKind.TOMBSTONE,
        (),
        "INSERT INTO sync_tombstones (table_name, row_key, version) "
        "VALUES (:tomb_table::VARCHAR, :tomb_row::VARCHAR, :tomb_version::VARCHAR) "
        "ON CONFLICT (row_key, table_name) DO UPDATE SET version = excluded.version, "
        "deleted_at = CURRENT_TIMESTAMP WHERE sync_tombstones.version < excluded.version",
    ),
    # MySQL: INSERT ... SELECT needs FROM DUAL; an existing row is updated (no ON DUPLICATE KEY
    # for mapped tables); the tombstone keeps the newer version, the version assigned last.
    ("mysql", OpKind.INSERT, (), COLUMNS + PLAIN_VALUES + "FROM DUAL " + PLAIN_GUARD),
    (
        "mysql",
        OpKind.UPSERT_AS_UPDATE,
        (),
        "UPDATE accounts SET name=:value_name, balance=:value_balance, profile=:value_profile, "
        "row_version=:version, deleted_at=:soft_deleted WHERE accounts.account_id = :key_account_id "
        "AND (accounts.row_version IS NULL OR accounts.row_version < :version)",
    ),
    (
        "mysql",
        OpKind.TOMBSTONE,
        (),
        "INSERT INTO sync_tombstones (table_name, row_key, version) VALUES (:tomb_table, :tomb_row, :tomb_version) "
        "ON DUPLICATE KEY UPDATE deleted_at = CASE WHEN (sync_tombstones.version < VALUES(version)) "
        "THEN CURRENT_TIMESTAMP ELSE sync_tombstones.deleted_at END, version = CASE WHEN "
        "(sync_tombstones.version < VALUES(version)) THEN VALUES(version) ELSE sync_tombstones.version END",
    ),
    # SQLite: PostgreSQL's ON CONFLICT form, untyped binds.
    ("sqlite", OpKind.UPSERT, (), COLUMNS + PLAIN_VALUES + PLAIN_GUARD + ON_CONFLICT),
    (
        "sqlite",
        OpKind.DELETE,
        (),
        "DELETE FROM accounts WHERE accounts.account_id = :key_account_id "
        "AND (accounts.row_version IS NULL OR accounts.row_version <= :version)",
    ),
    (
        "sqlite",
        OpKind.TOMBSTONE,
        (),
        "INSERT INTO sync_tombstones (table_name, row_key, version) VALUES (:tomb_table, :tomb_row, :tomb_version) "
        "ON CONFLICT (row_key, table_name) DO UPDATE SET version = excluded.version, "
        "deleted_at = CURRENT_TIMESTAMP WHERE sync_tombstones.version < excluded.version",
    ),
]


@pytest.mark.parametrize(
    ("dialect", "kind", "columns", "sql"), STATEMENTS, ids=[f"{d}-{k}" for d, k, _, _ in STATEMENTS]
)
def test_each_dialect_compiles_each_statement_shape(
    dialect: str, kind: OpKind, columns: tuple[str, ...], sql: str
) -> None:
    assert _sql(dialect, kind, columns) == sql


def test_mysql_has_no_upsert_statement_for_mapped_tables() -> None:
    # ON DUPLICATE KEY UPDATE would fire on any unique key: the planner never asks for it
    with pytest.raises(NotImplementedError, match="mysql has no upsert"):
        _sql("mysql", OpKind.UPSERT)


def test_postgresql_asserts_a_write_in_the_sql() -> None:
    dialect = dialects.for_name("postgresql")
    stmt = Statements(REGISTRY, dialect).asserted(OpKind.DELETE, ACCOUNTS)
    sql = " ".join(str(stmt.compile(dialect=dialect.sqlalchemy_dialect())).split())
    assert sql.startswith("WITH w AS (DELETE FROM accounts WHERE accounts.account_id = ")
    assert sql.endswith("RETURNING 1) SELECT 1 / COUNT(*) FROM w")


def test_the_reads_name_their_binds_by_what_they_hold() -> None:
    dialect = dialects.for_name("sqlite")
    stmts = Statements(REGISTRY, dialect)
    compiler = dialect.sqlalchemy_dialect()
    compiler.paramstyle, compiler.positional = "named", False

    def sql(stmt: Any) -> str:
        return " ".join(str(stmt.compile(dialect=compiler)).split())

    assert sql(stmts.ledger_read(2)) == (
        "SELECT sync_ledger.event_id FROM sync_ledger WHERE sync_ledger.entity = :entity "
        "AND sync_ledger.event_id IN (:event_id_0, :event_id_1)"
    )
    assert sql(stmts.rows_read(ACCOUNTS, 2)) == (
        "SELECT accounts.account_id, accounts.row_version FROM accounts "
        "WHERE accounts.account_id IN (:row0_account_id, :row1_account_id)"
    )
    assert sql(stmts.ledger_insert(1)) == (
        "INSERT INTO sync_ledger (entity, event_id, message_id, outcome) "
        "VALUES (:entity_0, :event_id_0, :message_id_0, :outcome_0)"
    )


# --- the planner: state in, plan out ---------------------------------------------------


def _change(*writes: tuple[Action, int | None, IfMissing], event_id: str = "ev-1") -> Change:
    record = SqsRecord("m-1", "A-1", "{}", 1, "accounts-sync.fifo", {})
    key = ("A-1",)
    return Change(
        record,
        REGISTRY.entities["accounts"],
        event_id,
        "MODIFY",
        [
            Write(
                action,
                ACCOUNTS,
                key,
                row_key(ACCOUNTS, key),
                {"account_id": "A-1", "name": "x"},
                version,
                if_missing,
            )
            for action, version, if_missing in writes
        ],
    )


ROW = (ACCOUNTS.qualified, '["A-1"]')
FAIL, IGNORE, UPSERT = IfMissing.FAIL, IfMissing.IGNORE, IfMissing.UPSERT


def _state(
    row: tuple[bool | None, Any] | None = None, tomb: int | None = None, ledger: bool = False
) -> State:
    state = State()
    if row is not None:
        state.rows[ROW] = row
    if tomb is not None:
        state.tombs[ROW] = version_text(tomb)
    if ledger:
        state.ledger.add(("accounts", "ev-1"))
    return state


PLANS: list[tuple[str, str, Change, State, Status, list[OpKind]]] = [
    # (case, dialect, change, state, status, statement kinds)
    (
        "event in the ledger",
        "postgresql",
        _change((Action.UPSERT, 5, FAIL)),
        _state(ledger=True),
        Status.DUPLICATE,
        [],
    ),
    ("no writes for its type", "postgresql", _change(), _state(), Status.IGNORED, []),
    (
        "upsert, nothing known",
        "postgresql",
        _change((Action.UPSERT, 5, FAIL)),
        _state(),
        Status.APPLIED,
        [OpKind.UPSERT],
    ),
    (
        "upsert, row newer",
        "postgresql",
        _change((Action.UPSERT, 5, FAIL)),
        _state((True, 7)),
        Status.STALE,
        [],
    ),
    (
        "upsert, row as new",
        "postgresql",
        _change((Action.UPSERT, 5, FAIL)),
        _state((True, 5)),
        Status.STALE,
        [],
    ),
    (
        "upsert, row older",
        "postgresql",
        _change((Action.UPSERT, 5, FAIL)),
        _state((True, 4)),
        Status.APPLIED,
        [OpKind.UPSERT],
    ),
    (
        "upsert, tombstone as new",
        "postgresql",
        _change((Action.UPSERT, 5, FAIL)),
        _state(ABSENT, tomb=5),
        Status.STALE,
        [],
    ),
    (
        "upsert, tombstone older",
        "postgresql",
        _change((Action.UPSERT, 5, FAIL)),
        _state(ABSENT, tomb=4),
        Status.APPLIED,
        [OpKind.UPSERT],
    ),
    (
        "mysql upsert, row absent",
        "mysql",
        _change((Action.UPSERT, 5, FAIL)),
        _state(ABSENT),
        Status.APPLIED,
        [OpKind.INSERT],
    ),
    (
        "mysql upsert, row older",
        "mysql",
        _change((Action.UPSERT, 5, FAIL)),
        _state((True, 4)),
        Status.APPLIED,
        [OpKind.UPSERT_AS_UPDATE],
    ),
    (
        "insert",
        "postgresql",
        _change((Action.INSERT, 5, FAIL)),
        _state(ABSENT),
        Status.APPLIED,
        [OpKind.INSERT],
    ),
    (
        "update, row absent, fail",
        "postgresql",
        _change((Action.UPDATE, 5, FAIL)),
        _state(ABSENT),
        Status.FAILED,
        [],
    ),
    (
        "update, row absent, ignore",
        "postgresql",
        _change((Action.UPDATE, 5, IGNORE)),
        _state(ABSENT),
        Status.SKIPPED,
        [],
    ),
    (
        "update, row absent, upsert",
        "postgresql",
        _change((Action.UPDATE, 5, UPSERT)),
        _state(ABSENT),
        Status.APPLIED,
        [OpKind.UPSERT],
    ),
    (
        "update, row absent, upsert, tombstone newer",
        "postgresql",
        _change((Action.UPDATE, 5, UPSERT)),
        _state(ABSENT, tomb=6),
        Status.STALE,
        [],
    ),
    (
        "update, row as new",
        "postgresql",
        _change((Action.UPDATE, 5, FAIL)),
        _state((True, 5)),
        Status.STALE,
        [],
    ),
    (
        "update, row older",
        "postgresql",
        _change((Action.UPDATE, 5, FAIL)),
        _state((True, 4)),
        Status.APPLIED,
        [OpKind.UPDATE],
    ),
    (
        "soft delete, row as new",
        "postgresql",
        _change((Action.SOFT_DELETE, 5, FAIL)),
        _state((True, 5)),
        Status.APPLIED,
        [OpKind.SOFT_DELETE],
    ),
    (
        "soft delete, row newer",
        "postgresql",
        _change((Action.SOFT_DELETE, 5, FAIL)),
        _state((True, 6)),
        Status.STALE,
        [],
    ),
    (
        "soft delete, row absent, ignore: its tombstone kept",
        "postgresql",
        _change((Action.SOFT_DELETE, 5, IGNORE)),
        _state(ABSENT),
        Status.SKIPPED,
        [OpKind.TOMBSTONE],
    ),
    (
        "delete, row as new",
        "postgresql",
        _change((Action.DELETE, 5, FAIL)),
        _state((True, 5)),
        Status.APPLIED,
        [OpKind.DELETE, OpKind.TOMBSTONE],
    ),
    (
        "delete, row newer",
        "postgresql",
        _change((Action.DELETE, 5, FAIL)),
        _state((True, 6)),
        Status.STALE,
        [],
    ),
    (
        "delete, row absent, tombstone newer",
        "postgresql",
        _change((Action.DELETE, 5, FAIL)),
        _state(ABSENT, tomb=6),
        Status.STALE,
        [],
    ),
    # Writes of one message see each other: the delete removes what the upsert wrote.
    (
        "upsert then delete in one message",
        "postgresql",
        _change((Action.UPSERT, 5, FAIL), (Action.DELETE, 5, FAIL)),
        _state(ABSENT),
        Status.APPLIED,
        [OpKind.UPSERT, OpKind.DELETE, OpKind.TOMBSTONE],
    ),
    (
        "delete then update in one message",
        "postgresql",
        _change((Action.DELETE, 5, FAIL), (Action.UPDATE, 6, FAIL)),
        _state((True, 4)),
        Status.FAILED,
        [],
    ),
]


@pytest.mark.parametrize(
    ("case", "dialect", "change", "state", "status", "kinds"), PLANS, ids=[p[0] for p in PLANS]
)
def test_the_plan_for_each_state(
    case: str, dialect: str, change: Change, state: State, status: Status, kinds: list[OpKind]
) -> None:
    before = (set(state.ledger), dict(state.rows), dict(state.tombs))
    plan = plan_change(change, state, dialects.for_name(dialect))
    assert (plan.status, [op.kind for op in plan.ops]) == (status, kinds)
    # pure: the state it was given is left as it was
    assert (state.ledger, state.rows, state.tombs) == before


def test_a_failed_plan_says_what_to_set() -> None:
    plan = plan_change(_change((Action.UPDATE, 5, FAIL)), _state(ABSENT), dialects.for_name("postgresql"))
    assert plan.reason == (
        'table accounts: no row with key ["A-1"] to update (if_missing: fail; '
        "set if_missing: ignore or upsert to accept this)"
    )


def test_a_plan_carries_the_values_under_the_statements_bind_names() -> None:
    plan = plan_change(_change((Action.DELETE, 5, FAIL)), _state((True, 5)), dialects.for_name("postgresql"))
    delete, tombstone = plan.ops
    assert delete.params == {"key_account_id": "A-1", "version": 5}
    assert tombstone.params == {
        "tomb_table": "accounts",
        "tomb_row": '["A-1"]',
        "tomb_version": version_text(5),
    }
    assert plan.rows == {ROW: ABSENT} and plan.tombs == {ROW: version_text(5)}


# --- error classification --------------------------------------------------------------


def _pg(sqlstate: str, message: str = "boom") -> BaseException:
    return psycopg.errors.lookup(sqlstate)(message)


def _wrapped(
    orig: BaseException, cls: type[DBAPIError] = OperationalError, invalidated: bool = False
) -> DBAPIError:
    return cls("SELECT 1", None, orig, connection_invalidated=invalidated)  # type: ignore[arg-type]


CLASSIFIED: list[tuple[str, str, BaseException, Kind, dict[str, bool]]] = [
    # (case, dialect, error, kind, flags that must hold)
    ("pg deadlock", "postgresql", _wrapped(_pg("40P01")), Kind.TRANSIENT, {"whole_transaction": False}),
    ("pg lock timeout", "postgresql", _wrapped(_pg("55P03")), Kind.TRANSIENT, {"lock": True}),
    ("pg statement timeout", "postgresql", _wrapped(_pg("57014")), Kind.TRANSIENT, {"lock": True}),
    ("pg admin shutdown", "postgresql", _wrapped(_pg("57P01")), Kind.TRANSIENT, {"whole_transaction": True}),
    ("pg unique", "postgresql", _wrapped(_pg("23505")), Kind.PERMANENT, {"unique": True}),
    ("pg foreign key", "postgresql", _wrapped(_pg("23503")), Kind.TRANSIENT, {}),
    ("pg check", "postgresql", _wrapped(_pg("23514")), Kind.PERMANENT, {}),
    ("pg bad value", "postgresql", _wrapped(_pg("22P02")), Kind.PERMANENT, {}),
    ("pg missing table", "postgresql", _wrapped(_pg("42P01")), Kind.TRANSIENT, {}),
    ("pg password", "postgresql", _wrapped(_pg("28P01")), Kind.TRANSIENT, {"auth": True}),
    (
        "pg refused login (libpq text, no SQLSTATE)",
        "postgresql",
        _wrapped(psycopg.OperationalError('FATAL:  password authentication failed for user "sync"')),
        Kind.TRANSIENT,
        {"auth": True},
    ),
    (
        "pg connection lost",
        "postgresql",
        _wrapped(psycopg.OperationalError("server closed the connection"), invalidated=True),
        Kind.TRANSIENT,
        {"whole_transaction": True},
    ),
    (
        "mysql deadlock",
        "mysql",
        _wrapped(pymysql.err.OperationalError(1213, "Deadlock found")),
        Kind.TRANSIENT,
        {"whole_transaction": True},
    ),
    (
        "mysql lock wait",
        "mysql",
        _wrapped(pymysql.err.OperationalError(1205, "Lock wait timeout")),
        Kind.TRANSIENT,
        {"lock": True, "whole_transaction": False},
    ),
    (
        "mysql gone away",
        "mysql",
        _wrapped(pymysql.err.OperationalError(2006, "gone away")),
        Kind.TRANSIENT,
        {"whole_transaction": True},
    ),
    (
        "mysql duplicate",
        "mysql",
        _wrapped(pymysql.err.IntegrityError(1062, "Duplicate entry 'x' for key 'PRIMARY'"), IntegrityError),
        Kind.PERMANENT,
        {"unique": True},
    ),
    (
        "mysql foreign key",
        "mysql",
        _wrapped(pymysql.err.IntegrityError(1452, "Cannot add a child row"), IntegrityError),
        Kind.TRANSIENT,
        {},
    ),
    (
        "mysql data too long",
        "mysql",
        _wrapped(pymysql.err.DataError(1406, "Data too long")),
        Kind.PERMANENT,
        {},
    ),
    (
        "mysql access denied",
        "mysql",
        _wrapped(pymysql.err.OperationalError(1045, "Access denied")),
        Kind.TRANSIENT,
        {"auth": True},
    ),
    (
        "sqlite unique",
        "sqlite",
        _wrapped(sqlite3.IntegrityError("UNIQUE constraint failed: t.k"), IntegrityError),
        Kind.PERMANENT,
        {"unique": True},
    ),
    (
        "sqlite foreign key",
        "sqlite",
        _wrapped(sqlite3.IntegrityError("FOREIGN KEY constraint failed"), IntegrityError),
        Kind.TRANSIENT,
        {},
    ),
    (
        "sqlite locked",
        "sqlite",
        _wrapped(sqlite3.OperationalError("database is locked")),
        Kind.TRANSIENT,
        {"lock": True},
    ),
    (
        "sqlite interrupted",
        "sqlite",
        _wrapped(sqlite3.OperationalError("interrupted")),
        Kind.TRANSIENT,
        {"whole_transaction": True},
    ),
    (
        "sqlite not null",
        "sqlite",
        _wrapped(sqlite3.IntegrityError("NOT NULL constraint failed: t.x"), IntegrityError),
        Kind.PERMANENT,
        {},
    ),
]


@pytest.mark.parametrize(
    ("case", "dialect", "error", "kind", "flags"), CLASSIFIED, ids=[c[0] for c in CLASSIFIED]
)
def test_each_dialect_classifies_its_drivers_errors(
    case: str, dialect: str, error: BaseException, kind: Kind, flags: dict[str, bool]
) -> None:
    c = dialects.for_name(dialect).classify(error)
    assert c.kind is kind, c
    assert {flag: getattr(c, flag) for flag in flags} == flags, c


def test_a_foreign_key_violation_is_permanent_when_the_mapping_says_so() -> None:
    error = _wrapped(_pg("23503"))
    assert dialects.for_name("postgresql").classify(error, foreign_key_transient=False).kind is Kind.PERMANENT


# --- one object per database -----------------------------------------------------------


def test_every_database_name_finds_its_dialect() -> None:
    assert dialects.for_name("mariadb") is dialects.for_name("mysql")
    assert dialects.for_secret_engine("aurora-postgresql") is dialects.for_name("postgresql")
    assert all(isinstance(dialects.for_name(n), Dialect) for n in dialects.NAMES)
    with pytest.raises(dialects.UnknownDialect, match="no dialect 'oracle'"):
        dialects.for_name("oracle")


DIALECT_NAMES = {"postgres", "postgresql", "mysql", "mariadb", "sqlite", "aurora-mysql", "aurora-postgresql"}


def _compared_names(tree: ast.AST) -> list[int]:
    """Lines where a dialect name is compared (==, !=, in, match) to something."""
    lines = []

    def names_in(node: ast.AST) -> bool:
        if isinstance(node, ast.Constant):
            return node.value in DIALECT_NAMES
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return any(names_in(e) for e in node.elts)
        return False

    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            compared = [node.left, *node.comparators]
        elif isinstance(node, ast.MatchValue):
            compared = [node.value]
        else:
            continue
        if any(names_in(n) for n in compared):
            lines.append(node.lineno)
    return lines


def test_no_dialect_name_is_compared_outside_the_dialect_modules() -> None:
    # GIVEN every module of the project but the dialects' own
    offenders = []
    packages = [p for p in ("runtime", "generator", "synctools") if (ROOT / p).is_dir()]
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.parent.name == "dialects" and path.parent.parent.name == "runtime":
                continue
            lines = _compared_names(ast.parse(path.read_text(encoding="utf-8")))
            offenders += [f"{path.relative_to(ROOT)}:{line}" for line in lines]
    # THEN none branches on a database's name: it asks the dialect (runtime.dialects)
    assert offenders == []


def test_the_name_check_finds_a_comparison() -> None:
    # the check above would see one
    assert _compared_names(
        ast.parse("if url.get_backend_name() == 'sqlite': pass\nx = n in ('mysql', 'mariadb')")
    ) == [1, 2]
