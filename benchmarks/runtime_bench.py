"""Benchmark of the sync runtime (runtime/) on PostgreSQL and MariaDB.

    .venv/bin/python benchmarks/runtime_bench.py [--events 20000] [--dialects postgresql,mysql]
                                       [--out benchmarks/results/runtime.md]

What it measures (details in the report it writes):
  1. throughput: runtime.apply.apply_batch per batch of 10, against a one-transaction-per-
     message baseline handler (benchmarks/baseline.py), median of --reps runs each, in
     alternating order, on fresh tables ("fresh") and on fresh tables pre-filled with
     history and ANALYZEd ("seeded", closer to a production database); the final rows of
     every runtime run are checked against the expected last state of every order;
  2. round trips: "turns" counted by a TCP proxy (benchmarks/tcpproxy.py) for clean
     batches, next to the runtime's own `round_trips` estimate, and for the baseline;
  2b. throughput with network latency: runtime vs baseline through a proxy process that
     holds each chunk for D in each direction (--latency-delays-ms, default 0,0.25,0.5: the
     proxy alone, ~0.5 ms and ~1 ms RTT), --latency-events events, median of --latency-reps;
  3. cold start: `import runtime.handler` + load_registry + make_engine in fresh
     interpreters, plus `python -X importtime`, and whether boto3 was imported;
  4. peak RSS of a process applying all events, against an interpreter that only imported
     the same modules;
  5. where the time goes: wall time per phase of a batch, and a cProfile summary.

It writes only under benchmarks/ and uses its own databases (default: `runtime_bench` on
both servers, created if missing) so it never drops tables other people's tests use.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import resource
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
for _p in (str(HERE), str(ROOT)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import jinja2  # noqa: E402
import sqlalchemy  # noqa: E402
from baseline import BaselineHandler  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import URL, Engine, make_url  # noqa: E402
from sqlalchemy.pool import NullPool  # noqa: E402
from tcpproxy import TurnCounter, describe_mysql, describe_postgres  # noqa: E402
from workload import Workload, generate  # noqa: E402

from runtime.apply import apply_batch  # noqa: E402
from runtime.config import make_engine  # noqa: E402
from runtime.registry import Registry, load_registry  # noqa: E402
from runtime.schema import build_metadata  # noqa: E402

REGISTRY_PATH = "build/registry.json"
DEFAULT_URLS = {
    "postgresql": "postgresql+psycopg://postgres@127.0.0.1:5432/runtime_bench",
    "mysql": "mysql+pymysql://root@127.0.0.1:3306/runtime_bench",
}
DIALECT_NAMES = {"postgresql": "PostgreSQL", "mysql": "MariaDB"}
TARGETS = {"ratio_pg": 5.0, "turns": 3.0, "cold_ms": 300.0, "rss_mb": 150.0}
HISTORY_FACTOR = 5  # seeded tables: 5x the run's orders and events already there


# --- small helpers -------------------------------------------------------------------------


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def median(xs: Iterable[float]) -> float:
    xs = list(xs)
    return statistics.median(xs) if xs else float("nan")


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def pressure() -> str:
    """Linux PSI: share of time some task waited for CPU / IO (other work on a shared machine)."""
    out = []
    for res in ("cpu", "io"):
        try:
            line = Path(f"/proc/pressure/{res}").read_text().splitlines()[0]
        except OSError:
            continue
        fields = dict(f.split("=") for f in line.split()[1:])
        out.append(f"{res} {fields.get('avg60', '?')}% (1 min) / {fields.get('avg300', '?')}% (5 min)")
    return ", ".join(out) or "?"


def family(url: str | URL) -> str:
    name = make_url(url).get_backend_name()
    return "mysql" if name in ("mysql", "mariadb") else name


def admin_engine(url: str) -> Engine:
    return create_engine(url, poolclass=NullPool)


def ensure_database(url: str) -> None:
    """Create the benchmark's own database when it is missing."""
    u = make_url(url)
    db = u.database
    if family(u) == "postgresql":
        last: Exception | None = None
        for maint in ("postgres", "template1", "test"):
            try:
                eng = create_engine(u.set(database=maint), isolation_level="AUTOCOMMIT", poolclass=NullPool)
                with eng.connect() as c:
                    if not c.execute(text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": db}).first():
                        c.execute(text(f'CREATE DATABASE "{db}"'))
                eng.dispose()
                return
            except Exception as exc:  # try the next maintenance database
                last = exc
        raise RuntimeError(f"cannot create database {db}: {last}")
    eng = create_engine(u._replace(database=None), poolclass=NullPool)  # URL.set(database=None) keeps it
    with eng.begin() as c:
        c.execute(text(f"CREATE DATABASE IF NOT EXISTS `{db}`"))
    eng.dispose()


def fresh_tables(url: str, md: sqlalchemy.MetaData) -> None:
    eng = admin_engine(url)
    md.drop_all(eng)
    md.create_all(eng)
    eng.dispose()


def seed_history(url: str, n_orders: int, n_events: int) -> None:
    """Pre-fill orders and the ledger with history (other orders), then ANALYZE."""
    eng = admin_engine(url)
    with eng.begin() as c:
        if family(url) == "postgresql":
            c.execute(
                text(
                    "INSERT INTO orders (order_id, customer_id, total_amount, status, updated_at, sync_version) "
                    "SELECT 'HIST-' || lpad(g::text, 7, '0'), g % 50000 + 1, (g % 100000) / 100.0, 'shipped', "
                    "timestamptz '2023-01-01 00:00:00+00' + g * interval '1 second', lpad(g::text, 40, '0') "
                    "FROM generate_series(1, :n) g"
                ),
                {"n": n_orders},
            )
            c.execute(
                text(
                    "INSERT INTO sync_ledger (entity, event_id, message_id, outcome) "
                    "SELECT 'orders', 'hist-' || g, 'hist-msg-' || g, 'applied' FROM generate_series(1, :n) g"
                ),
                {"n": n_events},
            )
            c.execute(text("ANALYZE orders, sync_ledger, sync_tombstones"))
        else:
            c.execute(
                text(
                    "INSERT INTO orders (order_id, customer_id, total_amount, status, updated_at, sync_version) "
                    "SELECT CONCAT('HIST-', LPAD(seq, 7, '0')), seq % 50000 + 1, (seq % 100000) / 100, 'shipped', "
                    f"TIMESTAMP '2023-01-01 00:00:00' + INTERVAL seq SECOND, LPAD(seq, 40, '0') FROM seq_1_to_{int(n_orders)}"
                )
            )
            c.execute(
                text(
                    "INSERT INTO sync_ledger (entity, event_id, message_id, outcome) "
                    f"SELECT 'orders', CONCAT('hist-', seq), CONCAT('hist-msg-', seq), 'applied' FROM seq_1_to_{int(n_events)}"
                )
            )
    with eng.connect() as c:
        if family(url) == "mysql":
            c.execute(text("ANALYZE TABLE orders, sync_ledger, sync_tombstones")).fetchall()
    eng.dispose()


def prepare_tables(url: str, md: sqlalchemy.MetaData, seeded: bool, wl: Workload) -> None:
    fresh_tables(url, md)
    if seeded:
        seed_history(url, wl.n_orders * HISTORY_FACTOR, len(wl.events) * HISTORY_FACTOR)


def _utc(v: Any) -> datetime | None:
    if v is None:
        return None
    if isinstance(v, str):
        v = datetime.fromisoformat(v)
    return v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC)


