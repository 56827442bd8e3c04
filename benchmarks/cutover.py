"""The cutover's costs, each against a baseline measured in the same run (`make bench-cutover`).

1. Rollback's reverse transcoding (PostgreSQL rows -> SqliteSaver rows, moved and verified in batches by
   ``jobs.rollback``) on the rich shape of benchmarks/rich_workload.py, against the naive copy
   ``PostgresSaver.list(None)`` -> ``SqliteSaver.put`` + ``put_writes`` into a fresh file (no verify);
   and the forward ramp (``jobs.ramp`` to 100%) beside it.
2. The app during a ramp 10 -> 50 -> 100: two writer processes on RoutingSaver running turns of a small
   graph; each turn's latency before the ramp and during it (p50/p99), and how long writes waited for
   their thread's move (p50/p99/max).
3. Connection pooling: ``SELECT 1`` through a psycopg_pool connection against a fresh connection per
   operation; and the app's turn (put + put_writes) through RoutingSaver at weight 100 (guards on) and
   after the cutover completed, against a bare PostgresSaver on the same pool.

    python benchmarks/cutover.py [--threads 500] [--app-threads 600]
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import closing
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def scratch_db(admin, name: str) -> str:
    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.execute(f'CREATE DATABASE "{name}"')
    return ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"


def counter_graph(checkpointer):
    from include.sample_agent.counter import build_counter

    return build_counter(checkpointer)


def naive_reverse(dsn: str, out: Path) -> dict:
    """Every CheckpointTuple of PostgresSaver.list(None) into SqliteSaver.put, its writes into put_writes."""
    from langgraph.checkpoint.postgres import PostgresSaver
    from langgraph.checkpoint.sqlite import SqliteSaver

    logging.getLogger("langgraph").setLevel(logging.ERROR)
    with PostgresSaver.from_conn_string(dsn) as post, closing(sqlite3.connect(str(out), check_same_thread=False)) as c:
        lite = SqliteSaver(c)
        lite.setup()
        with post.conn.cursor() as cur:
            cur.execute("SELECT DISTINCT thread_id, checkpoint_ns, checkpoint_id, task_id, task_path FROM checkpoint_writes")
            paths = {(r["thread_id"], r["checkpoint_ns"], r["checkpoint_id"], r["task_id"]): r["task_path"] for r in cur}
        started = time.perf_counter()
        n = writes = 0
        for tup in post.list(None):
            conf = tup.config["configurable"]
            cfg = tup.parent_config or {"configurable": {"thread_id": conf["thread_id"],
                                                         "checkpoint_ns": conf["checkpoint_ns"]}}
            lite.put(cfg, tup.checkpoint, tup.metadata, tup.checkpoint["channel_versions"])
            by_task: dict[str, list] = {}
            for task_id, channel, value in tup.pending_writes or []:
                by_task.setdefault(task_id, []).append((channel, value))
            for task_id, ws in by_task.items():
                lite.put_writes(tup.config, ws, task_id,
                                paths.get((conf["thread_id"], conf["checkpoint_ns"], conf["checkpoint_id"], task_id), ""))
                writes += len(ws)
            n += 1
        return {"checkpoints": n, "writes": writes, "seconds": time.perf_counter() - started}


def part_reverse(admin, work: Path, threads: int) -> None:
    from langgraph.checkpoint.postgres import PostgresSaver

    from include.checkpoint_core.cutover import jobs
    from include.checkpoint_core.postgres_store import connect_postgres
    from rich_workload import build_rich_source, describe

    src = build_rich_source(threads, quiet=False)
    blue_path = work / "rich.sqlite"
    shutil.copyfile(src, blue_path)
    info = describe(blue_path)
    dsn = scratch_db(admin, "cpo_bench_cutover_rich")
    with PostgresSaver.from_conn_string(dsn) as s:
        s.setup()
    with closing(connect_postgres(dsn)) as pg, closing(jobs.connect_blue(blue_path)) as blue:
        jobs.prepare(pg, blue, str(blue_path), "bench", settle_s=0, log=lambda m: None)
        fwd = jobs.ramp(pg, blue, 100, batch_threads=jobs.DEFAULT_BATCH_THREADS, log=lambda m: None)
        assert not fwd["refused"], fwd["refused"]
        naive = naive_reverse(dsn, work / "naive.sqlite")
        back = jobs.rollback(pg, blue, batch_threads=jobs.DEFAULT_BATCH_THREADS, log=lambda m: None)
        assert not back["refused"] and back["moved"] == info["threads"], back
    print(f"\n1. rollback's reverse transcoding, rich shape: {info['threads']:,} threads, {info['checkpoints']:,} "
          f"checkpoints, {info['writes']:,} writes, {info['size_mb']:.0f} MB")
    rate = lambda cp, s: cp / s if s else float("nan")  # noqa: E731
    print(f"   naive list -> put copy (no verify)      : {naive['checkpoints']:>7,} checkpoints in {naive['seconds']:7.2f} s"
          f" = {rate(naive['checkpoints'], naive['seconds']):>8,.0f} checkpoints/s")
    print(f"   rollback (move + verify, batches of 20)  : {back['checkpoints']:>7,} checkpoints in {back['seconds']:7.2f} s"
          f" = {rate(back['checkpoints'], back['seconds']):>8,.0f} checkpoints/s"
          f"   ratio {naive['seconds'] / back['seconds']:.2f}x the naive copy")
    print(f"   forward ramp to 100% (move + verify)     : {fwd['checkpoints']:>7,} checkpoints in {fwd['seconds']:7.2f} s"
          f" = {rate(fwd['checkpoints'], fwd['seconds']):>8,.0f} checkpoints/s")
    print(f"   batch unwritable time, forward p50 {fwd['batch_seconds_p50'] * 1000:.0f} ms p99 "
          f"{fwd['batch_seconds_p99'] * 1000:.0f} ms; rollback p50 {back['batch_seconds_p50'] * 1000:.0f} ms p99 "
          f"{back['batch_seconds_p99'] * 1000:.0f} ms")
    admin.execute('DROP DATABASE IF EXISTS "cpo_bench_cutover_rich" WITH (FORCE)')


def writer(blue_path: str, dsn: str, thread_ids: list[str], stop, out) -> None:
    """A writer process: turns on random threads of its own until ``stop`` is set; (start, seconds) per turn."""
    import random

    from langgraph.checkpoint.postgres import PostgresSaver
    from langgraph.checkpoint.sqlite import SqliteSaver

    from include.checkpoint_core.cutover.saver import RoutingSaver
    from include.checkpoint_core.postgres_store import open_postgres_pool

    pool = open_postgres_pool(dsn, max_size=3)
    conn = sqlite3.connect(blue_path, check_same_thread=False, timeout=30)
    saver = RoutingSaver(SqliteSaver(conn), PostgresSaver(pool), pool)
    graph = counter_graph(saver)
    rng, turns = random.Random(thread_ids[0]), []
    while not stop.is_set():
        tid = rng.choice(thread_ids)
        t0 = time.time()
        graph.invoke({}, {"configurable": {"thread_id": tid}})
        turns.append((t0, time.time() - t0))
        time.sleep(0.002)
    out.put({"turns": turns, "waits": list(saver.flip_waits)})
    pool.close()


def part_ramp(admin, work: Path, n_threads: int) -> None:
    from langgraph.checkpoint.postgres import PostgresSaver
    from langgraph.checkpoint.sqlite import SqliteSaver

    from include.checkpoint_core.cutover import jobs
    from include.checkpoint_core.postgres_store import connect_postgres

    blue_path = work / "app.sqlite"
    with closing(sqlite3.connect(str(blue_path), check_same_thread=False)) as conn:
        g = counter_graph(SqliteSaver(conn))
        ids = [f"app-{i:05d}" for i in range(n_threads)]
        for tid in ids:
            for _ in range(3):
                g.invoke({}, {"configurable": {"thread_id": tid}})
    dsn = scratch_db(admin, "cpo_bench_cutover_app")
    with PostgresSaver.from_conn_string(dsn) as s:
        s.setup()
    with closing(connect_postgres(dsn)) as pg, closing(jobs.connect_blue(blue_path)) as blue:
        jobs.prepare(pg, blue, str(blue_path), "bench", settle_s=0, log=lambda m: None)
        ctx = mp.get_context("spawn")
        q, stop = ctx.Queue(), ctx.Event()
        before_s, after_s = 6.0, 3.0
        ramp_start = time.time() + before_s + 3  # the writers start up in ~2-3 s
        procs = [ctx.Process(target=writer, args=(str(blue_path), dsn, ids[k::2], stop, q)) for k in (0, 1)]
        for p in procs:
            p.start()
        time.sleep(max(0.0, ramp_start - time.time()))
        t0 = time.time()
        steps = [jobs.ramp(pg, blue, w, batch_threads=jobs.DEFAULT_BATCH_THREADS, log=lambda m: None) for w in (10, 50, 100)]
        ramp_end = time.time()
        time.sleep(after_s)
        stop.set()
    results = [q.get(timeout=180) for _ in procs]
    for p in procs:
        p.join(30)
    turns = [t for r in results for t in r["turns"]]
    waits = [w for r in results for w in r["waits"]]
    before = [d for s, d in turns if ramp_start - before_s <= s < t0]
    during = [d for s, d in turns if t0 <= s < ramp_end]
    moved = sum(s["moved"] for s in steps)
    print(f"\n2. the app during a ramp 10 -> 50 -> 100 ({n_threads:,} threads x 3 turns, two writer processes; "
          f"the ramp moved {moved:,} threads in {ramp_end - t0:.1f} s)")
    print(f"   turn (put + put_writes x2) before the ramp: p50 {pct(before, .5) * 1000:6.2f} ms  p99 "
          f"{pct(before, .99) * 1000:7.2f} ms  ({len(before):,} turns)")
    print(f"   turn during the ramp                      : p50 {pct(during, .5) * 1000:6.2f} ms  p99 "
          f"{pct(during, .99) * 1000:7.2f} ms  ({len(during):,} turns)")
    print(f"   p99 ratio during/before: {pct(during, .99) / pct(before, .99):.2f}x")
    print(f"   writes that waited for their thread's move: {len(waits):,}; wait p50 {pct(waits, .5) * 1000:.0f} ms, "
          f"p99 {pct(waits, .99) * 1000:.0f} ms, max {max(waits, default=0) * 1000:.0f} ms")
    admin.execute('DROP DATABASE IF EXISTS "cpo_bench_cutover_app" WITH (FORCE)')


def part_pool_and_overhead(admin, work: Path) -> None:
    import psycopg
    from langgraph.checkpoint.postgres import PostgresSaver
    from langgraph.checkpoint.sqlite import SqliteSaver

    from include.checkpoint_core.cutover import jobs, routes
    from include.checkpoint_core.cutover.saver import RoutingSaver
    from include.checkpoint_core.postgres_store import connect_postgres, open_postgres_pool

    dsn = scratch_db(admin, "cpo_bench_cutover_pool")
    pool = open_postgres_pool(dsn, max_size=4)
    n = 400
    t = time.perf_counter()
    for _ in range(n):
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute("SELECT 1")
    fresh = (time.perf_counter() - t) / n
    t = time.perf_counter()
    for _ in range(n):
        with pool.connection() as c:
            c.execute("SELECT 1")
    pooled = (time.perf_counter() - t) / n
    print(f"\n3. connection pooling: SELECT 1 with a fresh connection {fresh * 1000:.2f} ms, through psycopg_pool "
          f"{pooled * 1000:.3f} ms: {fresh / pooled:.0f}x")
    green = PostgresSaver(pool)
    green.setup()
    blue_path = work / "overhead.sqlite"
    conn = sqlite3.connect(str(blue_path), check_same_thread=False)
    blue = SqliteSaver(conn)
    blue.setup()
    def turns(saver, label: str, rounds: int = 3, threads: int = 60, per: int = 4) -> float:
        g = counter_graph(saver)
        best = float("inf")
        for r in range(rounds):
            ids = [f"{label}-{r}-{i}-{uuid.uuid4().hex[:4]}" for i in range(threads)]
            t0 = time.perf_counter()
            for tid in ids:
                for _ in range(per):
                    g.invoke({}, {"configurable": {"thread_id": tid}})
            best = min(best, (time.perf_counter() - t0) / (threads * per))
        return best

    bare = turns(green, "bare")  # before the cutover's guards exist: a plain PostgresSaver app
    with closing(connect_postgres(dsn)) as pg, closing(jobs.connect_blue(blue_path)) as b:
        jobs.prepare(pg, b, str(blue_path), "bench", settle_s=0, log=lambda m: None)
        routes.set_weight(pg, 100)
        routed = turns(RoutingSaver(blue, green, pool), "routed")
        jobs.decommission(pg, b, blue_path, log=lambda m: None)
        done = turns(RoutingSaver(blue, green, pool), "done")
    print("   the app's turn (put + 2 put_writes + get_tuple), best of 3 rounds of 240 turns:")
    print(f"     bare PostgresSaver (pool)                 {bare * 1000:6.2f} ms  1.00x")
    print(f"     RoutingSaver at 100%, guards on           {routed * 1000:6.2f} ms  {routed / bare:.2f}x")
    print(f"     RoutingSaver after the cutover completed  {done * 1000:6.2f} ms  {done / bare:.2f}x")
    pool.close()
    conn.close()
    admin.execute('DROP DATABASE IF EXISTS "cpo_bench_cutover_pool" WITH (FORCE)')


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=500, help="rich-shape threads for part 1")
    ap.add_argument("--app-threads", type=int, default=600, help="threads the writers use in part 2")
    ap.add_argument("--parts", default="1,2,3")
    args = ap.parse_args(argv)
    import psycopg

    with tempfile.TemporaryDirectory(prefix="cpo-bench-cutover-") as tmp, \
            closing(psycopg.connect(ADMIN_DSN, autocommit=True)) as admin:
        work = Path(tmp)
        parts = set(args.parts.split(","))
        if "1" in parts:
            part_reverse(admin, work, args.threads)
        if "2" in parts:
            part_ramp(admin, work, args.app_threads)
        if "3" in parts:
            part_pool_and_overhead(admin, work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
