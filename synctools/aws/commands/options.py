"""What the AWS tools' commands share: the AWS and build options, the exit codes (0 done; 1 the
command ran but could not finish its work; 2 bad command line or configuration; 130
interrupted), the registry and entity lookups, SIGINT/SIGTERM for --follow, and `guarded`,
which turns every error into one line on stderr and its exit code."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from synctools.aws.session import INCOMPLETE, Aws, ToolError, describe_aws_error, error_code
from synctools.local.argtypes import EXIT_INTERRUPTED, positive

if TYPE_CHECKING:  # the registry loads when a command runs
    from runtime.registry import EntitySpec, Registry
    from synctools.aws.backfill import Source

CONFIG = (
    "bad command line or configuration: unknown entity, table or queue name; unreadable build/ or "
    "checkpoint; a missing table, stream or queue; no credentials or region; an unreachable endpoint"
)
INTERRUPTED = "interrupted (Ctrl-C)"


def whole_seconds(limit: int) -> Callable[[str], int]:
    """An argparse type: a whole number of seconds in 0..limit."""

    def parse(text: str) -> int:
        try:
            s = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of seconds") from None
        if not 0 <= s <= limit:
            raise argparse.ArgumentTypeError(f"{s} is not in 0..{limit}")
        return s

    return parse


def aws_options() -> argparse.ArgumentParser:
    """The options every AWS command takes (a parent parser)."""
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


def stderr_log(args: argparse.Namespace) -> Callable[[str], None]:
    """Progress lines on stderr, or nowhere with --quiet."""
    if getattr(args, "quiet", False):
        return lambda line: None

    def log(line: str) -> None:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()

    return log


def load_registry(build: Path) -> Registry:
    """build/registry.json, its problems as a ToolError."""
    from runtime.registry import RegistryError
    from runtime.registry import load_registry as load

    path = build / "registry.json"
    if not path.exists():
        raise ToolError(f"{path} not found; run python -m generator build (or pass --build)")
    try:
        return load(path)
    except RegistryError as exc:
        raise ToolError(str(exc)) from None


def entity_of(registry: Registry, name: str) -> EntitySpec:
    """The registry's entity `name`; a ToolError naming the known ones otherwise."""
    entity = registry.entities.get(name)
    if entity is None:
        known = ", ".join(sorted(registry.entities)) or "none"
        raise ToolError(f"unknown entity {name!r} (registry entities: {known})")
    return entity


def aws_of(args: argparse.Namespace) -> Aws:
    return Aws(endpoint_url=args.endpoint_url or None, region=args.region, profile=args.profile)


@dataclass(frozen=True)
class SourceOptions:
    """Where backfill and reconcile read items (the AWS options, an export or a Scan), kept as
    plain values so that a worker process can open the same source again."""

    endpoint_url: str | None
    region: str | None
    profile: str | None
    export_dir: str | None
    export: str | None
    segments: int
    consistent: bool

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser, *, segments: int) -> None:
        """--export / --export-dir (one or the other), --segments and --consistent, as of() reads them."""
        src = p.add_mutually_exclusive_group()
        src.add_argument(
            "--export",
            metavar="S3URL",
            help="read a DynamoDB export at s3://bucket/prefix (default: Scan the table)",
        )
        src.add_argument(
            "--export-dir",
            metavar="DIR",
            help="read a DynamoDB export's files from DIR (default: Scan the table)",
        )
        p.add_argument("--segments", type=positive, default=segments, metavar="N", help="Scan: TotalSegments")
        p.add_argument("--consistent", action="store_true", help="Scan: strongly consistent reads")

    @classmethod
    def of(cls, args: argparse.Namespace) -> SourceOptions:
        return cls(
            args.endpoint_url or None,
            args.region,
            args.profile,
            args.export_dir,
            args.export,
            args.segments,
            args.consistent,
        )

    def aws(self) -> Aws:
        return Aws(endpoint_url=self.endpoint_url, region=self.region, profile=self.profile)

    def open(self, aws: Aws, table: str, page_size: int, scan_page_size: int) -> Source:
        from synctools.aws.backfill import open_source

        return open_source(
            aws,
            table,
            export_dir=self.export_dir,
            export=self.export,
            segments=self.segments,
            consistent=self.consistent,
            page_size=page_size,
            scan_page_size=scan_page_size,
        )


def arn_parts(arn: str) -> tuple[str, str]:
    """(region, account) of an ARN; ("", "") if it has neither."""
    parts = arn.split(":")
    return (parts[3], parts[4]) if len(parts) > 4 else ("", "")


def print_json(doc: dict[str, Any]) -> None:
    """One JSON line on stdout."""
    sys.stdout.write(json.dumps(doc, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


class Stop:
    """SIGINT / SIGTERM end a --follow run after the current batch (its checkpoint written)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._old: dict[int, Any] = {}

    def __call__(self) -> bool:
        return self.event.is_set()

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def stop(signum: int, frame: FrameType | None) -> None:
            self.event.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, stop)

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()


def guarded(command: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run an AWS command: a ToolError, an AWS error or Ctrl-C becomes one line on stderr and
    its exit code."""
    try:
        return command(args)
    except ToolError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        # --once has no signal handler: Ctrl-C stops at once. What was sent is in the
        # checkpoint; what was applied is in the ledger; nothing is lost, some may come again.
        sys.stderr.write("interrupted\n")
        return EXIT_INTERRUPTED
    except Exception as exc:
        friendly = describe_aws_error(exc)
        if friendly is not None:
            sys.stderr.write(f"error: {friendly}\n")
            return friendly.exit_code
        if error_code(exc):  # an AWS error nobody could foresee: say which call failed
            sys.stderr.write(f"error: {exc}\n")
            return INCOMPLETE
        raise
