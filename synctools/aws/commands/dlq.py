"""`ddb-sql-sync dlq list|show|redrive --entity E [--pipe]`: look at and redrive an entity's
FIFO DLQ, or the Pipe's DLQ (synctools/aws/dlq.py; docs/aws-tools.md)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime.aws_limits import SQS_VISIBILITY_TIMEOUT_MAX
from synctools.aws.commands import options
from synctools.aws.session import INCOMPLETE, USAGE, Aws, ToolError
from synctools.local.argtypes import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    HelpFormatter,
    add_format,
    exit_codes,
    positive,
    seconds,
)

if TYPE_CHECKING:  # the registry and the Pipe load when the command runs
    from runtime.registry import EntitySpec, Registry
    from synctools.local.build import Pipe

NAME = "dlq"

EXIT_DLQ_LOOK = exit_codes(
    {
        EXIT_OK: "the messages listed",
        INCOMPLETE: "show --pipe: a stream position the stream no longer resolves; or an unexpected AWS error",
        USAGE: options.CONFIG,
        EXIT_INTERRUPTED: options.INTERRUPTED,
    }
)
EXIT_DLQ_REDRIVE = exit_codes(
    {
        EXIT_OK: "every message moved",
        INCOMPLETE: "a message still in flight in the DLQ after waiting, a move task that did not "
        "complete, a Pipe DLQ pointer that could not be resolved or sent, or an unexpected AWS error",
        USAGE: options.CONFIG + "; --method move-task where the endpoint does not implement it",
        EXIT_INTERRUPTED: options.INTERRUPTED,
    }
)
EXIT_DLQ = exit_codes(
    {
        EXIT_OK: "done",
        INCOMPLETE: "see the subcommand's --help",
        USAGE: options.CONFIG,
        EXIT_INTERRUPTED: options.INTERRUPTED,
    }
)
_JSON_LINES = "one JSON document per message, a line each, on stdout"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add `dlq` and its subcommands list, show and redrive to the subcommands of the command line."""
    common = options.aws_options()
    fmt = HelpFormatter
    d = sub.add_parser(
        NAME,
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
        _dlq_options(x)
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
        add_format(x, "a line per message on stdout (show: its details indented below)", _JSON_LINES)
        x.add_argument(
            "--visibility",
            type=options.whole_seconds(SQS_VISIBILITY_TIMEOUT_MAX),
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
    _dlq_options(r)
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
        type=options.whole_seconds(SQS_VISIBILITY_TIMEOUT_MAX),
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
    add_format(r, "a line per message moved on stdout", _JSON_LINES)
    return d


def _dlq_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--entity", required=True, metavar="E", help="an entity of registry.json")
    p.add_argument(
        "--pipe", action="store_true", help="the Pipe's DLQ (stream positions) instead of the FIFO DLQ"
    )


def run(args: argparse.Namespace) -> int:
    """Run `dlq list|show|redrive`; the exit code."""
    return options.guarded(_dlq, args)


@dataclass(frozen=True)
class _Dlq:
    """What every dlq subcommand works on: the queue (FIFO DLQ or Pipe DLQ) of one entity."""

    args: argparse.Namespace
    aws: Aws
    sqs: Any
    entity: EntitySpec
    url: str
    name: str
    build: Path
    registry: Registry
    log: Callable[[str], None]

    def pipe(self) -> tuple[Pipe, str]:
        """The entity's Pipe, and the URL of the queue it sends to."""
        from synctools.aws.pipe import load_pipe

        queue_url = self.aws.queue_url(self.entity.queue)
        queue_arn = self.aws.queue_arn(queue_url)
        region, account = options.arn_parts(queue_arn)
        pipe = load_pipe(
            self.registry.raw,
            self.entity.name,
            self.build,
            region=region,
            account=account,
            target_arn=queue_arn,
            whole=True,  # a Pipe DLQ holds stream positions of every entity the Pipe carries
        )
        return pipe, queue_url


def _dlq(args: argparse.Namespace) -> int:
    build = Path(args.build)
    registry = options.load_registry(build)
    entity = options.entity_of(registry, args.entity)
    log = options.stderr_log(args)
    aws = options.aws_of(args)
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
    ctx = _Dlq(args, aws, sqs, entity, url, name, build, registry, log)
    return _look(ctx) if args.dlq_command in ("list", "show") else _redrive(ctx)


def _look(ctx: _Dlq) -> int:
    from synctools.aws import dlq

    args, aws, entity = ctx.args, ctx.aws, ctx.entity
    show = args.dlq_command == "show"
    messages = dlq.peek(ctx.sqs, ctx.url, max_messages=args.max, visibility=args.visibility)
    visible, in_flight = aws.queue_counts(ctx.url)
    status = EXIT_OK
    if args.pipe:
        pipe = ctx.pipe()[0] if show else None
        streams = aws.client("dynamodbstreams") if show else None
        for m in messages:
            pointer = dlq.parse_pointer(m)
            doc: dict[str, Any] = {"entity": entity.name, "messageId": m["MessageId"]}
            if pointer is None:
                doc["error"] = "no DDBStreamBatchInfo in the body"
                doc["body"] = m.get("Body", "")
            else:
                doc.update(pointer.describe())
                if pipe is not None:  # show
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
    ctx.log(
        f"dlq {args.dlq_command} {ctx.name}: {len(messages)} shown; the queue reports {visible} visible and "
        f"{in_flight} in flight{hidden}"
    )
    return status


def _emit(args: argparse.Namespace, doc: dict[str, Any], show: bool) -> None:
    if args.format == "json":
        options.print_json(doc)
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


def _redrive(ctx: _Dlq) -> int:
    from synctools.aws import dlq
    from synctools.aws.pipe import Sender

    args, aws, sqs, entity, url, name, log = (
        ctx.args,
        ctx.aws,
        ctx.sqs,
        ctx.entity,
        ctx.url,
        ctx.name,
        ctx.log,
    )

    def out(doc: dict[str, Any]) -> None:
        if args.format == "json":
            options.print_json(doc)
        else:
            extra = f" -> {doc['newMessageId']}" if doc.get("newMessageId") else ""
            group = f" (group {doc['group']})" if doc.get("group") else ""
            sys.stdout.write(f"{doc['action']} {doc['messageId']}{group}{extra}\n")
            sys.stdout.flush()

    if args.pipe:
        pipe, queue_url = ctx.pipe()
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
            return EXIT_OK
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
        return INCOMPLETE if stats.failed else EXIT_OK

    queue_url = aws.queue_url(entity.queue)
    if args.dry_run:
        for m in dlq.peek(sqs, url, max_messages=args.max or 100, visibility=10):
            d = dlq.describe_message(m, entity)
            out({"action": "would-move", "messageId": d["messageId"], "group": d["group"]})
        return EXIT_OK
    method = args.method
    if method == "auto" and (args.max is not None or args.pause):
        method = "manual"
    if method in ("auto", "move-task"):
        dlq_arn, queue_arn = aws.queue_arn(url), aws.queue_arn(queue_url)
        handle = dlq.start_move_task(aws, dlq_arn, queue_arn)
        if handle is not None:
            task = dlq.wait_move_task(aws, dlq_arn, log)
            log(f"dlq redrive {name}: move task {task.get('Status')} ({handle})")
            return EXIT_OK if task.get("Status") == "COMPLETED" else INCOMPLETE
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
    return INCOMPLETE if stats.left_in_flight else EXIT_OK
