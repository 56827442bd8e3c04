"""An app process during a cutover: RoutingSaver over MeteredSaver(SqliteSaver) and MeteredSaver(PostgresSaver),
running turns of a small graph on shared threads until SIGTERM, its metrics on /metrics.

Every acknowledged write is a JSON line in ``--log``: ``{"put": [thread, ns, checkpoint_id]}`` for each put
that returned, ``{"seen": [thread, n, checkpoint_id]}`` for the state after each turn; failures are
``{"error": ...}``. A turn of a thread holds a PostgreSQL advisory lock, so the same thread is never run by
two processes at once, while its consecutive turns land on different processes (as behind a load
balancer). ``--fail-green-flag``: while that file exists, writes to PostgreSQL fail (an injected breach).

    python -m tests.cutover.app --sqlite F --dsn D --port P --threads T --log L [--new-threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import sys
import threading
import time
from pathlib import Path

from include.sample_agent.counter import build_counter


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sqlite", required=True)
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--threads", required=True, help="file with one thread id per line")
    ap.add_argument("--log", required=True)
    ap.add_argument("--proc", default="app")
    ap.add_argument("--new-threads", type=int, default=0, help="also start this many new threads")
    ap.add_argument("--fail-green-flag", default="")
    ap.add_argument("--pause", type=float, default=0.005)
    args = ap.parse_args(argv)

    import psycopg
    from langgraph.checkpoint.postgres import PostgresSaver
    from langgraph.checkpoint.sqlite import SqliteSaver
    from prometheus_client import start_http_server

    from include.checkpoint_core.cutover.saver import RoutingSaver
    from include.checkpoint_core.delegating_saver import DelegatingSaver
    from include.checkpoint_core.observability.metered import MeteredSaver
    from include.checkpoint_core.postgres_store import open_postgres_pool

    flag = Path(args.fail_green_flag) if args.fail_green_flag else None

    class FailingGreen(DelegatingSaver):
        def _check(self):
            if flag is not None and flag.exists():
                raise psycopg.OperationalError("injected: PostgreSQL is failing writes")

        def put(self, *a, **k):
            self._check()
            return super().put(*a, **k)

        def put_writes(self, *a, **k):
            self._check()
            return super().put_writes(*a, **k)

    out = open(args.log, "a", buffering=1)
    out_lock = threading.Lock()

    def record(item: dict) -> None:
        with out_lock:
            out.write(json.dumps(item) + "\n")

    class Acking(RoutingSaver):
        def put(self, config, checkpoint, metadata, new_versions):
            result = super().put(config, checkpoint, metadata, new_versions)
            c = result["configurable"]
            record({"put": [c["thread_id"], c["checkpoint_ns"], c["checkpoint_id"]], "t": time.time()})
            return result

    pool = open_postgres_pool(args.dsn, max_size=4)
    conn = sqlite3.connect(args.sqlite, check_same_thread=False, timeout=30)
    blue = MeteredSaver(SqliteSaver(conn))
    green = MeteredSaver(FailingGreen(PostgresSaver(pool)))
    saver = Acking(blue, green, pool, wait_timeout_s=60)
    graph = build_counter(saver, args.proc)
    threads = [t for t in Path(args.threads).read_text().split() if t]
    threads += [f"new-{args.proc}-{i}" for i in range(args.new_threads)]
    locks = psycopg.connect(args.dsn, autocommit=True)
    start_http_server(args.port, addr="127.0.0.1")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("ready", flush=True)
    rng = random.Random(f"{args.proc}-{os.getpid()}")
    turns = errors = 0
    while not stop.is_set():
        tid = rng.choice(threads)
        if not locks.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (tid,)).fetchone()[0]:
            continue
        try:
            config = {"configurable": {"thread_id": tid}}
            state = graph.invoke({}, config)
            snap = saver.get_tuple(config)
            record({"seen": [tid, state["n"], snap.config["configurable"]["checkpoint_id"]], "t": time.time()})
            turns += 1
        except Exception as exc:  # noqa: BLE001 - an app logs a failed turn and serves the next request
            errors += 1
            record({"error": [tid, f"{type(exc).__name__}: {exc}"[:300]], "t": time.time()})
        finally:
            locks.execute("SELECT pg_advisory_unlock(hashtext(%s))", (tid,))
        time.sleep(args.pause)
    waits = sorted(saver.flip_waits)
    record({"done": {"turns": turns, "errors": errors, "waits": waits}})
    out.close()
    pool.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
