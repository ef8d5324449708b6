"""Benchmark `python -m generator build` at 10 / 100 / 1,000 entity mappings.

Usage (from the repository root, with the project's venv active):

    python benchmarks/build_bench.py [--sizes 10,100,1000] [--repeats 5] [--out benchmarks/results/build.md]

What it does, per size N:

1. Writes N entity mappings into a temporary project root: the bundled project.yaml, and
   mappings derived from the three bundled ones (orders, order_items, customers), taken in
   rotation with a numeric suffix that renames the entity, its DynamoDB table, its SQL
   tables, its pipe / queue / DLQ names and its foreign key, so every name is unique.
   The set is loaded in-process with `generator.load.load` and must have no errors.
2. Times, as separate fresh subprocesses, `python -m generator build --root <tmp>` (the
   command a user runs) and a baseline that only `yaml.safe_load`s the same N + 1 YAML
   files (the floor of any YAML-driven tool: interpreter start, PyYAML import, parsing).
   One untimed warm-up run of each, then `--repeats` timed runs, build and baseline
   interleaved so machine noise hits both alike. Wall time; median, min and max.
3. Profiles one in-process build (load + render + write) of the largest size with cProfile.

The results (and the profile) go to a Markdown file. Nothing outside the temporary
directory and the results file is written: bytecode goes to a temporary
PYTHONPYCACHEPREFIX (so runs use cached bytecode, as an installed tool would).
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import io
import os
import platform
import pstats
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TEMPLATES = ("orders", "order_items", "customers")
TARGET_SECONDS = 5.0
TARGET_SIZE = 1000
# Growth counts as linear when the marginal cost of an entity between the two largest
# sizes is at most this multiple of the marginal cost between the two smallest.
LINEAR_TOLERANCE = 1.5

BASELINE_CODE = """
import sys
from pathlib import Path
import yaml
root = Path(sys.argv[1])
files = [root / "project.yaml", *sorted((root / "mappings").glob("*.yaml"))]
docs = [yaml.safe_load(p.read_text(encoding="utf-8")) for p in files]
assert all(isinstance(d, dict) for d in docs), "unexpected YAML document"
print(len(docs))
"""
# The same with PyYAML's libyaml (C) parser: a reference for what the parse could cost.
LIBYAML_CODE = BASELINE_CODE.replace(
    'yaml.safe_load(p.read_text(encoding="utf-8"))',
    'yaml.load(p.read_text(encoding="utf-8"), Loader=yaml.CSafeLoader)',
)


def libyaml_available() -> bool:
    import yaml

    return bool(getattr(yaml, "__with_libyaml__", False))


# --- mapping generation --------------------------------------------------------------------


def _sub(pattern: str, repl: str, text: str, *, at_least: int = 1) -> str:
    new, count = re.subn(pattern, repl, text)
    if count < at_least:
        raise AssertionError(f"template changed? pattern {pattern!r} matched {count} time(s)")
    return new


def derive_mapping(template: str, text: str, suffix: str, group_orders: str) -> str:
    """One bundled mapping renamed with `suffix`; `group_orders` is the orders entity
    (and SQL table) that an order_items copy references."""
    if template == "orders":
        # entity, DynamoDB table, SQL table, actions, orders-pipe, orders-pipes-dlq,
        # orders-sync.fifo, orders-sync-dlq.fifo (`\b` stops at '-', '.', not at '_').
        text = _sub(r"\borders\b", f"orders{suffix}", text, at_least=8)
    elif template == "order_items":
        text = _sub(r"\border_items\b", f"order_items{suffix}", text, at_least=5)
        text = _sub(r"references: orders\.", f"references: {group_orders}.", text)
    elif template == "customers":
        text = _sub(r"\bcustomers\b", f"customers{suffix}", text, at_least=6)
        text = _sub(r"\bcustomer_status_history\b", f"customer_status_history{suffix}", text, at_least=3)
    else:
        raise ValueError(template)
    return text


def make_project(root: Path, n: int) -> list[str]:
    """Write project.yaml and n mappings under root; return the entity names."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(REPO / "project.yaml", root / "project.yaml")
    mappings = root / "mappings"
    mappings.mkdir()
    sources = {t: (REPO / "mappings" / f"{t}.yaml").read_text(encoding="utf-8") for t in TEMPLATES}
    names = []
    for i in range(n):
        template = TEMPLATES[i % len(TEMPLATES)]
        suffix = f"_{i // len(TEMPLATES):04d}"
        text = derive_mapping(template, sources[template], suffix, f"orders{suffix}")
        name = f"{template}{suffix}"
        if f"\nentity: {name}\n" not in text:
            raise AssertionError(f"{name}: entity not renamed")
        (mappings / f"{name}.yaml").write_text(text, encoding="utf-8")
        names.append(name)
    return names


