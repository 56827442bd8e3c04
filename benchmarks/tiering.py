"""Tiering benchmark: demotion throughput against a naive copy, the app's write latency during a
run, and read latency per tier. Every ratio is against a baseline measured in the same run.

    python benchmarks/tiering.py [--threads 300] [--busy 16] [--seconds 6]

Data: ``--threads`` threads of the rich shape (benchmarks/rich_workload.py: 17 channels, two
levels of subgraphs, Send fan-out, paused and failed threads, custom classes, a few 2 MB values),
written by real graphs through TieredSaver into a redis-server of the benchmark's own (a free
port) and a scratch PostgreSQL database.

1. Demotion, hot -> cold, checkpoints/s: the naive copy (``list`` every checkpoint of the thread
   from the hot saver, ``put`` + ``put_writes`` each into PostgresSaver, no verification, no
   delete) against ``checkpoint_tiering``'s move (copy as rows, verify row by row, fence, delete).
2. The app's write latency (``put`` + ``put_writes`` of one step, P50/P99) on hot threads, from a
   separate process, while idle and while a demotion run moves the other threads.
3. ``get_tuple`` latency of a hot, a cold and an archived thread, first and second read (the
   archive tier is a local folder here; S3 adds its round trip to the first read).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from scratch_db import create_db, drop_db  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis() -> tuple[subprocess.Popen, str]:
    import redis

    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server is needed: make tools (Debian package redis-server)")
    port = _free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(100):
        try:
            redis.Redis.from_url(url).ping()
            return proc, url
        except redis.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("redis-server did not start")


def open_tiered(redis_url: str, dsn: str, archive_root: str):
    from include.checkpoint_core.postgres_store import open_postgres_pool
    from include.checkpoint_core.tiering.archive import LocalArchive
    from include.checkpoint_core.tiering.hot import RedisRowSaver
    from include.checkpoint_core.tiering.saver import TieredSaver

    return TieredSaver(RedisRowSaver.from_url(redis_url), open_postgres_pool(dsn, max_size=4), LocalArchive(archive_root))


def populate(saver, indices: range, seed: int = 11) -> list[str]:
    import rich_workload as rw

    graph = rw.build_graph(saver)
    ids = []
    for i in indices:
        plan = rw.thread_plan(i, seed)
        rw.run_thread(graph, plan, seed)
        ids.append(plan.tid)
    return ids


def naive_copy(saver, dsn: str, thread_ids: list[str]) -> tuple[int, float]:
    """list -> put / put_writes into PostgresSaver: the copy a user writes with the public API."""
    from langgraph.checkpoint.postgres import PostgresSaver

    count = 0
    started = time.perf_counter()
    with PostgresSaver.from_conn_string(dsn) as pg:
        pg.setup()
        for tid in thread_ids:
            for t in reversed(list(saver.hot.list({"configurable": {"thread_id": tid}}))):
                conf = t.parent_config or {"configurable": {"thread_id": tid,
                                                           "checkpoint_ns": t.config["configurable"]["checkpoint_ns"]}}
                stored = pg.put(conf, t.checkpoint, t.metadata, t.checkpoint["channel_versions"])
                by_task = defaultdict(list)
                for task_id, channel, value in t.pending_writes or []:
                    by_task[task_id].append((channel, value))
                for task_id, writes in by_task.items():
                    pg.put_writes(stored, writes, task_id)
                count += 1
    return count, time.perf_counter() - started


def demote(saver, thread_ids: list[str]) -> dict:
    from include.checkpoint_core.tiering import jobs, moves

    with saver.pool.connection() as conn:
        return jobs.run_moves("demote", thread_ids, lambda group: moves.demote_group(conn, saver.hot, group),
                              log=lambda m: None)


def _writer(redis_url: str, dsn: str, archive_root: str, thread_ids: list[str], seconds: float, out) -> None:
    """The app: one step (put + put_writes) after another on hot threads; latencies in ms."""
    sys.path[:0] = [str(ROOT)]
    from langgraph.checkpoint.base import empty_checkpoint

    saver = open_tiered(redis_url, dsn, archive_root)
    lat, n, deadline = [], 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        tid = thread_ids[n % len(thread_ids)]
        started = time.perf_counter()
        latest = saver.get_tuple({"configurable": {"thread_id": tid, "checkpoint_ns": ""}})
        read = time.perf_counter()
        cp = empty_checkpoint()
        cp["channel_values"] = {"messages": [f"turn {n} " * 20] * 8, "step": n}
        version = saver.get_next_version(None, None)
        cp["channel_versions"] = {"messages": version, "step": version}
        conf = {"configurable": {"thread_id": tid, "checkpoint_ns": "",
                                 **({"checkpoint_id": latest.config["configurable"]["checkpoint_id"]} if latest else {})}}
        stored = saver.put(conf, cp, {"step": n, "source": "loop"}, cp["channel_versions"])
        saver.put_writes(stored, [("messages", f"w{n}")], task_id=f"t{n}")
        lat.append((time.perf_counter() - read) * 1000)
        n += 1
        time.sleep(0.002)
        del started
    out.put(lat)


def write_latency(args, redis_url, dsn, archive_root, busy, during=None) -> list[float]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_writer, args=(redis_url, dsn, archive_root, busy, args.seconds, q))
    p.start()
    extra = None
    if during is not None:
        time.sleep(0.5)
        extra = during()
    lat = q.get()
    p.join()
    return lat if extra is None else (lat, extra)


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def read_latency(redis_url, dsn, archive_root, thread_ids: list[str]) -> tuple[float, float]:
    """Median ms of the first and the second get_tuple of each thread, from a new saver (cold caches)."""
    saver = open_tiered(redis_url, dsn, archive_root)
    first, second = [], []
    for tid in thread_ids:
        config = {"configurable": {"thread_id": tid, "checkpoint_ns": ""}}
        for bucket in (first, second):
            started = time.perf_counter()
            assert saver.get_tuple(config) is not None
            bucket.append((time.perf_counter() - started) * 1000)
    saver.pool.close()
    return statistics.median(first), statistics.median(second)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=300, help="rich-shape threads to tier")
    parser.add_argument("--busy", type=int, default=16, help="hot threads the app keeps writing to")
    parser.add_argument("--seconds", type=float, default=6.0, help="how long each write-latency window runs")
    args = parser.parse_args(argv)
    import logging

    logging.getLogger("langgraph.checkpoint.serde.jsonplus").setLevel(logging.ERROR)  # the naive copy decodes

    from include.checkpoint_core.tiering import moves

    redis_proc, redis_url = start_redis()
    dsn, naive_dsn = create_db("tier"), create_db("tier_naive")
    archive_root = tempfile.mkdtemp(prefix="cpo-archive-")
    try:
        saver = open_tiered(redis_url, dsn, archive_root)
        saver.setup()
        t0 = time.perf_counter()
        ids = populate(saver, range(args.threads))
        busy = populate(saver, range(args.threads, args.threads + args.busy))
        written = time.perf_counter() - t0
        rows = sum(len(saver.hot.export_thread(t).rows.checkpoints) for t in ids)
        print(f"workload: {len(ids)} rich threads, {rows:,} checkpoints written through TieredSaver in "
              f"{written:.1f} s; {len(busy)} busy threads; load {os.getloadavg()[0]:.2f}")

        count, naive_s = naive_copy(saver, naive_dsn, ids)
        ours = demote(saver, ids)
        assert ours["outcomes"] == {"moved": len(ids)}, ours["outcomes"]
        assert ours["checkpoints"] == count
        naive_rate, our_rate = count / naive_s, ours["checkpoints"] / ours["seconds"]
        print("\n1. demotion hot -> cold")
        print(f"   naive list -> put copy : {count:,} checkpoints in {naive_s:6.2f} s = {naive_rate:8,.0f} checkpoints/s")
        print(f"   checkpoint_tiering move: {ours['checkpoints']:,} checkpoints in {ours['seconds']:6.2f} s = "
              f"{our_rate:8,.0f} checkpoints/s  (copy + row-level verify + fenced delete)")
        print(f"   ratio: {our_rate / naive_rate:.2f}x the naive copy")

        # Bring the population back hot (promotion, timed too), then demote it again while the app writes.
        started = time.perf_counter()
        with saver.pool.connection() as conn:
            for tid in ids:
                moves.promote(conn, saver.hot, saver.archive, tid)
        promote_s = time.perf_counter() - started
        idle = write_latency(args, redis_url, dsn, archive_root, busy)
        during, moved = write_latency(args, redis_url, dsn, archive_root, busy, during=lambda: demote(saver, ids))
        print(f"\n2. the app's write (put + put_writes) on {len(busy)} hot threads, from another process")
        print(f"   idle          : p50 {pct(idle, 50):6.2f} ms  p99 {pct(idle, 99):6.2f} ms  ({len(idle)} writes)")
        print(f"   during demote : p50 {pct(during, 50):6.2f} ms  p99 {pct(during, 99):6.2f} ms  ({len(during)} "
              f"writes; demotion moved {moved['checkpoints']:,} checkpoints in {moved['seconds']:.1f} s)")
        print(f"   p99 ratio during/idle: {pct(during, 99) / pct(idle, 99):.2f}x  "
              f"(promotion back to hot before it: {rows / promote_s:,.0f} checkpoints/s)")

        cold_ids, arch_ids = ids[: len(ids) // 2], ids[len(ids) // 2:]
        with saver.pool.connection() as conn:
            for tid in arch_ids:
                assert moves.archive_thread(conn, saver.hot, saver.archive, tid).moved
        sample = 40
        print("\n3. get_tuple (latest checkpoint), median ms over threads, a new saver each tier")
        for name, tids in (("hot", busy), ("cold", cold_ids[:sample]), ("archive", arch_ids[:sample])):
            first, second = read_latency(redis_url, dsn, archive_root, tids[:sample])
            print(f"   {name:<8} first {first:7.2f} ms   second {second:7.2f} ms")
        saver.pool.close()
    finally:
        redis_proc.terminate()
        drop_db(dsn)
        drop_db(naive_dsn)
        shutil.rmtree(archive_root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
