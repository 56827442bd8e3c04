"""Pruning throughput, and the app's write latency while a prune runs, against baselines
measured in the same run.

    make bench-pruning                  # or: python benchmarks/pruning.py [--threads 300] [--clones 9]

Source: the sample agent's real checkpoints (300 threads x 3 turns by default, aged 1-90 days,
10% left interrupted and 5% crashed; cached under $TMPDIR between runs). Each backend gets a
fresh store, the SQLite file and a scratch PostgreSQL database (loaded by checkpoint-ops'
migration import, dropped at the end), where every thread is then cloned ``--clones`` times
under new thread ids by SQL: same rows, same checkpoint ids, so the same ages. Stores are set
up with ``setup_store`` (LangGraph schema plus checkpoint-ops indexes). On each backend:

- naive:  the loop people write first: for each thread, ``saver.list(thread)``, then delete
          each checkpoint that is not its namespace's latest and older than the retention,
          one by one (``DELETE`` its writes and itself, one commit per checkpoint; blobs are
          left behind). Timed on the un-cloned store until ``--naive-checkpoints`` are
          deleted, then extrapolated;
- ours:   ``prune_store`` (keep_latest, 30 days, batches of 100 threads) on the cloned store,
          the whole run: candidate scan, per-thread trims, orphan sweeps, space reclaim.

Both are timed while the app below writes to the cloned store at the same rate (ours has to
be, for the latency test; the naive loop gets the same load so the ratio is like for like).

Write latency: a tiny real graph (one node appending a ~2 KB note) on its own connection
(SqliteSaver with the app's 5 s busy timeout / PostgresSaver), ``invoke()`` on fresh threads
at ``--app-rate`` per second in a separate process (as an app is: a thread in the prune's
process would mostly measure waits for the GIL). Per-invoke latency is measured idle on the
cloned store (baseline), then for the invokes started while ``prune_store`` runs on it.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import operator
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import closing
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, TypedDict

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from benchmarks.scratch_db import ADMIN_DSN, create_db, drop_db  # noqa: E402
RETENTION_DAYS = 30
NOTE = ("checkpoint-ops pruning benchmark: the app keeps writing while old history goes. " * 30)[:2048]
SQLITE_TABLES = ("checkpoints", "writes")
POSTGRES_TABLES = ("checkpoints", "checkpoint_blobs", "checkpoint_writes")
NOT_APP = "WHERE thread_id NOT LIKE 'app-%'"


# --- the source and the stores ---------------------------------------------------------------


def build_source(threads: int, turns: int) -> Path:
    cache = Path(tempfile.gettempdir()) / f"cpo-bench-prune-source-{threads}x{turns}.sqlite"
    if cache.exists():
        return cache
    print(f"generating the source: {threads} threads x {turns} turns with the sample agent "
          f"(once; cached as {cache}) ...", flush=True)
    tmp = cache.with_suffix(".partial")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{tmp}{suffix}").unlink(missing_ok=True)
    subprocess.run([sys.executable, "-m", "include.sample_agent", "--sqlite", str(tmp), "--threads", str(threads),
                    "--turns", str(turns), "--interrupted", "0.1", "--crashed", "0.05", "--payload-bytes", "300",
                    "--age-days", "1:90", "--no-store"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    with closing(sqlite3.connect(tmp)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode=DELETE")
    tmp.replace(cache)
    return cache


def clone_sqlite(path: Path, clones: int) -> None:
    """``clones`` copies of every thread under ``<thread>-c<k>``: ids, hence ages, unchanged."""
    with closing(sqlite3.connect(path)) as conn:
        for table in SQLITE_TABLES:
            cols = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
            select = ", ".join("c.thread_id || '-c' || n.k" if c == "thread_id" else f"c.{c}" for c in cols)
            conn.execute(f"WITH RECURSIVE n(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM n WHERE k < ?) "
                         f"INSERT INTO {table} ({', '.join(cols)}) SELECT {select} FROM {table} c, n", (clones,))
        conn.commit()


def clone_postgres(dsn: str, clones: int) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        with conn.transaction():
            for table in POSTGRES_TABLES:
                cols = [r[0] for r in conn.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
                    "AND table_name = %s ORDER BY ordinal_position", (table,))]
                select = ", ".join("c.thread_id || '-c' || k" if c == "thread_id" else f"c.{c}" for c in cols)
                conn.execute(f"INSERT INTO {table} ({', '.join(cols)}) "
                             f"SELECT {select} FROM {table} c, generate_series(1, %s) k", (clones,))
        conn.execute(f"VACUUM (ANALYZE) {', '.join(POSTGRES_TABLES)}")


def import_postgres(src: Path, dsn: str, workdir: Path) -> None:
    """The source's rows as PostgresSaver stores them (checkpoint-ops' migration import)."""
    from include.checkpoint_core.migration import export, load
    from include.checkpoint_core.postgres_store import setup_postgres

    setup_postgres(dsn)
    folder = workdir / "import"
    snap = export.snapshot_into(str(src), folder, "bench-prune")
    manifest = export.export_batches(folder / export.SNAPSHOT_FILE, folder, snap, batch_size=1000, include_store=False)
    for group in load.plan_groups(manifest, 50):
        load.import_group(dsn, folder, manifest, group, fail_on_reject=True)


def counts(kind: str, location: str) -> dict:
    """Rows of the agent's threads (the benchmark app's own threads, ``app-*``, left out)."""
    if kind == "sqlite":
        with closing(sqlite3.connect(location)) as conn:
            one = lambda sql: conn.execute(sql).fetchone()[0]  # noqa: E731
            return {"threads": one(f"SELECT COUNT(DISTINCT thread_id) FROM checkpoints {NOT_APP}"),
                    "checkpoints": one(f"SELECT COUNT(*) FROM checkpoints {NOT_APP}"),
                    "writes": one(f"SELECT COUNT(*) FROM writes {NOT_APP}")}
    import psycopg

    with psycopg.connect(location) as conn:
        one = lambda sql: conn.execute(sql).fetchone()[0]  # noqa: E731
        return {"threads": one(f"SELECT COUNT(DISTINCT thread_id) FROM checkpoints {NOT_APP}"),
                "checkpoints": one(f"SELECT COUNT(*) FROM checkpoints {NOT_APP}"),
                "writes": one(f"SELECT COUNT(*) FROM checkpoint_writes {NOT_APP}"),
                "blobs": one(f"SELECT COUNT(*) FROM checkpoint_blobs {NOT_APP}")}


# --- the naive prune -------------------------------------------------------------------------


def naive(kind: str, location: str, cutoff: datetime, limit: int) -> tuple[int, float]:
    """saver.list per thread, then one DELETE (writes + checkpoint) and one commit per old checkpoint."""
    if kind == "sqlite":
        from langgraph.checkpoint.sqlite import SqliteSaver

        from include.checkpoint_core.sqlite_store import connect_sqlite

        conn = connect_sqlite(location)
        saver = SqliteSaver(conn)

        def delete(tid: str, ns: str, cid: str) -> None:
            for table in ("writes", "checkpoints"):
                conn.execute(f"DELETE FROM {table} WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ?",
                             (tid, ns, cid))
            conn.commit()
    else:
        from langgraph.checkpoint.postgres import PostgresSaver

        from include.checkpoint_core.postgres_store import connect_postgres

        conn = connect_postgres(location)
        saver = PostgresSaver(conn)

        def delete(tid: str, ns: str, cid: str) -> None:
            with conn.transaction():
                for table in ("checkpoint_writes", "checkpoints"):
                    conn.execute(f"DELETE FROM {table} WHERE thread_id = %s AND checkpoint_ns = %s AND checkpoint_id = %s",
                                 (tid, ns, cid))

    with closing(conn):
        thread_ids = [r[0] if kind == "sqlite" else r["thread_id"]
                      for r in conn.execute("SELECT DISTINCT thread_id FROM checkpoints ORDER BY thread_id").fetchall()]
        deleted = 0
        started = time.perf_counter()
        for tid in thread_ids:
            tuples = list(saver.list({"configurable": {"thread_id": tid}}))
            latest: dict[str, str] = {}
            for t in tuples:
                c = t.config["configurable"]
                latest[c["checkpoint_ns"]] = max(latest.get(c["checkpoint_ns"], ""), c["checkpoint_id"])
            for t in tuples:
                c = t.config["configurable"]
                if c["checkpoint_id"] != latest[c["checkpoint_ns"]] and datetime.fromisoformat(t.checkpoint["ts"]) < cutoff:
                    delete(tid, c["checkpoint_ns"], c["checkpoint_id"])
                    deleted += 1
            if deleted >= limit:
                break
        return deleted, time.perf_counter() - started


# --- the app -------------------------------------------------------------------------------


class NoteState(TypedDict):
    notes: Annotated[list[str], operator.add]


def _take_note(state: NoteState) -> dict:
    return {"notes": [NOTE]}


def app_loop(kind: str, location: str, count: int, rate: float, ready, stop, out) -> None:
    """Invoke a one-node graph on fresh threads, ``count`` times (0: until ``stop``); send back
    (monotonic start, seconds, error) per invoke."""
    from langgraph.graph import END, START, StateGraph

    if kind == "sqlite":
        from langgraph.checkpoint.sqlite import SqliteSaver

        from include.checkpoint_core.sqlite_store import connect_sqlite

        conn = connect_sqlite(location)  # the app's own connection, 5 s busy timeout
        saver = SqliteSaver(conn)
    else:
        from langgraph.checkpoint.postgres import PostgresSaver

        from include.checkpoint_core.postgres_store import connect_postgres

        conn = connect_postgres(location)
        saver = PostgresSaver(conn)
    builder = StateGraph(NoteState)
    builder.add_node("take_note", _take_note)
    builder.add_edge(START, "take_note")
    builder.add_edge("take_note", END)
    graph = builder.compile(checkpointer=saver)
    run = uuid.uuid4().hex[:8]
    for i in range(5):  # warm up: imports, saver setup, first statements
        graph.invoke({"notes": ["hello"]}, {"configurable": {"thread_id": f"app-{run}-warm-{i}"}})
    ready.set()
    samples, i, interval = [], 0, 1.0 / rate
    next_at = time.monotonic()
    while (i < count) if count else not stop.is_set():
        now = time.monotonic()
        if now < next_at:
            time.sleep(next_at - now)
        next_at = max(next_at + interval, time.monotonic())
        t0 = time.monotonic()
        err = None
        try:
            graph.invoke({"notes": ["hello"]}, {"configurable": {"thread_id": f"app-{run}-{i}"}})
        except Exception as exc:  # the app would see it: count it, keep going
            err = f"{type(exc).__name__}: {exc}"[:160]
        samples.append((t0, time.monotonic() - t0, err))
        i += 1
    conn.close()
    out.send(samples)
    out.close()


def start_app(kind: str, location: str, count: int, rate: float):
    ctx = mp.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=app_loop, args=(kind, location, count, rate, ready, stop, send), daemon=True)
    proc.start()
    send.close()
    if not ready.wait(120):
        proc.kill()
        raise SystemExit("the app process did not start")
    return proc, stop, recv


def finish_app(proc, recv) -> list[tuple]:
    samples = recv.recv()
    proc.join(30)
    return samples


def latency(samples: list[tuple]) -> dict:
    ok = sorted(s[1] * 1000 for s in samples if s[2] is None)
    errors = [s[2] for s in samples if s[2] is not None]
    if not ok:
        return {"n": 0, "errors": len(errors), "p50": float("nan"), "p99": float("nan"), "max": float("nan"),
                "first_error": errors[0] if errors else ""}
    q = statistics.quantiles(ok, n=100, method="inclusive") if len(ok) > 1 else [ok[0]] * 99
    return {"n": len(ok), "errors": len(errors), "p50": q[49], "p99": q[98], "max": ok[-1],
            "first_error": errors[0] if errors else ""}


# --- one backend ---------------------------------------------------------------------------


def run_backend(kind: str, src: Path, workdir: Path, args, now: datetime) -> dict:
    from include.checkpoint_core.pruning import PrunePolicy, prune_store
    from include.checkpoint_core.stores import StoreTarget, setup_store

    policy = PrunePolicy(retention_days=RETENTION_DAYS, strategy="keep_latest", batch_size=100, now=now)
    res: dict = {"backend": kind}
    dbs: list[str] = []
    try:
        t = time.perf_counter()
        if kind == "sqlite":
            small, big = workdir / "naive.sqlite", workdir / "big.sqlite"
            shutil.copyfile(src, small)
            shutil.copyfile(src, big)
            clone_sqlite(big, args.clones)
            small_loc, big_loc = str(small), str(big)
        else:
            small_loc = create_db("prune_naive")
            dbs.append(small_loc)
            import_postgres(src, small_loc, workdir)
            big_loc = create_db("prune", template=small_loc)
            dbs.append(big_loc)
            clone_postgres(big_loc, args.clones)
        for loc in (small_loc, big_loc):
            setup_store(StoreTarget(kind=kind, location=loc, name=f"bench-{kind}"))
        res["load_s"] = time.perf_counter() - t
        res["before"] = counts(kind, big_loc)
        print(f"[{kind}] store: {res['before']['threads']:,} threads, {res['before']['checkpoints']:,} checkpoints, "
              f"{res['before']['writes']:,} writes (loaded in {res['load_s']:.1f}s)", flush=True)

        proc, _, recv = start_app(kind, big_loc, args.app_invokes, args.app_rate)
        res["idle"] = latency(finish_app(proc, recv))
        print(f"[{kind}] app idle: {res['idle']['n']} invokes, p50 {res['idle']['p50']:.1f} ms, "
              f"p99 {res['idle']['p99']:.1f} ms", flush=True)

        # Ours is timed while the app runs (that is the latency test); the naive loop gets the same
        # load on the same cores (the app writing to the big store), so the ratio compares like with like.
        proc, stop, recv = start_app(kind, big_loc, 0, args.app_rate)
        try:
            n, s = naive(kind, small_loc, policy.cutoff, args.naive_checkpoints)
        finally:
            stop.set()
            finish_app(proc, recv)
        res["naive"] = {"deleted": n, "seconds": s, "rate": n / s if s else 0.0}
        print(f"[{kind}] naive: {n:,} checkpoints deleted in {s:.1f}s ({res['naive']['rate']:,.0f}/s)", flush=True)

        proc, stop, recv = start_app(kind, big_loc, 0, args.app_rate)
        marks: list[tuple[float, str]] = []

        def log(msg: str) -> None:
            marks.append((time.monotonic(), msg))

        t0 = time.monotonic()
        try:
            report = prune_store(StoreTarget(kind=kind, location=big_loc, name=f"bench-{kind}"), policy, log=log)
        finally:
            t1 = time.monotonic()
            stop.set()
            samples = finish_app(proc, recv)
        # The per-thread phase ends with the progress "done:" line; then sweeps and space reclaim.
        t_loop = next((m for m, msg in marks if "done:" in msg), None)
        during = [x for x in samples if t0 <= x[0] < t1]
        res["during"] = latency(during)
        if t_loop is not None:
            res["during_loop"] = latency([x for x in during if x[0] < t_loop])
            res["during_reclaim"] = latency([x for x in during if x[0] >= t_loop])
        res["report"] = report
        res["loop_s"] = (t_loop or t1) - t0
        res["after"] = counts(kind, big_loc)
        print(f"[{kind}] ours: {report['checkpoints_deleted']:,} checkpoints deleted in {report['seconds']:.1f}s "
              f"({report['rate_checkpoints_per_s']:,.0f}/s; per-thread phase {res['loop_s']:.1f}s); app during: "
              f"{res['during']['n']} invokes, p99 {res['during']['p99']:.1f} ms, {res['during']['errors']} errors",
              flush=True)
    finally:
        for dsn in reversed(dbs):
            drop_db(dsn)
    return res


def mb(n: float) -> str:
    return f"{n / 2**20:,.0f} MB"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=300, help="threads the sample agent generates (cached)")
    ap.add_argument("--turns", type=int, default=3)
    ap.add_argument("--clones", type=int, default=9, help="extra copies of every thread (store = source x (1 + clones))")
    ap.add_argument("--naive-checkpoints", type=int, default=2000, help="checkpoints the slow naive loop is timed on")
    ap.add_argument("--app-invokes", type=int, default=300, help="invokes timed while idle")
    ap.add_argument("--app-rate", type=float, default=50.0, help="the app's invokes per second")
    ap.add_argument("--backends", default="sqlite,postgres")
    args = ap.parse_args()

    src = build_source(args.threads, args.turns)
    c = counts("sqlite", str(src))
    print(f"source: {c['threads']:,} threads, {c['checkpoints']:,} checkpoints, {c['writes']:,} writes; "
          f"x{args.clones + 1} after cloning; retention {RETENTION_DAYS} days, keep_latest\n", flush=True)
    now = datetime.now(timezone.utc)
    results = []
    with tempfile.TemporaryDirectory(prefix="cpo-bench-prune-") as tmp:
        for kind in args.backends.split(","):
            results.append(run_backend(kind.strip(), src, Path(tmp), args, now))
            print(flush=True)

    print(f"{'backend':<9} {'checkpoints':>11} {'ours ckpt/s':>12} {'naive ckpt/s':>13} {'x':>6}   "
          f"{'write p99 idle ms':>17} {'p99 during ms':>14} {'x':>6}")
    for r in results:
        ours = r["report"]["rate_checkpoints_per_s"]
        print(f"{r['backend']:<9} {r['before']['checkpoints']:>11,} {ours:>12,.0f} {r['naive']['rate']:>13,.0f} "
              f"{ours / r['naive']['rate']:>6.1f}   {r['idle']['p99']:>17.1f} {r['during']['p99']:>14.1f} "
              f"{r['during']['p99'] / r['idle']['p99']:>6.1f}")

    print("\nprune runs (ours, whole run; naive extrapolated to the same deletions):")
    for r in results:
        rep = r["report"]
        naive_s = rep["checkpoints_deleted"] / r["naive"]["rate"]
        print(f"  {r['backend']:<9} {rep['checkpoints_deleted']:,} checkpoints, {rep['writes_deleted']:,} writes, "
              f"{rep['blobs_deleted'] + rep['orphan_blobs_deleted']:,} blobs deleted; {rep['threads_trimmed']:,} "
              f"threads trimmed, {rep['threads_protected']:,} protected, {rep['threads_busy']:,} busy; "
              f"{rep['seconds']:.1f}s ({r['loop_s']:.1f}s per-thread phase, "
              f"{rep['checkpoints_deleted'] / r['loop_s']:,.0f} ckpt/s) vs naive ~{naive_s / 60:,.1f} min")
        if r["backend"] == "postgres":
            print(f"  {'':<9} (the naive loop deletes no blobs: it leaves them behind; ours deletes them too)")
        if r["before"]["threads"] != r["after"]["threads"]:
            print(f"  WARNING: {r['backend']}: threads {r['before']['threads']:,} -> {r['after']['threads']:,} "
                  f"(keep_latest must keep every thread)")

    print("\nsizes:")
    for r in results:
        rep = r["report"]
        space = dict(rep["space"])
        free = f"free pages {mb(space.pop('free_bytes_before'))}, " if "free_bytes_before" in space else ""
        print(f"  {r['backend']:<9} {mb(rep['bytes_before']):>9} -> {mb(rep['bytes_after']):>9}   "
              f"checkpoints {r['before']['checkpoints']:,} -> {r['after']['checkpoints']:,}, "
              f"writes {r['before']['writes']:,} -> {r['after']['writes']:,}"
              + (f", blobs {r['before']['blobs']:,} -> {r['after']['blobs']:,}" if "blobs" in r["before"] else ""))
        print(f"  {'':<9} {free}{'; '.join(f'{k}: {v}' for k, v in space.items()) or '-'}")

    print("\napp write latency (ms; invokes on fresh threads, 3 checkpoints each):")
    print(f"  {'backend':<9} {'phase':<28} {'invokes':>8} {'p50':>8} {'p99':>8} {'max':>8} {'errors':>7}")
    for r in results:
        for label, key in (("idle", "idle"), ("during prune", "during"), ("  per-thread phase", "during_loop"),
                           ("  sweeps + reclaim", "during_reclaim")):
            if key not in r:
                continue
            d = r[key]
            print(f"  {r['backend']:<9} {label:<28} {d['n'] + d['errors']:>8} {d['p50']:>8.1f} {d['p99']:>8.1f} "
                  f"{d['max']:>8.1f} {d['errors']:>7}" + (f"   first: {d['first_error']}" if d["first_error"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
