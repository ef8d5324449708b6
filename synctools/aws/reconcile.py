"""`ddb-sql-sync reconcile ENTITY`: the rows the mapping derives from every current DynamoDB
item, compared with the rows in the database, table by table (docs/aws-tools.md, "Reconcile").

Expected rows are never worked out here: each item goes the backfill's way (a Source of
synctools.aws.backfill, its Synthesizer, the Pipe's filter and input template) and the SQS body
is decoded by the runtime's own decoder (runtime.decode): the expected row of a key is what the
write of that item's rule would put in the row. Both sides are normalized per column type with
the runtime's coercion before they are compared (a value is normalized only when the two differ
as they stand; a key only when it is not of a type the coercion keeps as it is).

Memory stays bounded: items are compared a source page at a time (one keyed SELECT of the
compared columns per table and page, KeyedRead; a child table's rows read once, by the parent
keys whose whole set is known), and extra rows are looked for a database page at a time (keyset
order, BatchGetItem of the keys in chunks of 100). Only the drifted keys are kept, for the
re-check after the grace period and for --repair.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

from runtime import dialects
from runtime.coerce import converter
from runtime.decode import DecodeError, SqsRecord, decode
from runtime.expr import fields_of
from runtime.kinds import DO_DELETE, DO_SOFT_DELETE, DO_UPDATE, DO_UPSERT, IF_MISSING_UPSERT
from runtime.redact import cut, shown
from runtime.registry import ColumnSpec, EntitySpec, Registry, TableSpec
from synctools.aws.backfill import (
    Counts,
    DbSink,
    ExportSource,
    Source,
    Synthesizer,
)
from synctools.aws.pipe import Outgoing
from synctools.local.build import Pipe
from synctools.local.transform import TargetError, TemplateError, parse_path

BATCH_GET_KEYS = 100  # BatchGetItem's limit of keys a request
MISSING, DIFFERING, EXTRA = "missing", "differing", "extra"


# -- normalization ---------------------------------------------------------------------------


def _json_value(value: Any) -> Any:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    try:
        return json.loads(text, parse_float=Decimal, parse_int=Decimal)
    except ValueError:
        return text


_PLAIN: dict[int, tuple[ColumnSpec, Callable[[Any], Any]]] = {}


def _plain_converter(col: ColumnSpec) -> Callable[[Any], Any]:
    """The runtime's coercion of the column's type alone (no default, map or constant), made
    once per column: normalize runs for both sides of every compared value."""
    kept = _PLAIN.get(id(col))
    if kept is None or kept[0] is not col:
        plain = dataclasses.replace(col, has_const=False, value_map=None, has_default=False, nullable=True)
        kept = _PLAIN[id(col)] = (col, converter(plain))
    return kept[1]


def normalize(col: ColumnSpec, value: Any, *, naive_utc: bool = True) -> Any:
    """One column's value, from the database or from the decoder, in a form both compare in:
    the runtime's coercion of the column type (no default, map or constant: those were applied
    on the expected side already), JSON as parsed structures with exact numbers, timestamps as
    aware UTC (a naive one from the database is UTC wall time, as the runtime stores it)."""
    if value is None:
        return None
    if col.type == "json":
        return _json_value(value)
    if col.type == "timestamp" and isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    try:
        out = _plain_converter(col)(value)
    except ValueError:
        return value
    if isinstance(out, Decimal):
        return out.normalize() if out != 0 else Decimal(0)
    return out


# Column types that normalize leaves a value of this Python type as it is (the runtime's
# coercion returns such a value unchanged, or refuses it and normalize keeps it).
_AS_IT_IS: dict[str, type] = {"string": str, "text": str, "smallint": int, "integer": int, "bigint": int}


def key_normalizer(columns: Sequence[ColumnSpec]) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    """normalize() over the values of these columns, its choices made once per table (it keys
    every expected row and every row read): a key of values it would leave as they are is
    kept as it is."""
    kept = [_AS_IT_IS.get(c.type) for c in columns]

    def norm(key: Sequence[Any]) -> tuple[Any, ...]:
        key = tuple(key)
        for v, t in zip(key, kept, strict=True):
            if type(v) is not t:
                return tuple(normalize(c, x) for c, x in zip(columns, key, strict=True))
        return key

    return norm


def ids_read_only_as_event_id(pipe: Pipe, entity_raw: dict[str, Any]) -> bool:
    """Whether a synthesized record's eventID and SizeBytes reach nothing but the change's event
    id (the ledger's key): no filter pattern names them; the template places no SizeBytes,
    no whole record and no whole `dynamodb`, and eventID only as itself; and the one message
    field read from it is the entity's event id field. Then the rows a record derives are
    the same whatever its eventID and SizeBytes."""
    ids = (("eventID",), ("dynamodb", "SizeBytes"))

    def overlaps(steps: tuple[Any, ...]) -> bool:
        """One path is the other's start (a [*] or [n] step taken as any key)."""
        return any(all(type(a) is not str or a == b for a, b in zip(steps, p, strict=False)) for p in ids)

    if any(re.search(r'"(eventID|SizeBytes)"', text) for text in pipe.filters.texts()):
        return False
    template = pipe.target.template
    if not template.text:
        return False  # no template: the body is the record itself
    for slot in template.slots:
        if slot.reserved in ("aws.pipes.event", "aws.pipes.event.json"):
            return False
        if slot.steps is not None and overlaps(slot.steps) and slot.steps != ("eventID",):
            return False
    for name, f in entity_raw["fields"].items():
        try:
            steps = parse_path(str(f.get("source") or ""))
        except TemplateError:
            return False
        if overlaps(steps) and (steps != ("eventID",) or name != entity_raw.get("event_id_field")):
            return False
    return True


def shown_value(value: Any, show: bool) -> str:
    """A value in the report: its kind and size (as the runtime's logs), or a sample with
    --show-values."""
    if show:
        if isinstance(value, datetime):
            return value.isoformat()
        return cut(json.dumps(value, default=str, ensure_ascii=False), 200)
    return shown(value)


# -- what is compared ------------------------------------------------------------------------


@dataclass
class TablePlan:
    spec: TableSpec
    table: Any  # sqlalchemy.Table
    # Per key column, the item's key attribute (name, DynamoDB type) it is, when each key column
    # is an item key attribute as it is (extras can then be looked up in DynamoDB).
    key_attrs: list[tuple[str, str]] | None
    extras_reason: str | None  # why extras cannot be checked
    # Columns filled from the stream record's metadata only (eventID, ApproximateCreationDateTime,
    # SequenceNumber...): what the record that wrote the row carried, not the item's state.
    meta_columns: frozenset[str] = frozenset()
    # How a page of its rows is read and compared (Reconciler._reads): the rows a page of keys,
    # or of parent keys, holds (one SELECT each, the columns compared only); per compared
    # column, its place in a row read; per looked-up column, its place and its match values'.
    by_key: KeyedRead | None = None
    by_parent: KeyedRead | None = None
    at: dict[str, int] = field(default_factory=dict)
    looked_up: dict[str, tuple[int, tuple[int, ...], tuple[ColumnSpec, ...]]] = field(default_factory=dict)
    soft_deleted_at: int | None = None
    norm_key: Callable[[Sequence[Any]], tuple[Any, ...]] = tuple
    norm_parent: Callable[[Sequence[Any]], tuple[Any, ...]] = tuple
    parent_at: tuple[int, ...] = ()  # the item key columns' places in the table key

    def parent_of(self, nk: tuple[Any, ...]) -> tuple[Any, ...]:
        """The normalized item key of a row's normalized key."""
        return self.norm_parent([nk[i] for i in self.parent_at])


@dataclass
class KeyedRead:
    """One SELECT of the rows a page of keys (or of parent keys) finds: the key columns first,
    then the columns compared. Where the database binds a list as one array (PostgreSQL), the
    page is one array a key column, joined to the table (`IN (SELECT unnest(...))`): the same
    short statement every page, where an IN list is a parameter a key for the client to expand
    and the server to parse every page (and the table's key index probed a key by nested loop
    where the server's estimate of an IN list of a page's keys, in a large table not analyzed
    yet, chose a sequential scan); elsewhere an IN list."""

    stmt: Any  # sqlalchemy Select
    width: int  # key columns
    arrays: bool

    def params(self, keys: Sequence[tuple[Any, ...]]) -> dict[str, Any]:
        if self.arrays:
            return {f"k{i}": [k[i] for k in keys] for i in range(self.width)}
        return {"keys": [k[0] for k in keys] if self.width == 1 else list(keys)}


def keyed_read(columns: Sequence[Any], by: Sequence[Any], arrays: bool) -> KeyedRead:
    """The SELECT of `columns` whose `by` columns are one of a page's keys (KeyedRead)."""
    from sqlalchemy import ARRAY, Float, Numeric, String, bindparam, func, select, tuple_

    def element(t: Any) -> Any:
        # The array's element without a length, precision or scale: its cast never cuts or
        # rounds a key to fit the column (and so never finds another row).
        if isinstance(t, String):
            return String()
        return Numeric() if isinstance(t, Numeric) and not isinstance(t, Float) else t

    if arrays:
        binds = [bindparam(f"k{i}", type_=ARRAY(element(c.type))) for i, c in enumerate(by)]
        if len(by) == 1:
            cond = by[0].in_(select(func.unnest(binds[0])))
        else:
            keys = func.unnest(*binds).table_valued(*[f"k{i}" for i in range(len(by))]).render_derived()
            cond = tuple_(*by).in_(select(*keys.c))
    else:
        page: Any = bindparam("keys", expanding=True)
        cond = by[0].in_(page) if len(by) == 1 else tuple_(*by).in_(page)
    return KeyedRead(select(*columns).where(cond), len(by), arrays)


def item_key_columns(spec: TableSpec) -> tuple[str, ...]:
    """The key columns that are the item's key: a child table's parent key (its position
    column is the element's), every key column of any other table."""
    return spec.each.parent_key if spec.each is not None else spec.key


def _key_attrs(
    entity: EntitySpec, raw: dict[str, Any], spec: TableSpec
) -> tuple[list[tuple[str, str]] | None, str | None]:
    src = raw["source"]
    item_keys = [src["partition_key"]["name"]] + ([src["sort_key"]["name"]] if src.get("sort_key") else [])
    out: list[tuple[str, str]] = []
    for k in item_key_columns(spec):
        col = spec.columns[k]
        if col.has_const or col.value_map is not None or len(col.fields) != 1:
            return None, f"key column {k} is not a single item attribute"
        f = raw["fields"].get(col.fields[0]) or {}
        source = str(f.get("source") or "")
        parts = source.split(".")
        if f.get("kind") != "key" or len(parts) != 5 or parts[:3] != ["$", "dynamodb", "Keys"]:
            return None, f"key column {k} is not one of the item's key attributes (field {col.fields[0]})"
        out.append((parts[3], parts[4]))
    if sorted(a for a, _ in out) != sorted(item_keys):
        names = ", ".join(item_key_columns(spec))
        return None, f"the key columns {names} are not the item key {', '.join(item_keys)}"
    return out, None


@dataclass
class Drift:
    table: str
    kind: str  # missing | differing | extra
    key: dict[str, Any]  # key column -> value
    item_key: dict[str, Any] | None  # the item's DynamoDB key (attribute values)
    columns: list[tuple[str, Any, Any]] = field(default_factory=list)  # (column, expected, in db)
    repaired: bool = False

    def ident(self) -> tuple[str, str]:
        return self.table, json.dumps(self.key, sort_keys=True, default=str)

    def as_dict(self, show: bool) -> dict[str, Any]:
        d: dict[str, Any] = {"table": self.table, "kind": self.kind, "key": self.key}
        if self.columns:
            d["columns"] = [
                {"column": c, "expected": shown_value(e, show), "actual": shown_value(a, show)}
                for c, e, a in self.columns
            ]
        if self.repaired:
            d["repaired"] = True
        return d


@dataclass
class Report:
    entity: str
    source: str
    items: int = 0
    filtered: int = 0
    undecodable: int = 0
    compared: int = 0  # expected rows looked up in the database
    rows_scanned: int = 0  # database rows looked at for extras
    rechecked: int = 0
    settled: int = 0  # found drifted, in step after the grace period
    repaired: int = 0
    deleted: int = 0
    drift: list[Drift] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # table -> why
    unchecked_extras: dict[str, str] = field(default_factory=dict)  # table -> why
    uncompared: dict[str, list[str]] = field(default_factory=dict)  # table -> metadata columns
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, kind: str) -> int:
        return sum(1 for d in self.drift if d.kind == kind and not d.repaired)

    @property
    def in_step(self) -> bool:
        return not any(not d.repaired for d in self.drift)

    def note(self, why: str) -> None:
        if len(self.problems) < 20:
            self.problems.append(why)

    def as_dict(self, show: bool) -> dict[str, Any]:
        return {
            "entity": self.entity,
            "source": self.source,
            "summary": {
                "items_read": self.items,
                "filtered": self.filtered,
                "undecodable": self.undecodable,
                "rows_compared": self.compared,
                "rows_scanned_for_extras": self.rows_scanned,
                "missing": self.count(MISSING),
                "differing": self.count(DIFFERING),
                "extra": self.count(EXTRA),
                "rechecked": self.rechecked,
                "settled_after_grace": self.settled,
                "repaired": self.repaired,
                "deleted_extra": self.deleted,
                "in_step": self.in_step,
                "seconds": round(self.seconds, 3),
            },
            "drift": [d.as_dict(show) for d in self.drift],
            "skipped_tables": dict(self.skipped),
            "extras_not_checked": dict(self.unchecked_extras),
            "columns_not_compared": dict(self.uncompared),
            "problems": list(self.problems),
        }

    def render(self, show: bool) -> str:
        lines = []
        for t, why in self.skipped.items():
            lines.append(f"skipped table {t}: {why}")
        for t, cols in self.uncompared.items():
            lines.append(f"not compared in {t}: {', '.join(cols)} (from the stream record's metadata)")
        for t, why in self.unchecked_extras.items():
            lines.append(f"extra rows of {t} not checked: {why}")
        if self.drift:
            lines.append(f"{'TABLE':<24} {'KIND':<10} {'KEY':<40} DETAIL")
            for d in self.drift:
                key = json.dumps(d.key, default=str, ensure_ascii=False)
                detail = "; ".join(
                    f"{c}: expected {shown_value(e, show)}, db {shown_value(a, show)}"
                    for c, e, a in d.columns
                )
                if d.repaired:
                    detail = (detail + " " if detail else "") + "(repaired)"
                lines.append(f"{d.table:<24} {d.kind:<10} {cut(key, 40):<40} {detail}")
        for p in self.problems:
            lines.append(f"problem: {p}")
        state = "in step" if self.in_step else "DRIFT"
        lines.append(
            f"reconcile {self.entity}: {state}: {self.items} items read ({self.filtered} filtered out, "
            f"{self.undecodable} undecodable), {self.compared} rows compared, {self.rows_scanned} rows "
            f"scanned for extras; missing {self.count(MISSING)}, differing {self.count(DIFFERING)}, "
            f"extra {self.count(EXTRA)}; {self.settled} settled after the grace period, "
            f"{self.repaired} repaired, {self.deleted} extra rows deleted; {self.seconds:.1f} s"
        )
        return "\n".join(lines)


