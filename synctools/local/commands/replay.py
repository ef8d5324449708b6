"""`ddb-sql-sync replay RECORDS`: DynamoDB stream records through a local model of the Pipe, the
SQS FIFO queue, the event source mapping and the sync runtime, into a database
(docs/local-tools.md)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import BinaryIO

from synctools.local.argtypes import (
    EXIT_OK,
    EXIT_USAGE,
    LOCAL_DIR,
    HelpFormatter,
    add_format,
    exit_codes,
    local_output,
    positive,
    probability,
    usage_error,
)

NAME = "replay"
EXIT_UNACCOUNTED, EXIT_DLQ = 1, 3

EXIT_REPLAY = exit_codes(
    {
        EXIT_OK: "every delivered message ended applied, duplicate, stale, ignored or skipped; none in a DLQ",
        EXIT_UNACCOUNTED: "something is not accounted for: unreadable input, invalid records, messages left "
        "in a queue (1 wins over 3)",
        EXIT_USAGE: "bad command line, unreadable build artifacts or registry, or a database that cannot be used",
        EXIT_DLQ: "everything accounted for, but messages ended in a DLQ (listed in --dlq-out)",
    }
)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add `replay` to the subcommands of the command line."""
    r = sub.add_parser(
        NAME,
        help="run DynamoDB stream records through a local Pipe -> SQS FIFO -> sync Lambda -> database",
        description="Run DynamoDB stream records through the filter, the input template, an SQS FIFO "
        "queue, the Lambda event source mapping and the sync runtime, into a database. Outputs go to "
        f"{LOCAL_DIR}/ by default (git-ignored, created when needed).",
        epilog=EXIT_REPLAY,
        formatter_class=HelpFormatter,
    )
    r.add_argument(
        "records",
        help='UTF-8 JSON lines, GetRecords documents ({"Records": [...]}) or a JSON array; - for stdin',
    )
    r.add_argument("--db", default=f"sqlite:///{LOCAL_DIR}/replay.db", metavar="URL", help="SQLAlchemy URL")
    r.add_argument("--build", default="build", metavar="DIR", help="the generator's build directory")
    r.add_argument(
        "--dlq-out",
        default=f"{LOCAL_DIR}/replay-dlq.jsonl",
        metavar="FILE",
        help="where DLQ messages go (JSON lines; created or truncated)",
    )
    r.add_argument("--seed", type=int, default=0, metavar="N", help="seed of every injected fault")
    r.add_argument(
        "--duplicates",
        type=probability,
        default=0.0,
        metavar="P",
        help="per record: sent twice or delete lost",
    )
    r.add_argument(
        "--crashes",
        type=probability,
        default=0.0,
        metavar="P",
        help="per invocation: raises before/after applying",
    )
    r.add_argument(
        "--lost-responses", type=probability, default=0.0, metavar="P", help="per invocation: answer lost"
    )
    r.add_argument(
        "--delay-groups", type=probability, default=0.0, metavar="P", help="per group burst: held back"
    )
    r.add_argument(
        "--entity",
        metavar="NAME",
        help="send every record to this entity (default: by the table in eventSourceARN)",
    )
    r.add_argument("--quiet", action="store_true", help="no progress lines")
    add_format(r, "the summary on stderr", "the summary also as one JSON document on stdout")
    r.add_argument(
        "--progress-every", type=positive, default=10_000, metavar="N", help="progress line every N records"
    )
    r.add_argument(
        "--read-ahead",
        type=positive,
        default=100,
        metavar="N",
        help="messages a queue may hold before the reader waits",
    )
    r.add_argument(
        "--foreign-keys",
        action="store_true",
        help="create missing tables with their foreign keys (without it: none, so one entity replays alone)",
    )
    return r


def _open_input(path: str) -> BinaryIO:
    # Bytes: the reader decodes UTF-8 itself, so that a byte that is not UTF-8 is reported
    # with its offset and costs one record, not the run.
    if path == "-":
        return sys.stdin.buffer
    return open(path, "rb")  # noqa: SIM115 - closed by the caller


def run(args: argparse.Namespace) -> int:
    """Run `replay`; the exit code."""
    from sqlalchemy.engine import make_url

    from runtime import dialects
    from runtime.config import make_engine
    from runtime.registry import RegistryError, load_registry
    from runtime.schema import build_metadata
    from synctools.local.records import RecordReader
    from synctools.local.replay import Faults, Replay, ReplayError, stderr_progress
    from synctools.local.sqlite import tune_sqlite

    build = Path(args.build)
    try:
        registry = load_registry(build / "registry.json")
        faults = Faults(args.seed, args.duplicates, args.crashes, args.lost_responses, args.delay_groups)
    except (RegistryError, ReplayError) as exc:
        return usage_error(str(exc))
    try:
        url = make_url(args.db)
        database_file = dialects.of(url).database_file(url)
        if database_file is not None:
            local_output(database_file)  # the default lives in the git-ignored local folder
        engine = make_engine(url)
    except Exception as exc:  # a bad URL or a missing driver
        return usage_error(f"cannot use database {args.db!r}: {type(exc).__name__}: {exc}")
    tune_sqlite(engine)
    try:
        build_metadata(registry, foreign_keys=args.foreign_keys).create_all(engine)
    except Exception as exc:
        return usage_error(
            f"cannot create the tables in {engine.url.render_as_string()}: {type(exc).__name__}: {exc}"
        )

    def problem(message: str) -> None:
        sys.stderr.write(f"replay: {message}\n")

    try:
        fh = _open_input(args.records)
    except OSError as exc:
        engine.dispose()
        return usage_error(f"cannot read {args.records}: {exc}")
    try:
        dlq_file = open(local_output(args.dlq_out), "w", encoding="utf-8")  # noqa: SIM115 - closed below
    except OSError as exc:
        fh.close()
        engine.dispose()
        return usage_error(f"cannot write --dlq-out {args.dlq_out}: {exc}")
    try:
        with fh, dlq_file as dlq:
            reader = RecordReader(
                fh,
                name="<stdin>" if args.records == "-" else args.records,
                on_error=problem,
                require_source_arn=args.entity is None,  # routing by table needs it
            )
            replay = Replay(
                registry,
                engine,
                build,
                faults=faults,
                entity=args.entity,
                dlq_out=dlq,
                read_ahead=args.read_ahead,
                progress=None if args.quiet else stderr_progress,
                progress_every=args.progress_every,
            )
            summary = replay.run(reader)
            summary.unreadable = reader.errors
            summary.invalid = reader.invalid
    except ReplayError as exc:
        return usage_error(str(exc))
    finally:
        engine.dispose()
    sys.stderr.write(summary.render() + "\n")
    if args.format == "json":
        sys.stdout.write(json.dumps(summary.as_dict(), sort_keys=True) + "\n")
    if not summary.accounted:
        return EXIT_UNACCOUNTED
    if summary.dlq:
        t = summary.total
        sys.stderr.write(
            f"replay: {summary.dlq:,} message(s) ended in a DLQ ({t.dlq:,} in a FIFO DLQ, "
            f"{t.pipe_dlq:,} in the Pipe's DLQ), listed in {args.dlq_out}; exit status {EXIT_DLQ}\n"
        )
        return EXIT_DLQ
    return EXIT_OK
