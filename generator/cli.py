"""The one command line, `ddb-sql-sync COMMAND` (also `python -m generator COMMAND`): the
generator's commands build, validate, check, test, package, override and reference, and the
tools' commands replay, sample (synctools/local/commands) and pump, consume, dlq
(synctools/aws/commands), each registered from its module.

Conventions (synctools/local/argtypes.py): -h/--help on every command and subcommand, ending
with the exit codes it returns; --version at the top; --format text|json on every command
that reports results. Exit codes: 0 success (warnings allowed unless --strict); 1 problems
found: the mappings have errors (or warnings under --strict), `check` or `package` found
build/ out of date, a mapping test failed, `override` cannot be written for this build,
`replay` found something not accounted for, or `pump`, `consume` or `dlq` could not finish
its work; 2 bad command line or configuration; 3 a tool the command runs failed (pip, for
`package`), or `replay` accounted for everything but messages ended in a DLQ; 4 build/, the
zip or the override file could not be written; 130 interrupted (`pump`, `consume`, `dlq`).
"""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, NoReturn

from generator import __version__
from generator.override import DEFAULT_NAME as DEFAULT_OVERRIDE
from generator.override import MOTO_UNSUPPORTED, endpoint_url
from synctools.aws.commands import backfill, consume, dlq, pump, reconcile
from synctools.local.argtypes import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PROBLEMS,
    EXIT_USAGE,
    PRODUCT,
    HelpFormatter,
    add_format,
    exit_codes,
)
from synctools.local.commands import prune, replay, sample

if TYPE_CHECKING:  # loaded by the generator's commands only: the tools start without them
    from generator.diagnostics import Diagnostics
    from generator.load import Loaded
    from generator.model import Model

EXIT_TOOL, EXIT_IO = 3, 4

# The tools' commands, in the order --help lists them; each module has add_parser and run.
TOOLS: dict[str, ModuleType] = {
    m.NAME: m for m in (replay, sample, pump, consume, dlq, prune, backfill, reconcile)
}


def _endpoint(text: str) -> str:
    try:
        return endpoint_url(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_USAGE = "bad command line"
_MAPPING_ERRORS = "the mappings have errors (or warnings under --strict); nothing written"
EXIT_BUILD = exit_codes(
    {
        EXIT_OK: "build/ written (warnings allowed unless --strict)",
        EXIT_PROBLEMS: _MAPPING_ERRORS,
        EXIT_USAGE: _USAGE,
        EXIT_IO: "build/ could not be written (it is left as it was)",
    }
)
EXIT_VALIDATE = exit_codes(
    {
        EXIT_OK: "the mappings are valid (warnings allowed unless --strict)",
        EXIT_PROBLEMS: "the mappings have errors (or warnings under --strict)",
        EXIT_USAGE: _USAGE,
    }
)
EXIT_CHECK = exit_codes(
    {
        EXIT_OK: "build/ is what build would write",
        EXIT_PROBLEMS: "the mappings have errors (or warnings under --strict), or build/ is out of date",
        EXIT_USAGE: _USAGE,
    }
)
EXIT_TEST = exit_codes(
    {
        EXIT_OK: "every mapping test passed",
        EXIT_PROBLEMS: "the mappings or the test files have errors (or warnings under --strict), a test "
        "failed, or no test ran",
        EXIT_USAGE: _USAGE + ", or a --db that cannot be used",
    }
)
EXIT_PACKAGE = exit_codes(
    {
        EXIT_OK: "the zip written (or, with --dry-run, described)",
        EXIT_PROBLEMS: "the mappings have errors, build/ is out of date, or lambda.package is not a .zip "
        "name build leaves free; nothing written",
        EXIT_USAGE: _USAGE,
        EXIT_TOOL: "pip failed (the message says when the package index could not be reached)",
        EXIT_IO: "the zip could not be written (it is left as it was)",
    }
)
EXIT_OVERRIDE = exit_codes(
    {
        EXIT_OK: "the override file written (or, with --dry-run, printed)",
        EXIT_PROBLEMS: "it cannot be written for this build/ (no generated Terraform, or --omit of a "
        "resource something refers to)",
        EXIT_USAGE: _USAGE + ", or an --out name not ending in _override.tf.json",
        EXIT_IO: "the file could not be written",
    }
)
EXIT_REFERENCE = exit_codes({EXIT_OK: "the reference printed", EXIT_USAGE: _USAGE})
EXIT_ALL = exit_codes(
    {
        EXIT_OK: "success (warnings allowed unless --strict)",
        EXIT_PROBLEMS: "problems found: the mappings have errors (or warnings under --strict), check or "
        "package found build/ out of date, a mapping test failed, override cannot be written for this "
        "build/, replay found something not accounted for, or pump, consume or dlq could not finish "
        "its work",
        EXIT_USAGE: "bad command line or configuration",
        EXIT_TOOL: "a tool the command runs failed (pip, for package); replay: everything accounted for, "
        "but messages ended in a DLQ",
        EXIT_IO: "build/, the zip or the override file could not be written",
        EXIT_INTERRUPTED: "interrupted (pump, consume, dlq)",
    }
)


def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--root",
        type=Path,
        default=Path("."),
        metavar="DIR",
        help="project root holding project.yaml and mappings/",
    )
    p.add_argument("--project", type=Path, metavar="FILE", help="project file (default: ROOT/project.yaml)")
    p.add_argument("--mappings", type=Path, metavar="DIR", help="mappings directory (default: ROOT/mappings)")
    p.add_argument("--build-dir", type=Path, metavar="DIR", help="output directory (default: ROOT/build)")
    add_format(p, "diagnostics on stderr", "one JSON document on stdout")
    p.add_argument("--strict", action="store_true", help="treat warnings as errors")
    return p