# -- the run ---------------------------------------------------------------------------------

Rows = dict[str, dict[tuple[Any, ...], tuple[dict[str, Any] | None, dict[str, Any]]]]
# table -> normalized key -> (expected values or None: no expected row, the item's key)


@dataclass
class Expected:
    """What a page of items derives: the rows, and for a child table the parents whose whole
    set of child rows is known (a row of such a parent that is not among the rows is extra)."""

    rows: Rows
    sets: dict[str, dict[tuple[Any, ...], dict[str, Any]]]  # table -> normalized parent key -> item key


class Reconciler:
    def __init__(
        self,
        *,
        registry: Registry,
        entity: str,
        pipe: Pipe,
        synthesizer: Synthesizer,
        source: Source,
        engine: Any,
        ddb: Any,
        page_size: int = 500,
        grace: float = 30.0,
        show_values: bool = False,
        log: Callable[[str], None] = lambda line: None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        from runtime.schema import build_metadata

        self.registry = registry
        self.spec = registry.entities[entity]
        self.raw = registry.raw["entities"][entity]
        self.pipe = pipe
        self.synth = synthesizer
        # The source's own items (an export's: JSON, no bytes) take a stand-in eventID when
        # nothing but the ledger reads it (Synthesizer.stand_in_ids); a re-checked item, read
        # through boto3, takes the whole synthesis.
        self.page_synth = (
            dataclasses.replace(synthesizer, stand_in_ids=True)
            if isinstance(source, ExportSource) and ids_read_only_as_event_id(pipe, self.raw)
            else synthesizer
        )
        self.source = source
        self.engine = engine
        self.ddb = ddb
        self.page_size = page_size
        self.grace = grace
        self.show = show_values
        self.log = log
        self.sleep = sleep
        self.nul_ok = dialects.of(engine).text_holds_nul
        self.report = Report(entity, source.ident)
        metadata = build_metadata(registry, foreign_keys=False)
        self.tombstones = metadata.tables[registry.tombstone_table]
        arrays = dialects.of(engine).binds_arrays
        self.plans: dict[str, TablePlan] = {}
        for name, spec in self.spec.tables.items():
            if spec.append_only:
                self.report.skipped[name] = (
                    "append_only in the mapping: its rows are the events that came (each added by an "
                    "insert action), not a function of the current item"
                )
                continue
            attrs, why = _key_attrs(self.spec, self.raw, spec)
            if why:
                self.report.unchecked_extras[name] = why
            meta = frozenset(
                c
                for c, col in spec.columns.items()
                if c not in spec.key
                and (inputs := col.fields or (fields_of(col.expr) if col.expr is not None else ()))
                and all((self.raw["fields"].get(f) or {}).get("kind") == "meta" for f in inputs)
            )
            if meta:
                self.report.uncompared[name] = sorted(meta)
            plan = TablePlan(spec, metadata.tables[spec.qualified], attrs, why, meta)
            self._reads(plan, arrays)
            self.plans[name] = plan

    def _reads(self, plan: TablePlan, arrays: bool) -> None:
        """The plan's SELECTs and the places of what they read (TablePlan)."""
        from sqlalchemy import select

        spec, t = plan.spec, plan.table
        names = list(spec.key) + [c for c in spec.columns if c not in spec.key and c not in plan.meta_columns]
        if spec.soft_delete is not None and spec.soft_delete.column not in names:
            names.append(spec.soft_delete.column)
        columns = [t.c[c] for c in names]
        place = {c: i for i, c in enumerate(names)}
        plan.at = {c: place[c] for c in names if c in spec.columns and c not in plan.meta_columns}
        plan.soft_deleted_at = place[spec.soft_delete.column] if spec.soft_delete is not None else None
        # A looked-up column holds the looked-in row's value (a surrogate id): the key that row
        # has now is what the item's values are compared with (_compare).
        for c in spec.lookups:
            lk = spec.columns[c].lookup
            assert lk is not None
            if c not in plan.at:
                continue
            parent = t.metadata.tables[lk.table].alias(f"lk_{c}")
            natural = []
            for m in lk.match:
                natural.append(len(columns))
                columns.append(
                    select(parent.c[m.name]).where(parent.c[lk.select] == t.c[c]).scalar_subquery()
                )
            plan.looked_up[c] = (plan.at.pop(c), tuple(natural), lk.match)
        key_arrays = arrays and all(spec.columns[k].type != "json" for k in spec.key)
        plan.by_key = keyed_read(columns, [t.c[k] for k in spec.key], key_arrays)
        plan.norm_key = key_normalizer([spec.columns[k] for k in spec.key])
        parent = item_key_columns(spec)
        plan.norm_parent = key_normalizer([spec.columns[k] for k in parent])
        plan.parent_at = tuple(spec.key.index(k) for k in parent)
        if spec.each is not None:
            plan.by_parent = keyed_read(columns, [t.c[k] for k in parent], key_arrays)

    # -- expected rows

    def expected(self, items: Iterable[dict[str, Any]], *, synth: Synthesizer | None = None) -> Expected:
        """Per table and key, the row the item's write would leave (its columns), or None when
        the item's rule deletes, soft deletes or has no write for the table. `synth`: the
        source's items (page_synth); the whole synthesis otherwise."""
        out: Rows = {t: {} for t in self.plans}
        sets: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = {t: {} for t in self.plans}
        created = self.source.created
        queue = self.spec.queue
        plans, report = self.plans, self.report
        synth = synth or self.synth
        keys = synth.keys
        for item in items:
            record = synth.record(item, created)
            item_key = {k: item[k] for k in keys}
            if not self.pipe.filters.matches(record):
                report.filtered += 1
                continue
            try:
                entry = self.pipe.entry(record)
            except TargetError as exc:
                report.undecodable += 1
                report.note(f"item {json.dumps(item_key, default=str)}: the Pipe refuses it: {exc}")
                continue
            # The message as parse_sqs_record would give it from the Lambda's event.
            sqs = SqsRecord("reconcile", entry.group_id, entry.body, 1, queue, {})
            try:
                change = decode(sqs, self.spec, nul_ok=self.nul_ok)
            except DecodeError as exc:
                report.undecodable += 1
                report.note(f"item {json.dumps(item_key, default=str)}: {exc}")
                continue
            for w in change.writes:
                name = w.table.name
                plan = plans.get(name)
                if plan is None:
                    continue
                if w.prune is not None:  # a child set's prune: the set is the elements written before it
                    sets[name][plan.norm_parent(w.key)] = item_key
                    continue
                nk = plan.norm_key(w.key)
                if w.action in (DO_DELETE, DO_SOFT_DELETE):
                    out[name][nk] = (None, item_key)
                    continue
                values = w.values  # the decoder's own dict, read only from here on
                if w.action is DO_UPDATE and w.if_missing is not IF_MISSING_UPSERT:
                    values = {c: values[c] for c in values if c in w.table.columns}
                prev = out[name].get(nk)
                if prev and prev[0] is not None and w.action is not DO_UPSERT:
                    values = {**prev[0], **values}
                out[name][nk] = (values, item_key)
        return Expected(out, sets)

    # -- database side

    def _select(
        self, plan: TablePlan, keys: Sequence[tuple[Any, ...]], *, by_parent: bool = False
    ) -> dict[tuple[Any, ...], Any]:
        """The rows these normalized keys (or, by_parent, parent keys) find, by normalized key:
        each a row of the plan's columns read (TablePlan.at)."""
        read = plan.by_parent if by_parent else plan.by_key
        assert read is not None
        rows: dict[tuple[Any, ...], Any] = {}
        if not keys:
            return rows
        width, norm = len(plan.spec.key), plan.norm_key
        with self.engine.connect() as conn:
            for r in conn.execute(read.stmt, read.params(keys)).all():
                rows[norm(r[:width])] = r
        return rows

    def _compare(
        self, plan: TablePlan, values: dict[str, Any], row: Sequence[Any]
    ) -> list[tuple[str, Any, Any]]:
        diff = []
        at, columns = plan.at, plan.spec.columns
        for c, v in values.items():
            i = at.get(c)
            if i is None:
                looked = plan.looked_up.get(c)
                if looked is not None:
                    # The item's match values against the key of the row the column points at.
                    j, natural, match = looked
                    e = None if v is None else tuple(normalize(m, x) for m, x in zip(match, v, strict=True))
                    a = (
                        None
                        if row[j] is None
                        else tuple(normalize(m, row[k]) for m, k in zip(match, natural, strict=True))
                    )
                    if e != a:
                        diff.append((c, e, a))
                continue  # not a column of the table, or one from the record's metadata
            actual = row[i]
            if v == actual and type(v) is type(actual):  # the same value as it stands: nothing to normalize
                continue
            col = columns[c]
            e, a = normalize(col, v), normalize(col, actual)
            if e != a:
                diff.append((c, e, a))
        return diff

    def _key_dict(self, plan: TablePlan, nk: tuple[Any, ...]) -> dict[str, Any]:
        return {
            k: (v if isinstance(v, (str, int)) else str(v)) for k, v in zip(plan.spec.key, nk, strict=True)
        }

    def compare_page(self, expected: Expected) -> list[Drift]:
        drift = []
        ps = self.page_size
        # A child table: every row of the parents whose whole set is known, read once by parent
        # key; a row the set does not hold is extra, the others are compared below.
        by_parent: dict[str, dict[tuple[Any, ...], Any]] = {}
        for name, known in expected.sets.items():
            if not known:
                continue
            plan = self.plans[name]
            rows = expected.rows[name]
            parents = list(known)
            found = by_parent[name] = {}
            for i in range(0, len(parents), ps):
                for nk, row in self._select(plan, parents[i : i + ps], by_parent=True).items():
                    found[nk] = row
                    want = rows.get(nk)
                    if want is None or want[0] is None:
                        drift.append(Drift(name, EXTRA, self._key_dict(plan, nk), known[plan.parent_of(nk)]))
        for name, rows in expected.rows.items():
            plan = self.plans[name]
            known = expected.sets[name]
            wanted = [(nk, v) for nk, v in rows.items() if v[0] is not None]
            read = by_parent.get(name)
            for i in range(0, len(wanted), ps):
                chunk = wanted[i : i + ps]
                if read is None:
                    found = self._select(plan, [nk for nk, _ in chunk])
                else:  # the rows of a parent whose set is known are read already
                    found = read
                    found.update(
                        self._select(plan, [nk for nk, _ in chunk if plan.parent_of(nk) not in known])
                    )
                for nk, (values, item_key) in chunk:
                    assert values is not None
                    self.report.compared += 1
                    row = found.get(nk)
                    if row is None:
                        drift.append(Drift(name, MISSING, self._key_dict(plan, nk), item_key))
                        continue
                    diff = self._compare(plan, values, row)
                    if diff:
                        drift.append(Drift(name, DIFFERING, self._key_dict(plan, nk), item_key, diff))
        return drift

    def _db_pages(self, plan: TablePlan) -> Iterator[list[dict[str, Any]]]:
        from sqlalchemy import select, tuple_

        t = plan.table
        cols = [t.c[k] for k in plan.spec.key]
        extra = [t.c[plan.spec.soft_delete.column]] if plan.spec.soft_delete else []
        last: tuple[Any, ...] | None = None
        while True:
            q = select(*cols, *extra).order_by(*cols).limit(self.page_size)
            if last is not None:
                q = q.where(cols[0] > last[0] if len(cols) == 1 else tuple_(*cols) > tuple_(*last))
            with self.engine.connect() as conn:
                page = [dict(r) for r in conn.execute(q).mappings()]
            if not page:
                return
            yield page
            last = tuple(page[-1][k] for k in plan.spec.key)
            if len(page) < self.page_size:
                return

    def _item_key(self, plan: TablePlan, row: dict[str, Any]) -> dict[str, Any]:
        from runtime.coerce import canonical_text

        assert plan.key_attrs is not None
        key = {}
        for k, (attr, t) in zip(item_key_columns(plan.spec), plan.key_attrs, strict=True):
            v = row[k]
            key[attr] = {
                t: v if isinstance(v, str) else canonical_text(v if not isinstance(v, int) else Decimal(v))
            }
        return key

    def _existing(self, keys: list[dict[str, Any]]) -> set[str]:
        """Which of the item keys exist in the table (BatchGetItem, 100 keys a request, the key
        attributes only, unprocessed keys asked again)."""
        table = self.spec.source_table
        names = list(self.synth.keys)
        found: set[str] = set()
        # BatchGetItem refuses a key twice in a request (a child table's rows share their parent's)
        keys = list({_ident(k, names): k for k in keys}.values())
        for i in range(0, len(keys), BATCH_GET_KEYS):
            pending: dict[str, Any] = {
                table: {
                    "Keys": keys[i : i + BATCH_GET_KEYS],
                    "ConsistentRead": True,
                    "ProjectionExpression": ", ".join(f"#k{j}" for j in range(len(names))),
                    "ExpressionAttributeNames": {f"#k{j}": n for j, n in enumerate(names)},
                }
            }
            delay = 0.05
            while pending:
                resp = self.ddb.batch_get_item(RequestItems=pending)
                for item in resp.get("Responses", {}).get(table, []):
                    found.add(_ident(item, names))
                pending = resp.get("UnprocessedKeys") or {}
                if pending:
                    self.sleep(delay)
                    delay = min(delay * 2, 5.0)
        return found

    def extras(self, plan: TablePlan) -> list[Drift]:
        drift = []
        sd = plan.spec.soft_delete
        for page in self._db_pages(plan):
            self.report.rows_scanned += len(page)
            live = [r for r in page if sd is None or not r.get(sd.column)]  # a soft-deleted row is no extra
            keys = [self._item_key(plan, r) for r in live]
            exists = self._existing(keys)
            for r, k in zip(live, keys, strict=True):
                if _ident(k, list(self.synth.keys)) not in exists:
                    nk = plan.norm_key([r[c] for c in plan.spec.key])
                    drift.append(Drift(plan.spec.name, EXTRA, self._key_dict(plan, nk), k))
        return drift

    # -- the grace period

    def recheck(self, d: Drift) -> tuple[Drift | None, dict[str, Any] | None]:
        """The drifted key once more: the item by a consistent GetItem, the row by its key. The
        drift that is still there (or None), and the item (None: there is none)."""
        assert d.item_key is not None
        resp = self.ddb.get_item(TableName=self.spec.source_table, Key=d.item_key, ConsistentRead=True)
        item = resp.get("Item")
        plan = self.plans[d.table]
        nk = plan.norm_key([d.key[k] for k in plan.spec.key])
        want = self.expected([item]).rows.get(d.table, {}).get(nk) if item else None
        row = self._select(plan, [nk]).get(nk)
        if want is None or want[0] is None:  # no row expected
            # A row of another table with its item there is that item's (not compared); a child
            # row is its parent item's only when the item's set holds it.
            excused = item is not None and plan.spec.each is None
            if row is None or excused or (plan.soft_deleted_at is not None and row[plan.soft_deleted_at]):
                return None, item
            return Drift(d.table, EXTRA, d.key, d.item_key), item
        if row is None:
            return Drift(d.table, MISSING, d.key, d.item_key), item
        diff = self._compare(plan, want[0], row)
        return (Drift(d.table, DIFFERING, d.key, d.item_key, diff) if diff else None), item

    # -- repair

    def repair(
        self,
        drift: list[tuple[Drift, dict[str, Any] | None]],
        *,
        sink: DbSink,
        synthesizer: Synthesizer,
        fill_sink: DbSink,
        fill_synthesizer: Synthesizer,
        delete_extra: bool,
    ) -> None:
        """Missing and differing keys: the item's current state applied the backfill's way
        (its Synthesizer with a fresh watermark and a salt of its own, so the ledger does not
        take it for the earlier backfill's record; DbSink), which creates a missing row; then,
        for the items with a differing row, a fill of every compared column (fill_sink: the
        backfill's --columns write, which sets the columns of a row no newer than the watermark
        and leaves its version, so the row is never absent and a change still in the queue
        applies after it). Extra rows: deleted with `delete_extra` only."""
        from sqlalchemy import and_, delete

        outgoing: list[Outgoing] = []
        fills: list[Outgoing] = []
        deletes: list[Drift] = []
        sets: dict[tuple[str, tuple[Any, ...]], TablePlan] = {}  # child sets written again whole
        created = int(time.time())
        seen: dict[int, set[str]] = {id(synthesizer): set(), id(fill_synthesizer): set()}
        for d, item in drift:
            if d.kind == EXTRA:
                if delete_extra:
                    deletes.append(d)
                continue
            if item is None:
                continue
            plan = self.plans[d.table]
            child = plan.spec.each is not None
            if child:
                sets[(d.table, tuple(d.key[k] for k in item_key_columns(plan.spec)))] = plan
            fill = d.kind == DIFFERING and not child
            pairs = [(synthesizer, outgoing)] + ([(fill_synthesizer, fills)] if fill else [])
            for synth, out in pairs:
                record = synth.record(item, created)
                # One record per item and write, though several of its rows drifted.
                if record["eventID"] in seen[id(synth)]:
                    continue
                seen[id(synth)].add(record["eventID"])
                if self.pipe.filters.matches(record):
                    try:
                        out.append(Outgoing(record, self.pipe.entry(record), synth.sequence))
                    except TargetError:
                        continue
        if deletes or sets:
            with self.engine.begin() as conn:
                for d in deletes:
                    t = self.plans[d.table].table
                    conn.execute(delete(t).where(and_(*[t.c[k] == v for k, v in d.key.items()])))
                # A child set with a missing or differing row is written again whole: its rows
                # and its tombstone (which would hold the re-apply off at the same version) go
                # first, in one transaction; the re-apply below writes both again.
                parents: dict[str, tuple[TablePlan, list[tuple[Any, ...]]]] = {}
                for (name, parent), plan in sets.items():
                    parents.setdefault(name, (plan, []))[1].append(parent)
                for plan, keys in parents.values():
                    for i in range(0, len(keys), self.page_size):
                        self._drop_sets(conn, plan, keys[i : i + self.page_size])
        counts = Counts()
        for target, records in ((sink, outgoing), (fill_sink, fills)):
            if records:
                target.send(records, counts)
        for c in counts.reasons:
            self.report.note(f"repair: {c}")
        for d, _ in drift:
            if d.kind == EXTRA and delete_extra:
                self.report.deleted += 1

    def _drop_sets(self, conn: Any, plan: TablePlan, parents: list[tuple[Any, ...]]) -> None:
        """The child rows of these parents and their sets' tombstones: two DELETEs."""
        from sqlalchemy import delete, tuple_

        from runtime.decode import row_key

        spec, t, tombs = plan.spec, plan.table, self.tombstones
        cols = item_key_columns(spec)
        by = [t.c[k] for k in cols]
        conn.execute(
            delete(t).where(by[0].in_([p[0] for p in parents]) if len(by) == 1 else tuple_(*by).in_(parents))
        )
        convert = [converter(spec.columns[k]) for k in cols]
        rows = [row_key(spec, tuple(f(v) for f, v in zip(convert, p, strict=True))) for p in parents]
        conn.execute(delete(tombs).where(tombs.c.table_name == spec.qualified, tombs.c.row_key.in_(rows)))

    # -- the whole run

    def compare_unit(self, unit: str, between_pages: Callable[[], None] | None = None) -> list[Drift]:
        """Every item of one source unit (a Scan segment, an export file) compared; the drifted
        keys. `between_pages` runs after each page."""
        suspects: list[Drift] = []
        for items, _after in self.source.pages(unit, None):
            self.report.items += len(items)
            suspects += self.compare_page(self.expected(items, synth=self.page_synth))
            if between_pages is not None:
                between_pages()
        return suspects

    def run(
        self,
        recipe: ReconcilerRecipe | None = None,
        workers: int = 1,
        *,
        extras: bool = True,
        start: str | None = None,
    ) -> list[Drift]:
        """Compare every item and look for extras (unless told not to); the drifted keys (before
        the grace period).
        With a recipe and more than one worker, the units are shared by this process and
        `workers - 1` processes of their own (the comparison is CPU-bound: the template, the
        decoder, the coercion of both sides), started as `start` says (procs.pool_context)."""
        started = time.monotonic()
        suspects: list[Drift] = []
        units = self.source.units()
        if recipe is not None and workers > 1 and len(units) > 1:
            if isinstance(self.source, ExportSource):  # the last files in pieces: the processes end together
                units = self.source.pieces(tail=min(workers, len(units)))
            suspects += self._in_processes(recipe, units, workers, start)
        else:
            for unit in units:
                suspects += self.compare_unit(unit)
                self._progress(len(suspects))
        for plan in self.plans.values():
            if extras and plan.key_attrs is not None:
                suspects += self.extras(plan)
        self.report.seconds = time.monotonic() - started
        return suspects

    def _progress(self, suspects: int) -> None:
        self.log(f"reconcile {self.spec.name}: {self.report.items:,} items read, {suspects} drifted so far")

    def _in_processes(
        self, recipe: ReconcilerRecipe, units: list[str], workers: int, start: str | None
    ) -> list[Drift]:
        """The units compared by `workers - 1` worker processes and by this one, which has built
        what a worker builds (a worker's start, its imports and its Reconciler, costs what
        comparing some thousands of items does); a worker is given the next unit as it is free,
        between this process's pages."""
        from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

        from synctools.aws import procs

        ctx = procs.pool_context(start)  # a worker builds its own Reconciler (_compare_unit)
        suspects: list[Drift] = []
        todo = list(units)
        running: set[Future[UnitResult]] = set()
        processes = min(workers - 1, len(units) - 1)
        with ProcessPoolExecutor(processes, mp_context=ctx, initializer=_worker_init) as ex:

            def share() -> None:
                for done in [f for f in running if f.done()]:
                    running.discard(done)
                    suspects.extend(self._counted(done.result()))
                    self._progress(len(suspects))
                while todo and len(running) < processes:
                    running.add(ex.submit(_compare_unit, recipe, todo.pop(0)))

            share()
            while todo:
                found = self.compare_unit(todo.pop(0), between_pages=share)
                suspects += found
                self._progress(len(suspects))
            while running:
                wait(running, return_when=FIRST_COMPLETED)
                share()
        return suspects

    def _counted(self, r: UnitResult) -> list[Drift]:
        """A worker's unit added to the report; its drifted keys."""
        report = self.report
        report.items += r.items
        report.compared += r.compared
        report.filtered += r.filtered
        report.undecodable += r.undecodable
        for why in r.problems:
            report.note(why)
        return r.suspects

    def settle(self, suspects: list[Drift]) -> list[tuple[Drift, dict[str, Any] | None]]:
        """Each drifted key re-checked after the grace period; the drift that stays."""
        if not suspects:
            return []
        if self.grace > 0:
            self.log(
                f"reconcile {self.spec.name}: {len(suspects)} drifted key(s); re-checked in {self.grace:g} s"
            )
            self.sleep(self.grace)
        out = []
        seen: set[tuple[str, str]] = set()
        for d in suspects:
            if d.ident() in seen:
                continue
            seen.add(d.ident())
            self.report.rechecked += 1
            still, item = self.recheck(d)
            if still is None:
                self.report.settled += 1
            else:
                out.append((still, item))
        return out


class ReconcilerRecipe(Protocol):
    """What a worker process builds its own Reconciler from (picklable: the command's options,
    never an open connection or client)."""

    def reconciler(
        self, *, dynamodb: bool = True, log: Callable[[str], None] | None = None
    ) -> Reconciler: ...


@dataclass
class UnitResult:
    """One unit compared in a worker process: its counts and drifted keys."""

    items: int
    compared: int
    filtered: int
    undecodable: int
    problems: list[str]
    suspects: list[Drift]


def _worker_init() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C ends a worker quietly; the command reports it


def _compare_unit(recipe: ReconcilerRecipe, unit: str) -> UnitResult:
    from synctools.aws import procs

    rec = procs.built_once("reconcile", recipe, lambda: recipe.reconciler(dynamodb=False), lambda r: r.engine)
    r = rec.report = Report(rec.spec.name, rec.source.ident)  # this unit's counts alone
    suspects = rec.compare_unit(unit)
    return UnitResult(r.items, r.compared, r.filtered, r.undecodable, list(r.problems), suspects)


def _ident(key: dict[str, Any], names: list[str]) -> str:
    def scalar(v: Any) -> str:
        ((t, x),) = v.items()
        if t == "N":
            return "N:" + str(Decimal(str(x)).normalize())
        return f"{t}:{x}"

    return "|".join(scalar(key[n]) for n in names)
