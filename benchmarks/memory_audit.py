"""The hybrid-memory audit on a million checkpoints, against a plain full scan of the same tables.

    make bench-memory-audit     # or: python benchmarks/memory_audit.py [--checkpoints 1000000] [--items 200000]
                                #                                        [--backend postgres|sqlite|both]

Each backend gets one scratch store (a PostgreSQL database / a SQLite file, removed at the end):

- PostgreSQL: the checkpoints of ``benchmarks/metadata_queries.py``'s generator (COPY; 50K threads,
  heavy-tailed), a ``messages`` blob for each thread's latest checkpoint plus four older versions per
  thread, of 1-24 KiB (a tail of threads over 10 KiB), and ``--items`` Store items under per-user
  namespaces, a third with a TTL;
- SQLite: the same threads and sizes as msgpack checkpoints (the blob inline, as SqliteSaver keeps it)
  and the same Store items.

Then, each in a fresh Python process of this script (``--worker``), so its peak RSS (VmHWM) is its own:

- baseline: one plain scan of what the audit reads: ``count(*)`` and ``sum(length)`` over checkpoints
  (PostgreSQL: ``octet_length(checkpoint::text)``, as the audit sizes rows), blobs and the store;
- audit:    ``audit_memory`` (what CheckpointMemoryAuditOperator runs).

Printed: seconds and peak RSS over the worker's RSS after its imports, and the audit / baseline ratios.
The audit keeps one integer per thread (for exact percentiles) and the listed threads; everything
else streams, so its memory must not grow with the tables.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from benchmarks.scratch_db import create_db, drop_db  # noqa: E402

KIB = 1024
OLDER_BLOBS_PER_THREAD = 4


def status_kib(field: str) -> int:
    """VmHWM (peak RSS) or VmRSS (current) of this process, from /proc."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def message_bytes(thread_index: int) -> int:
    """1-24 KiB, heavy-tailed: ~8% of threads carry a history over 10 KiB."""
    rng = random.Random(thread_index)
    return int(min(KIB * (0.6 + rng.paretovariate(1.6)), 24 * KIB))


def store_rows(n_items: int, n_users: int):
    for i in range(n_items):
        user = f"user-{i % n_users:06d}"
        kind = ("facts", "memories", "sessions")[i % 3]
        yield (f"users.{user}.{kind}", f"k{i}", json.dumps({"kind": kind, "text": f"fact {i} " * (4 + i % 20)}),
               i % 3 == 2)


# --- PostgreSQL -------------------------------------------------------------------------------