def parser(prog: str = "python -m generator") -> argparse.ArgumentParser:
    common = _common()
    fmt = HelpFormatter
    p = argparse.ArgumentParser(
        prog=prog,
        description="Validate entity mappings and generate the Pipes, Terraform, registry, DDL and docs in "
        "build/; package the sync Lambda; replay and sample stream records locally; pump, consume and "
        "redrive against AWS. Each command's --help lists its options and exit codes.",
        epilog=EXIT_ALL,
        formatter_class=fmt,
    )
    p.add_argument("--version", action="version", version=f"{PRODUCT} {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser(
        "build",
        parents=[common],
        formatter_class=fmt,
        help="validate, then write every artifact into build/",
        description="Validate the mappings, then replace build/ atomically with freshly generated files.",
        epilog=EXIT_BUILD,
    )
    sub.add_parser(
        "validate",
        parents=[common],
        formatter_class=fmt,
        help="validate only; write nothing",
        description="Check project.yaml and mappings/*.yaml (schema and semantic checks); write nothing.",
        epilog=EXIT_VALIDATE,
    )
    sub.add_parser(
        "check",
        parents=[common],
        formatter_class=fmt,
        help="exit 1 when build/ is not what build would write (for CI)",
        description="Validate, render in memory, and compare with build/; exit 1 with a summary when they differ.",
        epilog=EXIT_CHECK,
    )
    test = sub.add_parser(
        "test",
        parents=[common],
        formatter_class=fmt,
        help="run the mapping tests under mappings/tests/ through the local pipeline and the runtime",
        description=(
            "Validate, render the artifacts in memory, check every test file of mappings/tests/ against the "
            "mappings, then run each test: the given stream records go through the Pipe's filter and "
            "template, a local SQS FIFO queue and the sync runtime into a fresh database; messages, rows, "
            "outcomes and the DLQ are compared with the expected. One line per test on stderr as it "
            "finishes; failures at the end, expected and actual side by side."
        ),
        epilog=EXIT_TEST,
    )
    test.add_argument(
        "--db",
        metavar="URL",
        help="a scratch database URL (its registry tables are dropped and re-created for every test) "
        "(default: SQLite in a temporary directory)",
    )
    test.add_argument(
        "-k", dest="select", metavar="TEXT", help="run only the tests whose name contains TEXT (default: all)"
    )
    package = sub.add_parser(
        "package",
        parents=[common],
        formatter_class=fmt,
        help="build the sync Lambda's deployment zip (build/lambda.zip) from runtime/ and build/registry.json",
        description=(
            "Build the sync Lambda's deployment zip at BUILD/<lambda.package> (default build/lambda.zip): the "
            "runtime/ package whole, build/registry.json at the zip root, and SQLAlchemy plus "
            "the database driver installed by pip for the Lambda platform. Refuses a build/ that `check` "
            "would call out of date. The zip is deterministic and replaced atomically."
        ),
        epilog=EXIT_PACKAGE,
    )
    deps = package.add_mutually_exclusive_group()
    deps.add_argument(
        "--with-deps",
        dest="deps",
        action="store_true",
        default=True,
        help="install SQLAlchemy and the driver of database.dialect into the zip (the default)",
    )
    deps.add_argument(
        "--no-deps", dest="deps", action="store_false", help="package runtime/ and registry.json only"
    )
    package.add_argument(
        "--platform",
        choices=("lambda", "local"),
        default="lambda",
        help="install dependencies for the Lambda runtime and architecture of project.yaml, "
        "or for this interpreter (local tests)",
    )
    package.add_argument("--dry-run", action="store_true", help="print what would be packaged; write nothing")

    override = sub.add_parser(
        "override",
        formatter_class=fmt,
        help="write a Terraform override file pointing the generated Terraform at a local AWS (moto, LocalStack)",
        description=(
            "Write BUILD/terraform/local_endpoint_override.tf.json: every AWS service the generated Terraform "
            "uses goes to --endpoint, with settings an emulator needs. Terraform merges *_override.tf.json "
            "files; this one is not generated by build, not in manifest.json, and check ignores it. Delete "
            "it to deploy to AWS."
        ),
        epilog=EXIT_OVERRIDE,
    )
    override.add_argument(
        "--root",
        type=Path,
        default=Path("."),
        metavar="DIR",
        help="project root holding build/",
    )
    override.add_argument(
        "--build-dir", type=Path, metavar="DIR", help="the generated build directory (default: ROOT/build)"
    )
    override.add_argument(
        "--endpoint",
        required=True,
        type=_endpoint,
        metavar="URL",
        help="the local AWS endpoint, e.g. http://127.0.0.1:5000 (moto) or http://localhost:4566 (LocalStack)",
    )
    override.add_argument(
        "--out",
        type=Path,
        metavar="FILE",
        help=f"the file to write; its name must end in _override.tf.json (default: BUILD/terraform/{DEFAULT_OVERRIDE})",
    )
    override.add_argument(
        "--region", metavar="R", help="override the provider region (default: the region of project.yaml)"
    )
    override.add_argument(
        "--fake-credentials",
        action="store_true",
        help='write access_key/secret_key "test" (only for an emulator); otherwise the standard credential chain is used',
    )
    override.add_argument(
        "--omit",
        action="append",
        metavar="TYPE",
        help="leave out every resource of TYPE (count = 0), for an emulator that cannot hold it; repeatable "
        "(default: none)",
    )
    override.add_argument(
        "--moto",
        action="store_true",
        help="leave out the resource types moto cannot hold: " + ", ".join(sorted(MOTO_UNSUPPORTED)),
    )
    override.add_argument(
        "--dry-run", action="store_true", help="print the file that would be written; write nothing"
    )
    sub.add_parser(
        "reference",
        formatter_class=fmt,
        help="print the mapping-language reference rendered from the JSON Schemas",
        description="Print docs/mapping-reference.md: every key of mappings, project.yaml and the mapping "
        "tests, from the schemas.",
        epilog=EXIT_REFERENCE,
    )
    for tool in TOOLS.values():
        tool.add_parser(sub)
    return p


