"""Workload generator CLI.

    python -m include.sample_agent --sqlite checkpoints.sqlite --threads 200 --turns 4 \\
        --interrupted 0.1 --crashed 0.05 --age-days 1:90

Prints a JSON summary (threads, turns, interrupted/crashed counts, age range, rows written).

With ``--metrics-port PORT`` the saver is wrapped in MeteredSaver and its write metrics are served
on ``http://127.0.0.1:PORT/metrics`` (``--metrics-addr`` to change the address, port 0 for a free
one) while the workload runs; ``--linger SECONDS`` keeps serving them after it ends, so a
Prometheus can scrape the final numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import closing

from include.checkpoint_core.errors import CheckpointStoreError
from include.sample_agent.workload import WorkloadSpec, generate


def _age_range(text: str) -> tuple[float, float]:
    lo, _, hi = text.partition(":")
    lo_f, hi_f = float(lo), float(hi or lo)
    if lo_f < 0 or hi_f < lo_f:
        raise argparse.ArgumentTypeError("use MIN:MAX days with 0 <= MIN <= MAX, e.g. 1:90")
    return lo_f, hi_f


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("a fraction between 0 and 1")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m include.sample_agent", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    target = ap.add_mutually_exclusive_group(required=True)
    target.add_argument("--sqlite", metavar="PATH", help="SQLite checkpoint file (created if missing)")
    target.add_argument("--postgres", metavar="DSN", help="PostgreSQL DSN (tables are set up if missing)")
    ap.add_argument("--threads", type=int, default=20)
    ap.add_argument("--turns", type=int, default=3, help="user requests per thread")
    ap.add_argument("--interrupted", type=_fraction, default=0.1, help="fraction of threads left waiting on a human")
    ap.add_argument("--crashed", type=_fraction, default=0.05, help="fraction of threads left crashed with pending writes")
    ap.add_argument("--age-days", type=_age_range, default=(0.0, 0.0), metavar="MIN:MAX",
                    help="spread thread start times over this many days in the past")
    ap.add_argument("--payload-bytes", type=int, default=300, help="research notes per turn (checkpoint bulk)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--thread-prefix", default="thread")
    ap.add_argument("--no-store", action="store_true", help="do not write cross-thread memories to the store")
    ap.add_argument("--metrics-port", type=int, metavar="PORT",
                    help="serve the checkpoint write metrics (MeteredSaver) on this port; 0 picks a free one")
    ap.add_argument("--metrics-addr", default="127.0.0.1", metavar="ADDR", help="address to serve /metrics on")
    ap.add_argument("--linger", type=float, default=0.0, metavar="SECONDS",
                    help="keep serving /metrics this long after the workload ends")
    args = ap.parse_args(argv)
    if args.threads < 1 or args.turns < 1:
        ap.error("--threads and --turns must be at least 1")
    if args.interrupted + args.crashed > 1:
        ap.error("--interrupted plus --crashed cannot exceed 1")
    if args.metrics_port is not None and not 0 <= args.metrics_port <= 65535:
        ap.error("--metrics-port must be between 0 and 65535")
    if args.linger < 0 or (args.linger and args.metrics_port is None):
        ap.error("--linger takes seconds (0 or more) and needs --metrics-port")
    return args


def _progress(done: int, total: int) -> None:
    print(f"  {done}/{total} turns", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    spec = WorkloadSpec(
        threads=args.threads, turns=args.turns, interrupted=args.interrupted, crashed=args.crashed,
        min_age_days=args.age_days[0], max_age_days=args.age_days[1], payload_bytes=args.payload_bytes,
        seed=args.seed, thread_prefix=args.thread_prefix, with_store=not args.no_store,
    )
    try:
        wrap = _serve_metrics(args.metrics_addr, args.metrics_port) if args.metrics_port is not None else None
    except OSError as exc:  # port taken, address not local...
        print(f"error: cannot serve /metrics on {args.metrics_addr}:{args.metrics_port}: {exc}", file=sys.stderr)
        return 2
    try:
        if args.sqlite:
            result, rows = _into_sqlite(args.sqlite, spec, wrap)
        else:
            result, rows = _into_postgres(args.postgres, spec, wrap)
    except (CheckpointStoreError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({**result.summary(), "rows": rows}, indent=2), flush=True)
    if args.linger:
        print(f"workload done; serving metrics for {args.linger:g} more seconds", file=sys.stderr, flush=True)
        time.sleep(args.linger)
    return 0


def _serve_metrics(addr: str, port: int):
    """Start /metrics (a daemon thread, gone when the process ends); return the saver wrapper."""
    from prometheus_client import start_http_server

    from include.checkpoint_core.observability.metered import MeteredSaver

    server, _ = start_http_server(port, addr=addr)
    host = f"[{addr}]" if ":" in addr else addr
    print(f"metrics on http://{host}:{server.server_port}/metrics", file=sys.stderr, flush=True)
    return MeteredSaver


def _into_sqlite(path: str, spec: WorkloadSpec, wrap=None):
    from langgraph.checkpoint.sqlite import SqliteSaver
    from langgraph.store.sqlite import SqliteStore

    from include.checkpoint_core import sqlite_store

    sqlite_store.setup_sqlite(path)
    # SqliteStore manages its own transactions, so it needs its own autocommit connection.
    with closing(sqlite_store.connect_sqlite(path)) as conn, closing(
        sqlite_store.connect_sqlite(path, autocommit=True)
    ) as store_conn:
        store = SqliteStore(store_conn)
        store.setup()
        saver = SqliteSaver(conn)
        result = generate(wrap(saver) if wrap else saver, spec, store, progress=_progress)
        conn.commit()
        rows = sqlite_store.count_rows(conn)
    return result, rows


def _into_postgres(dsn: str, spec: WorkloadSpec, wrap=None):
    from langgraph.checkpoint.postgres import PostgresSaver
    from langgraph.store.postgres import PostgresStore

    from include.checkpoint_core import postgres_store

    postgres_store.setup_postgres(dsn)
    with closing(postgres_store.open_postgres_pool(dsn)) as pool:
        saver = PostgresSaver(pool)
        result = generate(wrap(saver) if wrap else saver, spec, PostgresStore(pool), progress=_progress)
        with pool.connection() as conn:
            rows = postgres_store.count_rows(conn)
    return result, rows


if __name__ == "__main__":
    sys.exit(main())
