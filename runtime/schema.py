"""SQLAlchemy tables built from the registry: the target tables, the ledger and tombstones.

The generator compiles the same objects into the reference DDL (build/sql/), so the
runtime's statements and the DDL users apply never disagree on a type.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.engine import Dialect as SADialect
from sqlalchemy.types import TypeDecorator, TypeEngine

from runtime import dialects
from runtime.aws_limits import DYNAMODB_SEQUENCE_NUMBER_DIGITS
from runtime.coerce import decimal_limits
from runtime.kinds import SoftDeleteKind, VersionKind
from runtime.registry import ColumnSpec, Registry, TableSpec

ENTITY_TEXT = 64
EVENT_ID_TEXT = 128
ROW_KEY_TEXT = 512


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC timestamps; stored as UTC wall time where the column keeps no zone (MySQL's
    DATETIME, SQLite's text): runtime.dialects, Dialect.naive_timestamps."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: SADialect) -> TypeEngine[Any]:
        return dialect.type_descriptor(dialects.of(dialect).timestamp_type())

    def process_bind_param(self, value: datetime | None, dialect: SADialect) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            # Called for every timestamp sent: the dialect's answer is looked up once per
            # SQLAlchemy dialect class, not asked of runtime.dialects each time.
            naive = _NAIVE.get(type(dialect))
            if naive is None:
                naive = _NAIVE[type(dialect)] = dialects.of(dialect).naive_timestamps
            if naive:
                return value.astimezone(UTC).replace(tzinfo=None)
        return value


_NAIVE: dict[type[SADialect], bool] = {}


def timestamp_type() -> TypeEngine[Any]:
    return UTCDateTime()


def column_type(col: ColumnSpec) -> TypeEngine[Any]:
    t = col.type
    if t == "string":
        return String(col.length or 255)
    if t == "text":
        return Text()
    if t == "integer":
        return Integer()
    if t == "bigint":
        return BigInteger()
    if t == "smallint":
        return SmallInteger()
    if t == "decimal":
        return Numeric(*decimal_limits(col), asdecimal=True)
    if t == "float":
        return Float(precision=53)
    if t == "boolean":
        return Boolean(create_constraint=False)
    if t == "timestamp":
        return timestamp_type()
    if t == "date":
        return Date()
    if t == "json":
        return dialects.json_type()
    raise ValueError(f"unknown column type {t!r}")


def version_type(kind: VersionKind) -> TypeEngine[Any]:
    return String(DYNAMODB_SEQUENCE_NUMBER_DIGITS) if kind is VersionKind.SEQUENCE else BigInteger()


def ledger_table(metadata: MetaData, name: str) -> Table:
    return Table(
        name,
        metadata,
        Column("entity", String(ENTITY_TEXT), nullable=False),
        Column("event_id", String(EVENT_ID_TEXT), nullable=False),
        Column("message_id", String(EVENT_ID_TEXT), nullable=True),
        Column("outcome", String(16), nullable=False),
        Column("applied_at", timestamp_type(), nullable=False, server_default=func.current_timestamp()),
        # event_id first: it is the selective column, so an index probe stays selective even
        # before the table has statistics (a young ledger on a server without autovacuum).
        PrimaryKeyConstraint("event_id", "entity", name=f"{name}_pkey"),
        # runtime.prune finds an entity's old rows by it (a range scan, batch by batch). Added
        # with retention: a ledger created before it works without it, only prunes by scanning.
        Index(f"{name}_applied_at", "entity", "applied_at"),
    )


def tombstone_table(metadata: MetaData, name: str) -> Table:
    return Table(
        name,
        metadata,
        Column("table_name", String(128), nullable=False),
        Column("row_key", String(ROW_KEY_TEXT), nullable=False),
        Column("version", String(DYNAMODB_SEQUENCE_NUMBER_DIGITS), nullable=False),
        Column("deleted_at", timestamp_type(), nullable=False, server_default=func.current_timestamp()),
        PrimaryKeyConstraint("row_key", "table_name", name=f"{name}_pkey"),
        Index(f"{name}_deleted_at", "table_name", "deleted_at"),  # for runtime.prune, as the ledger's
    )


def sync_key_name(table: str) -> str:
    """The unique constraint on the conflict key of a table with a surrogate key."""
    return f"{table}_sync_key"


def target_table(
    metadata: MetaData, spec: TableSpec, *, foreign_keys: bool = True, known: set[str] | None = None
) -> Table:
    """A target table as the sync sees it; the reference DDL adds the surrogate key. With
    `known`, a foreign key only to one of those tables (a retired entity's table is not in
    the registry, though it stays in the database)."""
    columns: list[Column[Any]] = []
    if spec.surrogate_key:
        columns.append(
            Column(
                spec.surrogate_key,
                dialects.surrogate_key_type(),
                primary_key=True,
                autoincrement=True,
            )
        )
    for col in spec.columns.values():
        args = []
        if foreign_keys and col.references and (known is None or col.references.rsplit(".", 1)[0] in known):
            args.append(ForeignKey(col.references))
        lk = col.lookup
        if foreign_keys and lk is not None and not col.references and (known is None or lk.table in known):
            # A looked-up value is a row of the table looked in (its match is that table's
            # unique key, which the reference DDL declares: the primary or the sync key).
            args.append(ForeignKey(f"{lk.table}.{lk.select}"))
        columns.append(
            Column(
                col.name,
                column_type(col),
                *args,
                nullable=col.nullable and col.name not in spec.key,
                primary_key=not spec.surrogate_key and col.name in spec.key,
            )
        )
    if spec.version:
        columns.append(Column(spec.version.column, version_type(spec.version.kind), nullable=True))
    if spec.soft_delete:
        sd_type: TypeEngine[Any] = (
            timestamp_type()
            if spec.soft_delete.kind is SoftDeleteKind.TIMESTAMP
            else Boolean(create_constraint=False)
        )
        columns.append(Column(spec.soft_delete.column, sd_type, nullable=True))
    constraints = []
    if spec.surrogate_key:
        constraints.append(UniqueConstraint(*spec.key, name=sync_key_name(spec.name)))
    return Table(spec.name, metadata, *columns, *constraints, schema=spec.schema)


def build_metadata(registry: Registry, *, foreign_keys: bool = True) -> MetaData:
    """Every table the registry writes, plus the ledger and tombstone tables."""
    metadata = MetaData()
    ledger_table(metadata, registry.ledger_table)
    tombstone_table(metadata, registry.tombstone_table)
    seen: set[str] = set()
    known = {spec.qualified for entity in registry.entities.values() for spec in entity.tables.values()}
    for entity in registry.entities.values():
        for spec in entity.tables.values():
            if spec.qualified in seen:
                continue
            seen.add(spec.qualified)
            target_table(metadata, spec, foreign_keys=foreign_keys, known=known)
    return metadata
