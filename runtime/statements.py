"""The SQL statements (SQLAlchemy Core), built once per shape through the database's dialect.

Idempotency and ordering live in the SQL itself:
- upsert: INSERT ... SELECT ... WHERE NOT EXISTS (a tombstone at least as new)
  ON CONFLICT (key) DO UPDATE ... WHERE target.version < excluded.version
  (MySQL: an UPDATE or a plain INSERT, chosen from the batch's read; runtime.dialects.mysql);
- update / soft delete: ... WHERE key = :key AND (version IS NULL OR version < / <= :v);
- delete: DELETE ... WHERE key = :key AND version <= :v, plus a tombstone row so a late, older
  insert cannot bring the row back;
- fill (tools only: backfill --columns): UPDATE of chosen columns WHERE key = :key AND
  (version IS NULL OR version <= :v), the version itself left as it is.
Every value is a bound parameter; every identifier comes from the validated registry. The bind
parameters' names are those below (BIND_*, value_<column>, key_<column>).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table, and_, bindparam, cast, delete, exists, insert, or_, select, union_all, update
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.types import Boolean, Float, Numeric, Text

from runtime.dialects import Dialect
from runtime.dialects.base import Item
from runtime.kinds import (
    OP_DELETE,
    OP_FILL,
    OP_INSERT,
    OP_PRUNE,
    OP_SOFT_DELETE,
    OP_TOMBSTONE,
    OP_UPDATE,
    OP_UPSERT,
    OP_UPSERT_AS_UPDATE,
    WHEN_MISSING_NULL,
    OpKind,
)
from runtime.registry import Registry, TableSpec
from runtime.schema import build_metadata

if TYPE_CHECKING:
    from runtime.plan import Op

# Bind parameters shared by every statement shape.
BIND_VERSION = "version"  # the write's version
BIND_SOFT_DELETED = "soft_deleted"  # the soft-delete column's value
BIND_TOMB_TABLE = "tomb_table"  # the tombstone's table (the mapped table, qualified)
BIND_TOMB_ROW = "tomb_row"  # the tombstone's row key
BIND_TOMB_VERSION = "tomb_version"  # the tombstone's version, as text
BIND_PRUNE_FROM = "prune_from"  # a child list's prune: the first position the event does not hold
# Per column: the value written, and the key a row is found by.
VALUE_PREFIX = "value_"
KEY_PREFIX = "key_"

# Per looked-up column: the i-th value it is looked up by (lookup_<column>_<i>).
LOOKUP_PREFIX = "lookup_"

_NAMES: dict[tuple[str, str], str] = {}


def bind_name(prefix: str, column: str) -> str:
    """value_<column> / key_<column> (kept: built once per column)."""
    name = _NAMES.get((prefix, column))
    if name is None:
        name = _NAMES[(prefix, column)] = prefix + column
    return name


def lookup_bind(column: str, i: int) -> str:
    """lookup_<column>_<i>: the i-th match value of a looked-up column (kept: built once)."""
    return bind_name(LOOKUP_PREFIX, f"{column}_{i}")


def lookup_params(spec: TableSpec, column: str, value: tuple[Any, ...] | None) -> dict[str, Any]:
    """The bind parameters of a looked-up column's value (runtime.decode: the match values,
    None when the message lacks them and the lookup writes NULL then)."""
    lk = spec.columns[column].lookup
    assert lk is not None
    if value is None:
        return {lookup_bind(column, i): None for i in range(len(lk.match))}
    return {lookup_bind(column, i): v for i, v in enumerate(value)}


class Statements:
    """Builds each statement shape once per (kind, table, columns) and keeps it."""

    def __init__(self, registry: Registry, dialect: Dialect) -> None:
        self.registry = registry
        self.dialect = dialect
        self.metadata = build_metadata(registry, foreign_keys=False)
        self.ledger = self.metadata.tables[registry.ledger_table]
        self.tombstones = self.metadata.tables[registry.tombstone_table]
        self._cache: dict[tuple[Any, ...], Any] = {}
        self.compiled: dict[Any, Any] = {}  # driver-level SQL text of the statements above

    def table(self, spec: TableSpec) -> Table:
        return self.metadata.tables[spec.qualified]

    def _memo(self, key: tuple[Any, ...], build: Callable[[], Any]) -> Any:
        stmt = self._cache.get(key)
        if stmt is None:
            stmt = self._cache[key] = build()
        return stmt

    # -- bind parameters ----------------------------------------------------------------

    def _tomb(self, name: str, suffix: str = "") -> BindParameter[Any]:
        column = {BIND_TOMB_TABLE: "table_name", BIND_TOMB_ROW: "row_key", BIND_TOMB_VERSION: "version"}[name]
        return bindparam(name + suffix, type_=self.tombstones.c[column].type)

    def _value(self, spec: TableSpec, column: str, suffix: str = "") -> Any:
        """The value written to `column`, typed; JSON travels as text (runtime.coerce.json_text);
        a looked-up column's value is found by a subquery (_lookup). `suffix`: a merged
        statement's row (merged_items)."""
        if column in spec.lookups:
            assert not suffix, "a write with a lookup is never merged"
            return self._lookup(spec, column)
        name = bind_name(VALUE_PREFIX, column) + suffix
        if spec.columns[column].type == "json":
            return self.dialect.json_value(bindparam(name, type_=Text()))
        return bindparam(name, type_=self.table(spec).c[column].type)

    def _lookup(self, spec: TableSpec, column: str) -> Any:
        """(SELECT select FROM table WHERE match = :lookup_<column>_<i> ...): the value is found
        inside the write itself, so a lookup costs no statement and no round trip. The match
        is the looked-in table's unique key: at most one row. When no row matches, the
        column is NULL (when_missing: null), or the dialect's form makes the write fail
        (Dialect.lookup_required), which the runtime reads as a missed lookup."""
        lk = spec.columns[column].lookup
        assert lk is not None
        parent = self.metadata.tables[lk.table]

        def matching(alias: Any) -> list[Any]:
            return [
                alias.c[m.name] == bindparam(lookup_bind(column, i), type_=parent.c[m.name].type)
                for i, m in enumerate(lk.match)
            ]

        found = parent.alias(f"lk_{column}")
        query = select(found.c[lk.select]).where(*matching(found))
        if lk.when_missing is WHEN_MISSING_NULL:
            return query.scalar_subquery()
        again = parent.alias(f"lk_{column}_any")
        missing = ~exists().where(*matching(again))
        return self.dialect.lookup_required(query, missing)

    def _key(self, spec: TableSpec, column: str) -> BindParameter[Any]:
        return bindparam(bind_name(KEY_PREFIX, column), type_=self.table(spec).c[column].type)

    def _version(self, spec: TableSpec, suffix: str = "") -> BindParameter[Any]:
        assert spec.version is not None
        return bindparam(BIND_VERSION + suffix, type_=self.table(spec).c[spec.version.column].type)

    def _soft_deleted(self, spec: TableSpec, suffix: str = "") -> BindParameter[Any]:
        assert spec.soft_delete is not None
        return bindparam(BIND_SOFT_DELETED + suffix, type_=self.table(spec).c[spec.soft_delete.column].type)

    # -- writes -------------------------------------------------------------------------

    def statement(self, kind: OpKind, spec: TableSpec | None, columns: tuple[str, ...] = ()) -> Any:
        key = (kind, spec.qualified if spec else None, columns)
        return self._memo(key, lambda: self._build(kind, spec, columns))

    def _build(self, kind: OpKind, spec: TableSpec | None, columns: tuple[str, ...]) -> ClauseElement:
        if kind is OP_TOMBSTONE:
            return self._tombstone()
        assert spec is not None
        if kind is OP_PRUNE:
            return self._prune(spec, len(columns))
        if kind is OP_INSERT or kind is OP_UPSERT:
            return self._insert(kind, spec)
        t = self.table(spec)
        vcol = spec.version.column if spec.version else None
        where = [t.c[k] == self._key(spec, k) for k in spec.key]
        if kind is OP_DELETE:
            if vcol:
                where.append(or_(t.c[vcol].is_(None), t.c[vcol] <= self._version(spec)))
            return delete(t).where(*where)
        sets: dict[str, Any]
        if kind is OP_UPDATE or kind is OP_FILL:
            sets = {c: self._value(spec, c) for c in columns}
        elif kind is OP_UPSERT_AS_UPDATE:
            sets = {c: self._value(spec, c) for c in spec.columns if c not in spec.key}
            if spec.soft_delete:
                sets[spec.soft_delete.column] = self._soft_deleted(spec)
        elif kind is OP_SOFT_DELETE:
            assert spec.soft_delete is not None
            sets = {spec.soft_delete.column: self._soft_deleted(spec)}
        else:  # pragma: no cover - OpKind has no other member
            raise ValueError(f"unknown statement kind {kind!r}")
        if vcol:
            # A fill leaves the version as it is: a change older than the write but still on its
            # way (in the queue) applies after it, as it would have without it.
            if kind is not OP_FILL:
                sets[vcol] = self._version(spec)
            # A soft delete carries the version of the state it removes (an item attribute read
            # from the old image equals the row's version), so it applies on equality; so does
            # a fill, which never raises the version.
            newer = (
                t.c[vcol] <= self._version(spec)
                if kind is OP_SOFT_DELETE or kind is OP_FILL
                else t.c[vcol] < self._version(spec)
            )
            where.append(or_(t.c[vcol].is_(None), newer))
        return update(t).where(*where).values(sets)

    def _insert(self, kind: OpKind, spec: TableSpec, rows: int = 1) -> ClauseElement:
        """The insert or upsert of one row, or of `rows` rows in one statement (merged_items:
        row i's parameters are the one-row names suffixed _<i>)."""
        t = self.table(spec)
        vcol = spec.version.column if spec.version else None
        cols: list[str] = list(spec.columns)
        if vcol:
            cols.append(vcol)
        if spec.soft_delete:
            cols.append(spec.soft_delete.column)

        def values(suffix: str) -> list[Any]:
            out = [self._value(spec, c, suffix) for c in spec.columns]
            if vcol:
                out.append(self._version(spec, suffix))
            if spec.soft_delete:
                out.append(self._soft_deleted(spec, suffix))
            return out

        suffixes = [""] if rows == 1 else [f"_{i}" for i in range(rows)]
        ins: Any = insert(t) if kind is OP_INSERT else self.dialect.insert(t)
        if spec.tombstones:
            tb = self.tombstones

            def guarded(suffix: str) -> Any:
                # A tombstone at least as new as this write keeps a deleted row deleted.
                guard = ~exists().where(
                    tb.c.table_name == self._tomb(BIND_TOMB_TABLE, suffix),
                    tb.c.row_key == self._tomb(BIND_TOMB_ROW, suffix),
                    tb.c.version >= self._tomb(BIND_TOMB_VERSION, suffix),
                )
                row = values(suffix)
                return select(*(row if rows == 1 else [_typed(v) for v in row])).where(guard)

            selects = [guarded(x) for x in suffixes]
            source: Any = selects[0] if rows == 1 else union_all(*selects)
            ins = ins.from_select(cols, source)
        else:
            listed = [dict(zip(cols, values(x), strict=True)) for x in suffixes]
            ins = ins.values(listed[0] if rows == 1 else listed)
        if kind is OP_INSERT:
            return ins  # type: ignore[no-any-return]
        non_key = [c for c in cols if c not in spec.key]
        return self.dialect.upsert(ins, t, spec.key, non_key, vcol)

    def _prune(self, spec: TableSpec, kept: int) -> ClauseElement:
        """A child table's rows of one parent at positions the event no longer holds, at most
        as new as the event: DELETE ... WHERE <parent key> AND position >= :prune_from (a
        list) or position NOT IN (:keep_0, ...) (a map; none kept: every row of the parent)."""
        each, version = spec.each, spec.version
        assert each is not None and version is not None  # validate: a child table has both
        t = self.table(spec)
        position = t.c[each.position]
        where = [t.c[k] == self._key(spec, k) for k in each.parent_key]
        if each.kind == "L":
            where.append(position >= bindparam(BIND_PRUNE_FROM, type_=position.type))
        elif kept:
            where.append(position.not_in([bindparam(keep_bind(i), type_=position.type) for i in range(kept)]))
        vcol = t.c[version.column]
        where.append(or_(vcol.is_(None), vcol <= self._version(spec)))
        return delete(t).where(*where)

    def _tombstone(self) -> ClauseElement:
        tb = self.tombstones
        ins = self.dialect.insert(tb).values(
            table_name=self._tomb(BIND_TOMB_TABLE),
            row_key=self._tomb(BIND_TOMB_ROW),
            version=self._tomb(BIND_TOMB_VERSION),
        )
        return self.dialect.tombstone_upsert(ins, tb)

    def asserted(self, kind: OpKind, spec: TableSpec | None, columns: tuple[str, ...] = ()) -> Any:
        """The write, failing unless it changed a row (for the optimistic path; the dialect's
        form: runtime.dialects, Dialect.asserted)."""
        return self._memo(
            ("asserted", kind, spec.qualified if spec else None, columns),
            lambda: self.dialect.asserted(self.statement(kind, spec, columns)),
        )

    def items(self, ops: Sequence[Op], *, asserted: bool = False) -> list[Item]:
        if asserted:
            return [
                (
                    self.asserted(op.kind, op.spec, op.columns)
                    if op.kind is not OP_TOMBSTONE and op.kind is not OP_PRUNE
                    # A prune may find nothing to delete; a tombstone keeps the newer version.
                    else self.statement(op.kind, op.spec, op.columns),
                    op.params,
                )
                for op in ops
            ]
        return [(self.statement(op.kind, op.spec, op.columns), op.params) for op in ops]

    def merged_items(
        self, ops: Sequence[Op], owners: Sequence[int | None], *, asserted: bool = False
    ) -> tuple[list[Item], list[int | None]]:
        """items(), with each run of consecutive inserts or upserts of one table (no lookups,
        no row twice) sent as statements of many rows: the server parses, binds and executes
        one statement where it would run one per row. A run is cut into statements of
        power-of-two sizes up to MERGE_MAX_ROWS, so a table has a handful of statement shapes
        (each compiled once, and prepared once per connection). Executing a run's rows in one
        statement does what executing them one after another would: every row is a different
        one, and no value of one is read by another's write (a lookup's subquery would not see
        a row the same statement inserts, hence none). Returns the items and, per item, the
        message it comes from (`owners` gives each op's; None when a merged item's rows come
        from several messages)."""
        items: list[Item] = []
        item_owners: list[int | None] = []
        i, n = 0, len(ops)
        while i < n:
            op = ops[i]
            run = 1
            if (op.kind is OP_UPSERT or op.kind is OP_INSERT) and op.spec is not None and not op.spec.lookups:
                seen = {op.row}
                limit = min(n - i, _merge_limit(op.spec))
                while run < limit:
                    nxt = ops[i + run]
                    if nxt.kind is not op.kind or nxt.spec is not op.spec or nxt.row in seen:
                        break
                    seen.add(nxt.row)
                    run += 1
            while run:
                size = 1 << (run.bit_length() - 1)  # the largest power of two in the run
                chunk, owned = ops[i : i + size], owners[i : i + size]
                if size == 1:
                    items.extend(self.items(chunk, asserted=asserted))
                else:
                    items.append((self._merged(op.kind, op.spec, size, asserted), _merged_params(chunk)))
                first = owned[0]
                item_owners.append(first if all(o == first for o in owned) else None)
                i += size
                run -= size
        return items, item_owners

    def _merged(self, kind: OpKind, spec: TableSpec | None, rows: int, asserted: bool) -> Any:
        assert spec is not None

        def build() -> Any:
            write = self._insert(kind, spec, rows)
            return self.dialect.asserted(write, rows) if asserted else write

        return self._memo(("merged", kind, spec.qualified, rows, asserted), build)

    # -- the ledger -----------------------------------------------------------------------

    def ledger_insert_one(self) -> Any:
        """One ledger row; its parameters are the ledger's column names (for executemany)."""
        return self._memo(("ledger_insert_one",), lambda: insert(self.ledger))

    def ledger_insert(self, n: int) -> Any:
        """n ledger rows in one INSERT; parameters entity_<i>, event_id_<i>, message_id_<i>,
        outcome_<i> (ledger_params)."""

        def build() -> ClauseElement:
            lg = self.ledger
            rows = [
                {column: bindparam(f"{column}_{i}", type_=lg.c[column].type) for column in LEDGER_COLUMNS}
                for i in range(n)
            ]
            return insert(lg).values(rows)

        return self._memo(("ledger_insert", n), build)

    # -- reads --------------------------------------------------------------------------

    def ledger_read(self, n: int) -> Any:
        """The event ids of `entity` among event_id_0..event_id_<n-1> the ledger holds."""

        def build() -> ClauseElement:
            lg = self.ledger
            return select(lg.c.event_id).where(
                lg.c.entity == bindparam("entity", type_=lg.c.entity.type),
                lg.c.event_id.in_([bindparam(f"event_id_{i}", type_=lg.c.event_id.type) for i in range(n)]),
            )

        return self._memo(("ledger_read", n), build)

    def rows_read(self, spec: TableSpec, n: int) -> Any:
        """The key (and version) of each of n rows, found by row<i>_<key column>."""

        def build() -> ClauseElement:
            t = self.table(spec)
            cols = [t.c[k] for k in spec.key]
            if spec.version:
                cols.append(t.c[spec.version.column])
            if len(spec.key) == 1:  # an IN list: the planner's best-known form
                (k,) = spec.key
                return select(*cols).where(
                    t.c[k].in_([bindparam(row_bind(i, k), type_=t.c[k].type) for i in range(n)])
                )
            match = [
                and_(*[t.c[k] == bindparam(row_bind(i, k), type_=t.c[k].type) for k in spec.key])
                for i in range(n)
            ]
            return select(*cols).where(or_(*match))

        return self._memo(("rows_read", spec.qualified, n), build)

    def tombstones_read(self, n: int) -> Any:
        """The tombstones of n rows, found by tomb_table_<i>, tomb_row_<i>."""

        def build() -> ClauseElement:
            tb = self.tombstones
            match = [
                and_(
                    tb.c.table_name == bindparam(f"{BIND_TOMB_TABLE}_{i}", type_=tb.c.table_name.type),
                    tb.c.row_key == bindparam(f"{BIND_TOMB_ROW}_{i}", type_=tb.c.row_key.type),
                )
                for i in range(n)
            ]
            return select(tb.c.table_name, tb.c.row_key, tb.c.version).where(or_(*match))

        return self._memo(("tombstones_read", n), build)


