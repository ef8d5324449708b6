"""The reference DDL in build/sql/ runs on the real PostgreSQL and MariaDB, and the tables it
creates have the unique key the sync's upserts conflict on."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

REPO_ROOT = Path(__file__).resolve().parent.parent
BUILD = REPO_ROOT / "build"


def statements(dialect: str) -> list[str]:
    """The statements of build/sql/<dialect>/ledger.sql then tables.sql (comments dropped)."""
    out = []
    for name in ("ledger.sql", "tables.sql"):
        text = (BUILD / "sql" / dialect / name).read_text(encoding="utf-8")
        body = "\n".join(line for line in text.splitlines() if not line.startswith("--"))
        out += [s.strip() for s in body.split(";\n") if s.strip()]
    return out


def expected_tables() -> dict[str, dict[str, Any]]:
    """Target tables as the registry describes them (the DDL is generated from it)."""
    reg = json.loads((BUILD / "registry.json").read_text(encoding="utf-8"))
    out = {}
    for entity in reg["entities"].values():
        out.update(entity["tables"])
    return out


def unique_column_sets(inspector: sa.Inspector, table: str, schema: str | None) -> list[set[str]]:
    sets = [set(inspector.get_pk_constraint(table, schema=schema)["constrained_columns"])]
    sets += [set(u["column_names"]) for u in inspector.get_unique_constraints(table, schema=schema)]
    sets += [set(i["column_names"]) for i in inspector.get_indexes(table, schema=schema) if i["unique"]]
    return sets


def assert_tables_and_keys(engine: Engine, schema: str | None) -> None:
    inspector = sa.inspect(engine)
    names = set(inspector.get_table_names(schema=schema))
    reg = json.loads((BUILD / "registry.json").read_text(encoding="utf-8"))["database"]
    # The bookkeeping tables, keyed as the runtime's ledger and tombstone writes need.
    assert set(inspector.get_pk_constraint(reg["ledger_table"], schema=schema)["constrained_columns"]) == {
        "entity",
        "event_id",
    }
    assert set(inspector.get_pk_constraint(reg["tombstone_table"], schema=schema)["constrained_columns"]) == {
        "table_name",
        "row_key",
    }
    for table, spec in expected_tables().items():
        assert table in names, f"{table} was not created"
        columns = {c["name"] for c in inspector.get_columns(table, schema=schema)}
        written = {c["name"] for c in spec["columns"]}
        assert written <= columns
        if spec["version"]:
            assert spec["version"]["column"] in columns
        if spec["soft_delete"]:
            assert spec["soft_delete"]["column"] in columns
        assert set(spec["key"]) in unique_column_sets(inspector, table, schema), (
            f"{table}: no unique {spec['key']}"
        )
        if spec["surrogate_key"]:
            pk = inspector.get_pk_constraint(table, schema=schema)["constrained_columns"]
            assert pk == [spec["surrogate_key"]]


def assert_the_key_refuses_a_second_row(conn: Connection, schema: str | None) -> None:
    """Insert one row per table (parents first), then the same key again: the database refuses it."""
    metadata = sa.MetaData()
    metadata.reflect(conn, schema=schema)
    targets = expected_tables()
    for t in metadata.sorted_tables:
        if t.name not in targets:
            continue
        # The same values everywhere, so a child's foreign key finds the parent inserted first.
        row = {k: 1 if t.c[k].type.python_type is int else "k1" for k in targets[t.name]["key"]}
        conn.execute(t.insert().values(**row))
        with pytest.raises(sa.exc.IntegrityError), conn.begin_nested():
            conn.execute(t.insert().values(**row))


@pytest.fixture
def postgres_schema(postgres_url: str) -> Iterator[tuple[Engine, str]]:
    name = f"ddl_test_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(postgres_url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{name}"')
    try:
        yield engine, name
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{name}" CASCADE')
        engine.dispose()


@pytest.fixture
def mysql_database(mysql_url: str) -> Iterator[Engine]:
    name = f"ddl_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(mysql_url, poolclass=sa.pool.NullPool)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    engine = sa.create_engine(sa.make_url(mysql_url).set(database=name), poolclass=sa.pool.NullPool)
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP DATABASE `{name}`")
        admin.dispose()


def test_the_ddl_files_hold_every_target_table() -> None:
    # GIVEN the generated DDL  THEN each dialect creates each registry table once
    for dialect in ("postgresql", "mysql"):
        created = [s.split("(")[0].split()[-1] for s in statements(dialect) if s.startswith("CREATE TABLE")]
        assert sorted(created) == sorted([*expected_tables(), "sync_ledger", "sync_tombstones"])


@pytest.mark.postgres
def test_postgresql_ddl_creates_the_tables_with_their_unique_keys(
    postgres_schema: tuple[Engine, str],
) -> None:
    engine, schema = postgres_schema

    # WHEN build/sql/postgresql/*.sql runs in a fresh schema
    with engine.begin() as conn:
        conn.exec_driver_sql(f'SET LOCAL search_path TO "{schema}"')
        for statement in statements("postgresql"):
            conn.exec_driver_sql(statement)

    # THEN every table exists with its columns and the unique key, which refuses a duplicate
    assert_tables_and_keys(engine, schema)
    with engine.connect() as conn:
        assert_the_key_refuses_a_second_row(conn, schema)
        conn.rollback()


@pytest.mark.mysql
def test_mariadb_ddl_creates_the_tables_with_their_unique_keys(mysql_database: Engine) -> None:
    # WHEN build/sql/mysql/*.sql runs in a fresh database
    with mysql_database.begin() as conn:
        for statement in statements("mysql"):
            conn.exec_driver_sql(statement)

    # THEN every table exists with its columns and the unique key, which refuses a duplicate
    assert_tables_and_keys(mysql_database, None)
    with mysql_database.connect() as conn:
        assert_the_key_refuses_a_second_row(conn, None)
        conn.rollback()
