"""Reconcile's comparison against the streaming path's apply rate, in one run.

For each size N (the synthetic `orders` export of benchmarks/backfill_bench.py):

- stream: the items as stream INSERT records through the Pipe, applied with
  runtime.apply.apply_batch in batches of 10 on fresh tables (backfill_bench's stream child);
  its apply loop timed. It leaves every row in the database;
- workload: the streaming path as issue 12 states it, the runtime benchmark's workload
  (benchmarks/workload.py: per order a create and 5-13 updates, several message groups per
  batch) as N messages in batches of 10 on fresh tables (backfill_bench's workload child), its
  apply loop timed;
- reconcile: the comparison pass of `ddb-sql-sync reconcile` (its Reconciler, built the
  command's way) over the same export and those rows, in a fresh process with K worker
  processes (K: this machine's cores unless --workers says otherwise): every item read, its
  expected rows derived (synthesized record, the Pipe, the runtime's decoder), one keyed
  SELECT per page, column by column; the whole pass timed (reading and decompressing the
  export and starting the workers included). Zero drift is checked. The extras pass (rows with
  no item) looks keys up in DynamoDB and is not in this figure;
- reconcile-1: the same in one process.

CPU time is counted as in backfill_bench.py (the command's processes, the server's backends),
the server's read before and after each run (backfill_bench.server_cpu: a backend that ends
during the run, a reconcile worker's once it is done, counts whole). The ceiling is what this machine's cores could carry
at reconcile's CPU cost per item.

With --delay-ms D every path reaches the database through benchmarks/tcpproxy.py, which holds
each chunk D ms each way (as backfill_bench.py does): a round trip as across a network.

    python benchmarks/reconcile_bench.py --sizes 100000,1000000 [--url postgresql+psycopg://...]
                                         [--rounds R] [--delay-ms D]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
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
    from synctools.aws import procs
    from synctools.aws.commands.options import SourceOptions
    from synctools.aws.commands.reconcile import ReconcileRecipe

    recipe = ReconcileRecipe(
        build=str(ROOT / "build"),
        entity="orders",
        db=args.url,
        source=SourceOptions(None, "ap-northeast-1", None, args.dir, None, 1, False),
        page_size=args.page_size,
        grace=0,
        show_values=False,
    )
    t0 = time.perf_counter()
    rec = recipe.reconciler(dynamodb=False)
    with procs.settled():  # as the command runs it
        drift = rec.run(recipe, args.workers, extras=False)
    seconds = time.perf_counter() - t0
    assert drift == [], drift[:3]
    return {
        "seconds": seconds,
        "items": rec.report.items,
        "rss_kib": max(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
        ),
    }


def run_child(
    mode: str, directory: Path, url: str, page_size: int, workers: int, events: int, delay_ms: float = 0.0
) -> dict[str, Any]:
    if mode in ("stream", "workload"):
        bb.fresh_tables(url).dispose()
    child = "reconcile" if mode.startswith("reconcile") else mode
    with bb.Delayed(url, delay_ms) as proxy:
        return _run(child, mode, directory, proxy.url, page_size, workers, events)


def _run(
    child: str, mode: str, directory: Path, url: str, page_size: int, workers: int, events: int
) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", child, "--dir", str(directory), "--url", url]
    cmd += ["--events", str(events)]
    cmd += ["--page-size", str(page_size), "--workers", str(1 if mode == "reconcile-1" else workers)]
    before, server = resource.getrusage(resource.RUSAGE_CHILDREN), bb.server_cpu()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    after, server = resource.getrusage(resource.RUSAGE_CHILDREN), bb.server_cpu() - server
    doc: dict[str, Any] = json.loads(out.splitlines()[-1])
    doc["client_cpu"] = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    doc["server_cpu"] = server
    doc["cpu"] = doc["client_cpu"] + server
    return doc


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="100000,1000000", help="item counts (default: %(default)s)")
    p.add_argument(
        "--url", default=os.environ.get("SYNC_TEST_POSTGRES_URL", bb.DEFAULT_URL), help="PostgreSQL server"
    )
    p.add_argument("--page-size", type=int, default=500, help="reconcile's page (default: %(default)s)")
    p.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="reconcile's worker processes (default: %(default)s)",
    )
    p.add_argument("--rounds", type=int, default=1, help="every mode this many times (default: %(default)s)")
    p.add_argument(
        "--delay-ms", type=float, default=0.0, help="added per direction by a delay proxy (default: none)"
    )
    p.add_argument("--out", default=str(HERE / "results" / "reconcile.md"), help="(default: %(default)s)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--dir", help=argparse.SUPPRESS)
    p.add_argument("--events", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        if args.child == "stream":
            args.batch_size = 10
            doc = bb.child_stream(args)
        elif args.child == "workload":
            doc = bb.child_workload(args)
        else:
            doc = child_reconcile(args)
        print(json.dumps(doc))
        return 0
    url = bb.scratch(args.url)
    cores = os.cpu_count() or 1
    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        with tempfile.TemporaryDirectory(prefix="reconcile-bench-") as tmp:
            bb.write_export(Path(tmp), n)
            for rnd in range(1, args.rounds + 1):  # each round: every mode once, in this order
                workload = run_child(
                    "workload", Path(tmp), url, args.page_size, args.workers, n, args.delay_ms
                )
                assert workload["events"] == n, workload
                stream = run_child("stream", Path(tmp), url, args.page_size, args.workers, n, args.delay_ms)
                assert stream["events"] == n and bb.count_rows(url) == n, stream
                docs = {}
                for mode in ("reconcile", "reconcile-1"):
                    docs[mode] = run_child(
                        mode, Path(tmp), url, args.page_size, args.workers, n, args.delay_ms
                    )
                    assert docs[mode]["items"] == n, docs[mode]
                print(
                    f"{n:,} round {rnd}: workload {workload}, stream {stream}, reconcile {docs}",
                    file=sys.stderr,
                    flush=True,
                )
                rows.append((n, rnd, workload, stream, docs))
    lines = [
        "# Reconcile against the streaming path (benchmarks/reconcile_bench.py)",
        "",
        f"Command: `python benchmarks/reconcile_bench.py --sizes {args.sizes} --page-size {args.page_size} "
        f"--workers {args.workers} --rounds {args.rounds}"
        + (f" --delay-ms {args.delay_ms:g}" if args.delay_ms else "")
        + "`. "
        + (
            f"Every path reaches PostgreSQL through a delay proxy (benchmarks/tcpproxy.py) holding each "
            f"chunk {args.delay_ms:g} ms each way (~{2 * args.delay_ms:g} ms added per round trip). "
            if args.delay_ms
            else ""
        )
        + f"Machine: {platform.machine()}, {cores} cores, Python {platform.python_version()}, "
        f"PostgreSQL on the same machine (loopback), {time.strftime('%Y-%m-%d')}.",
        "",
        (__doc__ or "").split("\n\n")[1],
        "",
        "Ratios are against the stream (the same items as stream INSERTs, batches of 10) and, in "
        "brackets, against the workload (the runtime benchmark's workload, batches of 10: the "
        "issue's baseline). Each round runs every mode once, in the table's order; the ratios "
        "of a round are against the baselines of that round.",
        "",
        "| items | round | stream: apply events/s (batches of 10) | workload: apply events/s | reconcile: items compared/s "
        "| ratio | reconcile-1: items/s | ratio | CPU us/item (reconcile): all (command + server) "
        "| ceiling items/s | ceiling ratio "
        "| peak RSS reconcile (MiB) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    ratios: dict[int, list[tuple[float, float]]] = {}
    for n, rnd, w, s, docs in rows:
        srate = s["events"] / s["seconds"]
        wrate = w["events"] / w["seconds"]
        r, r1 = docs["reconcile"], docs["reconcile-1"]
        rrate, r1rate = r["items"] / r["seconds"], r1["items"] / r1["seconds"]
        cpu = r["cpu"] / r["items"] * 1e6
        ceiling = cores * 1e6 / cpu
        ratios.setdefault(n, []).append((rrate / wrate, rrate / srate))
        lines.append(
            f"| {n:,} | {rnd} | {srate:,.0f} | {wrate:,.0f} | {rrate:,.0f} | {rrate / srate:.2f}x ({rrate / wrate:.2f}x) "
            f"| {r1rate:,.0f} | {r1rate / srate:.2f}x ({r1rate / wrate:.2f}x) "
            f"| {cpu:.0f} ({r['client_cpu'] / r['items'] * 1e6:.0f} + {r['server_cpu'] / r['items'] * 1e6:.0f}) "
            f"| {ceiling:,.0f} | {ceiling / srate:.2f}x | {r['rss_kib'] / 1024:,.0f} |"
        )
    lines.append("")
    for n, pairs in ratios.items():
        lines.append(
            f"- {n:,} items, median of {len(pairs)} round(s): reconcile / workload "
            f"**{statistics.median(w for w, _ in pairs):.2f}x**, reconcile / stream "
            f"**{statistics.median(s for _, s in pairs):.2f}x** (rounds: "
            + ", ".join(f"{w:.2f}x / {s:.2f}x" for w, s in pairs)
            + ")."
        )
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
