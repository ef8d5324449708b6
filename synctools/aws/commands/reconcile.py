"""`ddb-sql-sync reconcile ENTITY`: compare the rows the mapping derives from every current
DynamoDB item with the database's rows; report missing, differing and extra rows; --repair
re-applies the drifted keys the backfill's way (synctools/aws/reconcile.py; docs/aws-tools.md,
"Reconcile")."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from synctools.aws import procs
from synctools.aws.commands import options
from synctools.aws.session import USAGE, ToolError
from synctools.local.argtypes import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PROBLEMS,
    HelpFormatter,
    add_format,
    exit_codes,
    positive,
    seconds,
)

if TYPE_CHECKING:
    from synctools.aws.reconcile import Reconciler

NAME = "reconcile"

EXIT_RECONCILE = exit_codes(
    {
        EXIT_OK: "in step: no missing, differing or extra row after the grace period (or all of them repaired)",
        EXIT_PROBLEMS: "drift: a missing, differing or extra row is still there after the grace period "
        "(and after --repair / --delete-extra, when given); or an item the Pipe or decoder refuses",
        USAGE: options.CONFIG + "; --db missing or unusable",
        EXIT_INTERRUPTED: options.INTERRUPTED,
    }
)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add `reconcile` to the subcommands of the command line."""
    p = sub.add_parser(
        NAME,
        parents=[options.aws_options()],
        formatter_class=HelpFormatter,
        help="compare an entity's database rows with what its current DynamoDB items derive",
        description="Read every current item of the entity's DynamoDB table (a parallel Scan, or a "
        "DYNAMODB_JSON export), derive the row each target table should hold for it the backfill's "
        "way (the stream INSERT record, the Pipe's filter and input template, the runtime's decoder), "
        "and compare it column by column with the database's row. Reports missing rows, differing "
        "rows (the columns; values redacted unless --show-values) and extra rows (a row with no item: "
        "looked up in DynamoDB where the key columns are the item's key attributes). A drifted key is "
        "re-checked after --grace seconds before it counts. Tables a rule appends to (action insert) "
        "are skipped: their rows are events, not a function of the current item.",
        epilog=EXIT_RECONCILE,
    )
    p.add_argument("entity", metavar="ENTITY", help="an entity of registry.json")
    options.SourceOptions.add_arguments(p, segments=1)
    p.add_argument(
        "--workers",
        type=positive,
        metavar="N",
        help="segments (or export files) compared at once: this process and N-1 worker processes "
        "(default: the machine's cores, at most 8)",
    )
    p.add_argument("--db", metavar="URL", required=True, help="the database URL, SQLAlchemy")
    p.add_argument(
        "--page-size",
        type=positive,
        default=500,
        metavar="N",
        help="items (and database rows) compared a page",
    )
    p.add_argument(
        "--grace",
        type=seconds,
        default=30.0,
        metavar="SECONDS",
        help="wait before a drifted key is re-checked (a consistent GetItem and the row read again)",
    )
    p.add_argument(
        "--show-values", action="store_true", help="show the differing values (default: their kind and size)"
    )
    p.add_argument(
        "--repair",
        action="store_true",
        help="re-apply the DynamoDB state of the missing and differing keys through the backfill's path",
    )
    p.add_argument("--delete-extra", action="store_true", help="delete the extra rows (rows with no item)")
    add_format(p, "a table of the drift and a summary on stdout", "one JSON document on stdout")
    return p


def run(args: argparse.Namespace) -> int:
    """Run `reconcile`; the exit code."""
    return options.guarded(_reconcile, args)


