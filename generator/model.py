"""The resolved mapping model: frozen, typed, defaults applied.

Raw YAML (dicts, validated against the JSON Schema) becomes these objects once, in
`generator.resolve`; emitters only ever see this model. Every object keeps `where`, the key
path it came from, so semantic checks can point at a line and column.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from generator.diagnostics import PathT
from synctools import awsdocs

# Pipes dynamic JSON paths and template placeholders: dot-separated segments of
# [A-Za-z0-9_/-], each optionally followed by [n] or [*] (facts 1.2: the Terraform provider's
# regex for dynamic path parameters).
PIPES_JSON_PATH = re.compile(r"^\$(\.[\w/_-]+(\[(\d+|\*)\])*)*$")
ATTRIBUTE_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_SEGMENT = re.compile(r"^(?P<name>[^.\[\]]+)(?P<idx>(\[\d+\])*)$")

META_FIELDS: dict[str, tuple[str, str]] = {
    # meta name -> (JSON path in the stream record, registry value type)
    "eventID": ("$.eventID", "S"),
    "eventName": ("$.eventName", "S"),
    "eventSourceARN": ("$.eventSourceARN", "S"),
    "awsRegion": ("$.awsRegion", "S"),
    "SequenceNumber": ("$.dynamodb.SequenceNumber", "S"),
    # A JSON number (epoch seconds) in delivered events (facts 1.8).
    "ApproximateCreationDateTime": ("$.dynamodb.ApproximateCreationDateTime", "number"),
    "SizeBytes": ("$.dynamodb.SizeBytes", "number"),
    "StreamViewType": ("$.dynamodb.StreamViewType", "S"),
}

IMAGE_KEY = {"new": "NewImage", "old": "OldImage"}


class PathSyntaxError(ValueError):
    pass


@dataclass(frozen=True)
class Segment:
    name: str
    indexes: tuple[int, ...] = ()


@dataclass(frozen=True)
class AttrPath:
    """An item attribute path such as `order_details.total_amount` or `items[0].sku`."""

    text: str
    segments: tuple[Segment, ...]

    @classmethod
    def parse(cls, text: str) -> AttrPath:
        if not text or text.strip() != text:
            raise PathSyntaxError("an attribute path must be non-empty without surrounding spaces")
        segments = []
        for raw in text.split("."):
            m = _SEGMENT.match(raw)
            if not m:
                raise PathSyntaxError(f"segment {raw!r} is not an attribute name optionally followed by [n]")
            name = m.group("name")
            if not ATTRIBUTE_NAME.match(name):
                raise PathSyntaxError(
                    f"attribute name {name!r} has characters a Pipes JSON path cannot address "
                    f"(only letters, digits, '_' and '-'; see {awsdocs.PIPES_INPUT_TRANSFORM})"
                )
            idx = tuple(int(i) for i in re.findall(r"\[(\d+)\]", m.group("idx")))
            segments.append(Segment(name, idx))
        return cls(text, tuple(segments))

    def typed_parts(self, leaf_type: str | None) -> list[str]:
        """JSON path parts below the image: maps entered through M, lists through L.

        `order_details.total_amount` with leaf N -> order_details.M.total_amount.N
        `items[0].sku` with leaf S -> items.L[0].M.sku.S
        """
        parts: list[str] = []
        for i, seg in enumerate(self.segments):
            part = seg.name
            for n in seg.indexes:
                part += f".L[{n}]"
            parts.append(part)
            if i < len(self.segments) - 1:
                parts.append("M")
        if leaf_type:
            parts.append(leaf_type)
        return parts

    def pattern_keys(self, leaf_type: str) -> list[str]:
        """Keys of the nested filter pattern (lists are 'crushed' by the matcher: AWS: eb-pipes-event-filtering)."""
        keys: list[str] = []
        for i, seg in enumerate(self.segments):
            keys.append(seg.name)
            keys.extend("L" for _ in seg.indexes)
            if i < len(self.segments) - 1:
                keys.append("M")
        keys.append(leaf_type)
        return keys


@dataclass(frozen=True)
class KeyAttr:
    name: str
    type: str


@dataclass(frozen=True)
class Outbox:
    attribute: str
    event_id: str
    event_type: str


@dataclass(frozen=True)
class Discriminator:
    """How one entity's items are told apart in a single-table design: an attribute's exact
    value (`attribute`, `value`), or a key attribute's prefix (`key`, `prefix`)."""

    kind: str  # attribute | key
    name: str  # the attribute or key attribute name
    value: str  # the attribute value, or the key prefix
    where: PathT = ("source", "discriminator")

    @property
    def describe(self) -> str:
        if self.kind == "key":
            return f"key {self.name} starts with {self.value!r}"
        return f"attribute {self.name} = {self.value!r}"


