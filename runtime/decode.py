"""SQS record -> typed change: every message value read, checked and coerced up front.

A body that cannot be decoded is a poison message: DecodeError, a permanent failure.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from runtime.aws_limits import DYNAMODB_SEQUENCE_NUMBER_DIGITS
from runtime.coerce import MISSING, CoercionError, canonical_text, converter, timestamp_value
from runtime.ddbjson import (
    AttributeValueError,
    check_digits,
    check_magnitude,
    number,
    unmarshal,
    unmarshal_map,
)
from runtime.expr import evaluator
from runtime.kinds import (
    DO_DELETE,
    DO_FILL,
    DO_INSERT,
    DO_SOFT_DELETE,
    DO_UPDATE,
    DO_UPSERT,
    IF_MISSING_UPSERT,
    SOFT_DELETE_TIMESTAMP,
    VERSION_SEQUENCE,
    WHEN_MISSING_NULL,
    Action,
    IfMissing,
)
from runtime.redact import cut, name, shown
from runtime.registry import ActionSpec, EntitySpec, FieldSpec, Registry, SharedQueueSpec, TableSpec
from runtime.schema import EVENT_ID_TEXT

# Sequence numbers zero-padded to their longest, so that they compare as text.
SEQUENCE_WIDTH = DYNAMODB_SEQUENCE_NUMBER_DIGITS
ROW_KEY_MAX = 512


class DecodeError(Exception):
    """A message that can never be applied as it is (permanent)."""


class RefusedValue(DecodeError):
    """A message whose body decodes, holding a value its column refuses (permanent)."""


_UNPARSED: Any = object()


@dataclass(slots=True)
class SqsRecord:
    message_id: str
    group_id: str
    body: str
    receive_count: int
    queue: str
    raw: dict[str, Any] = field(repr=False)
    # The body parsed (_parsed_body), kept: a message of a shared queue is read for its
    # discriminator before it is decoded.
    parsed: Any = field(default=_UNPARSED, repr=False, compare=False)


def _parsed_body(record: SqsRecord) -> Any:
    """`record.body` parsed as JSON, once per record (raises what json.loads raises)."""
    if record.parsed is _UNPARSED:
        record.parsed = _BODY(record.body)
    return record.parsed


def parse_sqs_record(raw: Any) -> SqsRecord:
    """The fields Lambda delivers for an SQS FIFO record (AWS: services-sqs-configure); a record of any other
    shape gives empty fields (and so fails to decode), never an exception."""
    if not isinstance(raw, dict):
        return SqsRecord("", "", "", 1, "", {})
    attrs = raw.get("attributes")
    attrs = attrs if isinstance(attrs, dict) else {}
    arn = raw.get("eventSourceARN")
    arn = arn if isinstance(arn, str) else ""
    try:
        receive_count = int(attrs.get("ApproximateReceiveCount", 1))
    except (TypeError, ValueError):
        receive_count = 1
    return SqsRecord(
        message_id=str(raw.get("messageId") or ""),
        group_id=str(attrs.get("MessageGroupId") or ""),
        body=body if isinstance(body := raw.get("body"), str) else "",
        receive_count=receive_count,
        queue=arn.rsplit(":", 1)[-1],
        raw=raw,
    )


@dataclass(slots=True)
class Write:
    action: Action
    table: TableSpec
    key: tuple[Any, ...]
    row_key: str
    values: dict[str, Any]
    version: Any  # comparable version (padded text or int), None when the table has none
    if_missing: IfMissing
    # A child table's write (a table with `each`): the row key of its parent, which keys the
    # one tombstone that versions the parent's whole set of child rows.
    tomb_row: str | None = None
    # The set's prune (runtime.statements, OP_PRUNE): the positions kept, as the list's
    # length (int) or the map's keys (tuple); None for any other write.
    prune: Any = None


@dataclass(slots=True)
class Change:
    record: SqsRecord
    entity: EntitySpec
    event_id: str
    event_type: str
    writes: list[Write]
    created_at: Decimal | None = None

    @property
    def ignored(self) -> bool:
        return not self.writes


def _lookup(body: dict[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = body
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return MISSING
        node = node[part]
    return node


def _converter(spec: FieldSpec) -> Callable[[Any], Any]:
    """The conversion of one field's raw JSON value, chosen once from its carry and type.

    A placeholder whose path is absent from the stream record renders as "" (AWS: eb-pipes-input-transformation,
    validated on EventBridge): missing, so NULL. A field carried typed (every string
    attribute, unless its mapping says otherwise) is a whole attribute value: {"S": ""} is an
    empty string, {"NULL": true} is NULL. A bare string, number or boolean in a typed field is
    taken as the value itself: a message rendered by the template of an earlier build (one
    still in the queue while a new Lambda is deployed) carries string attributes bare.
    """
    if spec.carry == "typed":

        def typed(raw: Any) -> Any:
            if type(raw) is dict and len(raw) == 1:  # the common case first: {"S": "x"}
                text = raw.get("S")
                if type(text) is str:
                    return text
                return unmarshal(raw)
            if raw == "" or raw is None:
                return MISSING
            if isinstance(raw, (str, bool, Decimal)):
                return raw
            return unmarshal(raw)

        return typed
    t = spec.type
    if t == "S":

        def string(raw: Any) -> Any:
            if not isinstance(raw, str):
                raise DecodeError(f"field {spec.name}: expected a string, got {shown(raw)}")
            return raw

        return string
    if t in ("N", "number"):
        return _body_number  # tells "" (missing) apart itself
    convert: Callable[[Any], Any]
    if t == "BOOL":

        def convert(raw: Any) -> Any:
            if not isinstance(raw, bool):
                raise DecodeError(f"field {spec.name}: expected true/false, got {shown(raw)}")
            return raw

    elif t == "NULL":
        convert = lambda raw: None  # noqa: E731
    elif t == "M":
        convert = unmarshal_map
    elif t == "L":

        def convert(raw: Any) -> Any:
            if not isinstance(raw, list):
                raise DecodeError(f"field {spec.name}: expected a list")
            return [unmarshal(v) for v in raw]

    else:
        convert = lambda raw: unmarshal({t: raw})  # noqa: E731
    return lambda raw: MISSING if raw == "" else convert(raw)


def _reader(spec: FieldSpec) -> Callable[[dict[str, Any]], Any]:
    """A function reading one field from a decoded body, built once per field spec (the
    decode of every message runs it, so the path walk and type choice are not repeated)."""
    reader = _READERS.get(spec)
    if reader is not None:
        return reader
    convert = _converter(spec)
    path, name = spec.path, spec.name
    top = path[0] if len(path) == 1 else None  # most fields are at the top of the body
    # The common cases, without a call: a bare string field's value is its raw text (None: no
    # such type); a typed field's is the text of its {"S": "x"}.
    as_is = str if spec.carry == "value" and spec.type == "S" else None
    typed = spec.carry == "typed"

    def read(body: dict[str, Any]) -> Any:
        raw = body.get(top, MISSING) if top is not None else _lookup(body, path)
        if type(raw) is as_is or raw is MISSING:
            return raw
        if typed and type(raw) is dict and type(text := raw.get("S")) is str and len(raw) == 1:
            return text
        try:
            return convert(raw)
        except AttributeValueError as exc:
            raise DecodeError(f"field {name}: {exc}") from None

    _READERS[spec] = read
    return read


_READERS: dict[FieldSpec, Callable[[dict[str, Any]], Any]] = {}


def field_value(body: dict[str, Any], spec: FieldSpec) -> Any:
    """One message field as a Python value, or MISSING (see _converter)."""
    return _reader(spec)(body)


class _Values(dict[str, Any]):
    """Lazily decoded message fields, `values[name]`: each read on first use, at most once (a
    dict, so that a field already read costs no Python call); MISSING for a name the entity
    does not have."""

    __slots__ = ("body", "readers")

    def __init__(self, body: dict[str, Any], readers: dict[str, Callable[[dict[str, Any]], Any]]) -> None:
        self.body = body
        self.readers = readers

    def __missing__(self, name: str) -> Any:
        reader = self.readers.get(name)
        value = self[name] = MISSING if reader is None else reader(self.body)
        return value

    def value(self, name: str) -> Any:
        """A field's value for an expression: None when missing or null."""
        v = self[name]
        return None if v is MISSING else v

    def first(self, names: tuple[str, ...]) -> Any:
        for n in names:
            v = self[n]
            if v is not MISSING and v is not None:
                return v
        return MISSING


