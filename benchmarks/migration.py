"""Migration throughput and memory, against baselines measured in the same run.

    make bench-migration                # or: python benchmarks/migration.py [--threads 2000] [--scale 10]

Source: the sample agent's real checkpoints (2K threads x 2 turns by default, cached under
$TMPDIR between runs). On it, in one run and one PostgreSQL server:

- naive:  SqliteSaver.list -> PostgresSaver.put/put_writes, thread by thread (the loop people
          write first; timed on a subset of threads, it is slow);
- floor:  a raw COPY of the same checkpoint rows into a table of the same shape (moving the
          bytes and nothing else: the least any import can cost);
- ours:   export to batch files, then import (transcode + COPY + upsert, one transaction per
          batch), then a full verify (every row's checksum plus CheckpointTuples of 10 threads).

Peak RSS of export+import+verify is measured in a fresh process for the source and for a
source ``--scale`` times larger (threads cloned under new ids), to show memory stays flat.
"""

from __future__ import annotations

import argparse
import json
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from benchmarks.scratch_db import ADMIN_DSN, create_db, drop_db  # noqa: E402


def build_source(threads: int, turns: int) -> Path:
    cache = Path(tempfile.gettempdir()) / f"cpo-bench-source-{threads}x{turns}.sqlite"
    if cache.exists():
        return cache
    print(f"generating the source: {threads} threads x {turns} turns with the sample agent ...", flush=True)
    tmp = cache.with_suffix(".partial")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{tmp}{suffix}").unlink(missing_ok=True)
    subprocess.run([sys.executable, "-m", "include.sample_agent", "--sqlite", str(tmp), "--threads", str(threads),
                    "--turns", str(turns), "--interrupted", "0.1", "--crashed", "0.05", "--payload-bytes", "60",
                    "--age-days", "1:60"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    with closing(sqlite3.connect(tmp)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode=DELETE")
    tmp.replace(cache)
    return cache


def scale_source(src: Path, factor: int) -> Path:
    """``factor`` copies of every thread under new thread ids: same row shapes, more rows."""
    out = src.with_name(src.stem + f"-x{factor}.sqlite")
    if out.exists():
        return out
    print(f"cloning the source x{factor} ...", flush=True)
    tmp = out.with_suffix(".partial")
    tmp.unlink(missing_ok=True)
    with closing(sqlite3.connect(src)) as s, closing(sqlite3.connect(tmp)) as d:
        s.backup(d)
    with closing(sqlite3.connect(tmp)) as conn:
        for k in range(1, factor):
            conn.execute("INSERT INTO checkpoints SELECT thread_id || ?, checkpoint_ns, checkpoint_id, parent_checkpoint_id, "
                         "type, checkpoint, metadata FROM checkpoints WHERE thread_id NOT LIKE '%~%'", (f"~{k}",))
            conn.execute("INSERT INTO writes SELECT thread_id || ?, checkpoint_ns, checkpoint_id, task_id, task_path, idx, "
                         "channel, type, value FROM writes WHERE thread_id NOT LIKE '%~%'", (f"~{k}",))
            conn.commit()
    tmp.replace(out)
    return out


def counts(path: Path) -> dict:
    with closing(sqlite3.connect(path)) as conn:
        return {
            "threads": conn.execute("SELECT COUNT(DISTINCT thread_id) FROM checkpoints").fetchone()[0],
            "checkpoints": conn.execute("SELECT COUNT(*) FROM checkpoints").fetchone()[0],
            "writes": conn.execute("SELECT COUNT(*) FROM writes").fetchone()[0],
            "avg_checkpoint_bytes": int(conn.execute("SELECT AVG(LENGTH(checkpoint)) FROM checkpoints").fetchone()[0]),
        }


def naive(src: Path, dsn: str, threads: int) -> tuple[int, float]:
    """What a first attempt looks like: read tuples through one saver, put them into the other."""
    from langgraph.checkpoint.postgres import PostgresSaver
    from langgraph.checkpoint.sqlite import SqliteSaver

    from include.checkpoint_core.postgres_store import setup_postgres

    setup_postgres(dsn)
    with closing(sqlite3.connect(f"{src.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)) as lite_conn, \
            PostgresSaver.from_conn_string(dsn) as post:
        lite = SqliteSaver(lite_conn)
        lite.is_setup = True
        ids = [r[0] for r in lite_conn.execute("SELECT DISTINCT thread_id FROM checkpoints ORDER BY thread_id LIMIT ?", (threads,))]
        moved = 0
        started = time.perf_counter()
        for tid in ids:
            for tup in reversed(list(lite.list({"configurable": {"thread_id": tid}}))):
                cfg = tup.parent_config or {"configurable": {"thread_id": tid, "checkpoint_ns": tup.config["configurable"]["checkpoint_ns"]}}
                post.put(cfg, tup.checkpoint, tup.metadata, tup.checkpoint["channel_versions"])
                by_task: dict[str, list] = {}
                for task_id, channel, value in tup.pending_writes or []:
                    by_task.setdefault(task_id, []).append((channel, value))
                for task_id, writes in by_task.items():
                    post.put_writes(tup.config, writes, task_id)
                moved += 1
        return moved, time.perf_counter() - started


def copy_floor(src: Path, dsn: str) -> tuple[int, float]:
    import psycopg

    with closing(sqlite3.connect(f"{src.resolve().as_uri()}?mode=ro", uri=True)) as lite, psycopg.connect(dsn) as pg:
        pg.execute("CREATE TABLE raw_checkpoints (thread_id text, checkpoint_ns text, checkpoint_id text, "
                   "parent_checkpoint_id text, type text, checkpoint bytea, metadata text, "
                   "PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id))")
        pg.commit()
        started = time.perf_counter()
        n = 0
        with pg.cursor() as cur, cur.copy("COPY raw_checkpoints FROM STDIN") as copy:
            for row in lite.execute("SELECT thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, type, checkpoint, metadata FROM checkpoints"):
                copy.write_row(row)
                n += 1
        pg.commit()
        return n, time.perf_counter() - started


def ours(src: Path, dsn: str, workdir: Path, *, batch_size: int = 1000) -> dict:
    from include.checkpoint_core.migration import export, load, verify
    from include.checkpoint_core.postgres_store import setup_postgres

    setup_postgres(dsn)
    t = {}
    started = time.perf_counter()
    snap = export.snapshot_into(str(src), workdir, "bench")
    t["snapshot"] = time.perf_counter() - started
    started = time.perf_counter()
    manifest = export.export_batches(workdir / export.SNAPSHOT_FILE, workdir, snap, batch_size=batch_size, include_store=True)
    t["export"] = time.perf_counter() - started
    started = time.perf_counter()
    for group in load.plan_groups(manifest, 50):
        load.import_group(dsn, workdir, manifest, group, fail_on_reject=False)
    t["import"] = time.perf_counter() - started
    started = time.perf_counter()
    result = verify.verify(workdir / export.SNAPSHOT_FILE, dsn, mode="full", seed="bench")
    t["verify_full"] = time.perf_counter() - started
    if not result["ok"]:
        raise SystemExit(f"verification failed: {json.dumps(result)[:2000]}")
    return t


def child(src: str, dsn: str) -> None:
    """Run our pipeline in this fresh process and print its timings and peak RSS."""
    with tempfile.TemporaryDirectory(prefix="cpo-bench-") as tmp:
        t = ours(Path(src), dsn, Path(tmp))
    t["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(t))


def run_child(src: Path) -> dict:
    dsn = create_db("rss")
    try:
        out = subprocess.run([sys.executable, __file__, "--child", str(src), dsn], cwd=ROOT, check=True,
                             capture_output=True, text=True)
        return json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        drop_db(dsn)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2000)
    ap.add_argument("--turns", type=int, default=2)
    ap.add_argument("--naive-threads", type=int, default=200, help="threads the slow naive loop is timed on")
    ap.add_argument("--scale", type=int, default=10, help="the larger source for the memory check (0: skip)")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return 0

    src = build_source(args.threads, args.turns)
    c = counts(src)
    print(f"source: {c['threads']:,} threads, {c['checkpoints']:,} checkpoints, {c['writes']:,} writes, "
          f"{c['avg_checkpoint_bytes']:,} bytes per checkpoint on average\n")

    dbs = {k: create_db(k) for k in ("naive", "floor")}
    try:
        n_naive, s_naive = naive(src, dbs["naive"], args.naive_threads)
        n_floor, s_floor = copy_floor(src, dbs["floor"])
    finally:
        for dsn in dbs.values():
            drop_db(dsn)
    main_run = run_child(src)

    rate = {"naive": n_naive / s_naive, "floor": n_floor / s_floor,
            "ours": c["checkpoints"] / main_run["import"], "verify": c["checkpoints"] / main_run["verify_full"]}
    rows_per_s = (c["checkpoints"] + c["writes"]) / main_run["import"]
    print(f"{'method':<44} {'checkpoints/s':>14} {'x naive':>8}")
    print(f"{'naive SqliteSaver.list -> PostgresSaver.put':<44} {rate['naive']:>14,.0f} {1:>8.1f}   ({n_naive:,} checkpoints timed)")
    print(f"{'raw COPY of the checkpoint rows (floor)':<44} {rate['floor']:>14,.0f} {rate['floor'] / rate['naive']:>8.1f}")
    print(f"{'checkpoint-ops import (all tables)':<44} {rate['ours']:>14,.0f} {rate['ours'] / rate['naive']:>8.1f}"
          f"   ({rows_per_s:,.0f} rows/s incl. writes; {rate['ours'] / rate['floor']:.2f}x the floor)")
    print(f"{'checkpoint-ops full verify':<44} {rate['verify']:>14,.0f}")
    print(f"\nphases: snapshot {main_run['snapshot']:.1f}s, export {main_run['export']:.1f}s, "
          f"import {main_run['import']:.1f}s, full verify {main_run['verify_full']:.1f}s")

    if args.scale > 1:
        big = scale_source(src, args.scale)
        bc = counts(big)
        big_run = run_child(big)
        print("\npeak RSS of export+import+verify (fresh process each):")
        print(f"  {c['checkpoints']:>9,} checkpoints: {main_run['peak_rss_mb']:8.0f} MB")
        print(f"  {bc['checkpoints']:>9,} checkpoints: {big_run['peak_rss_mb']:8.0f} MB   "
              f"(x{big_run['peak_rss_mb'] / main_run['peak_rss_mb']:.2f} for x{bc['checkpoints'] / c['checkpoints']:.0f} the rows; "
              f"import {bc['checkpoints'] / big_run['import']:,.0f} checkpoints/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
