"""`ddb-sql-sync backfill ENTITY`: every current item of the entity's table (a parallel Scan or
a DynamoDB export) through the Pipe's filter and template, into the database or the FIFO
queue, safe beside the live stream (synctools/aws/backfill.py; docs/aws-tools.md, "Backfill")."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from synctools.aws import procs
from synctools.aws.commands import options
from synctools.aws.session import INCOMPLETE, USAGE, ToolError
from synctools.local.argtypes import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    LOCAL_DIR,
    HelpFormatter,
    add_format,
    exit_codes,
    positive,
)

if TYPE_CHECKING:
    from synctools.aws.backfill import UnitRunner

NAME = "backfill"

EXIT_BACKFILL = exit_codes(
    {
        EXIT_OK: "every segment (or export file) done, or --max-items reached; the checkpoint written",
        INCOMPLETE: "a record failed in the database or was refused by SQS or the template, throttling "
        "outlasted the backoff, or an unexpected AWS error; the checkpoint keeps what was done",
        USAGE: options.CONFIG + "; no stream on the table; no watermark to be had (pass --watermark); "
        "--columns with --to queue; the checkpoint locked by another run",
        EXIT_INTERRUPTED: options.INTERRUPTED + "; a re-run resumes from the checkpoint",
    }
)


def _rate(text: str) -> float:
    try:
        r = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of items a second") from None
    if r <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be more than 0")
    return r


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add `backfill` to the subcommands of the command line."""
    p = sub.add_parser(
        NAME,
        parents=[options.aws_options()],
        formatter_class=HelpFormatter,
        help="send every current item of an entity's table through the Pipe into the database or queue",
        description="Read every current item of the entity's DynamoDB table (a parallel Scan, or a "
        "DYNAMODB_JSON export in S3 or on disk), make of each the stream INSERT record the table's "
        "stream would carry, and put it through the Pipe's filter and input template: into the "
        "database with the runtime's apply_batch (--to db), or into the entity's FIFO queue for the "
        "deployed Lambda (--to queue). Safe beside the live stream: scanned items carry a version "
        "that loses to every stream record written after the backfill started (docs/aws-tools.md, "
        "Backfill). Resumable: a checkpoint per Scan segment or export file.",
        epilog=EXIT_BACKFILL,
    )
    p.add_argument("entity", metavar="ENTITY", help="an entity of registry.json")
    options.SourceOptions.add_arguments(p, segments=4)
    p.add_argument(
        "--workers",
        type=positive,
        metavar="N",
        help="segments (or export files) read at once; with --to db each in a process of its own, so the "
        "template and the runtime's work use every core (default: --segments, at most 8)",
    )
    p.add_argument("--to", choices=("db", "queue"), required=True, help="where the records go")
    p.add_argument(
        "--db", metavar="URL", help="--to db: the database URL, SQLAlchemy (default: none; --to db needs it)"
    )
    p.add_argument(
        "--batch-size",
        type=positive,
        default=500,
        metavar="N",
        help="--to db: records per apply_batch (--to queue: the Pipe's batch size, at most 10)",
    )
    p.add_argument("--rate", type=_rate, metavar="N", help="at most N items a second (default: no limit)")
    p.add_argument(
        "--checkpoint",
        default=f"{LOCAL_DIR}/backfill-checkpoint.json",
        metavar="FILE",
        help="where each segment's position is kept (FILE.lock keeps a second run off it)",
    )
    p.add_argument(
        "--watermark",
        metavar="SEQ",
        help="the SequenceNumber scanned items carry (default: the stream's highest when the backfill "
        "starts; for an export, its highest before exportTime)",
    )
    p.add_argument(
        "--columns",
        metavar="A,B",
        help="--to db: write only these columns of rows no newer than the watermark, leaving their version "
        "(an UPDATE), after a mapping change "
        "added them (default: every column, as the stream would)",
    )
    p.add_argument(
        "--max-items",
        type=positive,
        metavar="N",
        help="stop after about N items, at a page boundary (default: no limit)",
    )
    add_format(p, "progress and the summary on stderr", "the summary as one JSON line on stdout")
    return p


