"""Backfill from export files on disk into PostgreSQL against the streaming path, in one run.

For each size N (synthetic `orders` items, `order.created`, written once as a DYNAMODB_JSON
export of 8 gzip files):

- backfill: `ddb-sql-sync backfill orders --export-dir DIR --to db --batch-size B --watermark W
  --workers K` in a fresh process on fresh tables, the whole command timed (reading and
  decompressing the files, the filter and the template, apply_batch in batches of B, in K worker
  processes: K is this machine's core count unless --workers says otherwise);
- backfill-1: the same in one process (--workers 1): what one core does;
- stream: the same items as the same stream INSERT records through the same filter and
  template (outside the clock: the Pipe does it, not the Lambda), then
  runtime.apply.apply_batch in batches of 10 (the FIFO limit, what the Lambda gets), in a fresh
  process on fresh tables, the apply loop timed;
- workload: the streaming path as the issue states it, the runtime benchmark's workload
  (benchmarks/workload.py: per order a create and 5-13 updates, several message groups per
  batch) as N messages in batches of 10, the apply loop timed (its rows: one per order);
- runtime: the same apply-only loop in batches of B (the backfill's size): the runtime's own
  work per event at that batch size, with nothing before it. Its CPU per event (this process
  inside apply_batch, and the server's) is the floor of anything that goes through the
  runtime, as the backfill must: this machine's cores divided by it is the most events a
  second any backfill could apply here, however it read, rendered or spread its work.

Peak memory is each process's own ru_maxrss. Rows are counted after each run. CPU time is
counted for each mode: the command's (its worker processes included) and the database
server's (its processes' CPU time in /proc before and after each run, server_cpu). Their sum per event says
how many events a second this machine's cores could carry at most, however the work was
spread: the ceiling beside the measured rate.

    python benchmarks/backfill_bench.py --sizes 100000,1000000 [--url postgresql+psycopg://...]
                                        [--delay-ms D]

With --delay-ms D both paths reach the database through benchmarks/tcpproxy.py, which holds
each chunk D ms in each direction (a round trip costs ~2D more): what a Lambda in a VPC, or a
backfill run from an operator's host, sees of the network that loopback hides.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
FILES = 8
WATERMARK = "100000000000000000000"


def item(i: int) -> dict[str, Any]:
    return {
        "order_id": {"S": f"ORD-{i:08d}"},
        "customer_id": {"N": str(1000 + i % 997)},
        "order_details": {
            "M": {"total_amount": {"N": f"{(i % 5000) / 100 + 1:.2f}"}, "status": {"S": "new"}}
        },
        "event": {"M": {"event_id": {"S": f"ev-{i}"}, "event_type": {"S": "order.created"}}},
    }


def write_export(folder: Path, n: int) -> None:
    data = folder / "data"
    data.mkdir(parents=True)
    manifest = []
    for f in range(FILES):
        name = f"part{f:02d}.json.gz"
        count = 0
        with gzip.open(data / name, "wt", encoding="utf-8", compresslevel=1) as out:
            for i in range(f, n, FILES):
                out.write(json.dumps({"Item": item(i)}) + "\n")
                count += 1
        manifest.append({"itemCount": count, "dataFileS3Key": f"bench/AWSDynamoDB/x/data/{name}"})
    (folder / "manifest-files.json").write_text("".join(json.dumps(m) + "\n" for m in manifest))
    (folder / "manifest-summary.json").write_text(
        json.dumps(
            {"exportTime": "2026-01-01T00:00:00.000Z", "itemCount": n, "outputFormat": "DYNAMODB_JSON"}
        )
    )


def scratch(url: str) -> str:
    import sqlalchemy as sa

    u = sa.make_url(url)
    name = "backfill_bench" + os.environ.get("SYNC_TEST_DB_SUFFIX", "")
    admin = sa.create_engine(u, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        if not conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first():
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return u.set(database=name).render_as_string(hide_password=False)


def fresh_tables(url: str) -> Any:
    from sqlalchemy import create_engine

    from runtime.registry import load_registry
    from runtime.schema import build_metadata

    registry = load_registry(ROOT / "build" / "registry.json")
    engine = create_engine(url)
    md = build_metadata(registry)
    md.drop_all(engine)
    md.create_all(engine)
    return engine


def count_rows(url: str) -> int:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.connect() as conn:
        n = int(conn.execute(text("SELECT count(*) FROM orders")).scalar_one())
    engine.dispose()
    return n


def server_cpu() -> float:
    """CPU seconds of the PostgreSQL server so far: every `postgres` process's (utime + stime),
    and the postmaster's reaped children's (cutime + cstime: the backends that ended)."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, list[str]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        if stat[stat.index("(") + 1 : stat.rindex(")")] == "postgres":
            stats[int(d.name)] = stat[stat.rindex(")") + 2 :].split()
    total = 0
    for fields in stats.values():
        total += int(fields[11]) + int(fields[12])  # utime, stime
        if int(fields[1]) not in stats:  # the postmaster: its parent is no postgres process
            total += int(fields[13]) + int(fields[14])  # cutime, cstime
    return total / tick


