"""Reconcile's comparison against the streaming path's apply rate, in one run.

For each size N (the synthetic `orders` export of benchmarks/backfill_bench.py):

- stream: the items as stream INSERT records through the Pipe, applied with
  runtime.apply.apply_batch in batches of 10 on fresh tables (backfill_bench's stream child);
  its apply loop timed. It leaves every row in the database;
- reconcile: `synctools.aws.reconcile.Reconciler`'s comparison pass over the same export and
  those rows, in a fresh process: every item read, its expected rows derived (synthesized
  record, the Pipe, the runtime's decoder), one keyed SELECT per page, column by column; the
  whole pass timed (reading and decompressing the export included). Zero drift is checked.
  The extras pass (rows with no item) looks keys up in DynamoDB and is not in this figure.

    python benchmarks/reconcile_bench.py --sizes 100000,1000000 [--url postgresql+psycopg://...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import backfill_bench as bb  # noqa: E402  (the export writer, tables and the streaming child)


def child_reconcile(args: argparse.Namespace) -> dict[str, Any]:
    from runtime.config import make_engine
    from runtime.registry import load_registry
    from synctools.aws.backfill import ExportSource, Synthesizer
    from synctools.aws.export import open_dir
    from synctools.aws.reconcile import Reconciler
    from synctools.local.build import load_pipe

    build = ROOT / "build"
    registry = load_registry(build / "registry.json")
    rec = Reconciler(
        registry=registry,
        entity="orders",
        pipe=load_pipe(registry.raw, "orders", build),
        synthesizer=Synthesizer.of(
            "orders", registry.raw["entities"]["orders"], bb.WATERMARK, "ap-northeast-1"
        ),
        source=ExportSource(open_dir(args.dir), page_size=args.page_size),
        engine=make_engine(args.url),
        ddb=None,
        page_size=args.page_size,
        grace=0,
    )
    t0 = time.perf_counter()
    drift = []
    for unit in rec.source.units():
        for items, _after in rec.source.pages(unit, None):
            rec.report.items += len(items)
            drift += rec.compare_page(rec.expected(items))
    seconds = time.perf_counter() - t0
    assert drift == [], drift[:3]
    return {
        "seconds": seconds,
        "items": rec.report.items,
        "rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }


def run_child(mode: str, directory: Path, url: str, page_size: int) -> dict[str, Any]:
    if mode == "stream":
        bb.fresh_tables(url).dispose()
    cmd = [sys.executable, __file__, "--child", mode, "--dir", str(directory), "--url", url]
    cmd += ["--page-size", str(page_size)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    doc: dict[str, Any] = json.loads(out.splitlines()[-1])
    return doc


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="100000,1000000", help="item counts (default: %(default)s)")
    p.add_argument(
        "--url", default=os.environ.get("SYNC_TEST_POSTGRES_URL", bb.DEFAULT_URL), help="PostgreSQL server"
    )
    p.add_argument("--page-size", type=int, default=500, help="reconcile's page (default: %(default)s)")
    p.add_argument("--out", default=str(HERE / "results" / "reconcile.md"), help="(default: %(default)s)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--dir", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        if args.child == "stream":
            args.batch_size = 10
            doc = bb.child_stream(args)
        else:
            doc = child_reconcile(args)
        print(json.dumps(doc))
        return 0
    url = bb.scratch(args.url)
    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        with tempfile.TemporaryDirectory(prefix="reconcile-bench-") as tmp:
            bb.write_export(Path(tmp), n)
            stream = run_child("stream", Path(tmp), url, args.page_size)
            assert stream["events"] == n and bb.count_rows(url) == n, stream
            rec = run_child("reconcile", Path(tmp), url, args.page_size)
            assert rec["items"] == n, rec
            print(f"{n:,}: stream {stream}, reconcile {rec}", file=sys.stderr, flush=True)
            rows.append((n, stream, rec))
    lines = [
        "# Reconcile against the streaming path (benchmarks/reconcile_bench.py)",
        "",
        f"Command: `python benchmarks/reconcile_bench.py --sizes {args.sizes} --page-size {args.page_size}`. "
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"PostgreSQL on the same machine (loopback), {time.strftime('%Y-%m-%d')}.",
        "",
        (__doc__ or "").split("\n\n")[1],
        "",
        "| items | stream: apply events/s (batches of 10) | reconcile: items compared/s | ratio | peak RSS reconcile (MiB) |",
        "|---:|---:|---:|---:|---:|",
    ]
    for n, s, r in rows:
        srate, rrate = s["events"] / s["seconds"], r["items"] / r["seconds"]
        lines.append(
            f"| {n:,} | {srate:,.0f} | {rrate:,.0f} | {rrate / srate:.2f}x | {r['rss_kib'] / 1024:,.0f} |"
        )
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
