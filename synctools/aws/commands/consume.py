"""`ddb-sql-sync consume --entity E | --queue NAME`: poll the FIFO queue as the Lambda event
source mapping does and apply each batch with the sync runtime (synctools/aws/consume.py;
docs/aws-tools.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from runtime.aws_limits import SQS_VISIBILITY_TIMEOUT_MAX
from synctools.aws.commands import options
from synctools.aws.session import INCOMPLETE, USAGE, ToolError
from synctools.local.argtypes import EXIT_INTERRUPTED, EXIT_OK, HelpFormatter, exit_codes, positive

NAME = "consume"

EXIT_CONSUME = exit_codes(
    {
        EXIT_OK: "every message received was applied and deleted",
        INCOMPLETE: "some messages failed (they went back to the queue, and on to the FIFO DLQ after "
        "maxReceiveCount), a delete failed, or an unexpected AWS error",
        USAGE: options.CONFIG + "; no database configured",
        EXIT_INTERRUPTED: options.INTERRUPTED + " without --follow",
    }
)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add `consume` to the subcommands of the command line."""
    c = sub.add_parser(
        NAME,
        parents=[options.aws_options()],
        formatter_class=HelpFormatter,
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
        type=options.whole_seconds(20),
        metavar="S",
        help="long polling per receive, 0..20 s (default: 1 with --once, 20 with --follow)",
    )
    c.add_argument(
        "--failure-visibility",
        type=options.whole_seconds(SQS_VISIBILITY_TIMEOUT_MAX),
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
    return c


def run(args: argparse.Namespace) -> int:
    """Run `consume`; the exit code."""
    return options.guarded(_consume, args)


def _print_line(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _consume(args: argparse.Namespace) -> int:
    from runtime.config import ConfigError, database_url, make_engine
    from synctools.aws.consume import Consumer
    from synctools.aws.consume import run as consume

    registry = options.load_registry(Path(args.build))
    if args.entity:
        entity = options.entity_of(registry, args.entity)
    else:
        found = registry.entity_for_queue(args.queue)
        shared = registry.shared_queues.get(args.queue)
        if found is None and shared is not None:
            # A single-table design's queue: the runtime picks each message's entity.
            found = registry.entities[shared.values[0][1]]
        if found is None:
            known = ", ".join(sorted([*registry.queues, *registry.shared_queues])) or "none"
            raise ToolError(f"queue {args.queue!r} is not in the registry (queues: {known})")
        entity = found
    log = options.stderr_log(args)
    aws = options.aws_of(args)
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
        log_documents=_print_line if args.log else None,
    )
    stop = options.Stop()
    if args.follow:
        stop.install()
    try:
        stats = consume(consumer, follow=args.follow, max_batches=args.max_batches, stop=stop)
    finally:
        stop.restore()
        if failures_out is not None:
            failures_out.close()
        if engine is not None:
            engine.dispose()
    log(consumer.stats.render(entity.queue) + (" (dry run)" if args.dry_run else ""))
    return INCOMPLETE if stats.failed or stats.delete_failed else EXIT_OK
