"""The per-item path before the runtime, at two commits, in one run: what backfill and
reconcile spend on each item besides the database, the commits alternating rep by rep;
medians and their ratio.

Each rep runs a fresh process per tree on the same synthetic `orders` export (the one
benchmarks/backfill_bench.py writes) and measures its own CPU time (time.process_time) for:

- backfill, pre-runtime: the backfill's own loop (synctools.aws.backfill.UnitRunner over an
  ExportSource with no sink, i.e. --dry-run): reading and decompressing the export, the
  synthesized stream INSERT record, the Pipe's filter and its input template;
- runtime decode: runtime.decode on the bodies that loop rendered (the first step of
  apply_batch; the same code in both trees unless runtime/ changed);
- reconcile derivation: Reconciler.expected() page by page on the items already read (the
  synthesized record, the filter, the template and the runtime's decode, then the expected
  rows keyed and normalized), as `ddb-sql-sync reconcile` runs it before its SELECTs.

    python benchmarks/ab_pipe_path.py --base <git ref> [--head <git ref>] [--items 20000] [--reps 7]
                                      [--url postgresql+psycopg://...]

The reconcile side connects to --url once (the Reconciler is built the command's way) and reads
nothing from it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import abtrees  # noqa: E402
import backfill_bench as bb  # noqa: E402  (the export writer)

# Runs in the tree on sys.path[0]: the three stages, CPU microseconds per item, as JSON.
CHILD = """
import json, sys, time
from pathlib import Path
export_dir, url = sys.argv[1], sys.argv[2]
from runtime.decode import decode, parse_sqs_record
from runtime.registry import load_registry
from synctools.aws.backfill import ExportSource, Synthesizer, UnitRunner
from synctools.aws.commands.options import SourceOptions
from synctools.aws.commands.reconcile import ReconcileRecipe
from synctools.aws.export import open_dir
from synctools.local.build import load_pipe

build = Path("build")
registry = load_registry(build / "registry.json")
raw = registry.raw["entities"]["orders"]
pipe = load_pipe(registry.raw, "orders", build, region="ap-northeast-1")
synth = Synthesizer.of("orders", raw, "100000000000000000000", "ap-northeast-1")
source = ExportSource(open_dir(export_dir), 500)
runner = UnitRunner(pipe, synth, source, None)
out = {}

t0 = time.process_time()
n = 0
for unit in source.units():
    for counts, _ in runner.pages(unit, None, lambda: False):
        n += counts.read
out["backfill_pre"] = (time.process_time() - t0) / n * 1e6

items = [it for f in source.export.files for it in source.export.items(f)]
entries = [pipe.entry(synth.record(it, source.created)) for it in items]
spec = registry.entities["orders"]
arn = "arn:aws:sqs:ap-northeast-1:123456789012:" + spec.queue
t0 = time.process_time()
for e in entries:
    decode(parse_sqs_record({"messageId": "m", "body": e.body, "attributes": {"MessageGroupId": e.group_id},
                             "eventSourceARN": arn}), spec)
out["decode"] = (time.process_time() - t0) / len(entries) * 1e6

recipe = ReconcileRecipe(build=str(build), entity="orders", db=url,
                         source=SourceOptions(None, "ap-northeast-1", None, export_dir, None, 1, False),
                         page_size=500, grace=0, show_values=False)
rec = recipe.reconciler(dynamodb=False)
t0 = time.process_time()
for i in range(0, len(items), 500):
    rec.expected(items[i : i + 500], synth=rec.page_synth)
out["reconcile_expected"] = (time.process_time() - t0) / len(items) * 1e6
print(json.dumps(out))
"""

STAGES = (
    ("backfill_pre", "backfill, pre-runtime (read, record, filter, template)"),
    ("decode", "runtime decode"),
    ("reconcile_expected", "reconcile derivation (Reconciler.expected)"),
)


def env_for(tree: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(tree)
    return env


def child(tree: Path, export: Path, url: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(export), url],
        cwd=tree,
        env=env_for(tree),
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"the child failed in {tree}:\n{out.stderr[-3000:]}")
    doc: dict[str, float] = json.loads(out.stdout.splitlines()[-1])
    return doc


def render(args: argparse.Namespace, runs: dict[str, dict[str, list[float]]], revs: dict[str, str]) -> str:
    lines = [
        "# The per-item path before the runtime, A/B: base vs head, one run",
        "",
        f"`python benchmarks/ab_pipe_path.py --base {args.base}"
        + (f" --head {args.head}" if args.head else "")
        + f" --items {args.items} --reps {args.reps}`",
        "",
        f"base `{revs['base']}`, head `{revs['head']}`"
        + ("" if args.head else " plus this working tree's changes")
        + f"; {args.reps} reps per commit, alternating (who goes first rotates); medians of CPU "
        f"microseconds per item (time.process_time in the child). {platform.machine()}, "
        f"{os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}, "
        f"load before {args.load_before}, after {' '.join(Path('/proc/loadavg').read_text().split()[:3])}.",
        f"Input: one synthetic `orders` export of {args.items:,} items (benchmarks/backfill_bench.py's).",
        "",
        "| stage, us per item | base | head | head / base |",
        "|---|---:|---:|---:|",
    ]
    for key, label in STAGES:
        b, h = statistics.median(runs["base"][key]), statistics.median(runs["head"][key])
        lines.append(f"| {label} | {b:.1f} | {h:.1f} | {h / b:.3f} |")
    lines += ["", "Every run (base / head):", ""]
    for key, _ in STAGES:
        b = ", ".join(f"{v:.1f}" for v in runs["base"][key])
        h = ", ".join(f"{v:.1f}" for v in runs["head"][key])
        lines.append(f"- {key}: base [{b}]; head [{h}]")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--base", required=True, help="git ref to compare against")
    ap.add_argument("--head", help="git ref to measure (default: this working tree)")
    ap.add_argument("--items", type=int, default=20_000)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument(
        "--url", default=os.environ.get("SYNC_TEST_POSTGRES_URL", bb.DEFAULT_URL), help="PostgreSQL server"
    )
    ap.add_argument("--out", default=str(HERE / "results" / "ab_pipe_path.md"))
    args = ap.parse_args(argv)
    args.load_before = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    revs = {"base": abtrees.rev(args.base), "head": abtrees.rev(args.head or "HEAD")}
    url = bb.scratch(args.url)
    with abtrees.trees(args.base, args.head, "ab-pipe-path-") as (trees, tmp):
        export = tmp / "export"
        bb.write_export(export, args.items)
        runs: dict[str, dict[str, list[float]]] = {n: {k: [] for k, _ in STAGES} for n in trees}
        for rep in range(args.reps):
            for name in ("base", "head") if rep % 2 == 0 else ("head", "base"):
                doc = child(trees[name], export, url)
                for key, _ in STAGES:
                    runs[name][key].append(doc[key])
                print(f"rep {rep + 1} {name}: {doc}", file=sys.stderr, flush=True)
    report = render(args, runs, revs)
    Path(args.out).write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