def _single(fields: tuple[str, ...]) -> str | None:
    """A column's one field, which decode reads as it is (`values[f]`, a converter takes None as
    it takes MISSING); None for any other number of fields: the first present one is taken
    (_Values.first)."""
    return fields[0] if len(fields) == 1 else None


@dataclass(slots=True)
class _ActionProgram:
    act: ActionSpec
    table: TableSpec
    # (single field, fields, converter) per key column
    key: list[tuple[str | None, tuple[str, ...], Callable[[Any], Any]]]
    # (column, single field, fields, converter)
    row: list[tuple[str, str | None, tuple[str, ...], Callable[[Any], Any]]]
    # Computed columns: (column, its expression's evaluator, converter), after the others.
    computed: list[tuple[str, Callable[[Callable[[str], Any]], Any], Callable[[Any], Any]]] = field(
        default_factory=list
    )
    # Looked-up columns: (column, (fields, converter) per match column, NULL when missing?)
    lookups: list[tuple[str, list[tuple[tuple[str, ...], Callable[[Any], Any]]], bool]] = field(
        default_factory=list
    )
    # A child table: (column, path inside the element, converter) per element column, and the
    # position column's converter.
    elements: list[tuple[str, tuple[str, ...], Callable[[Any], Any]]] = field(default_factory=list)
    position: Callable[[Any], Any] | None = None