def child_backfill(args: argparse.Namespace) -> dict[str, Any]:
    import io

    from generator.cli import main

    out = io.StringIO()
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(out):
        t0 = time.perf_counter()
        code = main(
            [
                "backfill", "orders", "--build", str(ROOT / "build"), "--export-dir", args.dir, "--to", "db",
                "--db", args.url, "--batch-size", str(args.batch_size), "--watermark", WATERMARK,
                "--checkpoint", f"{tmp}/ckpt.json", "--quiet", "--format", "json", "--workers",
                str(args.workers),
            ]
        )  # fmt: skip
        seconds = time.perf_counter() - t0
    doc = json.loads(out.getvalue().splitlines()[-1])
    assert code == 0 and doc["complete"], doc
    return {
        "seconds": seconds,
        "events": doc["applied"],
        "rss_kib": max(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,  # the largest worker process
        ),
    }


def child_stream(args: argparse.Namespace) -> dict[str, Any]:
    from runtime.apply import apply_batch
    from runtime.config import make_engine
    from runtime.registry import load_registry
    from synctools.aws.backfill import Synthesizer
    from synctools.aws.export import open_dir
    from synctools.local.build import load_pipe

    build = ROOT / "build"
    registry = load_registry(build / "registry.json")
    pipe = load_pipe(registry.raw, "orders", build)
    synth = Synthesizer.of("orders", registry.raw["entities"]["orders"], WATERMARK, "ap-northeast-1")
    export = open_dir(args.dir)
    queue_arn = "arn:aws:sqs:ap-northeast-1:123456789012:orders-sync.fifo"
    engine = make_engine(args.url)
    applied = 0
    seconds = 0.0  # the apply loop only: rendering (the Pipe's work) is outside the clock

    size = getattr(args, "stream_batch", 10)
    apply_cpu = 0.0  # this process's CPU inside apply_batch only

    def flush(batch: list[Any]) -> None:
        nonlocal applied, seconds, apply_cpu
        t0, c0 = time.perf_counter(), time.process_time()
        result = apply_batch(batch, engine, registry)
        seconds += time.perf_counter() - t0
        apply_cpu += time.process_time() - c0
        applied += sum(1 for o in result.outcomes if o.status == "applied")

    batch: list[Any] = []
    n = 0
    started = time.perf_counter()
    for f in export.files:
        for it in export.items(f):
            e = pipe.entry(synth.record(it, 1_767_225_600))
            n += 1
            batch.append(
                {
                    "messageId": f"m{n}",
                    "body": e.body,
                    "attributes": {
                        "ApproximateReceiveCount": "1",
                        "MessageGroupId": e.group_id,
                        "MessageDeduplicationId": e.dedup_id,
                    },
                    "eventSource": "aws:sqs",
                    "eventSourceARN": queue_arn,
                    "awsRegion": "ap-northeast-1",
                }
            )
            if len(batch) == size:
                flush(batch)
                batch = []
    if batch:
        flush(batch)
    total = time.perf_counter() - started
    return {
        "seconds": seconds,
        "with_rendering": total,
        "apply_cpu": apply_cpu,
        "events": applied,
        "rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }


def child_workload(args: argparse.Namespace) -> dict[str, Any]:
    """The runtime benchmark's workload (benchmarks/workload.py: per order a create and 5-13
    updates, the events of 24 open orders interleaved, several message groups per batch) as
    `args.events` messages in batches of 10, the apply loop timed (rendering outside it)."""
    from workload import generate

    from runtime.apply import apply_batch
    from runtime.config import make_engine
    from runtime.registry import load_registry

    registry = load_registry(ROOT / "build" / "registry.json")
    engine = make_engine(args.url)
    wl = generate(events=args.events)
    applied, seconds, apply_cpu = 0, 0.0, 0.0
    for batch in wl.batches():
        t0, c0 = time.perf_counter(), time.process_time()
        result = apply_batch(batch, engine, registry)
        seconds += time.perf_counter() - t0
        apply_cpu += time.process_time() - c0
        applied += sum(1 for o in result.outcomes if o.status == "applied")
    return {
        "seconds": seconds,
        "apply_cpu": apply_cpu,
        "events": applied,
        "orders": wl.n_orders,
        "rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }


class Delayed:
    """`url`'s server behind a benchmarks/tcpproxy.py delay proxy in its own process (ended by
    closing its stdin); `.url` is the proxied URL (the server's own when delay_ms is 0)."""

    def __init__(self, url: str, delay_ms: float) -> None:
        self.direct, self.delay_ms, self.url = url, delay_ms, url
        self.proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> Delayed:
        if self.delay_ms <= 0:
            return self
        import sqlalchemy as sa

        u = sa.make_url(self.direct)
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "benchmarks" / "tcpproxy.py"), "--target",
             f"{u.host or '127.0.0.1'}:{u.port or 5432}", "--delay-ms", repr(self.delay_ms)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        port = int(self.proc.stdout.readline())
        self.url = u.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.stdin is not None:
            self.proc.stdin.close()
            self.proc.wait(timeout=10)


def run_child(
    mode: str, directory: Path, url: str, batch_size: int, workers: int, via: str, events: int
) -> dict[str, Any]:
    fresh_tables(url).dispose()
    child = "backfill" if mode.startswith("backfill") else "workload" if mode == "workload" else "stream"
    cmd = [sys.executable, __file__, "--child", child, "--dir", str(directory), "--url", via]
    cmd += ["--events", str(events)]
    cmd += ["--batch-size", str(batch_size), "--workers", str(1 if mode == "backfill-1" else workers)]
    cmd += ["--stream-batch", str(batch_size if mode == "runtime" else 10)]
    before, server = resource.getrusage(resource.RUSAGE_CHILDREN), server_cpu()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    after, server = resource.getrusage(resource.RUSAGE_CHILDREN), server_cpu() - server
    doc: dict[str, Any] = json.loads(out.splitlines()[-1])
    doc["client_cpu"] = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    doc["server_cpu"] = server
    doc["rows"] = count_rows(url)
    return doc


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="100000,1000000", help="item counts (default: %(default)s)")
    p.add_argument(
        "--url", default=os.environ.get("SYNC_TEST_POSTGRES_URL", DEFAULT_URL), help="PostgreSQL server"
    )
    p.add_argument(
        "--batch-size", type=int, default=500, help="backfill's apply_batch size (default: %(default)s)"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="backfill's worker processes (default: %(default)s)",
    )
    p.add_argument(
        "--modes", default="backfill,backfill-1,stream,workload,runtime", help="(default: %(default)s)"
    )
    p.add_argument(
        "--delay-ms", type=float, default=0.0, help="added per direction by a delay proxy (default: none)"
    )
    p.add_argument(
        "--out", default=str(ROOT / "benchmarks" / "results" / "backfill.md"), help="(default: %(default)s)"
    )
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--stream-batch", type=int, default=10, help=argparse.SUPPRESS)
    p.add_argument("--dir", help=argparse.SUPPRESS)
    p.add_argument("--events", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child = {"backfill": child_backfill, "workload": child_workload, "stream": child_stream}[args.child]
        doc = child(args)
        print(json.dumps(doc))
        return 0
    url = scratch(args.url)
    results: list[tuple[int, str, dict[str, Any]]] = []
    for n in [int(s) for s in args.sizes.split(",")]:
        with tempfile.TemporaryDirectory(prefix="backfill-bench-") as tmp:
            t0 = time.perf_counter()
            write_export(Path(tmp), n)
            print(f"{n:,} items written in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
            for mode in args.modes.split(","):
                with Delayed(url, args.delay_ms) as proxy:
                    doc = run_child(mode, Path(tmp), url, args.batch_size, args.workers, proxy.url, n)
                assert doc["rows"] == doc.get("orders", n) and doc["events"] == n, doc
                print(f"{n:,} {mode}: {doc}", file=sys.stderr, flush=True)
                results.append((n, mode, doc))
    Path(args.out).write_text(render(args, results))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


def render(args: argparse.Namespace, results: list[tuple[int, str, dict[str, Any]]]) -> str:
    cores = os.cpu_count() or 1
    lines = [
        "# Backfill against the streaming path (benchmarks/backfill_bench.py)",
        "",
        f"Command: `python benchmarks/backfill_bench.py --sizes {args.sizes} --batch-size {args.batch_size}"
        f" --workers {args.workers}"
        + (f" --delay-ms {args.delay_ms:g}" if args.delay_ms else "")
        + "`. "
        + (
            f"Both paths reach PostgreSQL through a delay proxy holding each chunk {args.delay_ms:g} ms "
            f"each way (~{2 * args.delay_ms:g} ms added per round trip). "
            if args.delay_ms
            else ""
        )
        + f"Machine: {platform.machine()}, {cores} cores, Python {platform.python_version()}, "
        f"PostgreSQL on the same machine, {time.strftime('%Y-%m-%d')}.",
        "",
        "Synthetic `orders` items (`order.created`: an upsert each), one DYNAMODB_JSON export of 8 gzip "
        "files on disk. **backfill**: the whole `ddb-sql-sync backfill orders --export-dir DIR --to db` "
        f"command (read, decompress, filter, template, `apply_batch` in batches of {args.batch_size}) in "
        f"{args.workers} worker processes; **backfill-1**: the same in one process. "
        "**stream**: the same records rendered by the same Pipe, batch by batch (outside the clock: the Pipe's work), "
        "then `apply_batch` in batches of 10, as the Lambda receives them from the FIFO queue; only the "
        "apply loop is timed. **workload**: the runtime benchmark's workload (benchmarks/workload.py: per "
        "order a create and 5-13 updates, 24 orders interleaved) as the same number of messages in "
        "batches of 10, apply loop timed. Each in a fresh process on fresh tables; every row checked. Peak memory: "
        "the largest process's ru_maxrss (each holds one page or batch of records at a time). CPU: the "
        "command's processes (the stream's includes its rendering; **runtime**'s is only inside "
        f"`apply_batch`, batches of {args.batch_size}) and PostgreSQL's backends, in microseconds per "
        f"event; the ceiling is what {cores} cores could carry at that CPU cost per event (client and "
        "server together), however the work is spread.",
        "",
        "| items | path | seconds | events/s | client CPU us/event | server CPU us/event "
        "| ceiling events/s | peak RSS (MiB) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for n, mode, doc in results:
        client = (
            (doc["apply_cpu"] if mode in ("runtime", "workload") else doc["client_cpu"]) / doc["events"] * 1e6
        )
        server = doc["server_cpu"] / doc["events"] * 1e6
        ceiling = f"{cores * 1e6 / (client + server):,.0f}" if mode not in ("stream", "workload") else "-"
        lines.append(
            f"| {n:,} | {mode} | {doc['seconds']:.1f} | {doc['events'] / doc['seconds']:,.0f} | "
            f"{client:.0f} | {server:.0f} | {ceiling} | {doc['rss_kib'] / 1024:,.0f} |"
        )
    by = {(n, m): d for n, m, d in results}
    lines.append("")
    for n in sorted({n for n, _, _ in results}):
        for baseline, what in (
            ("workload", "the runtime benchmark's workload in batches of 10 (the issue's baseline)"),
            ("stream", "the same items as stream INSERTs in batches of 10"),
        ):
            if (n, baseline) not in by:
                continue
            s = by[(n, baseline)]
            stream_rate = s["events"] / s["seconds"]
            parts = []
            for mode in ("backfill", "backfill-1"):
                if (n, mode) in by:
                    b = by[(n, mode)]
                    parts.append(f"{mode} **{(b['events'] / b['seconds']) / stream_rate:.2f}x**")
            if (n, "backfill") in by:
                b = by[(n, "backfill")]
                cpu = (b["client_cpu"] + b["server_cpu"]) / b["events"]
                parts.append(
                    f"this machine's ceiling at the backfill's CPU per event {cores / cpu / stream_rate:.2f}x"
                )
            if (n, "runtime") in by:
                r = by[(n, "runtime")]
                cpu = (r["apply_cpu"] + r["server_cpu"]) / r["events"]
                parts.append(
                    f"the runtime alone in batches of {args.batch_size} on {cores} cores "
                    f"{cores / cpu / stream_rate:.2f}x"
                )
            lines.append(
                f"- {n:,} items, against {what} ({stream_rate:,.0f} events/s): " + "; ".join(parts) + "."
            )
        if (n, "runtime") in by and (n, "backfill-1") in by:
            r, b1 = by[(n, "runtime")], by[(n, "backfill-1")]
            rest = (b1["client_cpu"] - r["apply_cpu"] * b1["events"] / r["events"]) / b1["events"] * 1e6
            lines.append(
                f"- {n:,} items: the backfill's own work besides the runtime (reading, the synthesized "
                f"record, the filter, the template, the checkpoint): {rest:.0f} us of client CPU per event."
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