def run(args: argparse.Namespace) -> int:
    """Run `backfill`; the exit code."""
    return options.guarded(_backfill, args)


def _backfill(args: argparse.Namespace) -> int:
    from synctools.aws.backfill import (
        Backfill,
        BackfillCheckpoint,
        ExportSource,
        QueueSink,
        RateLimit,
        ScanSource,
        Sink,
        Summary,
        Synthesizer,
        stream_watermark,
        uses_sequence_versions,
    )
    from synctools.aws.checkpoint import Checkpoint
    from synctools.aws.pipe import Sender
    from synctools.local.build import PipeError, load_pipe

    if args.to == "db" and not args.db:
        raise ToolError("--to db needs --db URL")
    if args.to == "queue" and args.db:
        raise ToolError("--db is for --to db")
    columns = [c.strip() for c in (args.columns or "").split(",") if c.strip()]
    if columns and args.to == "queue":
        raise ToolError(
            "--columns needs --to db: the deployed Lambda applies a message as its registry's rule for the "
            "event type says (every column); a message cannot ask it for a subset"
        )
    if args.watermark is not None and not (args.watermark.isdigit() and len(args.watermark) <= 40):
        raise ToolError(f"--watermark {args.watermark!r}: a SequenceNumber (1 to 40 digits)")
    build = Path(args.build)
    registry = options.load_registry(build)
    spec = options.entity_of(registry, args.entity)
    name = spec.name
    raw = registry.raw["entities"][name]
    log = options.stderr_log(args)
    aws = options.aws_of(args)
    offline = bool(args.export_dir) and args.to == "db"

    reading = options.SourceOptions.of(args)
    source = reading.open(
        aws, spec.source_table, args.batch_size, min(args.batch_size, 1000) if args.to == "db" else 100
    )
    export_time = source.export.export_time if isinstance(source, ExportSource) else None

    checkpoint = Checkpoint(args.checkpoint)
    progress = BackfillCheckpoint(checkpoint, name, source.ident)
    meta = progress.meta()

    # The stream must be on before the first item is read: what changes during the backfill
    # reaches the database through it, and wins over the backfilled row.
    stream_arn = ""
    if not offline:
        stream_arn = aws.stream_arn(spec.source_table)
    watermark: str | None = meta.get("watermark")
    if watermark is not None and args.watermark is not None and args.watermark != watermark:
        raise ToolError(
            f"the checkpoint {args.checkpoint} has this backfill started with watermark {watermark}; "
            f"resume with it (drop --watermark) or move the checkpoint away to start again"
        )
    watermark = watermark or args.watermark
    if watermark is None and uses_sequence_versions(spec):
        if offline:
            raise ToolError(
                f"{name} has SequenceNumber versions: --export-dir with --to db needs --watermark SEQ "
                "(the highest SequenceNumber of the stream before the export's time), or an endpoint: "
                "use --export or --to queue"
            )
        before = None if export_time is None else export_time - 1.0  # second precision: be early
        wm = stream_watermark(aws.client("dynamodbstreams"), stream_arn, before=before)
        if export_time is not None and (wm.oldest_created is None or wm.oldest_created >= export_time - 1.0):
            raise ToolError(
                "the stream holds no record from before the export's exportTime (trimmed, or none "
                "written): the watermark cannot be known; pass --watermark SEQ (a SequenceNumber no "
                "higher than any record written after exportTime)"
            )
        watermark = wm.sequence
        log(f"backfill {name}: watermark {watermark} ({wm.records} stream records read)")
    watermark = watermark or "0"

    region = ""
    account = ""
    queue_arn = ""
    if not offline:
        region = aws.region_name
    sink: Sink | None = None
    if args.to == "queue":
        url = aws.queue_url(spec.queue)
        queue_arn = aws.queue_arn(url)
        region, account = options.arn_parts(queue_arn)
    try:
        pipe = load_pipe(
            registry.raw,
            name,
            build,
            region=region,
            account=account,
            source_arn=stream_arn,
            target_arn=queue_arn,
        )
    except PipeError as exc:
        raise ToolError(str(exc)) from None
    if not args.dry_run:
        if args.to == "queue":
            sink = QueueSink(Sender(aws.client("sqs"), url), pipe.batch_size)
        else:
            sink = _db_sink(args.db, registry, name, columns, region, args.batch_size)

    # --columns writes differ from a whole-row backfill of the same state: their own event ids,
    # and a new watermark's run is not a duplicate of an earlier one (whose write may have been
    # stale where this one applies: the row can lack the column while the item is unchanged).
    salt = f"columns:{','.join(sorted(columns))}@{watermark}" if columns else ""
    synth = Synthesizer.of(name, raw, watermark, region, stream_arn, salt)
    summary = Summary(name, source.ident, args.to, watermark, dry_run=args.dry_run)
    stop = options.Stop()
    if not args.dry_run:
        checkpoint.lock()
        meta["watermark"] = watermark
        checkpoint.dirty = True
        checkpoint.save()
    workers = args.workers or min(args.segments, 8)
    recipe = None
    if args.to == "db" and not args.dry_run and workers > 1:
        recipe = DbRecipe(
            build=str(build),
            entity=name,
            db=args.db,
            columns=tuple(columns),
            batch_size=args.batch_size,
            source=reading,
            region=region,
            stream_arn=stream_arn,
            watermark=watermark,
            salt=salt,
            rate=args.rate / workers if args.rate else None,
        )
    try:
        with procs.settled():  # what is built stays out of the collector while the items pass
            Backfill(
                pipe=pipe,
                synthesizer=synth,
                source=source,
                sink=sink,
                checkpoint=progress,
                summary=summary,
                rate=RateLimit(args.rate),
                workers=workers,
                recipe=recipe,
                max_items=args.max_items,
                log=log,
                stop=stop,
            ).run()
    finally:
        checkpoint.unlock()
        if isinstance(source, ScanSource):
            summary.throttled += source.backoff.throttled
        _report(args, summary, log)
    c = summary.counts
    if c.failed or c.refused:
        return INCOMPLETE
    return EXIT_OK


