"""Raw, schema-valid YAML data -> the frozen model, with every default applied.

Only problems that stop a value from being represented at all (an attribute path that does
not parse) are reported here; everything else is left to `generator.checks`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from generator import defaults
from generator.defaults import EACH, ITEMS
from generator.diagnostics import Diagnostic, PathT, Severity, format_path
from generator.model import (
    META_FIELDS,
    Action,
    AlarmSettings,
    AttrPath,
    Column,
    Condition,
    ConsumerSettings,
    DatabaseSettings,
    Discriminator,
    Each,
    Entity,
    Events,
    Field,
    Filter,
    IamAuth,
    Idempotency,
    KeyAttr,
    LambdaSettings,
    Lookup,
    Outbox,
    PathSyntaxError,
    Pipeline,
    PipeSettings,
    Project,
    PruneSettings,
    QueueSettings,
    Retention,
    Routing,
    Rule,
    SoftDelete,
    Source,
    Table,
    Version,
)
from generator.yamlload import Located
from runtime import dialects
from runtime.aws_limits import DYNAMODB_STREAM_RETENTION_SECONDS


def _as_tuple(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, list):
        return tuple(value)
    return (value,)


def resolve_project(doc: Located) -> Project:
    raw: dict[str, Any] = doc.data if isinstance(doc.data, dict) else {}
    prefix = raw.get("naming", {}).get("prefix", defaults.project("naming", "prefix"))
    lam = raw.get("lambda", {})
    vpc = lam.get("vpc") or {}
    db = raw.get("database", {})
    dialect = db.get("dialect", defaults.project("database", "dialect"))
    tls = db.get("tls") or {}
    tf = raw.get("terraform", {})
    function_name = lam.get("function_name", f"{prefix}{raw['name']}")
    return Project(
        name=raw["name"],
        file=doc.file,
        region=raw["region"],
        prefix=prefix,
        lambda_=LambdaSettings(
            function_name=function_name,
            role_name=f"{function_name}-role",
            runtime=lam.get("runtime", defaults.project("lambda", "runtime")),
            architecture=lam.get("architecture", defaults.project("lambda", "architecture")),
            memory_mb=lam.get("memory_mb", defaults.project("lambda", "memory_mb")),
            timeout_seconds=lam.get("timeout_seconds", defaults.project("lambda", "timeout_seconds")),
            reserved_concurrency=lam.get("reserved_concurrency"),
            log_retention_days=lam.get(
                "log_retention_days", defaults.project("lambda", "log_retention_days")
            ),
            package=lam.get("package", defaults.project("lambda", "package")),
            subnet_ids=tuple(vpc.get("subnet_ids", ())),
            security_group_ids=tuple(vpc.get("security_group_ids", ())),
            environment=tuple(sorted(lam.get("environment", {}).items())),
            aws_access=vpc.get("aws_access"),
            vpc_id=vpc.get("vpc_id"),
            endpoint_services=tuple(vpc["endpoint_services"]) if "endpoint_services" in vpc else None,
        ),
        database=DatabaseSettings(
            dialect=dialect,
            secret_arn=db.get("secret_arn"),
            ledger_table=db.get("ledger_table", defaults.project("database", "ledger_table")),
            tombstone_table=db.get("tombstone_table", defaults.project("database", "tombstone_table")),
            foreign_key_violation=db.get(
                "foreign_key_violation", defaults.project("database", "foreign_key_violation")
            ),
            tls_mode=tls.get("mode", defaults.project("database", "tls", "mode")),
            ca_bundle=tls.get("ca_bundle"),
            iam=_iam_auth(db, dialect),
            proxy=db.get("proxy", defaults.project("database", "proxy")),
            secret_kms_key_arn=db.get("secret_kms_key_arn"),
        ),
        terraform_required_version=tf.get(
            "required_version", defaults.project("terraform", "required_version")
        ),
        aws_provider_version=tf.get(
            "aws_provider_version", defaults.project("terraform", "aws_provider_version")
        ),
        alarm_topic_arns=tuple(raw.get("alarms", {}).get("sns_topic_arns", ())),
        tags=tuple(sorted(raw.get("tags", {}).items())),
        kms_key_arn=raw.get("encryption", {}).get("kms_key_arn"),
        prune=PruneSettings(
            enabled=raw.get("prune", {}).get("enabled", defaults.project("prune", "enabled")),
            schedule=raw.get("prune", {}).get("schedule", defaults.project("prune", "schedule")),
            batch_rows=raw.get("prune", {}).get("batch_rows", defaults.project("prune", "batch_rows")),
        ),
    )


def _iam_auth(db: dict[str, Any], dialect: str) -> IamAuth | None:
    """database.auth with mode iam (its missing settings are check_project's to report)."""
    auth = db.get("auth") or {}
    if auth.get("mode", defaults.project("database", "auth", "mode")) != "iam":
        return None
    return IamAuth(
        host=auth.get("host", ""),
        port=auth.get("port") or dialects.for_name(dialect).default_port or 0,
        user=auth.get("user", ""),
        dbname=auth.get("dbname", ""),
        resource_id=auth.get("resource_id", ""),
    )


def _lookup(raw: dict[str, Any] | None, where: PathT) -> Lookup | None:
    if raw is None:
        return None
    return Lookup(
        table=raw["table"],
        match=tuple(raw["match"].items()),
        select=raw["select"],
        when_missing=raw.get(
            "when_missing",
            defaults.mapping("target", "tables", ITEMS, "columns", EACH, "lookup", "when_missing"),
        ),
        where=where,
    )


class _Resolver:
    def __init__(self, doc: Located, project: Project) -> None:
        self.doc = doc
        self.project = project
        self.problems: list[Diagnostic] = []

    def error(self, path: PathT, message: str, hint: str, code: str) -> None:
        loc = self.doc.loc(path)
        self.problems.append(
            Diagnostic(
                self.doc.file, loc.line, loc.col, Severity.ERROR, format_path(path), message, hint, code
            )
        )

    def attr_path(self, text: str, where: PathT) -> AttrPath | None:
        try:
            return AttrPath.parse(text)
        except PathSyntaxError as exc:
            self.error(
                where,
                f"attribute path {text!r} is not valid: {exc}",
                "write names separated by '.', each optionally followed by [n], e.g. order_details.status",
                "attr-path",
            )
            return None

    def entity(self) -> Entity:
        raw: dict[str, Any] = self.doc.data  # type: ignore[assignment]
        name = raw["entity"]
        src = raw["source"]
        outbox = src.get("outbox")
        source = Source(
            table=src["table"],
            managed=src.get("managed", defaults.mapping("source", "managed")),
            billing_mode=src.get("billing_mode", defaults.mapping("source", "billing_mode")),
            read_capacity=src.get("read_capacity"),
            write_capacity=src.get("write_capacity"),
            partition_key=KeyAttr(**src["partition_key"]),
            sort_key=KeyAttr(**src["sort_key"]) if src.get("sort_key") else None,
            stream_view_type=src.get("stream_view_type", defaults.mapping("source", "stream_view_type")),
            outbox=Outbox(
                outbox["attribute"],
                outbox.get("event_id", defaults.mapping("source", "outbox", "event_id")),
                outbox.get("event_type", defaults.mapping("source", "outbox", "event_type")),
            )
            if outbox
            else None,
            point_in_time_recovery=src.get(
                "point_in_time_recovery", defaults.mapping("source", "point_in_time_recovery")
            ),
            deletion_protection=src.get(
                "deletion_protection", defaults.mapping("source", "deletion_protection")
            ),
            expected_writes_per_second=src.get("expected_writes_per_second"),
            discriminator=_discriminator(src.get("discriminator")),
        )
        fields = self.fields(raw["message"]["fields"], source)
        flt = raw.get("filter", {})
        conditions = []
        for i, cond in enumerate(flt.get("require_attributes", [])):
            where = ("filter", "require_attributes", i, "path")
            path = self.attr_path(cond["path"], where)
            if path:
                conditions.append(
                    Condition(
                        path,
                        cond["type"],
                        cond.get("image", defaults.mapping("filter", "require_attributes", ITEMS, "image")),
                        ("filter", "require_attributes", i),
                    )
                )
        filter_ = Filter(
            event_names=tuple(flt.get("event_names", defaults.mapping("filter", "event_names"))),
            require_outbox=flt.get("require_outbox", defaults.mapping("filter", "require_outbox")),
            require_attributes=tuple(conditions),
            event_types=tuple(flt.get("event_types", ())),
            and_pattern=flt.get("and_pattern"),
            or_patterns=tuple(flt.get("or_patterns", ())),
        )
        routing_raw = raw.get("routing", {})
        pk = source.partition_key
        routing = Routing(
            message_group_id=routing_raw.get("message_group_id", f"$.dynamodb.Keys.{pk.name}.{pk.type}"),
            deduplication_id=routing_raw.get(
                "deduplication_id", defaults.mapping("routing", "deduplication_id")
            ),
        )
        tables = tuple(self.table(t, i) for i, t in enumerate(raw["target"]["tables"]))
        events = self.events(raw["events"], fields, source)
        idem = raw.get("idempotency", {})
        event_id_field = idem.get("event_id_field")
        if event_id_field is None:
            candidates = [f.name for f in fields if f.kind == "meta" and f.meta == "eventID"]
            event_id_field = candidates[0] if candidates else None
        return Entity(
            name=name,
            file=self.doc.file,
            description=raw.get("description", ""),
            source=source,
            filter=filter_,
            fields=fields,
            routing=routing,
            tables=tables,
            events=events,
            idempotency=Idempotency(
                ledger=idem.get("ledger", defaults.mapping("idempotency", "ledger")),
                event_id_field=event_id_field,
            ),
            # A single-table entity shares its table's Pipe: the default names come from the table.
            pipeline=self.pipeline(raw.get("pipeline", {}), src["table"] if source.discriminator else name),
            retired=raw.get("retired", defaults.mapping("retired")),
        )

    def fields(self, raw: dict[str, Any], source: Source) -> tuple[Field, ...]:
        out = []
        for name, spec in raw.items():
            where: PathT = ("message", "fields", name)
            carry = spec.get("carry", defaults.carry("key", spec.get("type")))
            desc = spec.get("description", "")
            if "meta" in spec:
                out.append(
                    Field(
                        name,
                        "meta",
                        META_FIELDS[spec["meta"]][1],
                        meta=spec["meta"],
                        carry="value",
                        description=desc,
                        where=where,
                    )
                )
            elif "key" in spec:
                key = source.key(spec["key"])
                out.append(
                    Field(
                        name,
                        "key",
                        spec.get("type") or (key.type if key else "S"),
                        key=spec["key"],
                        carry=carry,
                        description=desc,
                        where=where,
                    )
                )
            else:
                path = self.attr_path(spec["attribute"], where + ("attribute",))
                if path is None:
                    continue
                out.append(
                    Field(
                        name,
                        "attribute",
                        spec["type"],
                        attribute=path,
                        image=spec.get("image", defaults.mapping("message", "fields", EACH, "image")),
                        carry=spec.get("carry", defaults.carry("attribute", spec["type"])),
                        description=desc,
                        where=where,
                    )
                )
        return tuple(out)

    def table(self, raw: dict[str, Any], index: int) -> Table:
        where: PathT = ("target", "tables", index)
        columns = []
        for cname, spec in raw["columns"].items():
            vmap = spec.get("map")
            columns.append(
                Column(
                    name=cname,
                    type=spec["type"],
                    fields=_as_tuple(spec.get("field")),
                    const=spec.get("const"),
                    has_const="const" in spec,
                    length=spec.get("length"),
                    precision=spec.get("precision"),
                    scale=spec.get("scale"),
                    format=spec.get("format"),
                    value_map=tuple(vmap.items()) if vmap is not None else None,
                    on_unmapped=spec.get("on_unmapped", _column_default("on_unmapped")),
                    default=spec.get("default"),
                    has_default="default" in spec,
                    nullable=spec.get("nullable", _column_default("nullable") and cname not in raw["key"]),
                    references=spec.get("references"),
                    description=spec.get("description", ""),
                    where=where + ("columns", cname),
                    expr=spec.get("expr"),
                    lookup=_lookup(spec.get("lookup"), where + ("columns", cname, "lookup")),
                    element=tuple(spec["element"].split(".")) if "element" in spec else None,
                    position="position" in spec,
                )
            )
        version = None
        if raw.get("version"):
            v = raw["version"]
            version = Version(v["column"], _as_tuple(v["field"]), "integer", where + ("version",))
        soft = None
        if raw.get("soft_delete"):
            s = raw["soft_delete"]
            soft = SoftDelete(
                s["column"],
                s.get("field"),
                "timestamp" if s.get("field") else "boolean",
                where + ("soft_delete",),
                s.get("format"),
            )
        return Table(
            raw["table"],
            raw.get("schema"),
            raw.get("surrogate_key"),
            tuple(raw["key"]),
            tuple(columns),
            version,
            soft,
            where,
            bool(raw.get("append_only", defaults.mapping("target", "tables", ITEMS, "append_only"))),
            _each(raw.get("each"), where),
        )

    def events(self, raw: dict[str, Any], fields: tuple[Field, ...], source: Source) -> Events:
        type_from = raw.get("type_from")
        if type_from is None:
            guess = []
            if source.outbox:
                guess += [
                    f.name
                    for f in fields
                    if f.kind == "attribute"
                    and f.image == "new"
                    and f.attribute
                    and f.attribute.text == f"{source.outbox.attribute}.{source.outbox.event_type}"
                ]
            guess += [f.name for f in fields if f.kind == "meta" and f.meta == "eventName"]
            type_from = guess
        rules = []
        for i, rule in enumerate(raw["rules"]):
            where: PathT = ("events", "rules", i)
            actions = []
            if rule["do"] != "ignore":
                for j, act in enumerate(rule["do"]):
                    actions.append(
                        Action(
                            act["action"],
                            act["table"],
                            tuple(act.get("columns", ())),
                            act.get("if_missing", defaults.if_missing(act["action"])),
                            where + ("do", j),
                        )
                    )
            rules.append(Rule(_as_tuple(rule["on"]), tuple(actions), where))
        return Events(
            tuple(type_from), raw.get("unknown", defaults.mapping("events", "unknown")), tuple(rules)
        )

    def pipeline(self, raw: dict[str, Any], entity: str) -> Pipeline:
        prefix = self.project.prefix
        pipe = raw.get("pipe", {})
        queue = raw.get("queue", {})
        consumer = raw.get("consumer", {})
        alarms = raw.get("alarms", {})
        pipe_dlq = pipe.get("dlq", {})
        queue_dlq = queue.get("dlq", {})
        pipeline = Pipeline(
            pipe=PipeSettings(
                name=prefix + pipe.get("name", f"{entity}-pipe"),
                role_name=f"{prefix}{self.project.name}-{entity}-pipe",
                batch_size=pipe.get("batch_size", defaults.mapping("pipeline", "pipe", "batch_size")),
                starting_position=pipe.get(
                    "starting_position", defaults.mapping("pipeline", "pipe", "starting_position")
                ),
                maximum_retry_attempts=pipe.get(
                    "maximum_retry_attempts", defaults.mapping("pipeline", "pipe", "maximum_retry_attempts")
                ),
                maximum_record_age_in_seconds=pipe.get(
                    "maximum_record_age_in_seconds",
                    defaults.mapping("pipeline", "pipe", "maximum_record_age_in_seconds"),
                ),
                maximum_batching_window_in_seconds=pipe.get(
                    "maximum_batching_window_in_seconds",
                    defaults.mapping("pipeline", "pipe", "maximum_batching_window_in_seconds"),
                ),
                parallelization_factor=pipe.get(
                    "parallelization_factor", defaults.mapping("pipeline", "pipe", "parallelization_factor")
                ),
                desired_state=pipe.get(
                    "desired_state", defaults.mapping("pipeline", "pipe", "desired_state")
                ),
                dlq_name=prefix + pipe_dlq.get("name", f"{entity}-pipes-dlq"),
                dlq_retention_seconds=pipe_dlq.get(
                    "message_retention_seconds",
                    defaults.mapping("pipeline", "pipe", "dlq", "message_retention_seconds"),
                ),
            ),
            queue=QueueSettings(
                name=prefix + queue.get("name", f"{entity}-sync.fifo"),
                visibility_timeout_seconds=queue.get(
                    "visibility_timeout_seconds",
                    defaults.mapping("pipeline", "queue", "visibility_timeout_seconds"),
                ),
                message_retention_seconds=queue.get(
                    "message_retention_seconds",
                    defaults.mapping("pipeline", "queue", "message_retention_seconds"),
                ),
                content_based_deduplication=queue.get(
                    "content_based_deduplication",
                    defaults.mapping("pipeline", "queue", "content_based_deduplication"),
                ),
                high_throughput=queue.get(
                    "high_throughput", defaults.mapping("pipeline", "queue", "high_throughput")
                ),
                max_receive_count=queue.get(
                    "max_receive_count", defaults.mapping("pipeline", "queue", "max_receive_count")
                ),
                dlq_name=prefix + queue_dlq.get("name", f"{entity}-sync-dlq.fifo"),
                dlq_retention_seconds=queue_dlq.get(
                    "message_retention_seconds",
                    defaults.mapping("pipeline", "queue", "dlq", "message_retention_seconds"),
                ),
            ),
            consumer=ConsumerSettings(
                batch_size=consumer.get("batch_size", defaults.mapping("pipeline", "consumer", "batch_size")),
                maximum_concurrency=consumer.get(
                    "maximum_concurrency", defaults.mapping("pipeline", "consumer", "maximum_concurrency")
                ),
                maximum_batching_window_in_seconds=consumer.get("maximum_batching_window_in_seconds"),
                enabled=consumer.get("enabled", defaults.mapping("pipeline", "consumer", "enabled")),
            ),
            alarms=AlarmSettings(
                dlq_messages=alarms.get(
                    "dlq_messages", defaults.mapping("pipeline", "alarms", "dlq_messages")
                ),
                oldest_message_age_seconds=alarms.get(
                    "oldest_message_age_seconds",
                    defaults.mapping("pipeline", "alarms", "oldest_message_age_seconds"),
                ),
                transient_failure_minutes=alarms.get(
                    "transient_failure_minutes",
                    defaults.mapping("pipeline", "alarms", "transient_failure_minutes"),
                ),
                stale_events_per_minute=alarms.get(
                    "stale_events_per_minute",
                    defaults.mapping("pipeline", "alarms", "stale_events_per_minute"),
                ),
            ),
        )
        kept = raw.get("retention", {})
        window = retention_window(pipeline)
        return replace(
            pipeline,
            retention=Retention(
                ledger_seconds=kept.get("ledger_seconds", window),
                tombstone_seconds=kept.get("tombstone_seconds", window),
                window=window,
            ),
        )


def _each(raw: dict[str, Any] | None, where: PathT) -> Each | None:
    if not raw:
        return None
    return Each(
        raw["field"],
        int(raw.get("start", defaults.mapping("target", "tables", ITEMS, "each", "start"))),
        raw.get("max_elements"),
        where + ("each",),
    )


def retention_window(pipeline: Pipeline) -> int:
    """The longest a copy of an event, or an event older than one applied, can still reach the
    sync after the first was applied: the one place the default retention is derived (the
    schema's pipeline.retention and the README's Retention section say it in words).

    - the DynamoDB stream keeps a record 24 h, and the Pipe may send it again (a retried
      batch) until it is trimmed;
    - a message then lives in the FIFO queue up to its message_retention_seconds;
    - moved to the FIFO DLQ, it lives up to the DLQ's retention (a FIFO queue's expiry counts
      again from the move);
    - redriven from the DLQ to the queue, up to the queue's retention once more.

    The Pipe's DLQ holds stream positions, not events: a record it names is read again only
    while the stream keeps it, inside the first term."""
    q = pipeline.queue
    return (
        DYNAMODB_STREAM_RETENTION_SECONDS
        + q.message_retention_seconds
        + q.dlq_retention_seconds
        + q.message_retention_seconds
    )


def _discriminator(raw: dict[str, Any] | None) -> Discriminator | None:
    if not raw:
        return None
    if "key" in raw:
        return Discriminator("key", raw["key"], raw["prefix"])
    return Discriminator("attribute", raw["attribute"], raw["value"])


def resolve_entity(doc: Located, project: Project) -> tuple[Entity, list[Diagnostic]]:
    r = _Resolver(doc, project)
    entity = r.entity()
    entity = _with_version_kinds(entity)
    return entity, r.problems


def _with_version_kinds(entity: Entity) -> Entity:
    """A version fed by the stream SequenceNumber is compared as zero-padded text."""
    tables = []
    for t in entity.tables:
        if t.version:
            metas = {
                f.meta
                for name in t.version.fields
                if (f := entity.field(name)) is not None and f.kind == "meta"
            }
            kind = "sequence" if "SequenceNumber" in metas else "integer"
            t = replace(t, version=replace(t.version, kind=kind))
        tables.append(t)
    return replace(entity, tables=tuple(tables))


def _column_default(name: str) -> Any:
    return defaults.mapping("target", "tables", ITEMS, "columns", EACH, name)
