"""`ddb-sql-sync sample ENTITY --count N`: realistic DynamoDB stream records for one registry
entity, as JSON lines on stdout (docs/local-tools.md)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from synctools.local.argtypes import EXIT_OK, EXIT_USAGE, HelpFormatter, exit_codes, positive, usage_error

NAME = "sample"

EXIT_SAMPLE = exit_codes(
    {
        EXIT_OK: "records written",
        EXIT_USAGE: "bad command line, unknown entity, unreadable registry, or an attribute path the "
        "generator cannot build",
    }
)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add `sample` to the subcommands of the command line."""
    s = sub.add_parser(
        NAME,
        help="write realistic DynamoDB stream records for an entity (JSON lines on stdout)",
        description="Write realistic DynamoDB stream records for one registry entity, as JSON lines.",
        epilog=EXIT_SAMPLE,
        formatter_class=HelpFormatter,
    )
    s.add_argument("entity", help="an entity of registry.json")
    s.add_argument("--count", type=positive, required=True, metavar="N", help="number of stream records")
    s.add_argument("--seed", type=int, default=0, metavar="N", help="the same seed gives the same records")
    s.add_argument("--build", default="build", metavar="DIR", help="where registry.json is")
    s.add_argument(
        "--region", default="ap-northeast-1", metavar="R", help="region in eventSourceARN and awsRegion"
    )
    s.add_argument("--account", default="123456789012", metavar="A", help="account in eventSourceARN")
    return s


def run(args: argparse.Namespace) -> int:
    """Run `sample`; the exit code."""
    from synctools.local.sample import SampleError, Sampler

    try:
        with open(Path(args.build) / "registry.json", encoding="utf-8") as fh:
            registry: dict[str, Any] = json.load(fh)
        sampler = Sampler(registry, args.entity, seed=args.seed, region=args.region, account=args.account)
    except (OSError, ValueError) as exc:
        return usage_error(str(exc))
    out = sys.stdout
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    try:
        for record in sampler.records(args.count):
            out.write(dumps(record))
            out.write("\n")
        out.flush()
    except SampleError as exc:
        return usage_error(str(exc))
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): not our failure.
        sys.stderr.close()
        return EXIT_OK
    return EXIT_OK