@dataclass(slots=True)
class _Program:
    """What decode does for one entity, worked out once: a reader per field, and per event
    type the columns each action fills with their converters."""

    entity: EntitySpec
    readers: dict[str, Callable[[dict[str, Any]], Any]]
    rules: dict[str, list[_ActionProgram]]


def _build_program(entity: EntitySpec, nul_ok: bool) -> _Program:
    converters: dict[tuple[str, str], Callable[[Any], Any]] = {}

    def conv(table: TableSpec, column: str) -> Callable[[Any], Any]:
        k = (table.name, column)
        if k not in converters:
            converters[k] = converter(table.columns[column], nul_ok=nul_ok)
        return converters[k]

    evaluators: dict[tuple[str, str], Callable[[Callable[[str], Any]], Any]] = {}

    def computed(table: TableSpec, column: str) -> Callable[[Callable[[str], Any]], Any]:
        k = (table.name, column)
        if k not in evaluators:
            expr = table.columns[column].expr
            assert expr is not None
            evaluators[k] = evaluator(expr, column)
        return evaluators[k]

    rules: dict[str, list[_ActionProgram]] = {}
    for event_type, actions in entity.rules.items():
        progs = []
        for act in actions:
            table = entity.tables[act.table]
            if act.action in (DO_INSERT, DO_UPSERT) or (
                act.action is DO_UPDATE and act.if_missing is IF_MISSING_UPSERT
            ):
                cols: Any = table.columns.keys()
            elif act.action is DO_UPDATE or act.action is DO_FILL:
                cols = act.columns
            else:
                cols = ()
            lookups = []
            for c in cols:
                lk = table.columns[c].lookup
                if lk is not None:
                    parts = [(m.fields, converter(m, nul_ok=nul_ok)) for m in lk.match]
                    lookups.append((c, parts, lk.when_missing is WHEN_MISSING_NULL))
            each = table.each
            progs.append(
                _ActionProgram(
                    act,
                    table,
                    [
                        (_single(table.columns[k].fields), table.columns[k].fields, conv(table, k))
                        for k in (each.parent_key if each else table.key)
                    ],
                    [
                        (c, _single(table.columns[c].fields), table.columns[c].fields, conv(table, c))
                        for c in cols
                        if table.columns[c].expr is None
                        and c not in table.lookups
                        and table.columns[c].element is None
                        and not table.columns[c].position
                    ],
                    [
                        (c, computed(table, c), conv(table, c))
                        for c in cols
                        if table.columns[c].expr is not None
                    ],
                    lookups,
                    [(c, el, conv(table, c)) for c in cols if (el := table.columns[c].element) is not None],
                    conv(table, each.position) if each else None,
                )
            )
        rules[event_type] = progs
    return _Program(entity, {n: _reader(f) for n, f in entity.fields.items()}, rules)