def verify(url: str, wl: Workload, *, versioned: bool, ledger_expected: int | None) -> dict[str, Any]:
    """Final rows against the expected last state of every order (and the ledger size)."""
    expected = wl.expected()
    eng = admin_engine(url)
    with eng.connect() as c:
        rows = c.execute(
            text(
                "SELECT order_id, customer_id, total_amount, status, updated_at, sync_version "
                "FROM orders WHERE order_id LIKE 'ORD-%'"
            )
        ).fetchall()
        ledger = c.execute(text("SELECT COUNT(*) FROM sync_ledger")).scalar_one()
    eng.dispose()
    got = {r[0]: r for r in rows}
    bad: list[str] = []
    for oid, exp in expected.items():
        r = got.get(oid)
        if r is None:
            bad.append(f"{oid}: missing")
            continue
        want = (exp.customer_id, exp.total_amount, exp.status, exp.updated_at)
        have = (int(r[1]) if r[1] is not None else None, Decimal(r[2]), r[3], _utc(r[4]))
        if want != have or (versioned and r[5] != exp.version):
            bad.append(f"{oid}: got {have + ((r[5],) if versioned else ())}, want {want}")
    extra = sorted(set(got) - set(expected))
    ok = not bad and not extra and (ledger_expected is None or ledger == ledger_expected)
    return {
        "ok": ok,
        "rows": len(got),
        "expected_rows": len(expected),
        "mismatches": len(bad),
        "extra": len(extra),
        "ledger_rows": ledger,
        "ledger_expected": ledger_expected,
        "examples": bad[:3],
    }


# --- throughput ----------------------------------------------------------------------------


def run_runtime(url: str, registry: Registry, batches: list[list[dict]]) -> dict[str, Any]:
    engine = make_engine(url)
    with engine.connect():
        pass  # a warm Lambda: the connection exists already
    lat: list[float] = []
    paths: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    est = failures = 0
    t0 = time.perf_counter()
    for b in batches:
        t = time.perf_counter()
        r = apply_batch(b, engine, registry)
        lat.append((time.perf_counter() - t) * 1000)
        paths[r.path] += 1
        est += r.round_trips
        failures += len(r.response()["batchItemFailures"])
        counts.update(r.counts())
    elapsed = time.perf_counter() - t0
    engine.dispose()
    return {
        "elapsed": elapsed,
        "lat": lat,
        "paths": dict(paths),
        "est_round_trips": est / len(batches),
        "failures": failures,
        "counts": {k: v for k, v in counts.items() if v},
    }


def run_baseline(url: str, md: sqlalchemy.MetaData, batches: list[list[dict]]) -> dict[str, Any]:
    engine = create_engine(url)
    with engine.connect():
        pass
    handler = BaselineHandler(engine, md.tables["orders"])
    lat: list[float] = []
    failures = 0
    t0 = time.perf_counter()
    for b in batches:
        t = time.perf_counter()
        failures += len(handler.handle(b)["batchItemFailures"])
        lat.append((time.perf_counter() - t) * 1000)
    elapsed = time.perf_counter() - t0
    engine.dispose()
    return {"elapsed": elapsed, "lat": lat, "failures": failures}


def pg_read_stats(url: str) -> dict[str, int]:
    """Rows the reads touched (pg_stat_user_tables counters; diffed around a run)."""
    eng = admin_engine(url)
    with eng.connect() as c:
        rows = c.execute(
            text(
                "SELECT relname, COALESCE(seq_scan, 0), COALESCE(seq_tup_read, 0), COALESCE(idx_scan, 0), "
                "COALESCE(idx_tup_fetch, 0) FROM pg_stat_user_tables "
                "WHERE relname IN ('orders', 'sync_ledger', 'sync_tombstones')"
            )
        ).fetchall()
    eng.dispose()
    out: dict[str, int] = {}
    for name, seq, seq_read, idx, idx_fetch in rows:
        out[f"{name}.seq_scan"] = seq
        out[f"{name}.seq_tup_read"] = seq_read
        out[f"{name}.idx_scan"] = idx
        out[f"{name}.idx_tup_fetch"] = idx_fetch
    return out