def _test(args: argparse.Namespace, root: Path, loaded: Loaded) -> int:
    """`test`: check the test files, then run each test, a line of progress per test on stderr.
    With --format json, stdout holds exactly one document, whatever happens."""
    import json
    import time

    from generator import mapping_tests as mt
    from generator import output
    from generator.diagnostics import Diagnostics

    diags = Diagnostics()
    diags.extend(loaded.diagnostics.items)
    results: list[mt.CaseResult] = []

    def finish(code: int, summary: str) -> int:
        if args.format == "json":
            doc = diags.payload()
            doc["tests"] = [r.as_dict() for r in results]
            doc["passed"] = sum(r.passed for r in results)
            doc["failed"] = sum(not r.passed for r in results)
            doc["summary"] = summary
            doc["exit_code"] = code
            print(json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False, default=str))
        else:
            print(f"test: {summary}", file=sys.stderr)
        return code

    def counts() -> str:
        return f"{len(diags.errors)} error(s), {len(diags.warnings)} warning(s)"

    if diags.errors or loaded.model is None or (args.strict and diags.warnings):
        if args.format == "text":
            _report(diags, "text")
        strict = " (--strict: warnings count)" if args.strict and not diags.errors else ""
        return finish(EXIT_PROBLEMS, f"the mappings have {counts()}{strict}; no test run")
    files = output.render(loaded.model)
    registry = json.loads(files["registry.json"])
    mappings: Path = args.mappings or root / "mappings"
    cases, problems = mt.collect(mappings, root, registry, args.select)
    diags.extend(problems)
    if args.format == "text":
        _report(diags, "text")
    if diags.errors:
        return finish(EXIT_PROBLEMS, f"{counts()} in the mappings and test files; no test run")
    if not cases:
        where = mappings / mt.TESTS_DIR
        what = (
            f"no test name under {where} contains {args.select!r}"
            if args.select
            else f"no tests under {where}"
        )
        return finish(EXIT_PROBLEMS, what)
    if args.db:
        problem = mt.database_problem(args.db)
        if problem is not None:
            return finish(EXIT_USAGE, f"{problem}; no test run")

    def progress(result: mt.CaseResult) -> None:
        print(mt.progress_line(result, len(results) + 1, len(cases)), file=sys.stderr, flush=True)
        results.append(result)

    started = time.perf_counter()
    mt.run_cases(cases, registry, files, args.db, progress)
    if args.format == "text":
        failures = mt.render_failures(results)
        if failures:
            print("\n" + failures.rstrip(), file=sys.stderr)
    summary = mt.summary_line(results, time.perf_counter() - started)
    return finish(EXIT_OK if all(r.passed for r in results) else EXIT_PROBLEMS, summary)


