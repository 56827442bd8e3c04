"""Where our migration's time goes: cProfile of preflight, import and full verify.

    python benchmarks/profile_migration.py [--shape rich|sample] [--threads 2500] [--top 25] [--out DIR]

Runs the pipeline as benchmarks/migration.py does (preflight on the empty, set-up target, then
snapshot + export unprofiled, then import, then full verify) on a scratch database, each profiled
phase under cProfile. The import and verify overlap work in a helper thread
(``ThreadPoolExecutor``); cProfile sees one thread only, so every function submitted to an
executor gets its own profiler, and the report shows the calling thread and the helper thread
apart (time the calling thread spends blocked on the helper is "waiting on the other thread").

For each phase it prints: wall time (profiled, and so inflated where Python dominates), the top
functions by cumulative and by self time, and self time grouped by what it is: Python CPU in our
code, msgpack, JSON, hashing, psycopg client work, waiting on PostgreSQL, SQLite reads. Raw
stats are written to DIR/<phase>-<thread>.prof for snakeviz/pstats.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import cProfile
import io
import pstats
import sys
import tempfile
import threading
import time
from contextlib import closing
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from benchmarks.scratch_db import create_db, drop_db  # noqa: E402

_profiles: list[tuple[str, cProfile.Profile]] = []
_lock = threading.Lock()
_orig_submit = concurrent.futures.ThreadPoolExecutor.submit


def _profiled_submit(self, fn, /, *args, **kwargs):
    def run(*a, **k):
        prof = cProfile.Profile()
        with _lock:
            _profiles.append(("helper", prof))
        prof.enable()
        try:
            return fn(*a, **k)
        finally:
            prof.disable()
    return _orig_submit(self, run, *args, **kwargs)


def profile_phase(name: str, fn, *args, **kwargs):
    _profiles.clear()
    concurrent.futures.ThreadPoolExecutor.submit = _profiled_submit
    main = cProfile.Profile()
    started = time.perf_counter()
    main.enable()
    try:
        result = fn(*args, **kwargs)
    finally:
        main.disable()
        concurrent.futures.ThreadPoolExecutor.submit = _orig_submit
    wall = time.perf_counter() - started
    profiles = [("main", main)] + list(_profiles)
    return result, wall, profiles


# --- classification of self time ------------------------------------------------------------

def category(func: tuple[str, int, str]) -> str:
    filename, _, name = func
    f = filename.replace("\\", "/")
    if name in ("<method 'acquire' of '_thread.lock' objects>", "<method 'acquire' of '_thread.RLock' objects>") \
            or (f.endswith("threading.py") and name == "wait"):
        return "waiting on the other thread"
    if "psycopg" in f or "psycopg" in name:
        if name in ("wait_c", "wait", "wait_select", "wait_epoll", "wait_poll") or "select" in name or "poll" in name:
            return "PostgreSQL: waiting for the server"
        return "psycopg client (adapt/COPY format/parse)"
    if name.startswith("<method") and "sqlite3" in name:
        return "SQLite reads"
    if "ormsgpack" in name or "msgpack" in name:
        return "msgpack (ormsgpack)"
    if "orjson" in name or "/json/" in f or "_json" in name:
        return "JSON (json/orjson)"
    if "_hashlib" in name or "hashlib" in f or "sha256" in name or "hexdigest" in name:
        return "hashing (sha256)"
    if "checkpoint_core/migration/" in f:
        return "our Python (" + f.rsplit("/", 1)[-1] + ")"
    if "langgraph" in f or "langchain" in f:
        return "langgraph/langchain (semantic check)"
    if "checkpoint_core/" in f:
        return "our Python (" + f.rsplit("/", 1)[-1] + ")"
    if name.startswith("<built-in method builtins.") or name.startswith("<method"):
        return "builtins (isinstance, len, dict/list ops, ...)"
    return "other Python (stdlib, dataclasses, ...)"


def report(phase: str, wall: float, profiles, out: Path, top: int, counts: dict) -> dict:
    print(f"\n{'=' * 100}\n{phase}: {wall:.1f}s wall under cProfile "
          f"({counts['checkpoints'] / wall:,.0f} checkpoints/s profiled)\n{'=' * 100}")
    by_thread: dict[str, pstats.Stats] = {}
    for label, prof in profiles:
        prof.create_stats()
        if label in by_thread:
            by_thread[label].add(prof)
        else:
            by_thread[label] = pstats.Stats(prof)
    summary = {}
    for label, st in by_thread.items():
        st.dump_stats(out / f"{phase}-{label}.prof")
        total = sum(v[2] for v in st.stats.values())
        cats: dict[str, float] = {}
        for func, (cc, nc, tt, ct, callers) in st.stats.items():
            cats[category(func)] = cats.get(category(func), 0) + tt
        summary[label] = {"self_total": total, "categories": cats}
        title = "calling thread" if label == "main" else "helper thread (ThreadPoolExecutor)"
        print(f"\n--- {title}: {total:.1f}s of self time; by category:")
        for k, v in sorted(cats.items(), key=lambda kv: -kv[1]):
            if v >= 0.005 * total:
                print(f"    {v:7.1f}s {100 * v / total:5.1f}%  {k}")
        st.strip_dirs()
        for key, what in (("cumulative", "cumulative"), ("tottime", "self")):
            buf = io.StringIO()
            st.stream = buf
            st.sort_stats(key).print_stats(top)
            text = buf.getvalue()
            body = text[text.index("   ncalls"):] if "   ncalls" in text else text
            print(f"\n  top {top} by {what} time ({title}):")
            print("\n".join("  " + line for line in body.rstrip().splitlines()))
    return summary


def import_split(dsn: str, work: Path, manifest) -> None:
    """The import's steps timed one after the other, without a profiler and without the
    read-ahead thread: how long each step takes on its own (the real import overlaps the
    read+transcode of batch N+1 with the PostgreSQL work of batch N)."""
    import psycopg

    from include.checkpoint_core.migration import batches as batches_mod, target
    from include.checkpoint_core.postgres_store import connect_postgres

    t: dict[str, float] = {}
    n: dict[str, int] = {}

    def add(key: str, seconds: float, rows: int = 0) -> None:
        t[key] = t.get(key, 0.0) + seconds
        n[key] = n.get(key, 0) + rows

    orig_copy, orig_execute = target._copy, psycopg.Cursor.execute

    def timed_copy(cur, sql, staging, rows):
        started = time.perf_counter()
        orig_copy(cur, sql, staging, rows)
        kind = "direct" if sql.startswith("COPY checkpoint") else "staging"
        add(f"PG  COPY {staging} ({kind})", time.perf_counter() - started, len(rows))

    def timed_execute(self, query, *args, **kwargs):
        started = time.perf_counter()
        try:
            return orig_execute(self, query, *args, **kwargs)
        finally:
            text = " ".join(str(query).split())
            label = ("PG  INSERT..SELECT blobs ON CONFLICT" if "INTO checkpoint_blobs" in text else
                     "PG  INSERT..SELECT " + text.split()[2] + " ON CONFLICT" if text.startswith("INSERT INTO") and "SELECT" in text and "cpo_stage" in text else
                     "PG  savepoint/commit/bookkeeping")
            add(label, time.perf_counter() - started)

    target._copy, psycopg.Cursor.execute = timed_copy, timed_execute
    try:
        with closing(connect_postgres(dsn)) as conn:
            target.ensure_bookkeeping(conn)
            target.prepare_session(conn)
            for info in manifest.batches:
                started = time.perf_counter()
                rows = batches_mod.read_batch(work / "batches", info)
                add("CPU read batch file (sha256 + msgpack)", time.perf_counter() - started)
                started = time.perf_counter()
                batch = target.prepare_batch(info.table, info.number, info.sha256, rows, fail_on_reject=False)
                add(f"CPU transcode {info.table}", time.perf_counter() - started, len(rows))
                if info.table == "checkpoints":
                    n["blob rows staged"] = n.get("blob rows staged", 0) + len(batch.staged["blobs"])
                    n["blob bytes staged"] = n.get("blob bytes staged", 0) + sum(len(b[5]) for b in batch.staged["blobs"])
                    distinct = {b[:4] for b in batch.staged["blobs"]}
                    n["blob rows distinct in batch"] = n.get("blob rows distinct in batch", 0) + len(distinct)
                started = time.perf_counter()
                target.load_prepared(conn, "split", batch)
                add("PG  load_prepared (all of it)", time.perf_counter() - started)
    finally:
        target._copy, psycopg.Cursor.execute = orig_copy, orig_execute
    total_cpu = sum(v for k, v in t.items() if k.startswith("CPU"))
    print(f"\n{'=' * 100}\nimport, step by step (serial, no profiler): CPU {total_cpu:.1f}s, "
          f"PostgreSQL {t['PG  load_prepared (all of it)']:.1f}s\n{'=' * 100}")
    for k, v in sorted(t.items()):
        rows = f"{n[k]:>9,} rows" if n.get(k) else ""
        print(f"  {k:<46} {v:7.2f}s {rows}")
    print(f"  blob rows staged {n['blob rows staged']:,} ({n['blob bytes staged'] / 1e6:.0f} MB), "
          f"distinct (thread, ns, channel, version) within their batch {n['blob rows distinct in batch']:,}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", choices=("rich", "sample"), default="rich")
    ap.add_argument("--threads", type=int, default=2500)
    ap.add_argument("--real-threads", type=int, default=None)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "cpo-profile")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    from benchmarks.migration import build_source, counts as source_counts
    from benchmarks.rich_workload import build_rich_source
    from include.checkpoint_core.migration import export, load, preflight, verify
    from include.checkpoint_core.postgres_store import setup_postgres

    src = build_rich_source(args.threads, real_threads=args.real_threads) if args.shape == "rich" else build_source(args.threads, 2)
    c = source_counts(src)
    print(f"source {src}: {c}")
    dsn = create_db("prof")
    try:
        with tempfile.TemporaryDirectory(prefix="cpo-prof-") as tmp:
            work = Path(tmp)
            plan, wall, profs = profile_phase("preflight", preflight.preflight, str(src), dsn, include_store=True,
                                              on_reject="reject")
            report("preflight", wall, profs, args.out, args.top, c)
            print(f"\npreflight found: {plan['rejected']['count']} rejected rows, "
                  f"{plan['version_collisions']['count']} version collisions "
                  f"(e.g. {plan['version_collisions']['examples'][:2]}), estimate {plan['estimate_s']}")
            setup_postgres(dsn)
            snap = export.snapshot_into(str(src), work, "prof")
            manifest = export.export_batches(work / export.SNAPSHOT_FILE, work, snap, batch_size=1000, include_store=True)

            def do_import():
                for group in load.plan_groups(manifest, 50):
                    load.import_group(dsn, work, manifest, group, fail_on_reject=False)

            _, wall, profs = profile_phase("import", do_import)
            report("import", wall, profs, args.out, args.top, c)
            result, wall, profs = profile_phase("verify_full", verify.verify, work / export.SNAPSHOT_FILE, dsn,
                                                mode="full", seed="bench")
            report("verify_full", wall, profs, args.out, args.top, c)
            print(f"\nverify ok: {result['ok']}; raw stats in {args.out}")
            split_dsn = create_db("split")
            try:
                setup_postgres(split_dsn)
                import_split(split_dsn, work, manifest)
            finally:
                drop_db(split_dsn)
    finally:
        drop_db(dsn)
    return 0


if __name__ == "__main__":
    sys.exit(main())