def throughput(args: argparse.Namespace, dialect: str, url: str, registry: Registry, wl: Workload) -> dict:
    md = build_metadata(registry)
    batches = wl.materialize()
    n = len(wl.events)
    variants = ["fresh"] + ([] if args.no_seeded else ["seeded"])
    out: dict[str, Any] = {}
    for variant in variants:
        seeded = variant == "seeded"
        hist_events = n * HISTORY_FACTOR if seeded else 0
        runs: dict[str, list[dict]] = {"runtime": [], "baseline": []}
        for rep in range(args.reps):
            order = ["runtime", "baseline"] if rep % 2 == 0 else ["baseline", "runtime"]
            for kind in order:
                prepare_tables(url, md, seeded, wl)
                before = pg_read_stats(url) if dialect == "postgresql" else {}
                la = loadavg()
                res = (
                    run_runtime(url, registry, batches)
                    if kind == "runtime"
                    else run_baseline(url, md, batches)
                )
                if dialect == "postgresql":  # before verify(), whose own scan would count too
                    time.sleep(0.3)  # let the closed backend's statistics reach pg_stat
                    after = pg_read_stats(url)
                    res["pg_stats"] = {k: after.get(k, 0) - before.get(k, 0) for k in after}
                if kind == "runtime":
                    res["verify"] = verify(url, wl, versioned=True, ledger_expected=n + hist_events)
                else:
                    res["verify"] = verify(url, wl, versioned=False, ledger_expected=None)
                res["ev_s"] = n / res["elapsed"]
                res["load"] = la
                tenth = max(1, len(res["lat"]) // 10)
                res["lat_first10"] = median(res["lat"][:tenth])
                res["lat_last10"] = median(res["lat"][-tenth:])
                res["lat_p50"] = pct(res["lat"], 0.5)
                res["lat_p95"] = pct(res["lat"], 0.95)
                del res["lat"]
                runs[kind].append(res)
                v = res["verify"]
                log(
                    f"{dialect} {variant} rep {rep + 1} {kind}: {res['ev_s']:.0f} ev/s, batch p50 "
                    f"{res['lat_p50']:.2f} ms (first/last 10%: {res['lat_first10']:.2f}/{res['lat_last10']:.2f}), "
                    f"verified={v['ok']} mismatches={v['mismatches']} failures={res['failures']}"
                )
        rt = median(r["ev_s"] for r in runs["runtime"])
        bl = median(r["ev_s"] for r in runs["baseline"])
        rt_p50 = median(r["lat_p50"] for r in runs["runtime"])
        bl_p50 = median(r["lat_p50"] for r in runs["baseline"])
        out[variant] = {
            "runs": runs,
            "runtime_ev_s": rt,
            "baseline_ev_s": bl,
            "ratio": rt / bl,
            "ratio_p50": bl_p50 / rt_p50,  # less sensitive to stalls of a shared machine
        }
    return out


# --- round trips ---------------------------------------------------------------------------


def round_trips(args: argparse.Namespace, dialect: str, url: str, registry: Registry, wl: Workload) -> dict:
    md = build_metadata(registry)
    fresh_tables(url, md)
    u = make_url(url)
    port = u.port or (5432 if dialect == "postgresql" else 3306)
    warm = 10
    n = args.turn_batches
    need = (warm + 2 + 2 * n) * wl.batch_size
    if len(wl.events) < need:
        raise SystemExit(f"the turns section needs --events >= {need} (or a smaller --turn-batches)")
    gen = wl.with_tag("turns").batches()
    names: dict[str, str] = {}
    out: dict[str, Any] = {}
    with TurnCounter(u.host or "127.0.0.1", port) as proxy:
        purl = u.set(host="127.0.0.1", port=proxy.port)
        # the runtime
        engine = make_engine(purl)
        proxy.start_trace()
        for _ in range(warm):  # connect, first compilations, psycopg's auto-prepare after 5 runs
            apply_batch(next(gen), engine, registry)
        warm_trace = proxy.stop_trace()
        if dialect == "postgresql":
            for t in warm_trace:  # learn the prepared statements' names
                describe_postgres(t, names)
        per_batch, est, paths, traces = [], [], Counter(), []
        for i in range(n):
            b = next(gen)
            before = proxy.snapshot()["turns"]
            if i < 2:
                proxy.start_trace()
            r = apply_batch(b, engine, registry)
            if i < 2:
                traces.append(proxy.stop_trace())
            per_batch.append(proxy.snapshot()["turns"] - before)
            est.append(r.round_trips)
            paths[r.path] += 1
            if r.response()["batchItemFailures"]:
                paths["with failures"] += 1
        engine.dispose()
        describe = (lambda t: describe_postgres(t, names)) if dialect == "postgresql" else describe_mysql
        out["runtime"] = {
            "turns_per_batch": sum(per_batch) / n,
            "min": min(per_batch),
            "max": max(per_batch),
            "estimate": sum(est) / n,
            "paths": dict(paths),
            "anatomy": [describe(t) for t in traces[-1]],
        }
        # the baseline
        beng = create_engine(purl)
        handler = BaselineHandler(beng, md.tables["orders"])
        for _ in range(2):
            handler.handle(next(gen))
        per_batch, traces = [], []
        for i in range(n):
            b = next(gen)
            before = proxy.snapshot()["turns"]
            if i == 0:
                proxy.start_trace()
            handler.handle(b)
            if i == 0:
                traces.append(proxy.stop_trace())
            per_batch.append(proxy.snapshot()["turns"] - before)
        beng.dispose()
        out["baseline"] = {
            "turns_per_batch": sum(per_batch) / n,
            "min": min(per_batch),
            "max": max(per_batch),
            "anatomy": [describe(t) for t in traces[0]][:4],
        }
    log(
        f"{dialect} turns/batch: runtime {out['runtime']['turns_per_batch']:.2f} "
        f"(estimate {out['runtime']['estimate']:.2f}), baseline {out['baseline']['turns_per_batch']:.2f}"
    )
    return out


# --- throughput with network latency ------------------------------------------------------


class DelayedPort:
    """A benchmarks/tcpproxy.py DelayProxy in its own process (its threads then never wait for
    this process's GIL); the proxy ends when its stdin is closed."""

    def __init__(self, host: str, port: int, delay_ms: float) -> None:
        self.args = [
            sys.executable,
            str(HERE / "tcpproxy.py"),
            "--target",
            f"{host}:{port}",
            "--delay-ms",
            repr(delay_ms),
        ]
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0

    def __enter__(self) -> DelayedPort:
        self.proc = subprocess.Popen(
            self.args, cwd=ROOT, env=_child_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.strip():
            self.__exit__()
            raise RuntimeError(f"delay proxy did not start: {self.args}")
        self.port = int(line)
        return self

    def __exit__(self, *exc: object) -> None:
        p = self.proc
        if p is None:
            return
        if p.stdin is not None:
            p.stdin.close()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        self.proc = None


def select1_rtt_ms(url: str | URL, n: int = 300) -> float:
    """Median wall time of one `SELECT 1` round trip on a raw driver connection."""
    eng = create_engine(url, poolclass=NullPool)
    raw = eng.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute("SELECT 1")
        cur.fetchall()
        xs = []
        for _ in range(n):
            t = time.perf_counter()
            cur.execute("SELECT 1")
            cur.fetchall()
            xs.append((time.perf_counter() - t) * 1000)
        cur.close()
        raw.rollback()
    finally:
        raw.close()
        eng.dispose()
    return median(xs)


def latency_throughput(args: argparse.Namespace, dialect: str, url: str, registry: Registry) -> dict:
    """Runtime vs baseline through a proxy that holds every chunk for D in each direction."""
    wl = generate(args.latency_events)
    md = build_metadata(registry)
    batches = wl.materialize()
    n = len(wl.events)
    u = make_url(url)
    port = u.port or (5432 if dialect == "postgresql" else 3306)
    delays = [float(x) for x in args.latency_delays_ms.split(",") if x.strip()]
    direct_rtt = select1_rtt_ms(url)
    out: dict[str, Any] = {"events": n, "reps": args.latency_reps, "direct_rtt_ms": direct_rtt, "delays": {}}
    for d_ms in delays:
        with DelayedPort(u.host or "127.0.0.1", port, d_ms) as proxy:
            purl = u.set(host="127.0.0.1", port=proxy.port)
            rtt = select1_rtt_ms(purl)
            runs: dict[str, list[dict]] = {"runtime": [], "baseline": []}
            for rep in range(args.latency_reps):
                order = ["runtime", "baseline"] if rep % 2 == 0 else ["baseline", "runtime"]
                for kind in order:
                    prepare_tables(url, md, False, wl)
                    if kind == "runtime":
                        res = run_runtime(purl, registry, batches)
                        res["verify"] = verify(url, wl, versioned=True, ledger_expected=n)
                    else:
                        res = run_baseline(purl, md, batches)
                        res["verify"] = verify(url, wl, versioned=False, ledger_expected=None)
                    res["ev_s"] = n / res["elapsed"]
                    res["lat_p50"] = pct(res["lat"], 0.5)
                    res["lat_p95"] = pct(res["lat"], 0.95)
                    del res["lat"]
                    runs[kind].append(res)
                    log(
                        f"{dialect} delay {d_ms} ms rep {rep + 1} {kind}: {res['ev_s']:.0f} ev/s, batch p50 "
                        f"{res['lat_p50']:.2f} ms, verified={res['verify']['ok']} failures={res['failures']}"
                    )
        rt = median(r["ev_s"] for r in runs["runtime"])
        bl = median(r["ev_s"] for r in runs["baseline"])
        out["delays"][d_ms] = {
            "rtt_ms": rtt,
            "runs": runs,
            "runtime_ev_s": rt,
            "baseline_ev_s": bl,
            "ratio": rt / bl,
            "runtime_p50": median(r["lat_p50"] for r in runs["runtime"]),
            "baseline_p50": median(r["lat_p50"] for r in runs["baseline"]),
        }
        log(
            f"{dialect} delay {d_ms} ms (SELECT 1 {rtt:.3f} ms): runtime {rt:.0f} ev/s, baseline {bl:.0f} ev/s, "
            f"ratio {rt / bl:.2f}x"
        )
    return out


# --- cold start ----------------------------------------------------------------------------

COLD_CODE = """
import time
t0 = time.perf_counter()
import runtime.handler
from runtime.config import make_engine
from runtime.registry import load_registry
registry = load_registry({registry!r})
engine = make_engine({url!r})
t1 = time.perf_counter()
import json, sys
print(json.dumps({{"ms": (t1 - t0) * 1000, "boto3": "boto3" in sys.modules,
                  "botocore": "botocore" in sys.modules, "modules": len(sys.modules)}}))
"""


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNC_", "PYTHONPROFILE"))}
    env.pop("PYTHONPATH", None)
    # The Lambda zip ships compiled byte-code (python -m generator package): let the warm-up
    # run write it for runtime/ too, rather than compiling the sources on every cold start.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


# The floor: what any SQLAlchemy program on PostgreSQL loads (SQLAlchemy, its psycopg dialect,
# the driver), whatever it does.
FLOOR_CODE = """
import time
t0 = time.perf_counter()
import sqlalchemy.dialects.postgresql.psycopg, psycopg
t1 = time.perf_counter()
print((t1 - t0) * 1000)
"""


def cold_start(args: argparse.Namespace, pg_url: str) -> dict:
    code = COLD_CODE.format(registry=REGISTRY_PATH, url=pg_url)
    py = sys.executable
    env = _child_env()
    inproc, wall, bare, floor = [], [], [], []
    flags = Counter()
    subprocess.run([py, "-c", code], cwd=ROOT, env=env, check=True, capture_output=True)  # warm .pyc
    for _ in range(args.cold_runs):
        t = time.perf_counter()
        subprocess.run([py, "-c", "pass"], cwd=ROOT, env=env, check=True)
        bare.append((time.perf_counter() - t) * 1000)
        p = subprocess.run(
            [py, "-c", FLOOR_CODE], cwd=ROOT, env=env, check=True, capture_output=True, text=True
        )
        floor.append(float(p.stdout.strip().splitlines()[-1]))
        t = time.perf_counter()
        p = subprocess.run([py, "-c", code], cwd=ROOT, env=env, check=True, capture_output=True, text=True)
        wall.append((time.perf_counter() - t) * 1000)
        info = json.loads(p.stdout.strip().splitlines()[-1])
        inproc.append(info["ms"])
        flags["boto3"] += info["boto3"]
        flags["botocore"] += info["botocore"]
        flags["modules"] = info["modules"]
    p = subprocess.run(
        [py, "-X", "importtime", "-c", code], cwd=ROOT, env=env, check=True, capture_output=True, text=True
    )
    top, by_pkg = parse_importtime(p.stderr)
    res = {
        "inproc_ms": median(inproc),
        "inproc_all": inproc,
        "wall_ms": median(wall),
        "bare_ms": median(bare),
        "floor_ms": median(floor),
        "floor_all": floor,
        "boto3_runs": flags["boto3"],
        "botocore_runs": flags["botocore"],
        "modules": flags["modules"],
        "runs": args.cold_runs,
        "importtime_top": top,
        "importtime_by_package": by_pkg,
    }
    log(
        f"cold start: import+registry+engine {res['inproc_ms']:.0f} ms (process wall {res['wall_ms']:.0f} ms, "
        f"bare python {res['bare_ms']:.0f} ms; SQLAlchemy + dialect + psycopg alone {res['floor_ms']:.0f} ms), "
        f"boto3 imported in {flags['boto3']}/{args.cold_runs} runs"
    )
    return res


def parse_importtime(stderr: str) -> tuple[list[tuple[str, float, float, int]], list[tuple[str, float]]]:
    """The heaviest imports (up to two levels below the top) and self time per package."""
    entries = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "imported package" in line:
            continue
        self_us, cum_us, name = line[len("import time:") :].split("|", 2)
        depth = (len(name) - len(name.lstrip()) - 1) // 2
        entries.append((name.strip(), int(self_us), int(cum_us), depth))
    base = min((d for *_, d in entries), default=0)
    top = sorted(
        ((n, s / 1000, c / 1000, d - base) for n, s, c, d in entries if d - base <= 2),
        key=lambda e: -e[2],
    )[:15]
    pkg: Counter[str] = Counter()
    for n, s, _c, _d in entries:
        pkg[n.split(".")[0]] += s
    by_pkg = [(k, v / 1000) for k, v in pkg.most_common(10)]
    return top, by_pkg


# --- memory --------------------------------------------------------------------------------


def child_memory(args: argparse.Namespace) -> None:
    """Subprocess: apply all events with the runtime, report peak RSS and the modules loaded."""
    registry = load_registry(REGISTRY_PATH)
    md = build_metadata(registry)
    fresh_tables(args.url, md)
    wl = generate(args.events)
    engine = make_engine(args.url)
    rss_ready = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    failures = 0
    t0 = time.perf_counter()
    for b in wl.batches():
        r = apply_batch(b, engine, registry)
        failures += len(r.response()["batchItemFailures"])
    elapsed = time.perf_counter() - t0
    engine.dispose()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    v = verify(args.url, wl, versioned=True, ledger_expected=len(wl.events))
    mods = sorted(k for k, m in sys.modules.items() if m is not None and k != "__main__")
    print(
        json.dumps(
            {
                "peak_kb": peak,
                "hwm_kb": vm_hwm_kb(),
                "ready_kb": rss_ready,
                "ev_s": len(wl.events) / elapsed,
                "failures": failures,
                "verified": v["ok"],
                "modules": mods,
            }
        )
    )


def child_imports(args: argparse.Namespace) -> None:
    """Subprocess: only import the given modules, report peak RSS."""
    import importlib

    names = json.loads(Path(args.modules_file).read_text())
    failed = 0
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:
            failed += 1
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_kb": peak, "hwm_kb": vm_hwm_kb(), "failed": failed, "modules": len(names)}))


def vm_hwm_kb() -> int:
    """This process's own peak RSS (the mm's high-water mark; not inherited across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return -1


# Linux keeps the parent's RSS high-water mark in a child's ru_maxrss across fork+exec, so a
# child started from this (large) process would report at least this process's peak. A tiny
# launcher in between gives the measured child a clean ru_maxrss.
LAUNCHER = "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"


def _child(args: list[str]) -> dict:
    p = subprocess.run(
        [sys.executable, "-c", LAUNCHER, sys.executable, str(Path(__file__).resolve()), *args],
        cwd=ROOT,
        env=_child_env(),
        capture_output=True,
        text=True,
    )
    if p.returncode != 0:
        raise RuntimeError(f"child {args} failed: {p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def memory(args: argparse.Namespace, dialect: str, url: str) -> dict:
    import tempfile

    res = _child(["--child", "memory", "--url", url, "--events", str(args.events)])
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(res["modules"], f)
        modules_file = f.name
    try:
        base = _child(["--child", "imports", "--modules-file", modules_file])
    finally:
        os.unlink(modules_file)
    out = {
        "peak_mb": res["peak_kb"] / 1024,
        "hwm_mb": res["hwm_kb"] / 1024,
        "ready_mb": res["ready_kb"] / 1024,
        "imports_only_mb": base["peak_kb"] / 1024,
        "imports_only_hwm_mb": base["hwm_kb"] / 1024,
        "imports_failed": base["failed"],
        "ev_s": res["ev_s"],
        "verified": res["verified"],
        "failures": res["failures"],
        "modules": len(res["modules"]),
    }
    log(f"{dialect} memory: peak {out['peak_mb']:.0f} MB (imports only {out['imports_only_mb']:.0f} MB)")
    return out


# --- where the time goes -------------------------------------------------------------------


class PhaseTimer:
    """Wall time per phase of apply_batch, by wrapping module functions for one run."""

    def __init__(self) -> None:
        self.t: Counter[str] = Counter()
        self.n: Counter[str] = Counter()
        self._undo: list[Callable[[], None]] = []
        self.in_read = False

    def wrap(self, owner: Any, name: str, label: str | Callable[[], str]) -> None:
        fn = getattr(owner, name, None)
        if fn is None:
            return
        timer = self

        def wrapper(*a: Any, **k: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                lab = label() if callable(label) else label
                timer.t[lab] += time.perf_counter() - t
                timer.n[lab] += 1

        setattr(owner, name, wrapper)
        self._undo.append(lambda: setattr(owner, name, fn))

    def undo(self) -> None:
        for u in reversed(self._undo):
            u()
        self._undo.clear()


def phases(dialect: str, url: str, registry: Registry, wl: Workload, seeded: bool) -> dict:
    import runtime.apply as rapply
    import runtime.dialects.mysql as rmysql
    import runtime.dialects.postgresql as rpostgresql

    md = build_metadata(registry)
    prepare_tables(url, md, seeded, wl)
    batches = wl.materialize()
    engine = make_engine(url)
    with engine.connect():
        pass
    pt = PhaseTimer()
    pt.wrap(rapply, "parse_sqs_record", "parse SQS record")
    pt.wrap(rapply, "decode", "decode + coerce")
    pt.wrap(rapply, "plan_change", "plan")
    read_state = rapply.read_state

    def timed_read_state(*a: Any, **k: Any) -> Any:
        pt.in_read = True
        t = time.perf_counter()
        try:
            return read_state(*a, **k)
        finally:
            pt.in_read = False
            pt.t["reads (build + round trip)"] += time.perf_counter() - t

    rapply.read_state = timed_read_state
    pt._undo.append(lambda: setattr(rapply, "read_state", read_state))
    label = lambda: "driver send: reads" if pt.in_read else "driver send: writes + COMMIT"  # noqa: E731
    pt.wrap(rpostgresql.PsycopgPipelineSession, "_send", label)
    pt.wrap(rmysql.PyMySQLMultiSession, "_send", label)
    # Not on the fast path any more (COMMIT travels with the writes, no pool reset); timed in
    # case a batch takes the slow path or the pool resets a connection.
    pt.wrap(engine.dialect, "do_commit", "COMMIT (SQLAlchemy)")
    pt.wrap(engine.dialect, "do_rollback", "ROLLBACK (SQLAlchemy)")
    before = pg_read_stats(url) if dialect == "postgresql" else {}
    t0 = time.perf_counter()
    try:
        for b in batches:
            apply_batch(b, engine, registry)
    finally:
        total = time.perf_counter() - t0
        pt.undo()
        engine.dispose()
    nb = len(batches)
    per = {k: v / nb * 1000 for k, v in pt.t.items()}
    per["driver send: reads"] = per.get("driver send: reads", 0.0)
    per["reads: other (SQLAlchemy params, compile cache)"] = per.get(
        "reads (build + round trip)", 0
    ) - per.get("driver send: reads", 0)
    accounted = sum(
        per.get(k, 0)
        for k in (
            "parse SQS record",
            "decode + coerce",
            "plan",
            "reads (build + round trip)",
            "driver send: writes + COMMIT",
            "COMMIT (SQLAlchemy)",
            "ROLLBACK (SQLAlchemy)",
        )
    )
    per["everything else (checkout, SQLAlchemy, bookkeeping)"] = total / nb * 1000 - accounted
    out: dict[str, Any] = {"total_ms_per_batch": total / nb * 1000, "phases": per}
    if dialect == "postgresql":
        time.sleep(0.3)
        after = pg_read_stats(url)
        out["pg_stats"] = {k: (after.get(k, 0) - before.get(k, 0)) / nb for k in after}
    # a cProfile of the same work on fresh tables of the same kind
    prepare_tables(url, md, seeded, wl)
    engine = make_engine(url)
    with engine.connect():
        pass  # the connection handshake is not part of the profile
    prof = cProfile.Profile()
    prof.enable()
    for b in batches[: max(1, nb // 4)]:
        apply_batch(b, engine, registry)
    prof.disable()
    engine.dispose()
    out["profile"] = profile_summary(prof)
    return out


def profile_summary(prof: cProfile.Profile) -> dict:
    st = pstats.Stats(prof, stream=io.StringIO())
    total = st.total_tt  # type: ignore[attr-defined]
    by_area: Counter[str] = Counter()
    funcs = []
    for (file, line, fn), (_cc, _nc, tt, ct, _callers) in st.stats.items():  # type: ignore[attr-defined]
        if "/runtime/" in file and "site-packages" not in file:
            area = "runtime/ (this project)"
        elif "sqlalchemy" in file:
            area = "sqlalchemy"
        elif "psycopg" in file:
            area = "psycopg"
        elif "pymysql" in file:
            area = "pymysql"
        elif file == "~":
            area = (
                f"builtins/C ({fn[:40]})"
                if any(w in fn for w in ("socket", "select", "poll", "wait"))
                else "other C builtins"
            )
        else:
            area = "other Python (stdlib, benchmark)"
        by_area[area] += tt
        short = f"{Path(file).parent.name}/{Path(file).name}:{line}({fn})" if file != "~" else fn
        funcs.append((short, tt, ct))
    funcs.sort(key=lambda f: -f[1])
    return {
        "total_s": total,
        "by_area": [(k, v / total * 100) for k, v in by_area.most_common(8)],
        "top": [(f, tt * 1000, ct * 1000) for f, tt, ct in funcs[:12]],
    }


# --- environment ---------------------------------------------------------------------------


def environment(urls: dict[str, str]) -> dict[str, str]:
    import psycopg
    import pymysql

    env = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": str(os.cpu_count()),
        "cpu": _cpu_model(),
        "python": f"{platform.python_implementation()} {platform.python_version()} ({sys.executable})",
        "platform": platform.platform(),
        "sqlalchemy": sqlalchemy.__version__,
        "psycopg": f"{psycopg.__version__} (libpq impl: {psycopg.pq.__impl__}, libpq {psycopg.pq.version()})",
        "pymysql": str(getattr(pymysql, "__version__", getattr(pymysql, "VERSION_STRING", "?"))),
        "load average at start": loadavg(),
        "pressure (PSI 'some') at start": pressure(),
    }
    try:
        env["git HEAD"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except Exception:
        env["git HEAD"] = "?"
    env["runtime sources sha256"] = (
        runtime_digest()
        + f" over the {len(runtime_files())} files of the runtime modules measured ("
        + ", ".join(f.name for f in runtime_files())
        + "; others edit runtime/ concurrently)"
    )
    env[f"{REGISTRY_PATH} sha256"] = registry_digest()
    for dialect, url in urls.items():
        eng = admin_engine(url)
        try:
            with eng.connect() as c:
                if dialect == "postgresql":
                    v = c.execute(text("SHOW server_version")).scalar_one()
                    s = ", ".join(
                        f"{k}={c.execute(text(f'SHOW {k}')).scalar_one()}"
                        for k in ("fsync", "synchronous_commit", "autovacuum", "shared_buffers")
                    )
                    env["PostgreSQL"] = f"{v} ({s})"
                else:
                    v = c.execute(text("SELECT VERSION()")).scalar_one()
                    s = ", ".join(
                        f"{k}={c.execute(text(f'SELECT @@{k}')).scalar_one()}"
                        for k in ("innodb_flush_log_at_trx_commit", "log_bin", "innodb_buffer_pool_size")
                    )
                    env["MariaDB"] = f"{v} ({s})"
        finally:
            eng.dispose()
        env[f"{DIALECT_NAMES[dialect]} URL"] = make_url(url).render_as_string(hide_password=True)
    return env


_RUNTIME_FILES: list[Path] = []


def runtime_files() -> list[Path]:
    """The runtime's source files this benchmark measures: runtime.handler (what the Lambda and
    the cold start load) and every runtime module it and the benchmark import. Fixed at the
    first call, so the end-of-run digest covers the same files (others add files under
    runtime/ that the handler never imports, e.g. local tools)."""
    if not _RUNTIME_FILES:
        import runtime.handler  # noqa: F401

        _RUNTIME_FILES.extend(
            sorted(
                {
                    Path(m.__file__).resolve()
                    for name, m in list(sys.modules.items())
                    if (name == "runtime" or name.startswith("runtime.")) and getattr(m, "__file__", None)
                }
            )
        )
    return _RUNTIME_FILES


def runtime_digest() -> str:
    import hashlib

    h = hashlib.sha256()
    for f in runtime_files():
        h.update(f.name.encode() + (f.read_bytes() if f.exists() else b"<missing>"))
    return h.hexdigest()[:16]


def registry_digest() -> str:
    import hashlib

    return hashlib.sha256((ROOT / REGISTRY_PATH).read_bytes()).hexdigest()[:16]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


# --- report --------------------------------------------------------------------------------


def yes(ok: bool) -> str:
    return "**met**" if ok else "**NOT met**"


def view(args: argparse.Namespace, r: dict) -> dict[str, Any]:
    """What the report shows, computed: verdict rows, table cells and the choices the template
    makes no computation for (benchmarks/templates/runtime.md.j2 lays them out)."""
    env = r["env"]
    tp = r.get("throughput", {})
    lt = r.get("latency", {})
    goal = TARGETS["ratio_pg"]
    rows, info = _targets(args, r, goal)
    return {
        "r": r,
        "args": args,
        "env": env,
        "wl": r["workload"],
        "goal": goal,
        "rows": [(name, measured, yes(bool(ok))) for name, measured, ok in rows],
        "met": [name for name, _, ok in rows if ok],
        "missed": [name for name, _, ok in rows if not ok],
        "info": info,
        "python": Path(sys.executable),
        "registry_path": REGISTRY_PATH,
        "history_factor": HISTORY_FACTOR,
        "same_runtime": env["runtime sources sha256"].startswith(r["runtime_end"]),
        "same_registry": env[f"{REGISTRY_PATH} sha256"] == r["registry_end"],
        "names": DIALECT_NAMES,
        "throughput_rows": _throughput_rows(tp),
        "throughput_failures": [
            (d, variant, x["verify"])
            for d, byv in tp.items()
            for variant, v in byv.items()
            for x in v["runs"]["runtime"]
            if not x["verify"]["ok"]
        ],
        "pg_scans": _pg_scans(tp, r["workload"]["events"] / 10),
        "latency_rows": _latency_rows(lt),
        "phases": _phase_rows(r.get("phases", {})),
    }


def _targets(
    args: argparse.Namespace, r: dict, goal: float
) -> tuple[list[tuple[str, str, bool | None]], list[tuple[str, str, str]]]:
    """(target, measured, met) rows, and the informative ratios (measure, ratio, vs the goal)."""
    rows: list[tuple[str, str, bool | None]] = []
    info: list[tuple[str, str, str]] = []
    tp = r.get("throughput", {})
    lt = r.get("latency", {})
    if "postgresql" in tp:
        f = tp["postgresql"]["fresh"]
        rows.append(
            (
                f"PostgreSQL throughput runtime/baseline >= {goal:.0f}x (loopback, fresh tables, as specified)",
                f"{f['ratio']:.2f}x ({f['runtime_ev_s']:.0f} vs {f['baseline_ev_s']:.0f} events/s)",
                f["ratio"] >= goal,
            )
        )
        if "seeded" in tp["postgresql"]:
            s_ = tp["postgresql"]["seeded"]
            info.append(
                (
                    "PostgreSQL runtime/baseline, loopback, pre-filled + ANALYZEd tables",
                    f"{s_['ratio']:.2f}x ({s_['runtime_ev_s']:.0f} vs {s_['baseline_ev_s']:.0f} events/s)",
                    f"{'at or above' if s_['ratio'] >= goal else 'below'} {goal:.0f}x",
                )
            )
    for d, lat in lt.items():
        for d_ms, x in lat["delays"].items():
            if d_ms <= 0:
                continue
            info.append(
                (
                    f"{DIALECT_NAMES[d]} runtime/baseline through the delay proxy, D = {d_ms:g} ms "
                    f"(~{2 * d_ms:g} ms RTT; measured SELECT 1 {x['rtt_ms']:.2f} ms), fresh tables",
                    f"{x['ratio']:.2f}x ({x['runtime_ev_s']:.0f} vs {x['baseline_ev_s']:.0f} events/s)",
                    f"{'at or above' if x['ratio'] >= goal else 'below'} {goal:.0f}x",
                )
            )
    for d, t in r.get("turns", {}).items():
        tb = t["runtime"]["turns_per_batch"]
        rows.append(
            (
                f"{DIALECT_NAMES[d]}: turns per clean batch of 10 <= {TARGETS['turns']:.0f}",
                f"{tb:.2f} (runtime's own estimate {t['runtime']['estimate']:.2f})",
                tb <= TARGETS["turns"],
            )
        )
    if "cold" in r:
        c = r["cold"]
        rows.append(
            (
                f"cold start: import runtime.handler + load_registry + make_engine <= {TARGETS['cold_ms']:.0f} ms",
                f"{c['inproc_ms']:.0f} ms (median of {c['runs']}; SQLAlchemy, its PostgreSQL dialect and psycopg alone: "
                f"{c.get('floor_ms', float('nan')):.0f} ms)",
                c["inproc_ms"] <= TARGETS["cold_ms"],
            )
        )
        rows.append(
            (
                "boto3 not imported on the cold path",
                f"imported in {c['boto3_runs']}/{c['runs']} runs (botocore {c['botocore_runs']}/{c['runs']})",
                c["boto3_runs"] == 0 and c["botocore_runs"] == 0,
            )
        )
    for d, m in r.get("memory", {}).items():
        rows.append(
            (
                f"{DIALECT_NAMES[d]}: peak RSS applying {args.events:,} events <= {TARGETS['rss_mb']:.0f} MB",
                f"{m['peak_mb']:.0f} MB",
                m["peak_mb"] <= TARGETS["rss_mb"],
            )
        )
    ver = [run["verify"]["ok"] for d in tp.values() for v in d.values() for run in v["runs"]["runtime"]]
    ver += [
        run["verify"]["ok"]
        for lat in lt.values()
        for x in lat["delays"].values()
        for run in x["runs"]["runtime"]
    ]
    if ver:
        rows.append(
            (
                "final state = expected last state of every order, after every runtime run "
                "(loopback and delay-proxy runs)",
                f"{sum(ver)}/{len(ver)} runs verified",
                all(ver),
            )
        )
    return rows, info


def _throughput_rows(tp: dict) -> list[dict[str, Any]]:
    """One row per (dialect, tables, handler): median, runs, latencies and what was checked."""
    out = []
    for d, byv in tp.items():
        for variant, v in byv.items():
            for kind in ("runtime", "baseline"):
                runs = v["runs"][kind]
                ok = sum(x["verify"]["ok"] for x in runs)
                if kind == "runtime":
                    paths: Counter[str] = Counter()
                    for x in runs:
                        paths.update(x["paths"])
                    est = median(x["est_round_trips"] for x in runs)
                    fails = sum(x["failures"] for x in runs)
                    chk = (
                        f"final state verified {ok}/{len(runs)}; paths {dict(paths)}; failures {fails}; "
                        f"own round-trip estimate {est:.2f}/batch"
                    )
                else:
                    chk = f"final rows as expected {ok}/{len(runs)} (no version column)"
                out.append(
                    {
                        "dialect": DIALECT_NAMES[d],
                        "variant": variant,
                        "kind": kind,
                        "median": v["runtime_ev_s"] if kind == "runtime" else v["baseline_ev_s"],
                        "runs": ", ".join(f"{x['ev_s']:.0f}" for x in runs),
                        "p50": median(x["lat_p50"] for x in runs),
                        "p95": median(x["lat_p95"] for x in runs),
                        "first10": median(x["lat_first10"] for x in runs),
                        "last10": median(x["lat_last10"] for x in runs),
                        "checks": chk,
                    }
                )
    return out


def _pg_scans(tp: dict, batches: float) -> list[tuple[str, dict[str, float]]]:
    """PostgreSQL table statistics per batch (median over the runtime runs), per tables variant."""
    keys = ("orders.seq_scan", "orders.seq_tup_read", "sync_ledger.seq_scan")
    keys += ("sync_ledger.seq_tup_read", "sync_ledger.idx_scan")
    return [
        (
            variant,
            {
                k: median(x.get("pg_stats", {}).get(k, 0) / batches for x in v["runs"]["runtime"])
                for k in keys
            },
        )
        for variant, v in tp.get("postgresql", {}).items()
    ]


def _latency_rows(lt: dict) -> list[dict[str, Any]]:
    """One row per (dialect, delay, handler), with the apparent round trips against D = 0."""
    out = []
    for d, lat in lt.items():
        ref = lat["delays"].get(0.0)
        for d_ms, x in lat["delays"].items():
            for kind in ("runtime", "baseline"):
                runs = x["runs"][kind]
                p50 = x[f"{kind}_p50"]
                if ref is not None and d_ms > 0 and x["rtt_ms"] > ref["rtt_ms"]:
                    app = f"{(p50 - ref[f'{kind}_p50']) / (x['rtt_ms'] - ref['rtt_ms']):.1f}"
                else:
                    app = "-"
                ok = sum(y["verify"]["ok"] for y in runs)
                fails = sum(y["failures"] for y in runs)
                if kind == "runtime":
                    paths: Counter[str] = Counter()
                    for y in runs:
                        paths.update(y["paths"])
                    chk = f"final state verified {ok}/{len(runs)}; paths {dict(paths)}; failures {fails}"
                else:
                    chk = f"final rows as expected {ok}/{len(runs)}; failures {fails}"
                out.append(
                    {
                        "dialect": DIALECT_NAMES[d],
                        "d_ms": d_ms,
                        "rtt_ms": x["rtt_ms"],
                        "kind": kind,
                        "median": x["runtime_ev_s"] if kind == "runtime" else x["baseline_ev_s"],
                        "runs": ", ".join(f"{y['ev_s']:.0f}" for y in runs),
                        "p50": p50,
                        "p95": median(y["lat_p95"] for y in runs),
                        "apparent": app,
                        "checks": chk,
                    }
                )
    return out


PHASE_ORDER = [
    "parse SQS record",
    "decode + coerce",
    "reads (build + round trip)",
    "driver send: reads",
    "reads: other (SQLAlchemy params, compile cache)",
    "plan",
    "driver send: writes + COMMIT",
    "COMMIT (SQLAlchemy)",
    "ROLLBACK (SQLAlchemy)",
    "everything else (checkout, SQLAlchemy, bookkeeping)",
]
PHASE_PARTS = {"driver send: reads", "reads: other (SQLAlchemy params, compile cache)"}  # shares of reads


def _phase_rows(phases: dict) -> list[tuple[str, list[float]]]:
    """(label, ms per batch in each cell) for every phase any cell saw, in the pipeline's order."""
    keys = [k for k in PHASE_ORDER if any(k in ph["phases"] for ph in phases.values())]
    keys += [k for ph in phases.values() for k in ph["phases"] if k not in keys]
    return [
        (
            f"&nbsp;&nbsp;of which {k}" if k in PHASE_PARTS else k,
            [ph["phases"].get(k, 0) for ph in phases.values()],
        )
        for k in keys
    ]


def render(args: argparse.Namespace, r: dict) -> str:
    """The Markdown report: benchmarks/templates/runtime.md.j2 over view(args, r)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    # Numbers are formatted as the f-strings of the report always were: {{ x|fmt(".2f") }}.
    env.filters["fmt"] = format
    return env.get_template("runtime.md.j2").render(view(args, r))


def notes(r: dict) -> list[str]:
    """Observations computed from the figures (what stands out)."""
    out = []
    for d, byv in r.get("throughput", {}).items():
        for variant, v in byv.items():
            runs = v["runs"]["runtime"]
            f10 = median(x["lat_first10"] for x in runs)
            l10 = median(x["lat_last10"] for x in runs)
            if l10 > 1.5 * f10:
                out.append(
                    f"{DIALECT_NAMES[d]}, {variant} tables: the runtime's batch latency grows during the run "
                    f"({f10:.2f} ms in the first 10% of batches, {l10:.2f} ms in the last 10%): its cost per "
                    "batch depends on how many rows the tables already hold."
                )
            ps = [x.get("pg_stats", {}) for x in runs]
            nb = r["workload"]["events"] / 10
            seq = median(p.get("orders.seq_tup_read", 0) / nb for p in ps) if ps else 0
            led = median(p.get("sync_ledger.seq_tup_read", 0) / nb for p in ps) if ps else 0
            if seq > 100 or led > 100:
                grows = l10 > 1.5 * f10
                out.append(
                    f"{DIALECT_NAMES[d]}, {variant} tables: per batch of 10 the runtime's statements read "
                    f"{seq:.0f} orders rows and {led:.0f} sync_ledger rows by sequential scan, where an index "
                    "probe would read ~10 each, although `make_engine` turns sequential scans off for the "
                    "runtime's connection: look for a statement without a usable unique index. "
                    + (
                        f"It costs: batch latency grows from {f10:.2f} to {l10:.2f} ms during the run."
                        if grows
                        else f"It does not cost here: batch latency stays at {f10:.2f} -> {l10:.2f} ms from "
                        "the first to the last 10% of the run."
                    )
                )
    for d, byv in r.get("throughput", {}).items():
        for variant, v in byv.items():
            for kind in ("runtime", "baseline"):
                evs = [x["ev_s"] for x in v["runs"][kind]]
                if len(evs) > 1 and max(evs) > 1.4 * min(evs):
                    out.append(
                        f"{DIALECT_NAMES[d]}, {variant} tables, {kind}: runs spread from {min(evs):.0f} to "
                        f"{max(evs):.0f} events/s (a shared 2-CPU machine"
                        + (
                            "; the baseline commits once per message with fsync on, so it stalls when others "
                            "write to disk"
                            if kind == "baseline"
                            else ""
                        )
                        + "). The median is reported; the "
                        f"batch-latency ratio ({v['ratio_p50']:.2f}x), which ignores stalls, cross-checks the "
                        f"events/s ratio ({v['ratio']:.2f}x)."
                    )
    for d, t in r.get("turns", {}).items():
        rt = t["runtime"]
        if abs(rt["turns_per_batch"] - rt["estimate"]) >= 0.5:
            out.append(
                f"{DIALECT_NAMES[d]}: the runtime reports {rt['estimate']:.2f} round trips per batch but the "
                f"proxy counts {rt['turns_per_batch']:.2f} turns (per-turn anatomy above)."
            )
        anatomy = rt["anatomy"]
        for i, a in enumerate(anatomy, 1):
            if a == "BEGIN, Sync":
                out.append(
                    f"{DIALECT_NAMES[d]} turn {i} carries only BEGIN: in pipeline mode psycopg sends its implicit "
                    "BEGIN followed by a Sync and waits for it before the first pipelined statement."
                )
            elif a == "Sync, Flush" or a == "Sync":
                out.append(
                    f"{DIALECT_NAMES[d]} turn {i} carries only Sync/Flush: the executor calls `pipeline.sync()` "
                    "and then leaving the `with conn.pipeline()` block syncs (and flushes) again and waits "
                    "for a second ReadyForQuery."
                )
            elif a == "COM_QUERY ROLLBACK" and i == len(anatomy):
                out.append(
                    f"{DIALECT_NAMES[d]} turn {i} is a ROLLBACK after the COMMIT: SQLAlchemy's pool resets the "
                    "connection on return (it skips that only when the Connection is closed inside its "
                    "transaction); PyMySQL sends it to the server although nothing is open (psycopg does not)."
                )
    return out


# --- lookups -------------------------------------------------------------------------------

ITEMS_ARN = "arn:aws:sqs:ap-northeast-1:123456789012:order_items-sync.fifo"


def lookup_registries() -> dict[str, Registry]:
    """The bundled mappings' registry generated twice: order_items.order_pk looked up from
    orders.id with when_missing "retry" (the form that also checks the row exists), and
    "plain", without the column."""
    import re
    import shutil
    import tempfile

    from generator.emit.registry import registry as emit_registry
    from generator.load import load
    from runtime.registry import parse_registry

    out = {}
    block = re.compile(r"        order_pk:\n(?:          .*\n)+")
    for name in ("plain", "lookup"):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            shutil.copytree(ROOT / "mappings", root / "mappings", ignore=shutil.ignore_patterns("tests"))
            shutil.copy(ROOT / "project.yaml", root / "project.yaml")
            path = root / "mappings" / "order_items.yaml"
            text = path.read_text()
            if name == "plain":
                text, n = block.subn("", text)
            else:
                text, n = re.subn(r'when_missing: "null"', 'when_missing: "retry"', text)
            assert n == 1, name
            path.write_text(text)
            loaded = load(root)
            assert loaded.model is not None
            out[name] = parse_registry(emit_registry(loaded.model))
    return out


def item_batches(tag: str, n_batches: int, n_orders: int) -> list[list[dict]]:
    """Batches of 10 new order lines (INSERT), one order per message group, every order there."""
    batches = []
    for b in range(n_batches):
        batch = []
        for j in range(10):
            i = b * 10 + j
            oid, line = f"o-{i % n_orders:06d}", i // n_orders + 1
            event_id = f"{tag}-{i:07d}"
            body = json.dumps(
                {
                    "eventID": event_id,
                    "eventName": "INSERT",
                    "changedAt": 1700000000,
                    "orderID": oid,
                    "lineNo": str(line),
                    "sku": {"S": "SKU-1"},
                    "quantity": "2",
                    "unitPrice": "10.50",
                    "options": {"gift": {"BOOL": True}},
                    "rev": "1",
                    "oldRev": "",
                }
            )
            batch.append(
                {
                    "messageId": f"{tag}-msg-{i:07d}",
                    "receiptHandle": f"rh-{tag}-{i}",
                    "body": body,
                    "attributes": {
                        "ApproximateReceiveCount": "1",
                        "SentTimestamp": "1700000000250",
                        "SequenceNumber": str(10**19 + i),
                        "MessageGroupId": oid,
                        "SenderId": "AROAEXAMPLE:pipes-items",
                        "MessageDeduplicationId": event_id,
                        "ApproximateFirstReceiveTimestamp": "1700000000290",
                    },
                    "messageAttributes": {},
                    "md5OfBody": "0" * 32,
                    "eventSource": "aws:sqs",
                    "eventSourceARN": ITEMS_ARN,
                    "awsRegion": "ap-northeast-1",
                }
            )
        batches.append(batch)
    return batches


def _fresh_items(url: str, md: sqlalchemy.MetaData, n_orders: int) -> None:
    """The tables afresh, every order there (the parents the lines look up)."""
    fresh_tables(url, md)
    eng = admin_engine(url)
    with eng.begin() as c:
        c.execute(md.tables["orders"].insert(), [{"order_id": f"o-{i:06d}"} for i in range(n_orders)])
    eng.dispose()


def lookups(args: argparse.Namespace, dialect: str, url: str) -> dict:
    """order_items batches with and without the order_pk lookup, same run: round trips per
    batch counted by the TCP proxy, and events per second (median of --reps, alternating)."""
    regs = lookup_registries()
    md = build_metadata(regs["lookup"])
    n_orders, n_batches = 500, max(10, args.lookup_events // 10)
    out: dict[str, Any] = {"events": n_batches * 10, "orders": n_orders, "turns": {}, "runs": {}}
    u = make_url(url)
    port = u.port or (5432 if dialect == "postgresql" else 3306)
    for name, registry in regs.items():
        _fresh_items(url, md, n_orders)
        batches = item_batches(f"turns-{name}", 10 + args.turn_batches, n_orders)
        with TurnCounter(u.host or "127.0.0.1", port) as proxy:
            engine = make_engine(u.set(host="127.0.0.1", port=proxy.port))
            for b in batches[:10]:  # connect, compile, prepare
                apply_batch(b, engine, registry)
            per_batch, paths, failures = [], Counter(), 0
            for b in batches[10:]:
                before = proxy.snapshot()["turns"]
                r = apply_batch(b, engine, registry)
                per_batch.append(proxy.snapshot()["turns"] - before)
                paths[r.path] += 1
                failures += len(r.response()["batchItemFailures"])
            engine.dispose()
        out["turns"][name] = {
            "mean": sum(per_batch) / len(per_batch),
            "min": min(per_batch),
            "max": max(per_batch),
            "paths": dict(paths),
            "failures": failures,
        }
    for rep in range(args.reps):
        for name in ("plain", "lookup") if rep % 2 == 0 else ("lookup", "plain"):
            _fresh_items(url, md, n_orders)
            res = run_runtime(url, regs[name], item_batches(f"tp{rep}-{name}", n_batches, n_orders))
            assert res["failures"] == 0, res
            out["runs"].setdefault(name, []).append(out["events"] / res["elapsed"])
    eng = admin_engine(url)
    with eng.connect() as c:
        missing = c.execute(text("SELECT COUNT(*) FROM order_items WHERE order_pk IS NULL")).scalar()
        wrong = c.execute(
            text(
                "SELECT COUNT(*) FROM order_items i JOIN orders o ON o.order_id = i.order_id "
                "WHERE i.order_pk <> o.id"
            )
        ).scalar()
    eng.dispose()
    out["checked"] = {"lines_without_order_pk": missing, "lines_with_a_wrong_order_pk": wrong}
    out["eps"] = {name: median(v) for name, v in out["runs"].items()}
    out["ratio"] = out["eps"]["lookup"] / out["eps"]["plain"]
    log(
        f"{dialect} lookups: turns/batch plain {out['turns']['plain']['mean']:.2f}, "
        f"lookup {out['turns']['lookup']['mean']:.2f}; events/s plain {out['eps']['plain']:.0f}, "
        f"lookup {out['eps']['lookup']:.0f} ({out['ratio']:.2f}x); {out['checked']}"
    )
    return out


def render_lookups(cmd: str, env: dict[str, str], res: dict[str, dict]) -> str:
    lines = [
        "# Runtime benchmark: lookups",
        "",
        f"Command: `{cmd}`",
        "",
        "Batches of 10 new order_items lines, each of its own order (all orders present), applied "
        "with the order_pk lookup (when_missing retry: the form that also checks the order exists) "
        "and without the column (plain), same run, fresh tables for each run.",
        "",
        "| database | mapping | round trips per batch (proxy: mean, min-max) | events/s (median) | runs |",
        "|---|---|---|---|---|",
    ]
    for dialect, r in res.items():
        for name in ("plain", "lookup"):
            t = r["turns"][name]
            runs = ", ".join(f"{x:.0f}" for x in r["runs"][name])
            lines.append(
                f"| {DIALECT_NAMES[dialect]} | {name} | {t['mean']:.2f} ({t['min']}-{t['max']}) "
                f"| {r['eps'][name]:.0f} | {runs} |"
            )
        lines.append(f"| {DIALECT_NAMES[dialect]} | lookup / plain | | {r['ratio']:.2f}x | |")
    lines += [
        "",
        "Checks after the last run: " + "; ".join(f"{d}: {r['checked']}" for d, r in res.items()),
        "",
    ]
    lines += [f"- {k}: {v}" for k, v in env.items()]
    return "\n".join(lines) + "\n"


# --- main ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--dialects", default="postgresql,mysql")
    ap.add_argument("--out", default="benchmarks/results/runtime.md")
    ap.add_argument("--reps", type=int, default=5, help="runs per handler and cell (median reported)")
    ap.add_argument("--pg-url", default=os.environ.get("BENCH_POSTGRES_URL", DEFAULT_URLS["postgresql"]))
    ap.add_argument("--mysql-url", default=os.environ.get("BENCH_MYSQL_URL", DEFAULT_URLS["mysql"]))
    ap.add_argument("--turn-batches", type=int, default=50)
    ap.add_argument("--cold-runs", type=int, default=15)
    ap.add_argument("--no-seeded", action="store_true", help="skip the pre-filled-tables variant")
    ap.add_argument("--latency-events", type=int, default=3000, help="events per run through the delay proxy")
    ap.add_argument("--latency-reps", type=int, default=3, help="runs per handler and delay (median)")
    ap.add_argument(
        "--latency-delays-ms",
        default="0,0.25,0.5",
        help="one-way holds D of the delay proxy (0 = the proxy alone, as a reference)",
    )
    ap.add_argument(
        "--sections",
        default="throughput,turns,latency,cold,memory,phases",
        help="comma-separated subset of throughput,turns,latency,cold,memory,phases; or lookups alone "
        "(order_items with and without its order_pk lookup, written to --out)",
    )
    ap.add_argument("--lookup-events", type=int, default=2000, help="events per run of the lookups section")
    ap.add_argument("--child", choices=["memory", "imports"], help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--modules-file", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    os.chdir(ROOT)
    if args.child == "memory":
        child_memory(args)
        return 0
    if args.child == "imports":
        child_imports(args)
        return 0

    dialects = [d.strip() for d in args.dialects.split(",") if d.strip()]
    for d in dialects:
        if d not in DEFAULT_URLS:
            ap.error(f"unknown dialect {d!r} (postgresql, mysql)")
    sections = {s.strip() for s in args.sections.split(",")}
    urls = {d: args.pg_url if d == "postgresql" else args.mysql_url for d in dialects}
    for url in urls.values():
        ensure_database(url)
    if sections == {"lookups"}:
        cmd = "python benchmarks/runtime_bench.py " + " ".join(sys.argv[1:] if argv is None else argv)
        res = {d: lookups(args, d, urls[d]) for d in dialects}
        out = ROOT / args.out
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(render_lookups(cmd.strip(), environment(urls), res))
        log(f"wrote {out}")
        return 0
    registry = load_registry(REGISTRY_PATH)
    wl = generate(args.events)
    cmd = "python benchmarks/runtime_bench.py " + " ".join(sys.argv[1:] if argv is None else argv)
    r: dict[str, Any] = {
        "command": cmd.strip(),
        "env": environment(urls),
        "workload": {
            "events": len(wl.events),
            "orders": wl.n_orders,
            "seed": wl.seed,
            "window": 24,
            "stats": wl.group_stats(),
        },
    }
    log(f"workload: {r['workload']}")
    if "throughput" in sections:
        r["throughput"] = {d: throughput(args, d, urls[d], registry, wl) for d in dialects}
    if "turns" in sections:
        r["turns"] = {d: round_trips(args, d, urls[d], registry, wl) for d in dialects}
    if "latency" in sections:
        r["latency"] = {d: latency_throughput(args, d, urls[d], registry) for d in dialects}
    if "cold" in sections:
        r["cold"] = cold_start(args, args.pg_url)
    if "memory" in sections:
        r["memory"] = {d: memory(args, d, urls[d]) for d in dialects}
    if "phases" in sections:
        r["phases"] = {}
        for d in dialects:
            for variant in ["fresh"] + ([] if args.no_seeded else ["seeded"]):
                cell = f"{DIALECT_NAMES[d]} {variant}"
                log(f"phases: {cell}")
                r["phases"][cell] = phases(d, urls[d], registry, wl, variant == "seeded")
    r["load_end"] = loadavg()
    r["pressure_end"] = pressure()
    r["runtime_end"] = runtime_digest()
    r["registry_end"] = registry_digest()
    r["notes"] = notes(r)
    out = ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(args, r))
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
