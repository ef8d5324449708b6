"""The local model at two commits, in one run on one machine: the end-to-end replay into SQLite
(a fresh `replay` process per run, as a user runs it) and the in-process filter + input
template, the commits alternating rep by rep; medians and their ratio. It says what a change to
the local tools costs.

    python benchmarks/ab_local.py --base <git ref> [--head <git ref>] [--events 20000] [--reps 7]

Both trees replay the same input: `orders` stream records sampled once by the head tree. Each
tree runs with its own sources on PYTHONPATH and its own committed build/. The replay's command
is found in each tree (the tools have moved between packages over time: `python -m runtime`,
`python -m synctools`, then the one command line `python -m generator`), and so is the module
that holds the filter matcher and the template renderer.
Besides wall time, each replay's CPU time (user + system, from wait4) is reported: it moves
less than wall time when other work shares the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import abtrees  # noqa: E402

ENTITY = "orders"

# Runs in a tiny launcher so that the child's rusage is its own (see local_bench.py).
LAUNCHER = """
import json, os, sys, time
start = time.perf_counter()
pid = os.posix_spawn(sys.executable, [sys.executable, *sys.argv[2:]], os.environ)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - start
with open(sys.argv[1], "w") as fh:
    json.dump({"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss_kib": usage.ru_maxrss,
               "code": os.waitstatus_to_exitcode(status)}, fh)
"""

# Filter + template over already parsed records, in the tree on sys.path[0]; records/s.
FILTER_TEMPLATE = """
import importlib, json, sys, time
from pathlib import Path
for package in ("synctools.local", "runtime.local"):
    try:
        patterns = importlib.import_module(package + ".patterns")
        transform = importlib.import_module(package + ".transform")
        break
    except ImportError:
        continue
build = Path("build")
routing = json.loads((build / "registry.json").read_text())["entities"][sys.argv[2]]["routing"]
flt = patterns.load_filters(build / "entities" / sys.argv[2] / "filters.json")
target = transform.PipeTarget(
    transform.load_template(build / "entities" / sys.argv[2] / "input-template.txt"),
    routing["message_group_id"], routing["deduplication_id"])
records = [json.loads(line) for line in open(sys.argv[1], encoding="utf-8")]
best = []
for _ in range(3):
    t = time.perf_counter()
    for r in records:
        if flt.matches(r):
            target.entry(r)
    best.append(len(records) / (time.perf_counter() - t))