@dataclass(frozen=True)
class Source:
    table: str
    managed: bool
    billing_mode: str
    read_capacity: int | None
    write_capacity: int | None
    partition_key: KeyAttr
    sort_key: KeyAttr | None
    stream_view_type: str
    outbox: Outbox | None
    expected_writes_per_second: float | None = None  # declared peak write rate (capacity checks)
    where: PathT = ("source",)
    point_in_time_recovery: bool = True
    deletion_protection: bool = True
    discriminator: Discriminator | None = None  # single-table design: one shared Pipe per table

    @property
    def keys(self) -> tuple[KeyAttr, ...]:
        return (self.partition_key,) + ((self.sort_key,) if self.sort_key else ())

    def key(self, name: str) -> KeyAttr | None:
        return next((k for k in self.keys if k.name == name), None)

    @property
    def images(self) -> frozenset[str]:
        return {
            "KEYS_ONLY": frozenset(),
            "NEW_IMAGE": frozenset({"new"}),
            "OLD_IMAGE": frozenset({"old"}),
            "NEW_AND_OLD_IMAGES": frozenset({"new", "old"}),
        }[self.stream_view_type]


@dataclass(frozen=True)
class Condition:
    path: AttrPath
    type: str
    image: str
    where: PathT


@dataclass(frozen=True)
class Filter:
    event_names: tuple[str, ...]
    require_outbox: bool
    require_attributes: tuple[Condition, ...]
    event_types: tuple[str, ...]
    and_pattern: dict[str, Any] | None
    or_patterns: tuple[dict[str, Any], ...]
    where: PathT = ("filter",)


@dataclass(frozen=True)
class Field:
    """One message field: where Pipes reads it from and how it travels."""

    name: str
    kind: str  # attribute | key | meta
    type: str  # DynamoDB type (S, N, M, ...) or "number" for JSON-number metadata
    attribute: AttrPath | None = None
    key: str | None = None
    meta: str | None = None
    image: str | None = None  # new | old, attributes only
    carry: str = "value"  # value | typed
    description: str = ""
    where: PathT = ()

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(self.name.split("."))

    @property
    def json_path(self) -> str:
        """The JSON path Pipes resolves against the stream record (AWS: Streams record shape)."""
        leaf = None if self.carry == "typed" else self.type
        if self.kind == "meta":
            return META_FIELDS[self.meta or ""][0]
        if self.kind == "key":
            return "$.dynamodb.Keys." + ".".join([self.key or ""] + ([leaf] if leaf else []))
        assert self.attribute is not None and self.image is not None
        return "$.dynamodb." + IMAGE_KEY[self.image] + "." + ".".join(self.attribute.typed_parts(leaf))


@dataclass(frozen=True)
class Lookup:
    """A column's value taken from another table: `select` of the row of `table` whose
    `match` columns equal the message fields (parent column, field), resolved inside the write."""

    table: str
    match: tuple[tuple[str, str], ...]
    select: str
    when_missing: str  # retry | null | fail
    where: PathT = ()


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    fields: tuple[str, ...] = ()
    const: Any = None
    has_const: bool = False
    length: int | None = None
    precision: int | None = None
    scale: int | None = None
    format: str | None = None
    value_map: tuple[tuple[str, Any], ...] | None = None
    on_unmapped: str = "fail"
    default: Any = None
    has_default: bool = False
    nullable: bool = True
    references: str | None = None
    description: str = ""
    where: PathT = ()
    expr: str | None = None  # a computed column: its expression's text (generator.expr)
    lookup: Lookup | None = None
    # A child table's column: a path inside the element, or the element's position.
    element: tuple[str, ...] | None = None
    position: bool = False


@dataclass(frozen=True)
class Version:
    column: str
    fields: tuple[str, ...]
    kind: str  # sequence (stream SequenceNumber, compared as zero-padded text) | integer
    where: PathT = ()


@dataclass(frozen=True)
class SoftDelete:
    column: str
    field: str | None
    kind: str  # timestamp | boolean
    where: PathT = ()
    format: str | None = None  # iso8601 | epoch_seconds | epoch_millis; None: by the field's type


@dataclass(frozen=True)
class Each:
    """A child table: one row per element of a list (L) or map (M) message field."""

    field: str
    start: int
    max_elements: int | None
    where: PathT = ()


@dataclass(frozen=True)
class Table:
    name: str
    schema: str | None
    surrogate_key: str | None
    key: tuple[str, ...]
    columns: tuple[Column, ...]
    version: Version | None
    soft_delete: SoftDelete | None
    where: PathT = ()
    append_only: bool = False  # a log of events: insert actions only; reconcile skips it
    each: Each | None = None  # a child table (runtime.decode expands it per element)

    @property
    def position(self) -> Column | None:
        """A child table's position column."""
        return next((c for c in self.columns if c.position), None)

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}" if self.schema else self.name


@dataclass(frozen=True)
class Action:
    kind: str  # insert | upsert | update | delete | soft_delete
    table: str
    columns: tuple[str, ...] = ()
    if_missing: str = "fail"
    where: PathT = ()


@dataclass(frozen=True)
class Rule:
    on: tuple[str, ...]
    actions: tuple[Action, ...]  # empty: ignore
    where: PathT = ()

    @property
    def ignore(self) -> bool:
        return not self.actions


@dataclass(frozen=True)
class Events:
    type_from: tuple[str, ...]
    unknown: str
    rules: tuple[Rule, ...]
    where: PathT = ("events",)


