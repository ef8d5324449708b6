"""Command line of the AWS tools: `python -m synctools pump|consume|dlq ...` (docs/aws-tools.md).

Exit codes: 0 done; 1 the command ran but could not finish its work (a record SQS would not
take, messages that failed and went back to the queue, a DLQ message that could not be moved,
records trimmed from the stream); 2 bad command line or configuration: unknown entity,
unreadable build artifacts or checkpoint, a missing table, stream or queue, no credentials or
region, an unreachable endpoint, no database configured; 130 interrupted (Ctrl-C without --follow).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synctools.aws.session import INCOMPLETE, USAGE, Aws, ToolError, describe_aws_error, error_code
from synctools.local.argtypes import LOCAL_DIR, HelpFormatter, exit_codes, positive, seconds

COMMANDS = ("pump", "consume", "dlq")

_CONFIG = (
    "bad command line or configuration: unknown entity, table or queue name; unreadable build/ or "
    "checkpoint; a missing table, stream or queue; no credentials or region; an unreachable endpoint"
)
_INTERRUPTED = "interrupted (Ctrl-C)"
EXIT_PUMP = exit_codes(
    {
        0: "every shard caught up (or --max-records reached), the checkpoint written",
        INCOMPLETE: "a record SQS did not take after every retry, records trimmed from the stream past "
        "the checkpoint, or an unexpected AWS error",
        USAGE: _CONFIG + "; the checkpoint locked by another pump",
        130: _INTERRUPTED + " without --follow; with --follow, SIGINT and SIGTERM end the run after the "
        "batch in progress, with the codes above",
    }
)
EXIT_CONSUME = exit_codes(
    {
        0: "every message received was applied and deleted",
        INCOMPLETE: "some messages failed (they went back to the queue, and on to the FIFO DLQ after "
        "maxReceiveCount), a delete failed, or an unexpected AWS error",
        USAGE: _CONFIG + "; no database configured",
        130: _INTERRUPTED + " without --follow",
    }
)
EXIT_DLQ_LOOK = exit_codes(
    {
        0: "the messages listed",
        INCOMPLETE: "show --pipe: a stream position the stream no longer resolves; or an unexpected AWS error",
        USAGE: _CONFIG,
        130: _INTERRUPTED,
    }
)
EXIT_DLQ_REDRIVE = exit_codes(
    {
        0: "every message moved",
        INCOMPLETE: "a message still in flight in the DLQ after waiting, a move task that did not "
        "complete, a Pipe DLQ pointer that could not be resolved or sent, or an unexpected AWS error",
        USAGE: _CONFIG + "; --method move-task where the endpoint does not implement it",
        130: _INTERRUPTED,
    }
)
EXIT_DLQ = exit_codes(
    {
        0: "done",
        INCOMPLETE: "see the subcommand's --help",
        USAGE: _CONFIG,
        130: _INTERRUPTED,
    }
)


def _whole_seconds(limit: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            s = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of seconds") from None
        if not 0 <= s <= limit:
            raise argparse.ArgumentTypeError(f"{s} is not in 0..{limit}")
        return s

    return parse


def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("AWS and build")
    g.add_argument("--build", default="build", metavar="DIR", help="the generator's build directory")
    g.add_argument(
        "--endpoint-url", metavar="URL", help="AWS endpoint (default: AWS_ENDPOINT_URL, else AWS itself)"
    )
    g.add_argument(
        "--region", metavar="R", help="AWS region (default: AWS_REGION / AWS_DEFAULT_REGION / the profile)"
    )
    g.add_argument("--profile", metavar="P", help="named profile of the shared config (default: AWS_PROFILE)")
    g.add_argument("--dry-run", action="store_true", help="print what would be done; change nothing")
    g.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return p


def add_commands(sub: Any) -> None:
    """Add pump, consume and dlq to the `python -m synctools` subparsers."""
    common = _common()
    fmt = HelpFormatter

    p = sub.add_parser(
        "pump",
        parents=[common],
        formatter_class=fmt,
        help="read a DynamoDB stream and send it to the FIFO queue as the Pipe would",
        description="Read the entity's DynamoDB stream (every shard, parents before children) and do what "
        "the EventBridge Pipe does with the generated artifacts: filter, input template, message group "
        "and deduplication ids, SendMessageBatch. A checkpoint file makes a restart resume without "
        "skipping. For where Pipes does not run (moto, LocalStack).",
        epilog=EXIT_PUMP,
    )
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--entity", metavar="E", help="an entity of registry.json")
    who.add_argument("--table", metavar="T", help="every entity whose source is this DynamoDB table")
    p.add_argument(
        "--checkpoint",
        default=f"{LOCAL_DIR}/pump-checkpoint.json",
        metavar="FILE",
        help="where positions are kept (FILE.lock keeps a second pump off it)",
    )
    p.add_argument(
        "--from",
        dest="start",
        choices=("TRIM_HORIZON", "LATEST"),
        default="TRIM_HORIZON",
        help="where a shard without a checkpoint starts",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="stop when every shard is caught up (default)")
    mode.add_argument("--follow", action="store_true", help="keep polling until interrupted")
    p.add_argument(
        "--max-records", type=positive, metavar="N", help="stop after N stream records (default: no limit)"
    )
    p.add_argument("--poll", type=seconds, default=1.0, metavar="S", help="--follow: seconds between polls")
    p.add_argument("--retries", type=int, default=4, metavar="N", help="retries of a failed batch entry")

    c = sub.add_parser(
        "consume",
        parents=[common],
        formatter_class=fmt,
        help="poll the FIFO queue as the Lambda event source mapping does and apply the batches",
        description="Poll the entity's FIFO queue as the Lambda event source mapping does, apply each "
        "batch with the sync runtime, delete what succeeded and leave the failures to come back (and "
        "reach the FIFO DLQ after maxReceiveCount).",
        epilog=EXIT_CONSUME,
    )
    who = c.add_mutually_exclusive_group(required=True)
    who.add_argument("--entity", metavar="E", help="an entity of registry.json")
    who.add_argument("--queue", metavar="NAME", help="a queue name of registry.json")
    c.add_argument(
        "--db", metavar="URL", help="SQLAlchemy URL (default: SYNC_DATABASE_URL, else SYNC_DB_SECRET_ARN)"
    )
    mode = c.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="stop at the first empty receive (default)")
    mode.add_argument("--follow", action="store_true", help="keep polling until interrupted")
    c.add_argument(
        "--max-batches", type=positive, metavar="N", help="stop after N batches (default: no limit)"
    )
    c.add_argument(
        "--wait",
        type=_whole_seconds(20),
        metavar="S",
        help="long polling per receive, 0..20 s (default: 1 with --once, 20 with --follow)",
    )
    c.add_argument(
        "--failure-visibility",
        type=_whole_seconds(43200),
        metavar="S",
        help="make failed messages visible again after S seconds (default: the queue's visibility timeout)",
    )
    c.add_argument(
        "--failures-out",
        metavar="FILE",
        help="append every failure as a JSON line, for dlq show (default: not recorded)",
    )
    c.add_argument("--log", action="store_true", help="print the runtime's batch log lines (JSON) on stdout")
    c.add_argument(
        "--create-tables",
        action="store_true",
        help="create missing target, ledger and tombstone tables from the registry (rehearsals; "
        "a real database gets build/sql/<dialect>/ledger.sql and its own tables)",
    )

    d = sub.add_parser(
        "dlq",
        formatter_class=fmt,
        help="list, explain and redrive the FIFO DLQ or the Pipe's DLQ",
        description="Look at and redrive an entity's dead-letter queues: the FIFO DLQ of its queue, or "
        "with --pipe the Pipe's DLQ (stream positions).",
        epilog=EXIT_DLQ,
    )
    dsub = d.add_subparsers(dest="dlq_command", required=True, metavar="SUBCOMMAND")
    for name, text in (
        ("list", "one line per message, without consuming any"),
        ("show", "every detail and the body of each message, without consuming any"),
    ):
        x = dsub.add_parser(
            name, parents=[common], formatter_class=fmt, help=text, description=text, epilog=EXIT_DLQ_LOOK
        )
        _dlq_common(x)
        x.add_argument("--max", type=positive, default=100, metavar="N", help="at most N messages")
        x.add_argument(
            "--failures-from",
            metavar="FILE",
            help="consume's --failures-out file: the reasons (default: none; see also --log-group)",
        )
        x.add_argument(
            "--log-group",
            metavar="NAME",
            help="find reasons in CloudWatch Logs, e.g. /aws/lambda/<function> (default: not searched)",
        )
        x.add_argument("--json", action="store_true", help="JSON lines on stdout")
        x.add_argument(
            "--visibility",
            type=_whole_seconds(43200),
            default=10,
            metavar="S",
            help="seconds messages are held while the rest is read",
        )
    r = dsub.add_parser(
        "redrive",
        parents=[common],
        formatter_class=fmt,
        help="move DLQ messages back to the entity's queue, keeping message groups and order",
        description="Move the DLQ's messages back to the entity's FIFO queue (StartMessageMoveTask where "
        "supported, else receive-send-delete one at a time). With --pipe, resolve the Pipe DLQ's "
        "stream positions and send those records through the filter and template.",
        epilog=EXIT_DLQ_REDRIVE,
    )
    _dlq_common(r)
    r.add_argument("--max", type=positive, metavar="N", help="move at most N messages (default: all)")
    r.add_argument(
        "--pause",
        type=seconds,
        default=0.0,
        metavar="S",
        help="sleep S seconds after each send, before its delete (rehearsing interruptions)",
    )
    r.add_argument(
        "--visibility",
        type=_whole_seconds(43200),
        default=30,
        metavar="S",
        help="seconds a message being moved stays hidden in the DLQ",
    )
    r.add_argument(
        "--method",
        choices=("auto", "move-task", "manual"),
        default="auto",
        help="auto: StartMessageMoveTask where supported and no --max/--pause, else manual",
    )
    r.add_argument("--json", action="store_true", help="JSON lines on stdout")


def _dlq_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--entity", required=True, metavar="E", help="an entity of registry.json")
    p.add_argument(
        "--pipe", action="store_true", help="the Pipe's DLQ (stream positions) instead of the FIFO DLQ"
    )


# -- helpers ---------------------------------------------------------------------------------------


def _stderr(args: argparse.Namespace) -> Callable[[str], None]:
    if getattr(args, "quiet", False):
        return lambda line: None

    def log(line: str) -> None:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()

    return log


def _registry(build: Path) -> Any:
    from runtime.registry import RegistryError, load_registry

    path = build / "registry.json"
    if not path.exists():
        raise ToolError(f"{path} not found; run python -m generator build (or pass --build)")
    try:
        return load_registry(path)
    except RegistryError as exc:
        raise ToolError(str(exc)) from None


def _entity(registry: Any, name: str) -> Any:
    entity = registry.entities.get(name)
    if entity is None:
        known = ", ".join(sorted(registry.entities)) or "none"
        raise ToolError(f"unknown entity {name!r} (registry entities: {known})")
    return entity


def _aws(args: argparse.Namespace) -> Aws:
    return Aws(endpoint_url=args.endpoint_url or None, region=args.region, profile=args.profile)


def _arn_parts(arn: str) -> tuple[str, str]:
    parts = arn.split(":")
    return (parts[3], parts[4]) if len(parts) > 4 else ("", "")


class _Stop:
    """SIGINT / SIGTERM end a --follow run after the current batch (its checkpoint written)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._old: dict[int, Any] = {}

    def __call__(self) -> bool:
        return self.event.is_set()

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, lambda *_: self.event.set())

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()