_PROGRAMS: dict[tuple[int, bool], _Program] = {}


def _program(entity: EntitySpec, nul_ok: bool) -> _Program:
    prog = _PROGRAMS.get((id(entity), nul_ok))
    if prog is None or prog.entity is not entity:
        if len(_PROGRAMS) > 256:  # registries reloaded many times in one process (tests, tools)
            _PROGRAMS.clear()
        prog = _PROGRAMS[(id(entity), nul_ok)] = _build_program(entity, nul_ok)
    return prog


def _version(table: TableSpec, values: _Values) -> Any:
    spec = table.version
    if spec is None:
        return None
    raw = values.first(spec.fields)
    if raw is MISSING:
        raise DecodeError(f"table {table.name}: version field {' / '.join(spec.fields)} is missing")
    if spec.kind is VERSION_SEQUENCE:
        text = raw if type(raw) is str else canonical_text(raw)
        if not text.isdigit() or len(text) > SEQUENCE_WIDTH:
            raise DecodeError(
                f"table {table.name}: sequence number {cut(text, 60)!r} is not 1..{SEQUENCE_WIDTH} digits"
            )
        return text.zfill(SEQUENCE_WIDTH)
    try:
        d = number(raw) if not isinstance(raw, Decimal) else raw
    except ValueError:
        raise DecodeError(f"table {table.name}: version {shown(raw)} is not a number") from None
    if d != d.to_integral_value() or d < 0 or d >= 2**63:
        raise DecodeError(f"table {table.name}: version {shown(d)} is not a whole number in 0..2^63")
    return int(d)


_KEY_TEXT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _body_number(raw: Any) -> Any:
    """A number field: a JSON number of the body (Decimal: DynamoDB's limits checked here), the
    text of an N value, or MISSING for "" (see _converter)."""
    if type(raw) is Decimal:  # first: comparing a Decimal with "" costs an isinstance of an ABC
        return check_digits(check_magnitude(raw))
    return MISSING if raw == "" else number(raw)


# Built once: json.loads(..., parse_float=) builds a decoder on every call. Every JSON number
# becomes an exact Decimal: Decimal reads any length in linear time (int() refuses 4,300 digits
# only after reading them), and a reader refuses what DynamoDB could not hold before any
# arithmetic on it (_body_number).
_BODY = json.JSONDecoder(parse_float=Decimal, parse_int=Decimal).decode


_NEEDS_ESCAPE = re.compile(r'[\x00-\x1f\\"]').search  # what JSON escapes with ensure_ascii off


def row_key(table: TableSpec, key: tuple[Any, ...]) -> str:
    """The key as JSON text (tombstones and the plan use it): '["ORD-1"]'."""
    parts = [v if type(v) is str else canonical_text(v) for v in key]
    # Without anything to escape, the encoder's text is built directly (no per-call set-up).
    plain = _NEEDS_ESCAPE("".join(parts)) is None
    text = '["' + '","'.join(parts) + '"]' if plain else _KEY_TEXT(parts)
    if len(text) > ROW_KEY_MAX:
        raise DecodeError(f"table {table.name}: key is longer than {ROW_KEY_MAX} characters")
    return text