def _package(args: argparse.Namespace, model: Model, files: dict[str, str], build: Path) -> int:
    """`package`: the deployment zip, from a build/ that `check` accepts."""
    import shlex
    import tempfile

    from generator import output
    from generator import package as pkg

    report = output.compare(build, files)
    if report:
        print("\n".join(report), file=sys.stderr)
        print(
            f"package: {build} is out of date ({len(report)} file(s)): its registry.json would not match the "
            "mappings; run: python -m generator build, then package again; nothing written",
            file=sys.stderr,
        )
        return EXIT_PROBLEMS
    lam = model.project.lambda_
    dest = build / lam.package
    try:
        if lam.package in files or not lam.package.endswith(".zip"):
            raise pkg.PackageError(
                f"lambda.package {lam.package!r} must name a .zip that build does not generate"
            )
        target = (
            pkg.Target.local()
            if args.platform == "local"
            else pkg.Target.for_lambda(lam.runtime, lam.architecture)
        )
        reqs = pkg.requirements(model.project.database.dialect) if args.deps else ()
        source = pkg.runtime_dir()
        runtime_files = pkg.runtime_files(source)
    except pkg.PackageError as exc:
        print(f"package: {exc}; nothing written", file=sys.stderr)
        return EXIT_PROBLEMS
    registry = (build / pkg.REGISTRY).read_bytes()
    compiled = pkg.can_compile(target)
    bytecode = (
        f"byte-code: compiled for Python {target.python_version}"
        if compiled
        else f"byte-code: none (this is Python {sys.version_info.major}.{sys.version_info.minor}; run package "
        f"with Python {target.python_version} to precompile and shorten cold starts)"
    )
    if args.dry_run:
        lines = [
            f"package: would write {dest}",
            f"  {len(runtime_files)} files of {source} (the runtime package whole)",
            f"  {pkg.REGISTRY} at the zip root: {len(registry):,} bytes from {build / pkg.REGISTRY}",
        ]
        if reqs:
            lines.append(f"  dependencies for {target.describe()}:")
            lines.append("    " + shlex.join(pkg.pip_command(Path("<temporary directory>"), reqs, target)))
        else:
            lines.append("  no dependencies (--no-deps)")
        lines.append(f"  {bytecode}")
        print("\n".join(lines))
        print("package: --dry-run: nothing written", file=sys.stderr)
        return EXIT_OK
    with tempfile.TemporaryDirectory(prefix="ddb-sql-sync-deps-") as tmp:
        site = None
        if reqs:
            site = Path(tmp) / "site"
            try:
                pkg.install_dependencies(site, reqs, target)
            except pkg.DependencyError as exc:
                hint = (
                    " (configure pip's index, e.g. PIP_INDEX_URL, or build without them: --no-deps)"
                    if exc.offline
                    else ""
                )
                print(f"package: {exc}\npackage: nothing written{hint}", file=sys.stderr)
                return EXIT_TOOL
        try:
            ca = model.project.database.ca_bundle
            summary = pkg.build_package(
                dest,
                registry,
                source=source,
                dependencies=site,
                installed=reqs,
                compile_bytecode=compiled,
                ca_bundle=args.root / ca if ca else None,
            )
        except pkg.PackageError as exc:
            print(f"package: {exc}; nothing written", file=sys.stderr)
            return EXIT_PROBLEMS
        except OSError as exc:
            print(f"package: could not write {dest}: {exc}; it is unchanged", file=sys.stderr)
            return EXIT_IO
    for warning in pkg.size_warnings(summary):
        print(f"package: warning: {warning}", file=sys.stderr)
    deps = f"{', '.join(reqs)} for {target.describe()}" if reqs else "none (--no-deps)"
    print(
        f"package: wrote {dest} ({summary.size:,} bytes, {summary.files} files, sha256 {summary.sha256}); "
        f"dependencies: {deps}; {bytecode}",
        file=sys.stderr,
    )
    return EXIT_OK