def _db_sink(db: str, registry: Any, name: str, columns: Any, region: str, batch_size: int) -> Any:
    from runtime.config import make_engine
    from synctools.aws.backfill import DbSink, columns_registry

    if columns:
        registry = columns_registry(registry, name, columns)
    try:
        engine = make_engine(db)
    except Exception as exc:  # a bad URL, a missing driver
        raise ToolError(f"--db: {exc}") from None
    queue_arn = f"arn:aws:sqs:{region or 'local'}:000000000000:{registry.entities[name].queue}"
    return DbSink(engine, registry, queue_arn, region, batch_size=batch_size)


@dataclass(frozen=True)
class DbRecipe:
    """What a worker process of `backfill --to db --workers N` builds its own source, Pipe and
    database sink from: the command's options and what the coordinator worked out (watermark,
    stream ARN), never an open connection or client."""

    build: str
    entity: str
    db: str
    columns: tuple[str, ...]
    batch_size: int
    source: options.SourceOptions
    region: str
    stream_arn: str
    watermark: str
    salt: str
    rate: float | None

    def runner(self) -> UnitRunner:
        from synctools.aws.backfill import RateLimit, Synthesizer, UnitRunner
        from synctools.local.build import load_pipe

        build = Path(self.build)
        registry = options.load_registry(build)
        table = registry.entities[self.entity].source_table
        source = self.source.open(self.source.aws(), table, self.batch_size, min(self.batch_size, 1000))
        pipe = load_pipe(registry.raw, self.entity, build, region=self.region, source_arn=self.stream_arn)
        raw = registry.raw["entities"][self.entity]
        synth = Synthesizer.of(self.entity, raw, self.watermark, self.region, self.stream_arn, self.salt)
        sink = _db_sink(self.db, registry, self.entity, list(self.columns), self.region, self.batch_size)
        return UnitRunner(pipe, synth, source, sink, RateLimit(self.rate))


def _report(args: argparse.Namespace, summary: Any, log: Any) -> None:
    if args.format == "json":
        options.print_json(summary.as_dict())
    else:
        print(summary.render(), file=sys.stderr)
        for why in summary.counts.reasons:
            print(f"backfill {summary.entity}: {why}", file=sys.stderr)
