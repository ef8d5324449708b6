"""`python -m generator {build,validate,check}`.

Exit codes: 0 success (warnings allowed unless --strict); 1 the mappings have errors (or
warnings under --strict), or `check` found build/ out of date; 2 bad command line;
4 build/ could not be written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from generator import __version__, output
from generator.diagnostics import Diagnostics
from generator.load import load

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, EXIT_IO = 0, 1, 2, 4


def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--root",
        type=Path,
        default=Path("."),
        help="project root holding project.yaml and mappings/ (default: .)",
    )
    p.add_argument("--project", type=Path, help="project file (default: ROOT/project.yaml)")
    p.add_argument("--mappings", type=Path, help="mappings directory (default: ROOT/mappings)")
    p.add_argument("--build-dir", type=Path, help="output directory (default: ROOT/build)")
    p.add_argument(
        "--format", choices=("text", "json"), default="text", help="diagnostics format (default: text)"
    )
    p.add_argument("--strict", action="store_true", help="treat warnings as errors")
    return p


def parser() -> argparse.ArgumentParser:
    common = _common()
    p = argparse.ArgumentParser(
        prog="python -m generator",
        description="Validate entity mappings and generate the Pipes, Terraform, registry, DDL and docs in build/.",
        epilog="Exit codes: 0 ok; 1 mapping errors (or warnings with --strict) or stale build/; 2 usage; 4 write failure.",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser(
        "build",
        parents=[common],
        help="validate, then write every artifact into build/",
        description="Validate the mappings, then replace build/ atomically with freshly generated files.",
    )
    sub.add_parser(
        "validate",
        parents=[common],
        help="validate only; write nothing",
        description="Check project.yaml and mappings/*.yaml (schema and semantic checks); write nothing.",
    )
    sub.add_parser(
        "check",
        parents=[common],
        help="exit 1 when build/ is not what build would write (for CI)",
        description="Validate, render in memory, and compare with build/; exit 1 with a summary when they differ.",
    )
    return p


def _report(diags: Diagnostics, fmt: str) -> None:
    if fmt == "json":
        print(diags.render_json())
    elif diags.items:
        print(diags.render_text(), file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    root: Path = args.root
    loaded = load(root, args.project, args.mappings)
    diags = loaded.diagnostics
    _report(diags, args.format)
    failed = bool(diags.errors) or (args.strict and bool(diags.warnings))
    summary = f"{len(diags.errors)} error(s), {len(diags.warnings)} warning(s)"
    if failed or loaded.model is None:
        if args.format == "text":
            print(
                f"{args.command}: {summary}; nothing written"
                + (" (--strict: warnings count)" if args.strict and not diags.errors else ""),
                file=sys.stderr,
            )
        return EXIT_PROBLEMS
    files = output.render(loaded.model)
    build = args.build_dir or root / "build"
    if args.command == "validate":
        if args.format == "text":
            print(f"validate: {len(loaded.model.entities)} mapping(s) valid; {summary}", file=sys.stderr)
        return EXIT_OK
    if args.command == "check":
        report = output.compare(build, files)
        if report:
            print("\n".join(report), file=sys.stderr)
            print(
                f"check: {build} is out of date ({len(report)} file(s)); run: python -m generator build",
                file=sys.stderr,
            )
            return EXIT_PROBLEMS
        if args.format == "text":
            print(f"check: {build} is up to date ({len(files)} files)", file=sys.stderr)
        return EXIT_OK
    try:
        changed = output.write(build, files)
    except OSError as exc:
        print(f"build: could not write {build}: {exc}; {build} is unchanged", file=sys.stderr)
        return EXIT_IO
    if args.format == "text":
        print(f"build: {len(files)} files in {build} ({len(changed)} changed); {summary}", file=sys.stderr)
    return EXIT_OK