def _override(args: argparse.Namespace) -> int:
    """`override`: the local-endpoint Terraform override file."""
    from generator import override as ov

    build: Path = args.build_dir or args.root / "build"
    terraform_dir = build / "terraform"
    out: Path = args.out or terraform_dir / DEFAULT_OVERRIDE
    if not ov.is_override_name(out.name):
        print(
            f"override: --out {out}: the name must end in _override.tf.json (or be override.tf.json); "
            "Terraform would load any other name as a second provider block",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        docs = ov.generated_documents(terraform_dir)
        services = ov.services(docs)
        kinds = set(args.omit or ())
        reasons = {}
        if args.moto:
            present = {kind for doc in docs.values() for kind in doc.get("resource", {})}
            reasons = {k: v for k, v in MOTO_UNSUPPORTED.items() if k in present}
            kinds |= set(reasons)
        omit = ov.omissions(docs, sorted(kinds))
    except ov.OverrideError as exc:
        print(f"override: {exc}; nothing written", file=sys.stderr)
        return EXIT_PROBLEMS
    doc = ov.override_document(
        args.endpoint,
        services,
        region=args.region,
        fake_credentials=args.fake_credentials,
        omit=omit,
        reasons=reasons,
    )
    text = ov.render(doc)
    summary = f"{len(services)} services ({', '.join(services)}) -> {args.endpoint}"
    notes = [
        f"left out: {kind} ({len(labels)}): {reasons.get(kind, '--omit')}" for kind, labels in omit.items()
    ]
    notes.append(
        'credentials: access_key/secret_key "test"'
        if args.fake_credentials
        else "credentials: the standard chain (environment, profile)"
    )
    if args.dry_run:
        sys.stdout.write(text)
        print(f"override: --dry-run: would write {out}: {summary}; nothing written", file=sys.stderr)
        return EXIT_OK
    try:
        ov.write_atomically(out, text)
    except OSError as exc:
        print(f"override: could not write {out}: {exc}", file=sys.stderr)
        return EXIT_IO
    print(f"override: wrote {out}: {summary}", file=sys.stderr)
    for note in notes:
        print(f"override: {note}", file=sys.stderr)
    return EXIT_OK


def _report(diags: Diagnostics, fmt: str) -> None:
    if fmt == "json":
        print(diags.render_json())
    elif diags.items:
        print(diags.render_text(), file=sys.stderr)


def main(argv: list[str] | None = None, prog: str = "python -m generator") -> int:
    """Run one command; its exit code (argparse exits itself, with 2, on a bad command line)."""
    args = parser(prog).parse_args(argv)
    tool = TOOLS.get(args.command)
    if tool is not None:
        code: int = tool.run(args)
        return code
    # A generator run is short and what it builds (located documents, the model, the rendered
    # files) lives until it ends, so the cyclic collector's full passes re-walk all of it and find
    # little to free: 11-15 of them cost 2.5-3 s of a 1,000-mapping build. Reference counting
    # still frees the temporaries (yamlload keeps node trees free of cycles for this).
    # Restored afterwards for in-process callers (tests).
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _run(args)
    finally:
        if enabled:
            gc.enable()


def run() -> NoReturn:
    """The process entry point (the ddb-sql-sync script, `python -m generator`): usage lines name
    the command as it was typed."""
    name = Path(sys.argv[0]).name
    code = main(prog="python -m generator" if name in ("__main__.py", "-c", "") else name)
    # What the run leaves behind (SQLAlchemy's cyclic table objects, caches) dies with the
    # process; frozen, it is skipped by the collections the interpreter runs on exit, which
    # would otherwise walk all of it: 0.3 s after a 1,000-mapping build.
    gc.freeze()
    sys.exit(code)


def _run(args: argparse.Namespace) -> int:
    """The generator's commands."""
    from generator import output
    from generator.load import load

    if args.command == "reference":
        from generator.reference import render_reference

        sys.stdout.write(render_reference())
        return EXIT_OK
    if args.command == "override":
        return _override(args)
    root: Path = args.root
    loaded = load(root, args.project, args.mappings)
    if args.command == "test":
        return _test(args, root, loaded)
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
    if args.command == "package":
        return _package(args, loaded.model, files, build)
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
