"""`ddb-sql-sync prune`: delete the processed-event ledger rows and the tombstones older than
each entity's retention window (and everything of a retired entity), in small batches, each
its own transaction: the same code the sync Lambda runs on the scheduled prune event
(runtime/prune.py)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from synctools.local.argtypes import (
    EXIT_OK,
    EXIT_PROBLEMS,
    EXIT_USAGE,
    HelpFormatter,
    add_format,
    exit_codes,
    positive,
    usage_error,
)

NAME = "prune"

EXIT_PRUNE = exit_codes(
    {
        EXIT_OK: "pruned (or counted, with --dry-run) everything older than the windows",
        EXIT_PROBLEMS: "the database refused a batch; what was deleted before it stays deleted",
        EXIT_USAGE: "bad command line, unreadable registry, unknown entity or no database",
    }
)


def _non_negative(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of seconds") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"{n} must not be negative")
    return n


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add `prune` to the subcommands of the command line."""
    s = sub.add_parser(
        NAME,
        help="delete ledger rows and tombstones older than each entity's retention window",
        description="Delete the processed-event ledger rows and the tombstones older than each entity's "
        "pipeline.retention window (all of a retired entity's ledger rows), in batches, each its own short "
        "transaction: what the sync Lambda does on its scheduled prune event.",
        epilog=EXIT_PRUNE,
        formatter_class=HelpFormatter,
    )
    s.add_argument(
        "--entity",
        action="append",
        metavar="E",
        help="only this entity's ledger rows and its tables' tombstones (repeatable; default: every entity)",
    )
    s.add_argument(
        "--db",
        metavar="URL",
        help="SQLAlchemy URL of the database (default: SYNC_DATABASE_URL, or the RDS secret named by "
        "SYNC_DB_SECRET_ARN, as the Lambda reads it)",
    )
    s.add_argument("--dry-run", action="store_true", help="count the rows that would go; delete nothing")
    s.add_argument(
        "--older-than",
        type=_non_negative,
        metavar="SECONDS",
        help="prune what is older than this (default: each entity's window; all rows of a retired entity)",
    )
    s.add_argument(
        "--batch-rows", type=positive, metavar="N", help="rows per DELETE (default: the registry's)"
    )
    s.add_argument("--build", default="build", metavar="DIR", help="where registry.json is")
    add_format(s, "one line per table and entity", "one JSON document")
    return s


def run(args: argparse.Namespace) -> int:
    """Run `prune`; the exit code."""
    from runtime.config import ConfigError, database_url, make_engine
    from runtime.prune import PruneError, prune, targets
    from runtime.registry import RegistryError, load_registry

    try:
        registry = load_registry(Path(args.build) / "registry.json")
        targets(registry, entities=args.entity)  # an unknown entity: before connecting
    except (RegistryError, PruneError) as exc:
        return usage_error(str(exc))
    try:
        url = args.db or database_url()
        engine = make_engine(url)
    except ConfigError as exc:
        return usage_error(f"{exc} (or pass --db URL)")
    except Exception as exc:  # a bad URL or a missing driver
        return usage_error(f"cannot use database {args.db!r}: {type(exc).__name__}: {exc}")
    try:
        result = prune(
            engine,
            registry,
            entities=args.entity,
            older_than=args.older_than,
            batch_rows=args.batch_rows,
            dry_run=args.dry_run,
        )
    except Exception as exc:
        sys.stderr.write(f"error: prune failed: {type(exc).__name__}: {str(exc).splitlines()[0]}\n")
        return EXIT_PROBLEMS
    finally:
        engine.dispose()
    if args.format == "json":
        sys.stdout.write(json.dumps(result.as_dict(), sort_keys=True) + "\n")
        return EXIT_OK
    verb = "would delete" if args.dry_run else "deleted"
    for p in result.pruned:
        older = f"older than {p.cutoff.isoformat()}" if p.cutoff else "all (retired)"
        sys.stdout.write(
            f"{p.target.kind} {p.target.name}: {verb} {p.rows} row(s) {older}"
            + ("" if args.dry_run else f" in {p.batches} batch(es)")
            + "\n"
        )
    sys.stdout.write(f"prune: {verb} {result.rows} row(s)\n")
    return EXIT_OK