@dataclass(frozen=True)
class ReconcileRecipe:
    """How the command (and each of its worker processes) builds its Reconciler: the options,
    never an open connection or client."""

    build: str
    entity: str
    db: str
    source: options.SourceOptions
    page_size: int
    grace: float
    show_values: bool

    def reconciler(self, *, dynamodb: bool = True, log: Callable[[str], None] | None = None) -> Reconciler:
        """The Reconciler; without `dynamodb` it has no DynamoDB client (a worker compares its
        unit only: the extras pass and the re-check, which read the table, stay with the
        command)."""
        from runtime.config import make_engine
        from synctools.aws.backfill import Synthesizer
        from synctools.aws.reconcile import Reconciler
        from synctools.local.build import PipeError, load_pipe

        build = Path(self.build)
        registry = options.load_registry(build)
        name = self.entity
        spec = registry.entities[name]
        aws = self.source.aws()
        try:
            engine = make_engine(self.db)
            with engine.connect():
                pass
        except Exception as exc:
            raise ToolError(f"--db: {exc}") from None
        source = self.source.open(aws, spec.source_table, self.page_size, min(self.page_size, 1000))
        region = aws.region_name or ""
        try:
            pipe = load_pipe(registry.raw, name, build, region=region)
        except PipeError as exc:
            raise ToolError(str(exc)) from None
        # The version does not take part in the comparison: any sequence number decodes.
        synth = Synthesizer.of(name, registry.raw["entities"][name], "1", region)
        return Reconciler(
            registry=registry,
            entity=name,
            pipe=pipe,
            synthesizer=synth,
            source=source,
            engine=engine,
            ddb=aws.client("dynamodb") if dynamodb else None,
            page_size=self.page_size,
            grace=self.grace,
            show_values=self.show_values,
            log=log or (lambda line: None),
        )


def _reconcile(args: argparse.Namespace) -> int:
    import dataclasses

    from synctools.aws.backfill import (
        DbSink,
        Synthesizer,
        columns_registry,
        stream_watermark,
        uses_sequence_versions,
    )

    build = Path(args.build)
    registry = options.load_registry(build)
    spec = options.entity_of(registry, args.entity)
    name = spec.name
    raw = registry.raw["entities"][name]
    log = options.stderr_log(args)
    aws = options.aws_of(args)
    recipe = ReconcileRecipe(
        build=str(build),
        entity=name,
        db=args.db,
        source=options.SourceOptions.of(args),
        page_size=args.page_size,
        grace=args.grace,
        show_values=args.show_values,
    )
    rec = recipe.reconciler(log=log)
    engine = rec.engine
    region = aws.region_name or ""
    workers = args.workers or min(os.cpu_count() or 1, 8)
    report = rec.report
    with procs.settled():  # what is built stays out of the collector while the items pass
        suspects = rec.run(recipe, workers)
    drift = rec.settle(suspects)
    drift.sort(
        key=lambda pair: (pair[0].table, pair[0].kind, pair[0].ident()[1])
    )  # whatever the workers' order
    report.drift = [d for d, _ in drift]
    if (args.repair or args.delete_extra) and drift and not args.dry_run:
        stream_arn = ""
        watermark = "0"
        if uses_sequence_versions(spec):
            stream_arn = aws.stream_arn(spec.source_table)
            watermark = stream_watermark(aws.client("dynamodbstreams"), stream_arn).sequence
        chosen = [
            (d, item)
            for d, item in drift
            if (d.kind == "extra" and args.delete_extra) or (d.kind != "extra" and args.repair)
        ]
        repair_synth = Synthesizer.of(
            name, raw, watermark, region, stream_arn, f"reconcile-repair:{time.time_ns()}"
        )
        queue_arn = f"arn:aws:sqs:{region or 'local'}:000000000000:{spec.queue}"
        sink = DbSink(engine, registry, queue_arn, region, batch_size=args.page_size)
        # A differing row is then filled: every column columns_registry fills (it leaves out
        # logs, child tables and keys), the version left as it is.
        compared = sorted({c for t in spec.tables.values() for c in t.columns})
        fill_sink = DbSink(
            engine, columns_registry(registry, name, compared), queue_arn, region, batch_size=args.page_size
        )
        fill_synth = dataclasses.replace(repair_synth, salt=repair_synth.salt + ":fill")
        rec.repair(
            chosen,
            sink=sink,
            synthesizer=repair_synth,
            fill_sink=fill_sink,
            fill_synthesizer=fill_synth,
            delete_extra=args.delete_extra,
        )
        # What the repair did, checked again (no grace: the repair is the last writer).
        for d, _ in chosen:
            still, _item = rec.recheck(d)
            if still is None:
                d.repaired = True
                if d.kind != "extra":
                    report.repaired += 1
    if args.format == "json":
        options.print_json(report.as_dict(args.show_values))
    else:
        sys.stdout.write(report.render(args.show_values) + "\n")
    engine.dispose()
    return EXIT_OK if report.in_step and not report.undecodable else EXIT_PROBLEMS
