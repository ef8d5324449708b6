"""`python -m generator {build,validate,check}`.

Exit codes: 0 success (warnings allowed unless --strict); 1 the mappings have errors (or
warnings under --strict), `check` found build/ out of date, or a mapping test failed; 2 bad
command line; 4 build/ could not be written.
"""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path
from typing import NoReturn

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
    test = sub.add_parser(
        "test",
        parents=[common],
        help="run the mapping tests under mappings/tests/ through the local pipeline and the runtime",
        description=(
            "Validate, render the artifacts in memory, and run every test of mappings/tests/*.yaml: the given "
            "stream records go through the Pipe's filter and template, a local SQS FIFO queue and the sync "
            "runtime into a fresh database; messages, rows, outcomes and the DLQ are compared with the expected."
        ),
    )
    test.add_argument(
        "--db",
        help="a scratch database URL (its registry tables are dropped and re-created for every test); default: SQLite in a temp dir",
    )
    test.add_argument("-k", dest="select", metavar="TEXT", help="run only the tests whose name contains TEXT")
    sub.add_parser(
        "reference",
        help="print the mapping-language reference rendered from the JSON Schemas",
        description="Print docs/mapping-reference.md: every key of mappings and project.yaml, from the schemas.",
    )
    return p


def _test(args: argparse.Namespace, root: Path, files: dict[str, str]) -> int:
    import json

    from generator.mapping_tests import render_results, run_tests

    registry = json.loads(files["registry.json"])
    mappings = args.mappings or root / "mappings"
    results, problems = run_tests(mappings, root, registry, files, args.db, args.select)
    test_diags = Diagnostics()
    test_diags.extend(problems)
    _report(test_diags, args.format)
    if args.format == "json":
        print(
            json.dumps(
                [
                    {"file": r.file, "name": r.name, "passed": r.passed, "problems": r.problems}
                    for r in results
                ],
                indent=2,
            )
        )
    else:
        print(render_results(results), file=sys.stderr)
    if not results and not problems:
        print(f"test: no tests under {mappings / 'tests'}", file=sys.stderr)
    return EXIT_OK if results and all(r.passed for r in results) and not test_diags.errors else EXIT_PROBLEMS


def _report(diags: Diagnostics, fmt: str) -> None:
    if fmt == "json":
        print(diags.render_json())
    elif diags.items:
        print(diags.render_text(), file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    # A run is short and what it builds (located documents, the model, the rendered files)
    # lives until it ends, so the cyclic collector's full passes re-walk all of it and find
    # little to free: 11-15 of them cost 2.5-3 s of a 1,000-mapping build. Reference counting
    # still frees the temporaries (yamlload keeps node trees free of cycles for this).
    # Restored afterwards for in-process callers (tests).
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _run(argv)
    finally:
        if enabled:
            gc.enable()


def run() -> NoReturn:
    """The process entry point (`python -m generator`, the ddb-sql-sync script)."""
    code = main()
    # What the run leaves behind (SQLAlchemy's cyclic table objects, caches) dies with the
    # process; frozen, it is skipped by the collections the interpreter runs on exit, which
    # would otherwise walk all of it: 0.3 s after a 1,000-mapping build.
    gc.freeze()
    sys.exit(code)


def _run(argv: list[str] | None) -> int:
    args = parser().parse_args(argv)
    if args.command == "reference":
        from generator.reference import render_reference

        sys.stdout.write(render_reference())
        return EXIT_OK
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
    if args.command == "test":
        return _test(args, root, files)
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
    except output.NotRestoredError as exc:
        kept = ", ".join(str(p) for p in exc.kept)
        print(
            f"build: could not write {build}: {exc}; nothing was deleted: the previous and new files are in {kept}",
            file=sys.stderr,
        )
        return EXIT_IO
    except OSError as exc:
        print(f"build: could not write {build}: {exc}; {build} is unchanged", file=sys.stderr)
        return EXIT_IO
    if args.format == "text":
        print(f"build: {len(files)} files in {build} ({len(changed)} changed); {summary}", file=sys.stderr)
    return EXIT_OK