@dataclass(frozen=True)
class Idempotency:
    ledger: bool
    event_id_field: str | None
    where: PathT = ("idempotency",)


@dataclass(frozen=True)
class Routing:
    message_group_id: str
    deduplication_id: str
    where: PathT = ("routing",)


@dataclass(frozen=True)
class PipeSettings:
    name: str
    role_name: str
    batch_size: int
    starting_position: str
    maximum_retry_attempts: int
    maximum_record_age_in_seconds: int
    maximum_batching_window_in_seconds: int
    parallelization_factor: int
    desired_state: str
    dlq_name: str
    dlq_retention_seconds: int


@dataclass(frozen=True)
class QueueSettings:
    name: str
    visibility_timeout_seconds: int
    message_retention_seconds: int
    content_based_deduplication: bool
    high_throughput: bool
    max_receive_count: int
    dlq_name: str
    dlq_retention_seconds: int


@dataclass(frozen=True)
class ConsumerSettings:
    batch_size: int
    maximum_concurrency: int
    maximum_batching_window_in_seconds: int | None
    enabled: bool


@dataclass(frozen=True)
class AlarmSettings:
    dlq_messages: int
    oldest_message_age_seconds: int
    transient_failure_minutes: int = 5
    stale_events_per_minute: int = 100


@dataclass(frozen=True)
class Retention:
    """How long the entity's ledger rows and its tables' tombstones are kept (runtime.prune):
    the mapping's pipeline.retention, else `window` (generator.resolve.retention_window)."""

    ledger_seconds: int
    tombstone_seconds: int
    window: int  # the derived window: the longest a duplicate or a late event can still arrive


@dataclass(frozen=True)
class Pipeline:
    pipe: PipeSettings
    queue: QueueSettings
    consumer: ConsumerSettings
    alarms: AlarmSettings
    where: PathT = ("pipeline",)
    retention: Retention = Retention(0, 0, 0)


@dataclass(frozen=True)
class Entity:
    name: str
    file: str
    description: str
    source: Source
    filter: Filter
    fields: tuple[Field, ...]
    routing: Routing
    tables: tuple[Table, ...]
    events: Events
    idempotency: Idempotency
    pipeline: Pipeline
    retired: bool = False  # nothing of its sync is generated; its managed table is kept

    def field(self, name: str) -> Field | None:
        return next((f for f in self.fields if f.name == name), None)

    def table(self, name: str) -> Table | None:
        return next((t for t in self.tables if t.name == name), None)

    def fields_with_meta(self, meta: str) -> list[Field]:
        return [f for f in self.fields if f.kind == "meta" and f.meta == meta]


@dataclass(frozen=True)
class LambdaSettings:
    function_name: str
    role_name: str
    runtime: str
    architecture: str
    memory_mb: int
    timeout_seconds: int
    reserved_concurrency: int | None
    log_retention_days: int
    package: str
    subnet_ids: tuple[str, ...]
    security_group_ids: tuple[str, ...]
    environment: tuple[tuple[str, str], ...]
    aws_access: str | None = None  # endpoints | routed | None (unset)
    vpc_id: str | None = None
    endpoint_services: tuple[str, ...] | None = None  # None: the ones the function calls


@dataclass(frozen=True)
class IamAuth:
    """IAM database authentication (project.yaml database.auth, mode iam)."""

    host: str
    port: int
    user: str
    dbname: str
    resource_id: str  # db-..., cluster-... or prx-...


@dataclass(frozen=True)
class DatabaseSettings:
    dialect: str
    secret_arn: str | None
    ledger_table: str
    tombstone_table: str
    foreign_key_violation: str
    tls_mode: str = "verify-full"  # verify-full | require | off (runtime.tls)
    ca_bundle: str | None = None  # a PEM file, relative to the project root
    iam: IamAuth | None = None  # None: password auth (the secret)
    proxy: bool = False  # reached through an RDS Proxy
    secret_kms_key_arn: str | None = None


@dataclass(frozen=True)
class PruneSettings:
    enabled: bool
    schedule: str
    batch_rows: int


@dataclass(frozen=True)
class Project:
    name: str
    file: str
    region: str
    prefix: str
    lambda_: LambdaSettings
    database: DatabaseSettings
    terraform_required_version: str
    aws_provider_version: str
    alarm_topic_arns: tuple[str, ...]
    tags: tuple[tuple[str, str], ...]
    prune: PruneSettings = PruneSettings(True, "rate(1 hour)", 1000)
    kms_key_arn: str | None = None  # encryption.kms_key_arn

    def endpoint_services(self) -> tuple[str, ...]:
        """The services lambda.vpc.aws_access: endpoints creates interface endpoints for."""
        if self.lambda_.endpoint_services is not None:
            return self.lambda_.endpoint_services
        return ("secretsmanager",) if self.database.secret_arn and self.database.iam is None else ()


@dataclass(frozen=True)
class Model:
    project: Project
    entities: tuple[Entity, ...] = field(default_factory=tuple)

    @property
    def live(self) -> tuple[Entity, ...]:
        """The entities that sync (not retired): the ones with a Pipe, queues and registry entry."""
        return tuple(e for e in self.entities if not e.retired)