def validate_project(root: Path, names: list[str]) -> int:
    """Load the generated project in-process; assert no errors. Returns the warning count."""
    from generator.load import load

    loaded = load(root)
    errors = loaded.diagnostics.errors
    if errors:
        shown = "\n".join(d.render() for d in errors[:10])
        raise AssertionError(f"{len(errors)} error(s) in the generated mappings:\n{shown}")
    assert loaded.model is not None
    got = sorted(e.name for e in loaded.model.entities)
    assert got == sorted(names), "entity set differs from the generated files"
    return len(loaded.diagnostics.warnings)


# --- timing --------------------------------------------------------------------------------


def subprocess_env(pycache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def build_cmd(root: Path) -> list[str]:
    return [sys.executable, "-m", "generator", "build", "--root", str(root)]


def baseline_cmd(root: Path, code: str = BASELINE_CODE) -> list[str]:
    return [sys.executable, "-c", code, str(root)]


def timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return elapsed


@dataclass
class Result:
    n: int
    warnings: int
    files: int
    build: list[float]
    baseline: list[float]
    libyaml: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.build)

    @property
    def base_median(self) -> float:
        return statistics.median(self.baseline)


def measure(n: int, repeats: int, work: Path, env: dict[str, str]) -> Result:
    root = work / f"n{n}"
    names = make_project(root, n)
    warnings = validate_project(root, names)
    build, base = build_cmd(root), baseline_cmd(root)
    cbase = baseline_cmd(root, LIBYAML_CODE) if libyaml_available() else None
    timed(build, env)  # warm-up: bytecode cache, page cache; later runs replace an existing build/
    timed(base, env)
    if cbase:
        timed(cbase, env)
    builds: list[float] = []
    baselines: list[float] = []
    cbaselines: list[float] = []
    for r in range(repeats):
        builds.append(timed(build, env))
        baselines.append(timed(base, env))
        if cbase:
            cbaselines.append(timed(cbase, env))
        print(f"  N={n} run {r + 1}/{repeats}: build {builds[-1]:.3f} s, baseline {baselines[-1]:.3f} s")
    files = sum(1 for p in (root / "build").rglob("*") if p.is_file())
    return Result(n, warnings, files, builds, baselines, cbaselines)


# --- profile -------------------------------------------------------------------------------


@dataclass
class Profile:
    n: int
    phases: dict[str, float]  # without the profiler
    profiled: dict[str, float]  # the same phases under cProfile
    cumulative: str
    tottime: str
    functions: list[tuple[str, int, float]]  # generator functions: name, calls, cumtime
    packages: list[tuple[str, float]]  # exclusive time by package


def _short(path: str) -> str:
    path = path.replace(str(REPO) + os.sep, "")
    path = re.sub(r"\S*/site-packages/", "", path)
    return re.sub(r"\S*/lib/python3\.\d+/", "", path)


