"""The runtime at two commits, in one run on one machine: events per second applying the same
orders workload (benchmarks/workload.py) to PostgreSQL (and MariaDB), the commits alternating
rep by rep, medians and their ratio. It says what a change to the runtime costs.

    python benchmarks/ab_runtime.py --base <git ref> [--events 20000] [--reps 5]

Each run is a child process importing `runtime` from one source tree (the base commit is
checked out into a temporary git worktree, removed afterwards), on freshly created tables of
that tree's own registry, with a warm pooled connection, and times the apply loop only; the
final rows and the ledger are checked after every run. Variants of the current tree:
`head` (apply_batch as the local tools call it, no deadline) and `head+deadline` (as the
Lambda handler calls it: a deadline, so the watchdog is armed and disarmed every batch);
with --proxy, `head+proxy` too: the connection shaped for an RDS Proxy (SYNC_DB_PROXY=1:
unnamed statements, timeouts by SET LOCAL), against the same server, so what that mode costs
the client and the server (PostgreSQL only: on MySQL the mode needs the proxy's init query).
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
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WARM = 20  # batches applied before instructions are counted
ROOT = HERE.parent
DEFAULT_URLS = {
    "postgresql": "postgresql+psycopg://postgres@127.0.0.1:5432/bench_ab",
    "mysql": "mysql+pymysql://root@127.0.0.1:3306/bench_ab",
}


def child(args: argparse.Namespace) -> None:
    """One run: import the runtime of `--src`, apply every batch, print the figures as JSON."""
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, args.src)
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool
    from workload import generate

    from runtime.apply import apply_batch
    from runtime.config import make_engine
    from runtime.registry import load_registry
    from runtime.schema import build_metadata

    registry = load_registry(Path(args.src) / "build" / "registry.json")
    # Bodies as this tree's own template renders them (string attributes typed or bare).
    typed = registry.entities["orders"].fields["eventType"].carry == "typed"
    wl = generate(args.events).with_tag(args.tag).with_strings(typed)
    batches = wl.materialize()
    admin = create_engine(args.url, poolclass=NullPool)
    metadata = build_metadata(registry)
    metadata.drop_all(admin)
    metadata.create_all(admin)
    engine = make_engine(args.url)
    with engine.connect():
        pass  # a warm Lambda: the connection exists already
    kwargs: dict[str, Any] = {}
    if args.count is not None:
        # Instruction counting (run under callgrind): warm up on WARM batches (statements built
        # and prepared), then apply `count` more; the caller subtracts a count-0 run.
        for batch in batches[:WARM]:
            apply_batch(batch, engine, registry)
        for batch in batches[WARM : WARM + args.count]:
            if args.deadline:
                kwargs["deadline"] = time.monotonic() + 28.5
            apply_batch(batch, engine, registry, **kwargs)
        engine.dispose()
        return
    failures = 0
    lat: list[float] = []
    t0 = time.perf_counter()
    c0 = time.process_time()
    for batch in batches:
        if args.deadline:
            kwargs["deadline"] = time.monotonic() + 28.5  # a 30 s Lambda less its margin
        t = time.perf_counter()
        result = apply_batch(batch, engine, registry, **kwargs)
        lat.append((time.perf_counter() - t) * 1000)
        failures += len(result.response()["batchItemFailures"])
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - c0
    engine.dispose()
    with admin.connect() as conn:
        orders = conn.execute(text("SELECT COUNT(*) FROM orders")).scalar()
        ledger = conn.execute(text("SELECT COUNT(*) FROM sync_ledger")).scalar()
    admin.dispose()
    lat.sort()
    print(
        json.dumps(
            {
                "ev_s": len(wl.events) / elapsed,
                "cpu_us": cpu / len(batches) * 1e6,
                "elapsed": elapsed,
                "p50_ms": lat[len(lat) // 2],
                "p95_ms": lat[int(len(lat) * 0.95)],
                "failures": failures,
                "ok": failures == 0 and orders == wl.n_orders and ledger == len(wl.events),
            }
        )
    )


def ensure_database(url: str) -> None:
    from sqlalchemy import create_engine, make_url, text
    from sqlalchemy.pool import NullPool

    u = make_url(url)
    if u.get_backend_name() == "postgresql":
        eng = create_engine(u.set(database="postgres"), isolation_level="AUTOCOMMIT", poolclass=NullPool)
        with eng.connect() as c:
            if not c.execute(text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": u.database}).first():
                c.execute(text(f'CREATE DATABASE "{u.database}"'))
    else:
        eng = create_engine(u._replace(database=None), poolclass=NullPool)  # URL.set(database=None) keeps it
        with eng.begin() as c:
            c.execute(text(f"CREATE DATABASE IF NOT EXISTS `{u.database}`"))
    eng.dispose()


def instructions(src: Path, url: str, batches: int, deadline: bool) -> float:
    """Client instructions per batch: callgrind's count of a run applying `batches` batches,
    less that of a run applying none (imports, set-up and warm-up cancel out)."""
    counts = []
    for count in (0, batches):
        cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable]
        cmd += [str(Path(__file__).resolve()), "--child", "--src", str(src), "--url", url, "--events", "2000"]
        cmd += ["--tag", "cg", "--count", str(count)] + (["--deadline"] if deadline else [])
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=src, check=False)
        found = [line for line in out.stderr.splitlines() if "Collected :" in line]
        if out.returncode != 0 or not found:
            raise RuntimeError(f"callgrind run failed ({src}):\n{out.stderr[-3000:]}")
        counts.append(int(found[-1].split(":")[-1]))
    return (counts[1] - counts[0]) / batches


def run_child(
    src: Path, url: str, events: int, tag: str, deadline: bool, proxy: bool = False
) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--src", str(src), "--url", url]
    cmd += ["--events", str(events), "--tag", tag] + (["--deadline"] if deadline else [])
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "SYNC_DB_PROXY")}
    if proxy:
        env["SYNC_DB_PROXY"] = "1"
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=src, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"child failed ({src}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", help="git ref of the runtime to compare against")
    ap.add_argument("--head", help="git ref of the runtime to measure (default: this working tree)")
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--dialects", default="postgresql")
    ap.add_argument("--out", default=str(HERE / "results" / "ab_runtime.md"))
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--src", help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--tag", default="r0", help=argparse.SUPPRESS)
    ap.add_argument("--deadline", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--count", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--proxy", action="store_true", help="also measure head+proxy (SYNC_DB_PROXY=1)")
    ap.add_argument(
        "--instructions",
        type=int,
        default=0,
        metavar="N",
        help="also count the instructions of N batches per variant with valgrind's callgrind "
        "(repeatable whatever else the machine does; about a minute per variant)",
    )
    args = ap.parse_args(argv)
    if args.child:
        child(args)
        return 0
    if not args.base:
        ap.error("--base is required")
    base_rev = subprocess.run(
        ["git", "rev-parse", "--short", args.base], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    head_rev = subprocess.run(
        ["git", "rev-parse", "--short", args.head or "HEAD"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    dirty = bool(
        subprocess.run(
            ["git", "status", "--porcelain", "runtime"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    )
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    with tempfile.TemporaryDirectory(prefix="ab-runtime-") as tmp:
        base_dir = Path(tmp) / "base"
        head_dir = ROOT
        if args.head:
            head_dir = Path(tmp) / "head"
            subprocess.run(
                ["git", "worktree", "add", "--detach", str(head_dir), args.head],
                cwd=ROOT,
                check=True,
                capture_output=True,
            )
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(base_dir), args.base],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        try:
            variants = {
                "base": (base_dir, False, False),
                "head": (head_dir, False, False),
                "head+deadline": (head_dir, True, False),
            }
            if args.proxy:
                variants["head+proxy"] = (head_dir, False, True)
            for dialect in args.dialects.split(","):
                url = os.environ.get(f"BENCH_{dialect.upper()}_URL", DEFAULT_URLS[dialect])
                ensure_database(url)
                runs: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
                for rep in range(args.reps):
                    names = list(variants)
                    order = names[rep % len(names) :] + names[: rep % len(names)]  # rotate who goes first
                    for name in order:
                        src, deadline, proxy = variants[name]
                        res = run_child(src, url, args.events, f"r{rep}{name[:1]}", deadline, proxy)
                        res["load"] = loadavg()
                        runs[name].append(res)
                        print(
                            f"{dialect} rep {rep + 1} {name}: {res['ev_s']:.0f} ev/s, p50 {res['p50_ms']:.2f} ms, ok={res['ok']}, load {res['load']}",
                            file=sys.stderr,
                        )
                results[dialect] = runs
                if args.instructions:
                    for name, (src, deadline, _proxy) in variants.items():
                        count = instructions(src, url, args.instructions, deadline)
                        for res in runs[name]:
                            res["instructions"] = count
                        print(f"{dialect} {name}: {count:,.0f} instructions per batch", file=sys.stderr)
        finally:
            for tree in {base_dir, head_dir} - {ROOT}:
                subprocess.run(
                    ["git", "worktree", "remove", "--force", str(tree)],
                    cwd=ROOT,
                    check=False,
                    capture_output=True,
                )
    report = render(args, results, base_rev, head_rev + ("+uncommitted" if dirty and not args.head else ""))
    Path(args.out).write_text(report)
    print(report)
    return 0 if all(r["ok"] for runs in results.values() for rs in runs.values() for r in rs) else 1


def render(args: argparse.Namespace, results: dict[str, Any], base_rev: str, head_rev: str) -> str:
    lines = [
        "# The runtime at two commits (benchmarks/ab_runtime.py)",
        "",
        f"Command: `python benchmarks/ab_runtime.py --base {args.base} --events {args.events} --reps {args.reps} "
        f"--dialects {args.dialects}{' --proxy' if args.proxy else ''}`. Base `{base_rev}`, head `{head_rev}`. Machine: {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}.",
        "",
        f"{args.events:,} events of the orders workload in batches of 10, each run in a fresh process on fresh "
        "tables, a warm pooled connection, the apply loop timed; the variants alternate (the first of each "
        "rep rotates); every run's rows and ledger checked. Medians of the runs. Client CPU is the "
        "benchmark process's own CPU time per batch (`time.process_time()`), what a Lambda pays at a "
        "fraction of a vCPU, and steadier than wall time on a shared machine whose database runs beside it.",
        "",
    ]
    for dialect, runs in results.items():
        med = {name: statistics.median(r["ev_s"] for r in rs) for name, rs in runs.items()}
        cpu = {name: statistics.median(r["cpu_us"] for r in rs) for name, rs in runs.items()}
        p50 = {name: statistics.median(r["p50_ms"] for r in rs) for name, rs in runs.items()}
        lines += [
            f"## {dialect}",
            "",
            "| variant | events/s (median) | vs base | client CPU per batch | vs base | batch p50 ms "
            "| runs (events/s) | all checked |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, rs in runs.items():
            lines.append(
                f"| {name} | {med[name]:,.0f} | {med[name] / med['base']:.3f}x | {cpu[name]:.0f} us | "
                f"{cpu[name] / cpu['base']:.3f}x | {p50[name]:.2f} | "
                f"{', '.join(format(r['ev_s'], ',.0f') for r in rs)} | "
                f"{'yes' if all(r['ok'] for r in rs) else 'NO'} |"
            )
        if all("instructions" in rs[0] for rs in runs.values()):
            ins = {name: rs[0]["instructions"] for name, rs in runs.items()}
            lines += [
                "",
                f"Client instructions per batch (callgrind, {args.instructions} batches after {WARM} to warm up, "
                "less a run of none): "
                + "; ".join(f"{name} {ins[name]:,.0f} ({ins[name] / ins['base']:.3f}x)" for name in ins)
                + ".",
            ]
        lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