print(max(best))
"""


def replay_command(tree: Path) -> list[str]:
    for module in ("runtime", "synctools"):
        if (tree / module / "__main__.py").is_file():
            return ["-m", module, "replay"]
    return ["-m", "generator", "replay"]


def env_for(tree: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = str(tree)
    return env


def replay(tree: Path, records: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ab-local-") as tmp:
        meta = Path(tmp) / "meta.json"
        cmd = [sys.executable, "-c", LAUNCHER, str(meta), *replay_command(tree), str(records)]
        cmd += ["--db", f"sqlite:///{tmp}/r.db", "--quiet", "--dlq-out", f"{tmp}/dlq.jsonl", "--seed", "1"]
        out = subprocess.run(cmd, cwd=tree, env=env_for(tree), capture_output=True, text=True, check=False)
        if out.returncode != 0 or not meta.exists():
            raise RuntimeError(f"replay failed in {tree}:\n{out.stderr[-3000:]}")
        result: dict[str, Any] = json.loads(meta.read_text())
    if result["code"] != 0:
        raise RuntimeError(f"replay in {tree} exited {result['code']}:\n{out.stderr[-3000:]}")
    return result


def filter_template(tree: Path, records: Path) -> float:
    out = subprocess.run(
        [sys.executable, "-c", FILTER_TEMPLATE, str(records), ENTITY],
        cwd=tree,
        env=env_for(tree),
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"filter + template failed in {tree}:\n{out.stderr[-3000:]}")
    return float(out.stdout.strip())


def sample(tree: Path, count: int, path: Path) -> None:
    cmd = [sys.executable, *replay_command(tree)[:-1], "sample", ENTITY, "--count", str(count), "--seed", "1"]
    with path.open("w") as fh:
        subprocess.run(cmd, cwd=tree, env=env_for(tree), stdout=fh, check=True)


def render(args: argparse.Namespace, runs: dict[str, dict[str, list[float]]], revs: dict[str, str]) -> str:
    med = {name: {k: statistics.median(v) for k, v in r.items()} for name, r in runs.items()}
    rows = [
        ("replay, stream records/s (wall)", "replay_rec_s", True),
        ("replay, CPU seconds", "replay_cpu", False),
        ("replay, peak RSS (MiB)", "replay_rss", False),
        ("filter + template, records/s", "ft_rec_s", True),
    ]
    lines = [
        "# Local model A/B: base vs head, one run",
        "",
        f"`python benchmarks/ab_local.py --base {args.base}"
        + (f" --head {args.head}" if args.head else "")
        + f" --events {args.events} --reps {args.reps}`",
        "",
        f"base `{revs['base']}`, head `{revs['head']}`; {args.reps} reps per commit, alternating "
        f"(who goes first rotates); medians. {platform.python_implementation()} "
        f"{platform.python_version()}, {os.cpu_count()} CPUs, load before "
        f"{args.load_before}, after {' '.join(Path('/proc/loadavg').read_text().split()[:3])}.",
        f"Input: {args.events} `{ENTITY}` stream records sampled once (seed 1) by the head tree; "
        "replay into a fresh SQLite file per run.",
        "",
        "| measure | base | head | head / base |",
        "|---|---:|---:|---:|",
    ]
    for label, key, higher_better in rows:
        b, h = med["base"][key], med["head"][key]
        fmt = "{:,.0f}" if key.endswith("_s") else "{:,.2f}"
        note = "" if higher_better else " (lower is better)"
        lines.append(f"| {label}{note} | {fmt.format(b)} | {fmt.format(h)} | {h / b:.3f} |")
    lines += ["", "Every run (base / head):", ""]
    for key in ("replay_rec_s", "replay_cpu", "ft_rec_s"):
        b = ", ".join(f"{v:,.2f}" for v in runs["base"][key])
        h = ", ".join(f"{v:,.2f}" for v in runs["head"][key])
        lines.append(f"- {key}: base [{b}]; head [{h}]")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="git ref to compare against")
    ap.add_argument("--head", help="git ref to measure (default: this working tree)")
    ap.add_argument("--events", type=int, default=20_000, help="stream records replayed per run")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--out", default=str(HERE / "results" / "ab_local.md"))
    args = ap.parse_args(argv)
    args.load_before = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    revs = {"base": abtrees.rev(args.base), "head": abtrees.rev(args.head or "HEAD")}
    with abtrees.trees(args.base, args.head, "ab-local-") as (trees, tmp):
        records = tmp / "records.jsonl"
        sample(trees["head"], args.events, records)
        runs: dict[str, dict[str, list[float]]] = {
            n: {"replay_rec_s": [], "replay_cpu": [], "replay_rss": [], "ft_rec_s": []} for n in trees
        }
        for rep in range(args.reps):
            for name in ("base", "head") if rep % 2 == 0 else ("head", "base"):
                r = replay(trees[name], records)
                runs[name]["replay_rec_s"].append(args.events / r["wall"])
                runs[name]["replay_cpu"].append(r["cpu"])
                runs[name]["replay_rss"].append(r["rss_kib"] / 1024)
                runs[name]["ft_rec_s"].append(filter_template(trees[name], records))
                print(
                    f"rep {rep + 1} {name}: replay {args.events / r['wall']:,.0f} records/s, "
                    f"cpu {r['cpu']:.2f} s; filter+template {runs[name]['ft_rec_s'][-1]:,.0f} records/s",
                    file=sys.stderr,
                )
    report = render(args, runs, revs)
    Path(args.out).write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