def _stats_text(prof: cProfile.Profile, key: str, top: int) -> str:
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats(key).print_stats(top)
    lines = buf.getvalue().splitlines()
    # Keep the table, drop pstats' preamble; shorten paths to the repo / site-packages.
    start = next((i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls")), 0)
    return "\n".join(_short(line).rstrip() for line in lines[start:] if line.strip())


_FILESYSTEM_BUILTINS = ("io.open", "posix.", "'write' of", "'read' of", "'close' of", "nt.")


def _package(filename: str, function: str) -> str:
    """Where a profile entry's own time is spent, by package."""
    if filename == "~":
        if any(b in function for b in _FILESYSTEM_BUILTINS):
            return "filesystem (open/read/write/stat/rename built-ins, pathlib, shutil)"
        return "other built-ins (sorted, isinstance, str methods, ...)"
    short = _short(filename)
    if short.startswith("generator/"):
        return "generator/ (own code)"
    if short.startswith("runtime/"):
        return "runtime/ (registry parsing, SQLAlchemy metadata)"
    top = short.split("/", 1)[0]
    if top in {"yaml", "_yaml"}:
        return "PyYAML (pure-Python scanner/parser/composer)"
    if top in {"jsonschema", "referencing", "rpds", "jsonschema_specifications", "attrs", "attr"}:
        return "jsonschema"
    if top == "sqlalchemy":
        return "SQLAlchemy (DDL compilation)"
    if top == "jinja2" or top == "markupsafe":
        return "Jinja2 (docs)"
    if top == "json":
        return "json (stdlib encoder; pure Python when indent is set)"
    if top in {"pathlib.py", "shutil.py", "os.py", "genericpath.py", "posixpath.py"}:
        return "filesystem (open/read/write/stat/rename built-ins, pathlib, shutil)"
    return "other stdlib / libraries"


def _run_build(root: Path) -> dict[str, float]:
    from generator import output
    from generator.load import load

    t0 = time.perf_counter()
    loaded = load(root)
    t1 = time.perf_counter()
    assert loaded.model is not None, "the profiled project has errors"
    files = output.render(loaded.model)
    t2 = time.perf_counter()
    output.write(root / "build", files)
    t3 = time.perf_counter()
    return {
        "load (parse + schema + resolve + checks)": t1 - t0,
        "output.render": t2 - t1,
        "output.write": t3 - t2,
    }


def profile_build(n: int, work: Path, top: int = 15) -> Profile:
    root = work / f"profile-n{n}"
    make_project(root, n)
    _run_build(root)  # warm-up: imports, schema compilation, an existing build/ to replace
    phases = _run_build(root)
    prof = cProfile.Profile()
    prof.enable()
    profiled = _run_build(root)
    prof.disable()

    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    total = sum(profiled.values())
    functions = []
    packages: dict[str, float] = {}
    for (filename, line, function), (_cc, ncalls, tottime, cumtime, _callers) in stats.items():
        packages[_package(filename, function)] = packages.get(_package(filename, function), 0.0) + tottime
        short = _short(filename)
        if short.startswith("generator/") and cumtime >= 0.02 * total:
            functions.append((f"{short}:{line}({function})", ncalls, cumtime))
    functions.sort(key=lambda f: -f[2])
    return Profile(
        n,
        phases,
        profiled,
        _stats_text(prof, "cumulative", top),
        _stats_text(prof, "tottime", top),
        functions,
        sorted(packages.items(), key=lambda kv: -kv[1]),
    )


# --- report --------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    try:
        nproc = subprocess.run(["nproc"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        nproc = str(os.cpu_count())
    try:
        load_avg = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load_avg = "n/a"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "n/a"
    cpu = "n/a"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": nproc,
        "cpu": cpu,
        "python": f"{platform.python_implementation()} {platform.python_version()} ({sys.executable})",
        "platform": platform.platform(),
        "load": load_avg,
        "commit": commit,
    }


def _marginal(a: Result, b: Result) -> float:
    """Seconds per extra entity between two sizes (medians)."""
    return (b.median - a.median) / (b.n - a.n)


def verdict(results: list[Result]) -> tuple[bool | None, bool | None, str]:
    by_n = {r.n: r for r in results}
    lines = []
    time_ok: bool | None = None
    if TARGET_SIZE in by_n:
        med = by_n[TARGET_SIZE].median
        time_ok = med <= TARGET_SECONDS
        lines.append(
            f"- Time: the {TARGET_SIZE:,}-entity build takes **{med:.2f} s** (median; max "
            f"{max(by_n[TARGET_SIZE].build):.2f} s) against a target of {TARGET_SECONDS:.0f} s: "
            f"**{'met' if time_ok else 'NOT met'}**."
        )
    else:
        lines.append(f"- Time: no {TARGET_SIZE}-entity run; the time target was not measured.")
    linear_ok: bool | None = None
    ordered = sorted(results, key=lambda r: r.n)
    if len(ordered) >= 3:
        low = _marginal(ordered[0], ordered[1])
        high = _marginal(ordered[-2], ordered[-1])
        linear_ok = high <= LINEAR_TOLERANCE * low
        lines.append(
            f"- Growth: marginal cost per entity {low * 1e3:.2f} ms between N={ordered[0].n} and "
            f"N={ordered[1].n}, {high * 1e3:.2f} ms between N={ordered[-2].n} and N={ordered[-1].n} "
            f"(x{high / low:.2f}; linear means at most x{LINEAR_TOLERANCE}): "
            f"**{'linear' if linear_ok else 'NOT linear (super-linear growth)'}**."
        )
        per = ", ".join(f"{r.median / r.n * 1e3:.2f} ms at N={r.n}" for r in ordered)
        lines.append(
            f"- Per-entity cost (median / N): {per}. It falls with N while the fixed start-up cost "
            "(interpreter, imports, schema compilation) is spread over more entities; the marginal "
            "cost above is what shows whether growth is linear."
        )
    else:
        lines.append("- Growth: fewer than three sizes; linearity not assessed.")
    return time_ok, linear_ok, "\n".join(lines)


ANALYSIS_BEGIN = "<!-- analysis: hand-written, kept when the benchmark rewrites this file -->"
ANALYSIS_END = "<!-- end of analysis -->"


def kept_analysis(out: Path) -> str | None:
    """The hand-written analysis block of an existing results file, if any."""
    try:
        text = out.read_text(encoding="utf-8")
    except OSError:
        return None
    if ANALYSIS_BEGIN in text and ANALYSIS_END in text:
        return text[text.index(ANALYSIS_BEGIN) : text.index(ANALYSIS_END) + len(ANALYSIS_END)]
    return None


def _seconds(xs: list[float]) -> str:
    return ", ".join(f"{x:.3f}" for x in xs)


def report(
    results: list[Result],
    prof: Profile | None,
    info: dict[str, str],
    repeats: int,
    argv: list[str],
    analysis: str | None = None,
) -> str:
    time_ok, linear_ok, verdict_text = verdict(results)
    if time_ok is None or linear_ok is None:
        overall = "not fully assessed (see Verdict)"
    elif time_ok and linear_ok:
        overall = "**met**"
    else:
        overall = "**NOT met**" + (
            "" if time_ok else f" ({TARGET_SIZE:,} entities take over {TARGET_SECONDS:.0f} s)"
        )
    has_c = any(r.libyaml for r in results)
    out = [
        "# `python -m generator build` benchmark",
        "",
        "Generated by `benchmarks/build_bench.py`; re-run it to refresh this file.",
        "",
        f"Target: {TARGET_SIZE:,} entities build in <= {TARGET_SECONDS:.0f} s on this "
        f"{info['nproc']}-core machine, with linear growth. Result: {overall}.",
        "",
        "## What was measured",
        "",
        "- **build**: wall time of a fresh subprocess running the command a user runs, "
        "`python -m generator build --root <tmp>/nN` (cwd = repository root, `PYTHONPATH` = "
        "repository root, so the repository's `generator` is used). This includes interpreter "
        "start-up, imports, loading and validating every mapping, rendering, and the atomic "
        "replacement of `build/`. Every timed run replaces an existing `build/` (a rebuild).",
        "- **baseline**: wall time of a fresh subprocess that only runs `yaml.safe_load` on the "
        "same project.yaml + N mapping files (interpreter start-up + PyYAML import + parsing), "
        "the floor of any tool driven by these YAML files. "
        "`ratio` = build median / baseline median.",
        "- **libyaml** (reference, not the baseline): the same parse with "
        "`yaml.load(..., Loader=yaml.CSafeLoader)`, PyYAML's C parser, which is installed here."
        if has_c
        else "- libyaml (PyYAML's C parser) is not available here; no C-parser reference.",
        f"- Per size: one untimed warm-up of each command, then {repeats} timed runs, the commands "
        "interleaved so machine noise hits all alike. Bytecode is cached in a temporary "
        "`PYTHONPYCACHEPREFIX` (`PYTHONDONTWRITEBYTECODE` unset for the subprocesses), as for an "
        "installed tool.",
        "- **Mappings**: the three bundled mappings (orders, order_items, customers) in rotation, "
        "entity `<template>_<group:04d>`; the suffix renames the entity, the DynamoDB table, the "
        "SQL tables (incl. `customer_status_history`), the pipe, queue and DLQ names, and points "
        "`order_items.order_id` at its own group's orders table. Each generated project was "
        "loaded with `generator.load.load` and asserted to have no errors; the warnings counted "
        "below are the two the bundled orders.yaml already has (queue visibility timeout and "
        "maxReceiveCount), once per orders copy.",
        "",
        "Command lines:",
        "",
        "```",
        f"python {' '.join(argv)}",
        "python -m generator build --root <tmp>/nN                                    # build",
        'python -c "<yaml.safe_load each *.yaml>" <tmp>/nN                            # baseline',
        'python -c "<yaml.load(..., Loader=yaml.CSafeLoader) each *.yaml>" <tmp>/nN   # libyaml',
        "```",
        "",
        "Machine:",
        "",
        f"- date: {info['date']}",
        f"- `nproc`: {info['nproc']} ({info['cpu']})",
        f"- python: {info['python']}",
        f"- platform: {info['platform']}",
        f"- load average (1/5/15 min) at the start: {info['load_start']}; at the end: {info['load']} "
        "(a shared machine: other engineers' test runs overlap; min is the least disturbed run)",
        f"- repository commit: {info['commit']} (working tree edited concurrently by others)",
        "",
        "## Results",
        "",
        "| N | build median s | min s | max s | baseline median s | ratio build/baseline | "
        "per-entity ms (median/N) |"
        + (" libyaml median s |" if has_c else "")
        + " files written | warnings |",
        "|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if has_c else "") + "---:|---:|",
    ]
    for r in results:
        cmed = f" {statistics.median(r.libyaml):.3f} |" if r.libyaml else (" n/a |" if has_c else "")
        out.append(
            f"| {r.n:,} | {r.median:.3f} | {min(r.build):.3f} | {max(r.build):.3f} | "
            f"{r.base_median:.3f} | {r.median / r.base_median:.1f} | {r.median / r.n * 1e3:.2f} |"
            f"{cmed} {r.files:,} | {r.warnings} |"
        )
    out += ["", "Raw runs (seconds):", ""]
    for r in results:
        line = f"- N={r.n}: build {_seconds(r.build)}; baseline {_seconds(r.baseline)}"
        if r.libyaml:
            line += f"; libyaml {_seconds(r.libyaml)}"
        out.append(line)
    ordered = sorted(results, key=lambda r: r.n)
    if len(ordered) >= 2:
        out += ["", "Marginal cost per added entity (difference of medians):", ""]
        for a, b in zip(ordered, ordered[1:], strict=False):
            mb = (b.base_median - a.base_median) / (b.n - a.n)
            out.append(
                f"- N={a.n} -> {b.n}: build {_marginal(a, b) * 1e3:.2f} ms/entity, "
                f"baseline {mb * 1e3:.2f} ms/entity"
            )
    out += ["", "## Verdict", "", verdict_text]
    if prof is not None:
        ptotal = sum(prof.profiled.values())
        out += [
            "",
            f"## In-process profile (one {prof.n:,}-entity build)",
            "",
            "`generator.load.load(root)` + `output.render(model)` + `output.write(root / 'build', files)` "
            "in the benchmark's process (after one warm-up build, so imports and an existing `build/` "
            "are in place): once plain, once under cProfile. The profiler inflates Python-heavy code "
            "more than C calls; use it for proportions.",
            "",
            "| phase | wall s (no profiler) | share | wall s (cProfile) |",
            "|---|---:|---:|---:|",
        ]
        total = sum(prof.phases.values())
        for phase, secs in prof.phases.items():
            out.append(f"| {phase} | {secs:.2f} | {secs / total:.0%} | {prof.profiled[phase]:.2f} |")
        out.append(f"| total (no interpreter start-up or imports) | {total:.2f} | 100% | {ptotal:.2f} |")
        out += [
            "",
            "Exclusive (own) time by package, under cProfile:",
            "",
            "| package | s | share |",
            "|---|---:|---:|",
        ]
        for name, secs in prof.packages:
            if secs >= 0.005 * ptotal:
                out.append(f"| {name} | {secs:.2f} | {secs / ptotal:.0%} |")
        out += [
            "",
            "`generator/` functions taking >= 2% cumulative time, under cProfile:",
            "",
            "| function | calls | cumulative s | share |",
            "|---|---:|---:|---:|",
        ]
        for name, calls, secs in prof.functions:
            out.append(f"| `{name}` | {calls:,} | {secs:.2f} | {secs / ptotal:.0%} |")
        out += [
            "",
            "Top 15 by cumulative time:",
            "",
            "```",
            prof.cumulative,
            "```",
            "",
            "Top 15 by own (tottime) time:",
            "",
            "```",
            prof.tottime,
            "```",
        ]
    out += [
        "",
        "## Hotspots and suggestions",
        "",
        analysis
        or f"{ANALYSIS_BEGIN}\n\n(no hand-written analysis yet: read the profile above)\n\n{ANALYSIS_END}",
        "",
    ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--sizes", default="10,100,1000", help="comma-separated entity counts (default: 10,100,1000)"
    )
    p.add_argument("--repeats", type=int, default=5, help="timed runs per size (default: 5)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "build.md")
    p.add_argument("--no-profile", action="store_true", help="skip the in-process cProfile run")
    p.add_argument("--profile-size", type=int, help="entities in the profiled build (default: largest size)")
    p.add_argument("--keep", action="store_true", help="keep the temporary project roots and print where")
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if not sizes or any(n < 1 for n in sizes) or args.repeats < 1:
        p.error("sizes and repeats must be positive")

    sys.path.insert(0, str(REPO))
    load_start = machine()["load"]
    work = Path(tempfile.mkdtemp(prefix="build-bench-"))
    env = subprocess_env(work / "pycache")
    try:
        results = []
        for n in sizes:
            print(f"N={n}: generating and validating {n} mappings in {work / f'n{n}'}")
            results.append(measure(n, args.repeats, work, env))
            r = results[-1]
            print(
                f"N={n}: build median {r.median:.3f} s (min {min(r.build):.3f}, max {max(r.build):.3f}); "
                f"baseline median {r.base_median:.3f} s"
            )
        prof = None
        if not args.no_profile:
            n = args.profile_size or max(sizes)
            print(f"profiling one in-process {n}-entity build")
            prof = profile_build(n, work)
            print(prof.cumulative)
            print(", ".join(f"{k}: {v:.2f} s" for k, v in prof.phases.items()))
        info = machine()
        info["load_start"] = load_start
        text = report(
            results, prof, info, args.repeats, ["benchmarks/build_bench.py", *argv], kept_analysis(args.out)
        )
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
        print(f"wrote {args.out}")
        print(verdict(results)[2])
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