def _print_json(doc: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


# -- pump ------------------------------------------------------------------------------------------


def pump_main(args: argparse.Namespace) -> int:
    from synctools.aws.checkpoint import Checkpoint
    from synctools.aws.pipe import Sender, load_pipe
    from synctools.aws.pump import Pump

    build = Path(args.build)
    registry = _registry(build)
    if args.entity:
        names = [_entity(registry, args.entity).name]
    else:
        names = [n for n, e in sorted(registry.entities.items()) if e.source_table == args.table]
        if not names:
            tables = ", ".join(sorted({e.source_table for e in registry.entities.values()}))
            raise ToolError(f"no entity reads table {args.table!r} (tables: {tables})")
    log = _stderr(args)
    aws = _aws(args)
    checkpoint = Checkpoint(args.checkpoint)
    stop = _Stop()
    if not args.dry_run:
        checkpoint.lock()
    pumps: list[Pump] = []
    try:
        sqs = aws.client("sqs")
        streams = aws.client("dynamodbstreams")
        for name in names:
            entity = registry.entities[name]
            stream_arn = aws.stream_arn(entity.source_table)
            queue_url = aws.queue_url(entity.queue)
            queue_arn = aws.queue_arn(queue_url)
            region, account = _arn_parts(queue_arn)
            pipe = load_pipe(
                registry.raw,
                name,
                build,
                region=region,
                account=account,
                source_arn=stream_arn,
                target_arn=queue_arn,
            )
            pumps.append(
                Pump(
                    streams=streams,
                    sender=Sender(sqs, queue_url, attempts=max(0, args.retries) + 1),
                    pipe=pipe,
                    stream_arn=stream_arn,
                    checkpoint=checkpoint,
                    start=args.start,
                    dry_run=args.dry_run,
                    max_records=args.max_records,
                    pipe_dlq=_pipe_dlq(aws, entity.pipe_dlq),
                    out=sys.stdout,
                    log=log,
                    stop=stop,
                )
            )
        if args.follow:
            stop.install()
            for p in pumps:
                p.describe()
            while not stop() and not all(p.limit_reached for p in pumps):
                for p in pumps:
                    while p.pass_(follow=True) and not stop():
                        pass
                stop.event.wait(args.poll)
        else:
            for p in pumps:
                p.run_once()
    finally:
        stop.restore()
        checkpoint.unlock()
        for p in pumps:
            log(p.stats.render(p.pipe.name) + (" (dry run)" if args.dry_run else ""))
    return 0


def _pipe_dlq(aws: Aws, name: str) -> Callable[[], tuple[Any, str] | None]:
    cache: list[tuple[Any, str] | None] = []

    def get() -> tuple[Any, str] | None:
        if not cache:
            try:
                cache.append((aws.client("sqs"), aws.queue_url(name)) if name else None)
            except ToolError:
                cache.append(None)
        return cache[0]

    return get


# -- consume ---------------------------------------------------------------------------------------


def consume_main(args: argparse.Namespace) -> int:
    from runtime.config import ConfigError, database_url, make_engine
    from synctools.aws.consume import Consumer, run

    registry = _registry(Path(args.build))
    if args.entity:
        entity = _entity(registry, args.entity)
    else:
        entity = registry.entity_for_queue(args.queue)
        if entity is None:
            known = ", ".join(sorted(registry.queues)) or "none"
            raise ToolError(f"queue {args.queue!r} is not in the registry (queues: {known})")
    log = _stderr(args)
    aws = _aws(args)
    sqs = aws.client("sqs")
    queue_url = aws.queue_url(entity.queue)
    queue_arn = aws.queue_arn(queue_url)
    engine = None
    if not args.dry_run:
        try:
            engine = make_engine(args.db or database_url())
        except ConfigError as exc:
            raise ToolError(f"{exc} (or pass --db)") from None
        except Exception as exc:  # a bad URL or a missing driver
            raise ToolError(f"cannot use database {args.db!r}: {type(exc).__name__}: {exc}") from None
        if args.create_tables:
            from runtime.schema import build_metadata

            try:
                build_metadata(registry).create_all(engine)
            except Exception as exc:
                engine.dispose()
                raise ToolError(f"cannot create the tables: {type(exc).__name__}: {exc}") from None
    failures_out = None
    if args.failures_out and not args.dry_run:
        try:
            failures_out = open(args.failures_out, "a", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise ToolError(f"cannot write --failures-out {args.failures_out}: {exc}") from None
    wait = args.wait if args.wait is not None else (20 if args.follow else 1)
    consumer = Consumer(
        sqs=sqs,
        queue_url=queue_url,
        queue_arn=queue_arn,
        region=aws.region_name,
        registry=registry,
        engine=engine,
        batch_size=entity.batch_size,
        wait_seconds=wait,
        failure_visibility=args.failure_visibility,
        failures_out=failures_out,
        dry_run=args.dry_run,
        out=sys.stdout,
        log=log,
        log_documents=(lambda line: (sys.stdout.write(line + "\n"), sys.stdout.flush()))
        if args.log
        else None,
    )
    stop = _Stop()
    if args.follow:
        stop.install()
    try:
        stats = run(consumer, follow=args.follow, max_batches=args.max_batches, stop=stop)
    finally:
        stop.restore()
        if failures_out is not None:
            failures_out.close()
        if engine is not None:
            engine.dispose()
    log(consumer.stats.render(entity.queue) + (" (dry run)" if args.dry_run else ""))
    return INCOMPLETE if stats.failed or stats.delete_failed else 0


# -- dlq -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _DlqContext:
    """What every dlq subcommand works on: the queue (FIFO DLQ or Pipe DLQ) of one entity."""

    args: argparse.Namespace
    aws: Aws
    sqs: Any
    entity: Any
    url: str
    name: str
    build: Path
    registry: Any
    log: Callable[[str], None]

    def unpack(self) -> tuple[Any, ...]:
        return (
            self.args,
            self.aws,
            self.sqs,
            self.entity,
            self.url,
            self.name,
            self.build,
            self.registry,
            self.log,
        )


def dlq_main(args: argparse.Namespace) -> int:
    build = Path(args.build)
    registry = _registry(build)
    entity = _entity(registry, args.entity)
    log = _stderr(args)
    aws = _aws(args)
    sqs = aws.client("sqs")
    if args.pipe:
        if not entity.pipe_dlq:
            raise ToolError(f"entity {entity.name!r} has no Pipe DLQ in the registry")
        url = aws.queue_url(entity.pipe_dlq)
        name = entity.pipe_dlq
    else:
        if not entity.dlq:
            raise ToolError(f"entity {entity.name!r} has no FIFO DLQ in the registry")
        url = aws.queue_url(entity.dlq)
        name = entity.dlq
    ctx = _DlqContext(args, aws, sqs, entity, url, name, build, registry, log)
    return _dlq_look(ctx) if args.dlq_command in ("list", "show") else _dlq_redrive(ctx)


def _pipe_for(aws: Aws, entity: Any, build: Path, registry: Any) -> tuple[Any, str]:
    from synctools.aws.pipe import load_pipe

    queue_url = aws.queue_url(entity.queue)
    queue_arn = aws.queue_arn(queue_url)
    region, account = _arn_parts(queue_arn)
    pipe = load_pipe(registry.raw, entity.name, build, region=region, account=account, target_arn=queue_arn)
    return pipe, queue_url


def _dlq_look(ctx: _DlqContext) -> int:
    args, aws, sqs, entity, url, name, build, registry, log = ctx.unpack()
    from synctools.aws import dlq

    show = args.dlq_command == "show"
    messages = dlq.peek(sqs, url, max_messages=args.max, visibility=args.visibility)
    visible, in_flight = aws.queue_counts(url)
    status = 0
    if args.pipe:
        pipe = _pipe_for(aws, entity, build, registry)[0] if show else None
        streams = aws.client("dynamodbstreams") if show else None
        for m in messages:
            pointer = dlq.parse_pointer(m)
            doc: dict[str, Any] = {"entity": entity.name, "messageId": m["MessageId"]}
            if pointer is None:
                doc["error"] = "no DDBStreamBatchInfo in the body"
                doc["body"] = m.get("Body", "")
            else:
                doc.update(pointer.describe())
                if show:
                    doc["body"] = pointer.body
                    try:
                        doc["records"] = list(dlq.pipe_entries(pipe, dlq.resolve(streams, pointer)))
                    except ToolError as exc:
                        doc["error"] = str(exc)
                        status = INCOMPLETE
            _emit(args, doc, show)
    else:
        reasons = dlq.Reasons()
        if args.failures_from:
            reasons.load_file(Path(args.failures_from))
        if args.log_group:
            reasons.logs = aws.client("logs")
            reasons.log_group = args.log_group
        for m in messages:
            doc = dlq.describe_message(m, entity)
            history = reasons.lookup(doc["messageId"], doc["eventId"])
            doc["reason"] = dlq.last_reason(history)
            if show:
                doc["failures"] = history
            else:
                doc.pop("body", None)
            _emit(args, doc, show)
    hidden = "" if args.pipe else " (a FIFO queue hides the rest of a group while part of it is in flight)"
    log(
        f"dlq {args.dlq_command} {name}: {len(messages)} shown; the queue reports {visible} visible and "
        f"{in_flight} in flight{hidden}"
    )
    return status


def _emit(args: argparse.Namespace, doc: dict[str, Any], show: bool) -> None:
    if args.json:
        _print_json(doc)
        return
    out = sys.stdout
    if "eventId" in doc:  # a FIFO DLQ message
        out.write(
            f"{doc['messageId']}  event {doc['eventId']} {doc['eventType']}  group {doc['group']}  "
            f"receives {doc['receiveCount']}  sent {doc['sent']}\n"
        )
        if doc.get("key"):
            out.write("    key: " + ", ".join(f"{k}={v}" for k, v in doc["key"].items()) + "\n")
        out.write(f"    reason: {doc.get('reason') or 'unknown (pass --failures-from or --log-group)'}\n")
        if show:
            for h in doc.get("failures") or []:
                out.write(
                    f"    {h.get('time', '')} {h.get('status', 'failed')} (receive {h.get('receive_count', '?')}, "
                    f"{h.get('source')}): {h.get('reason')}\n"
                )
            out.write("    body: " + _pretty(doc.get("body", "")).replace("\n", "\n    ") + "\n")
    else:
        out.write(
            f"{doc['messageId']}  {doc.get('streamArn', '?')}  {doc.get('shardId', '?')}  "
            f"{doc.get('startSequenceNumber', '?')}..{doc.get('endSequenceNumber', '?')}  "
            f"batch {doc.get('batchSize', '?')}  {doc.get('condition') or ''}\n"
        )
        if doc.get("error"):
            out.write(f"    error: {doc['error']}\n")
        for rec in doc.get("records") or []:
            out.write(
                f"    {rec['sequenceNumber']} {rec['eventName']} {rec['eventID']}: {rec['action']}"
                + (f" group {rec['MessageGroupId']}" if rec.get("MessageGroupId") else "")
                + (f" ({rec['reason']})" if rec.get("reason") else "")
                + "\n"
            )
    out.flush()


def _pretty(text: str) -> str:
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        return text


def _dlq_redrive(ctx: _DlqContext) -> int:
    args, aws, sqs, entity, url, name, build, registry, log = ctx.unpack()
    from synctools.aws import dlq
    from synctools.aws.pipe import Sender

    def out(doc: dict[str, Any]) -> None:
        if args.json:
            _print_json(doc)
        else:
            extra = f" -> {doc['newMessageId']}" if doc.get("newMessageId") else ""
            group = f" (group {doc['group']})" if doc.get("group") else ""
            sys.stdout.write(f"{doc['action']} {doc['messageId']}{group}{extra}\n")
            sys.stdout.flush()

    if args.pipe:
        pipe, queue_url = _pipe_for(aws, entity, build, registry)
        streams = aws.client("dynamodbstreams")
        if args.dry_run:
            for m in dlq.peek(sqs, url, max_messages=args.max or 100, visibility=10):
                pointer = dlq.parse_pointer(m)
                if pointer is None:
                    out({"action": "would-skip", "messageId": m["MessageId"]})
                    continue
                try:
                    records = list(dlq.pipe_entries(pipe, dlq.resolve(streams, pointer)))
                except ToolError as exc:
                    log(str(exc))
                    continue
                out({"action": "would-send", "messageId": m["MessageId"], "records": records})
            return 0
        dlq.check_visibility(args.pause, args.visibility)
        stats = dlq.redrive_pipe(
            sqs,
            streams,
            url,
            pipe,
            Sender(sqs, queue_url),
            max_messages=args.max,
            pause=args.pause,
            visibility=args.visibility,
            out=out,
            log=log,
        )
        log(f"dlq redrive --pipe {name}: {stats.moved} pointers redriven, {stats.failed} left in place")
        return INCOMPLETE if stats.failed else 0

    queue_url = aws.queue_url(entity.queue)
    if args.dry_run:
        for m in dlq.peek(sqs, url, max_messages=args.max or 100, visibility=10):
            d = dlq.describe_message(m, entity)
            out({"action": "would-move", "messageId": d["messageId"], "group": d["group"]})
        return 0
    method = args.method
    if method == "auto" and (args.max is not None or args.pause):
        method = "manual"
    if method in ("auto", "move-task"):
        dlq_arn, queue_arn = aws.queue_arn(url), aws.queue_arn(queue_url)
        handle = dlq.start_move_task(aws, dlq_arn, queue_arn)
        if handle is not None:
            task = dlq.wait_move_task(aws, dlq_arn, log)
            log(f"dlq redrive {name}: move task {task.get('Status')} ({handle})")
            return 0 if task.get("Status") == "COMPLETED" else INCOMPLETE
        if method == "move-task":
            raise ToolError(
                "this endpoint does not implement StartMessageMoveTask; use --method manual", USAGE
            )
        log(f"dlq redrive {name}: StartMessageMoveTask is not available here; moving messages one at a time")
    dlq.check_visibility(args.pause, args.visibility)
    stats = dlq.redrive_fifo(
        sqs,
        url,
        queue_url,
        max_messages=args.max,
        pause=args.pause,
        visibility=args.visibility,
        counts=aws.queue_counts,
        out=out,
        log=log,
    )
    left = f"; {stats.left_in_flight} still in flight in the DLQ: run again" if stats.left_in_flight else ""
    log(f"dlq redrive {name}: {stats.moved} moved to {entity.queue}{left}")
    return INCOMPLETE if stats.left_in_flight else 0


# -- dispatch --------------------------------------------------------------------------------------


def main(args: argparse.Namespace) -> int:
    handlers = {"pump": pump_main, "consume": consume_main, "dlq": dlq_main}
    try:
        return handlers[args.command](args)
    except ToolError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        # --once has no signal handler: Ctrl-C stops at once. What was sent is in the
        # checkpoint; what was applied is in the ledger; nothing is lost, some may come again.
        sys.stderr.write("interrupted\n")
        return 130
    except Exception as exc:
        friendly = describe_aws_error(exc)
        if friendly is not None:
            sys.stderr.write(f"error: {friendly}\n")
            return friendly.exit_code
        if error_code(exc):  # an AWS error nobody could foresee: say which call failed
            sys.stderr.write(f"error: {exc}\n")
            return INCOMPLETE
        raise