def decode(record: SqsRecord, entity: EntitySpec, *, nul_ok: bool = True) -> Change:
    """The message as a typed change. `nul_ok=False` (PostgreSQL) refuses U+0000 in text."""
    if not record.body:
        raise DecodeError("empty message body")
    try:
        body = _parsed_body(record)
    except json.JSONDecodeError as exc:
        raise DecodeError(f"body is not JSON ({exc.msg} at char {exc.pos})") from None
    except RecursionError:
        raise DecodeError("body is JSON nested too deeply to be a stream record") from None
    if not isinstance(body, dict):
        raise DecodeError(
            f"body is a JSON {type(body).__name__}, not an object (check the Pipe's input template)"
        )
    prog = _program(entity, nul_ok)
    values = _Values(body, prog.readers)

    event_id = ""
    if entity.event_id_field:
        eid = values[entity.event_id_field]
        if isinstance(eid, str) and eid:
            event_id = eid
    if not event_id:
        if entity.ledger:
            raise DecodeError(f"event id field {entity.event_id_field!r} is missing or empty")
        event_id = record.message_id
    if len(event_id) > EVENT_ID_TEXT:
        raise DecodeError(
            f"event id of {len(event_id):,} characters is longer than the ledger's {EVENT_ID_TEXT} "
            f"(field {entity.event_id_field!r}: a DynamoDB stream eventID has 32)"
        )

    event_type = ""
    for field_name in entity.type_from:
        v = values[field_name]
        if isinstance(v, str) and v:
            event_type = v
            break
    if not event_type:
        raise DecodeError(f"no event type: fields {', '.join(entity.type_from)} are all missing or empty")

    created = values[entity.lag_field] if entity.lag_field else MISSING
    created_at = created if isinstance(created, Decimal) else None

    actions = prog.rules.get(event_type)
    if actions is None:
        if entity.unknown == "ignore":
            return Change(record, entity, event_id, event_type, [], created_at)
        known = ", ".join(sorted(entity.rules))
        raise DecodeError(f"unknown event type {name(event_type)} and no rule for it (rules: {known})")

    writes = []
    first = values.first
    try:
        for ap in actions:
            table, act = ap.table, ap.act
            key = tuple(
                [convert(values[f] if f is not None else first(fields)) for f, fields, convert in ap.key]
            )
            if None in key:
                raise DecodeError(f"table {table.name}: key {', '.join(table.key)} has no value")
            row = {
                c: convert(values[f] if f is not None else first(fields)) for c, f, fields, convert in ap.row
            }
            for c, parts, null_when_missing in ap.lookups:
                # The values the row is looked up by; the statement finds the row (runtime.statements).
                match = tuple([convert(first(fields)) for fields, convert in parts])
                if None in match and not null_when_missing:
                    raise DecodeError(
                        f"table {table.name}: column {c} is looked up by "
                        f"{' / '.join(f for fields, _ in parts for f in fields)}, which the message lacks"
                    )
                row[c] = None if None in match else match
            if ap.computed:
                get = values.value
                for c, evaluate, convert in ap.computed:
                    row[c] = convert(evaluate(get))
            if table.each is not None:
                writes.extend(_child_writes(ap, key, row, _version(table, values), values))
                continue
            row.update(zip(table.key, key, strict=True))
            if act.action is DO_SOFT_DELETE and table.soft_delete is not None:
                sd = table.soft_delete
                if sd.kind is SOFT_DELETE_TIMESTAMP:
                    ts = values[sd.field] if sd.field else MISSING
                    row[sd.column] = (
                        None
                        if ts is MISSING or ts is None
                        else timestamp_value(
                            ts, sd.format, f"table {table.name}: soft_delete column {sd.column}"
                        )
                    )
                else:
                    row[sd.column] = True
            writes.append(
                Write(
                    act.action, table, key, row_key(table, key), row, _version(table, values), act.if_missing
                )
            )
    except CoercionError as exc:
        raise RefusedValue(str(exc)) from None
    return Change(record, entity, event_id, event_type, writes, created_at)