def build_postgres(dsn: str, n_checkpoints: int, n_items: int) -> dict:
    import psycopg

    from benchmarks.metadata_queries import load
    from include.checkpoint_core.postgres_store import setup_postgres

    took = {}
    t0 = time.perf_counter()
    setup_postgres(dsn)
    workload = load(dsn, n_checkpoints)
    took["checkpoints"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    threads = workload["threads"]
    with psycopg.connect(dsn) as conn:
        latest = {r[0]: int(r[1].split(".")[0]) for r in conn.execute(
            "SELECT DISTINCT ON (thread_id) thread_id, checkpoint -> 'channel_versions' ->> 'messages' "
            "FROM checkpoints ORDER BY thread_id, checkpoint_id DESC")}
        index = {t[0]: i for i, t in enumerate(threads)}
        with conn.cursor().copy("COPY checkpoint_blobs (thread_id, checkpoint_ns, channel, version, type, blob) "
                                "FROM STDIN") as copy:
            for thread_id, step in latest.items():
                size = message_bytes(index[thread_id])
                for back in range(OLDER_BLOBS_PER_THREAD + 1):
                    if step - back < 1:
                        break
                    copy.write_row((thread_id, "", "messages", f"{step - back:032d}.0.5", "msgpack",
                                    os.urandom(max(size - back * 200, 64))))
        with conn.cursor().copy("COPY store (prefix, key, value, expires_at, ttl_minutes) FROM STDIN") as copy:
            for prefix, key, value, ttl in store_rows(n_items, max(len(threads) * 6 // 10, 1)):
                copy.write_row((prefix, key, value, "2100-01-01" if ttl else None, 60 if ttl else None))
        conn.commit()
    took["blobs and store items"] = time.perf_counter() - t0
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        conn.execute("CHECKPOINT")
        counts = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                  for t in ("checkpoints", "checkpoint_blobs", "store")}
        counts["bytes"] = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    return {"took": took, "counts": counts}


PG_BASELINE = (
    "SELECT count(*), sum(octet_length(checkpoint::text) + octet_length(metadata::text)) FROM checkpoints",
    "SELECT count(*), sum(octet_length(blob)) FROM checkpoint_blobs",
    "SELECT count(*), sum(pg_column_size(value)) FROM store",
)


# --- SQLite -----------------------------------------------------------------------------------

def build_sqlite(path: Path, n_checkpoints: int, n_items: int) -> dict:
    import ormsgpack

    from benchmarks.metadata_queries import plan_workload, uuid6_at
    from include.checkpoint_core.sqlite_store import setup_sqlite

    t0 = time.perf_counter()
    setup_sqlite(path)
    threads, turns, rng = plan_workload(n_checkpoints)
    step_of = [0] * len(threads)
    payload = os.urandom(24 * KIB)
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        rows = []
        for start_ns, t, size in turns:
            thread_id, user_id, session_type = threads[t]
            history = message_bytes(t)
            for k in range(size):
                step_of[t] += 1
                cid = uuid6_at(start_ns + k * 2_000_000, rng)
                doc = {"v": 4, "id": cid, "channel_values": {
                    "messages": ormsgpack.Ext(5, payload[: max(history * step_of[t] // (step_of[t] + 8), 64)]),
                    "user_id": user_id, "turns": step_of[t] // 8 + 1}, "channel_versions": {}, "versions_seen": {}}
                rows.append((thread_id, "", cid, None, "msgpack", ormsgpack.packb(doc),
                             json.dumps({"step": step_of[t], "user_id": user_id, "session_type": session_type}).encode()))
            if len(rows) >= 20_000:
                conn.executemany("INSERT INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, "
                                 "type, checkpoint, metadata) VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
                rows.clear()
        if rows:
            conn.executemany("INSERT INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, "
                             "type, checkpoint, metadata) VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        from langgraph.store.sqlite.base import MIGRATIONS

        for sql in MIGRATIONS:
            conn.execute(sql)
        conn.executemany("INSERT INTO store (prefix, key, value, expires_at, ttl_minutes) VALUES (?, ?, ?, ?, ?)",
                         ((p, k, v, "2100-01-01 00:00:00" if ttl else None, 60.0 if ttl else None)
                          for p, k, v, ttl in store_rows(n_items, max(len(threads) * 6 // 10, 1))))
    took = {"checkpoints and store items": time.perf_counter() - t0}
    with sqlite3.connect(path) as conn:
        counts = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("checkpoints", "store")}
    counts["bytes"] = path.stat().st_size
    return {"took": took, "counts": counts}


SQLITE_BASELINE = (
    "SELECT count(*), sum(length(checkpoint) + length(metadata)) FROM checkpoints",
    "SELECT count(*), sum(length(value)) FROM store",
)


# --- workers ----------------------------------------------------------------------------------

def worker(args) -> int:
    from include.checkpoint_core.memory_audit import audit_memory
    from include.checkpoint_core.stores import StoreTarget

    if args.kind == "postgres":
        import psycopg  # noqa: F401 - imported before the baseline RSS, as the audit imports it
    base_kib = status_kib("VmRSS")
    t0 = time.perf_counter()
    if args.worker == "audit":
        report = audit_memory(StoreTarget(args.kind, args.where, "bench"))
        out = {"threads": report["checkpoints"]["threads"], "oversized": report["checkpoints"]["oversized_threads"],
               "p50": report["checkpoints"]["p50_bytes"], "p95": report["checkpoints"]["p95_bytes"],
               "max": report["checkpoints"]["max_bytes"], "items": report["store_items"]["items"]}
    else:
        out = {}
        if args.kind == "postgres":
            import psycopg

            with psycopg.connect(args.where) as conn:
                out = {sql.split("FROM ")[1]: list(conn.execute(sql).fetchone()) for sql in PG_BASELINE}
        else:
            with sqlite3.connect(f"file:{args.where}?mode=ro", uri=True) as conn:
                out = {sql.split("FROM ")[1]: list(conn.execute(sql).fetchone()) for sql in SQLITE_BASELINE}
    seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "peak_kib": status_kib("VmHWM"), "imports_kib": base_kib, "result": out},
                     default=str))
    return 0


def run_worker(phase: str, kind: str, where: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--worker", phase, "--kind", kind, "--where", where],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def report(kind: str, built: dict) -> None:
    c = built["counts"]
    print(f"\n=== {kind}: " + ", ".join(f"{v:,} {k}" for k, v in c.items() if k != "bytes")
          + f", {c['bytes'] / 2**20:,.0f} MiB; built in "
          + ", ".join(f"{k} {v:.0f}s" for k, v in built["took"].items()))


def compare(kind: str, where: str) -> None:
    base = run_worker("baseline", kind, where)
    audit = run_worker("audit", kind, where)
    grow = {k: (v["peak_kib"] - v["imports_kib"]) / 1024 for k, v in (("base", base), ("audit", audit))}
    print(f"{'':<28}{'audit':>12}{'plain scan':>14}{'ratio':>9}")
    print(f"{'seconds':<28}{audit['seconds']:>11.1f}s{base['seconds']:>13.1f}s{audit['seconds'] / base['seconds']:>8.2f}x")
    print(f"{'peak RSS over imports (MiB)':<28}{grow['audit']:>12.1f}{grow['base']:>14.1f}"
          f"{grow['audit'] / max(grow['base'], 0.1):>8.2f}x")
    print(f"{'peak RSS (MiB)':<28}{audit['peak_kib'] / 1024:>12.1f}{base['peak_kib'] / 1024:>14.1f}")
    print(f"audit: {json.dumps(audit['result'])}")
    print(f"scan:  {json.dumps(base['result'])}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoints", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--backend", choices=["postgres", "sqlite", "both"], default="both")
    parser.add_argument("--worker", choices=["audit", "baseline"])
    parser.add_argument("--kind")
    parser.add_argument("--where")
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if args.backend in ("postgres", "both"):
        dsn = create_db("memaudit")
        try:
            built = build_postgres(dsn, args.checkpoints, args.items)
            report("postgres", built)
            compare("postgres", dsn)
        finally:
            drop_db(dsn)
    if args.backend in ("sqlite", "both"):
        with tempfile.TemporaryDirectory(prefix="cpo-memaudit-") as tmp:
            path = Path(tmp) / "bench.sqlite"
            built = build_sqlite(path, args.checkpoints, args.items)
            report("sqlite", built)
            compare("sqlite", str(path))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