LEDGER_COLUMNS = ("entity", "event_id", "message_id", "outcome")

# A merged statement's rows at most, and its bind parameters at most (PostgreSQL's protocol
# counts a statement's parameters in 16 bits).
MERGE_MAX_ROWS = 256
MERGE_MAX_PARAMS = 32_767


def _merge_limit(spec: TableSpec) -> int:
    """The most rows of `spec` one merged statement carries."""
    per_row = len(spec.columns) + (spec.version is not None) + (spec.soft_delete is not None)
    per_row += 3 if spec.tombstones else 0  # the tombstone guard's
    return max(1, min(MERGE_MAX_ROWS, MERGE_MAX_PARAMS // per_row))


def _typed(value: Any) -> Any:
    """A value of a UNION of rows (a merged, tombstone-guarded insert), typed in the SQL: in a
    UNION, PostgreSQL takes a parameter of no declared type for text (a NULL has none), where a
    one-row INSERT ... SELECT takes its column's. SQLAlchemy writes most types beside the
    parameter itself ($1::VARCHAR); the numbers and booleans it leaves to the driver are cast
    here, without precision, so the column's own assignment still rounds or refuses a value."""
    if isinstance(value, BindParameter) and isinstance(value.type, (Numeric, Float, Boolean)):
        plain = Float(precision=53) if isinstance(value.type, Float) else type(value.type)()
        return cast(value, plain)
    return value


def _merged_params(ops: Sequence[Op]) -> dict[str, Any]:
    """The parameters of a merged statement: op i's, named with the suffix _<i>."""
    params: dict[str, Any] = {}
    for i, op in enumerate(ops):
        suffix = f"_{i}"
        for name, value in op.params.items():
            params[name + suffix] = value
    return params


def keep_bind(i: int) -> str:
    """A child map's prune: the i-th key the event holds."""
    return f"keep_{i}"


def row_bind(i: int, column: str) -> str:
    return f"row{i}_{column}"


def ledger_params(rows: Sequence[tuple[str, str, str, str]]) -> dict[str, Any]:
    """The parameters of Statements.ledger_insert(len(rows))."""
    params: dict[str, Any] = {}
    for i, row in enumerate(rows):
        for column, value in zip(LEDGER_COLUMNS, row, strict=True):
            params[f"{column}_{i}"] = value
    return params