def _element_value(element: Any, path: tuple[str, ...]) -> Any:
    node = element
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return MISSING
        node = node[part]
    return node


def _child_writes(
    ap: _ActionProgram, parent_key: tuple[Any, ...], parent_row: dict[str, Any], version: Any, values: _Values
) -> list[Write]:
    """A child table's writes for one action: an upsert per element of the list (or map),
    then the prune of the parent's rows at positions the event no longer holds; a delete
    action prunes them all. Every write carries the parent's version and its row key, which
    keys the set's tombstone (runtime.plan)."""
    table, act = ap.table, ap.act
    each = table.each
    assert each is not None and ap.position is not None
    parent = row_key(table, parent_key)
    if version is None:  # validate requires a version on a child table
        raise DecodeError(f"table {table.name}: a child table needs a version")
    writes: list[Write] = []
    items: list[tuple[Any, Any]] = []
    if act.action is DO_UPSERT:
        raw = values[each.field]
        if raw is MISSING or raw is None:
            raw = [] if each.kind == "L" else {}
        if each.kind == "L":
            if not isinstance(raw, list):
                raise DecodeError(f"table {table.name}: field {each.field} is not a list")
            items = [(each.start + i, e) for i, e in enumerate(raw)]
        else:
            if not isinstance(raw, dict):
                raise DecodeError(f"table {table.name}: field {each.field} is not a map")
            items = sorted(raw.items())
        if each.max_elements is not None and len(items) > each.max_elements:
            raise DecodeError(
                f"table {table.name}: field {each.field} has {len(items):,} elements, more than "
                f"max_elements {each.max_elements:,}"
            )
        for pos, element in items:
            row = dict(parent_row)
            for c, path, convert in ap.elements:
                row[c] = convert(_element_value(element, path))
            position = ap.position(pos)
            row[each.position] = position
            for k, v in zip(each.parent_key, parent_key, strict=True):
                row[k] = v
            key = tuple(row[k] for k in table.key)
            writes.append(
                Write(act.action, table, key, row_key(table, key), row, version, act.if_missing, parent)
            )
    kept: Any = len(items) if each.kind == "L" else tuple(ap.position(p) for p, _ in items)
    writes.append(Write(DO_DELETE, table, parent_key, parent, {}, version, act.if_missing, parent, kept))
    return writes


def entity_for(record: SqsRecord, registry: Registry) -> EntitySpec:
    shared = registry.shared_queues.get(record.queue)
    if shared is not None:
        return _shared_entity(record, registry, shared)
    entity = registry.entity_for_queue(record.queue)
    if entity is None:
        if len(registry.entities) == 1 and not record.queue:
            return next(iter(registry.entities.values()))
        known = ", ".join(sorted(registry.queues))
        raise DecodeError(
            f"queue {record.queue!r} is not in the registry (queues: {known}); rebuild and redeploy"
        )
    return entity


def _shared_entity(record: SqsRecord, registry: Registry, shared: SharedQueueSpec) -> EntitySpec:
    """The entity of a message on a shared queue, by the discriminator the template put in
    it. The Pipe's filter lets through only items some entity claims, so a miss means a
    message of another build or a hand-sent one: permanent."""
    try:
        body = _parsed_body(record) if record.body else None
    except (json.JSONDecodeError, RecursionError):
        body = None  # decode() says what is wrong with it
    name_, value = shared.entity_name(body)
    if name_ is None:
        if not isinstance(body, dict):
            return registry.entities[shared.values[0][1]]  # decode() refuses the body
        what = "prefix" if shared.kind == "key" else "value"
        known = ", ".join(f"{e}: {v!r}" for v, e in shared.values)
        raise DecodeError(
            f"queue {record.queue!r} is shared by several entities and the message's "
            f"{shared.kind} {shared.name} ({name(value) if value else 'missing'}) matches no entity's "
            f"{what} ({known}); rebuild and redeploy, or check the message's origin"
        )
    return registry.entities[name_]
