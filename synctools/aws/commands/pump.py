"""`ddb-sql-sync pump --entity E | --table T`: read a DynamoDB stream and send it to the FIFO
queue as the EventBridge Pipe would (synctools/aws/pump.py; docs/aws-tools.md)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from synctools.aws.commands import options
from synctools.aws.session import INCOMPLETE, USAGE, Aws, ToolError
from synctools.local.argtypes import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    LOCAL_DIR,
    HelpFormatter,
    exit_codes,
    positive,
    seconds,
)

NAME = "pump"

EXIT_PUMP = exit_codes(
    {
        EXIT_OK: "every shard caught up (or --max-records reached), the checkpoint written",
        INCOMPLETE: "a record SQS did not take after every retry, records trimmed from the stream past "
        "the checkpoint, or an unexpected AWS error",
        USAGE: options.CONFIG + "; the checkpoint locked by another pump",
        EXIT_INTERRUPTED: options.INTERRUPTED + " without --follow; with --follow, SIGINT and SIGTERM end "
        "the run after the batch in progress, with the codes above",
    }
)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add `pump` to the subcommands of the command line."""
    p = sub.add_parser(
        NAME,
        parents=[options.aws_options()],
        formatter_class=HelpFormatter,
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
    return p


def run(args: argparse.Namespace) -> int:
    """Run `pump`; the exit code."""
    return options.guarded(_pump, args)


def _pump(args: argparse.Namespace) -> int:
    from synctools.aws.checkpoint import Checkpoint
    from synctools.aws.pipe import Sender, load_pipe
    from synctools.aws.pump import Pump
    from synctools.local.build import shared_pipe

    build = Path(args.build)
    registry = options.load_registry(build)
    if args.entity:
        names = [options.entity_of(registry, args.entity).name]
    else:
        names = [n for n, e in sorted(registry.entities.items()) if e.source_table == args.table]
        if not names:
            tables = ", ".join(sorted({e.source_table for e in registry.entities.values()}))
            raise ToolError(f"no entity reads table {args.table!r} (tables: {tables})")
    log = options.stderr_log(args)
    aws = options.aws_of(args)
    checkpoint = Checkpoint(args.checkpoint)
    stop = options.Stop()
    if not args.dry_run:
        checkpoint.lock()
    pumps: list[Pump] = []
    try:
        sqs = aws.client("sqs")
        streams = aws.client("dynamodbstreams")
        pumped: set[str] = set()
        for name in names:
            # A single-table design's entities share one Pipe: pump it once, for all of them.
            shared = shared_pipe(registry.raw, name)
            if shared in pumped:
                continue
            if shared:
                pumped.add(shared)
            entity = registry.entities[name]
            stream_arn = aws.stream_arn(entity.source_table)
            queue_url = aws.queue_url(entity.queue)
            queue_arn = aws.queue_arn(queue_url)
            region, account = options.arn_parts(queue_arn)
            pipe = load_pipe(
                registry.raw,
                name,
                build,
                region=region,
                account=account,
                source_arn=stream_arn,
                target_arn=queue_arn,
                whole=True,
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
    return EXIT_OK


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
