"""Child rows (mappings/invoices.yaml, a table with `each`) against the plain orders mapping on
PostgreSQL, in one run: round trips per batch counted by the TCP proxy (benchmarks/tcpproxy.py,
as runtime_bench.py counts them), and events per second of each, so the ratio is measured under
the same conditions.

    .venv/bin/python benchmarks/children_bench.py [--batches 100] [--lines 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from sqlalchemy.engine import make_url  # noqa: E402
from tcpproxy import TurnCounter  # noqa: E402

from runtime.apply import apply_batch  # noqa: E402
from runtime.config import make_engine  # noqa: E402
from runtime.registry import load_registry  # noqa: E402
from runtime.schema import build_metadata  # noqa: E402
from tests.factories import invoice_record, order_record  # noqa: E402

BATCH = 10


def batches(kind: str, n: int, lines: int, tag: str) -> list[list[dict[str, Any]]]:
    out = []
    for b in range(n):
        if kind == "orders":
            out.append([order_record(f"{tag}-{b}-{i}") for i in range(BATCH)])
        else:
            elements = [{"sku": f"SKU-{j}", "qty": j + 1, "price": "9.99"} for j in range(lines)]
            out.append([invoice_record(f"{tag}-{b}-{i}", elements) for i in range(BATCH)])
    return out


def run(url: str, kind: str, n: int, lines: int, registry: Any) -> dict[str, float]:
    u = make_url(url)
    with TurnCounter(u.host or "127.0.0.1", u.port or 5432) as proxy:
        engine = make_engine(u.set(host="127.0.0.1", port=proxy.port))
        for b in batches(kind, 10, lines, f"warm-{kind}"):  # connect, compile, auto-prepare
            apply_batch(b, engine, registry)
        work = batches(kind, n, lines, f"run-{kind}")
        turns, failed = [], 0
        t0 = time.perf_counter()
        for b in work:
            before = proxy.snapshot()["turns"]
            r = apply_batch(b, engine, registry)
            turns.append(proxy.snapshot()["turns"] - before)
            failed += len(r.response()["batchItemFailures"])
        seconds = time.perf_counter() - t0
        engine.dispose()
    return {
        "turns": sum(turns) / n,
        "min": min(turns),
        "max": max(turns),
        "events_per_s": n * BATCH / seconds,
        "rows_per_s": n * BATCH * (1 + (lines if kind == "invoices" else 0)) / seconds,
        "failed": failed,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="postgresql+psycopg://postgres@127.0.0.1:5432/sync_bench_children")
    ap.add_argument("--batches", type=int, default=100)
    ap.add_argument("--lines", type=int, default=5)
    args = ap.parse_args(argv)
    registry = load_registry(HERE.parent / "build" / "registry.json")
    md = build_metadata(registry)
    from sqlalchemy import create_engine, text

    u = make_url(args.url)
    admin = create_engine(u.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:  # a scratch database of its own: never another run's tables
        if not conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": u.database}).first():
            conn.execute(text(f'CREATE DATABASE "{u.database}"'))
    admin.dispose()
    engine = create_engine(args.url)
    md.drop_all(engine)
    md.create_all(engine)
    engine.dispose()
    results = {}
    for kind in ("orders", "invoices", "orders", "invoices"):  # interleaved: the second pair counts
        results[kind] = run(args.url, kind, args.batches, args.lines, registry)
    o, i = results["orders"], results["invoices"]
    print("| mapping | round trips per batch (min-max) | events/s | rows/s |")
    print("|---|---|---|---|")
    print(
        f"| orders (plain) | {o['turns']:.2f} ({o['min']}-{o['max']}) | {o['events_per_s']:,.0f} | {o['rows_per_s']:,.0f} |"
    )
    print(
        f"| invoices ({args.lines} lines each) | {i['turns']:.2f} ({i['min']}-{i['max']}) | "
        f"{i['events_per_s']:,.0f} | {i['rows_per_s']:,.0f} |"
    )
    print(
        f"ratio invoices/orders events/s: {i['events_per_s'] / o['events_per_s']:.2f}; failures {o['failed'] + i['failed']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
