"""Filtered checkpoint lists on PostgreSQL, before and after checkpoint-ops' indexes.

    make bench-metadata                 # or: python benchmarks/metadata_queries.py [--checkpoints 1000000] [--runs 200]

One scratch database (dropped at the end), set up with PostgresSaver's own migrations, then
filled by COPY with synthetic rows shaped like the sample agent's: checkpoint JSONB of the
same layout, metadata ``{"step", "source", "parents", "user_id", "session_type"}``. A thread
belongs to one user and one session type; a turn is one ``input`` checkpoint and 3-9 ``loop``
ones; thread lengths are heavy-tailed; rows go in in time order, so a thread's rows are spread
over the heap as an app's are. After VACUUM ANALYZE, through ``PostgresSaver.list`` on one
pooled connection (prepared statements, as the app runs them):

- global:  ``list(None, filter={"user_id": U, "session_type": S}, limit=10)`` for the owner
           and type of a random thread (a user's history across threads);
- thread:  ``list({"thread_id": T}, filter={"source": "input"}, limit=10)`` (a thread's turns)
           for the thread of a random checkpoint, so long threads are drawn as often as their
           rows are.

Both run on the same samples BEFORE and AFTER ``ensure_indexes`` (timed too), plus
``PostgresSaver.put`` (what the indexes cost writers) and pruning's scan. Last, the lists again
with a metadata-only GIN in place of ours, the shape that thread-scoped lists regress on.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from benchmarks.scratch_db import ADMIN_DSN, create_db, drop_db  # noqa: E402
from include.checkpoint_core.ids import UUID_EPOCH_OFFSET  # noqa: E402
SESSION_TYPES = ("support", "onboarding", "billing", "escalation")
SESSION_WEIGHTS = (55, 20, 15, 10)
TARGET_P95_MS = 5.0


def uuid6_at(moment_ns: int, rng: random.Random) -> str:
    """A LangGraph-style uuid6 for a given time: ids sort by time, as the real ones do."""
    ts = moment_ns // 100 + UUID_EPOCH_OFFSET
    value = ((ts >> 12) & 0xFFFFFFFFFFFF) << 80 | 0x6 << 76 | (ts & 0x0FFF) << 64
    value |= (0x8000 | rng.getrandbits(14)) << 48 | rng.getrandbits(48)
    return str(uuid.UUID(int=value))


def plan_workload(n_checkpoints: int, seed: int = 42):
    """Threads (owner, session type, length in turns) and the time-ordered turns that fill them."""
    rng = random.Random(seed)
    n_threads = max(n_checkpoints // 20, 10)
    n_users = max(round(n_threads * 0.6), 1)
    threads = [
        (f"thread-{i:07d}", f"user-{rng.randrange(n_users):06d}", rng.choices(SESSION_TYPES, SESSION_WEIGHTS)[0])
        for i in range(n_threads)
    ]
    # Heavy tail: Pareto weights, capped so no single thread holds more than ~0.5% of the rows.
    weights = [min(rng.paretovariate(1.1), 400.0) for _ in range(n_threads)]
    turns: list[tuple[int, int, int]] = []  # (start ns, thread index, checkpoints in the turn)
    now_ns = time.time_ns()
    span_ns = 60 * 86_400 * 10**9
    total = 0
    # Every thread gets its first turn, the rest go where the weights say.
    picks = list(range(n_threads))
    while total < n_checkpoints:
        if not picks:
            picks = rng.choices(range(n_threads), weights, k=4096)
        t = picks.pop()
        size = min(1 + rng.randint(3, 9), n_checkpoints - total)
        turns.append((now_ns - rng.randrange(span_ns), t, size))
        total += size
    turns.sort()
    return threads, turns, rng


def load(dsn: str, n_checkpoints: int, seed: int = 42) -> dict:
    """COPY ``n_checkpoints`` rows into ``checkpoints``; return what the samples are drawn from."""
    import psycopg

    threads, turns, rng = plan_workload(n_checkpoints, seed)
    step_of = [0] * len(threads)
    parent_of: list[str | None] = [None] * len(threads)
    sizes = [0] * len(threads)
    ckpt_tpl = ('{"v": 4, "id": "%s", "ts": "%s", "versions_seen": {"__input__": {}}, '
                '"channel_values": {"turns": %d, "intent": "question", "user_id": "%s"}, '
                '"channel_versions": {"turns": "%032d.0.5", "intent": "%032d.0.5", "user_id": "%032d.0.5", '
                '"messages": "%032d.0.5"}, "updated_channels": ["messages"]}')
    meta_tpl = '{"step": %d, "source": "%s", "parents": {}, "user_id": "%s", "session_type": "%s"}'
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        with cur.copy("COPY checkpoints (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, type, "
                      "checkpoint, metadata) FROM STDIN") as copy:
            lines = []
            for start_ns, t, size in turns:
                thread_id, user_id, session_type = threads[t]
                step = step_of[t]
                for k in range(size):
                    moment = start_ns + k * 2_000_000  # checkpoints of a turn are milliseconds apart
                    cid = uuid6_at(moment, rng)
                    ts = datetime.fromtimestamp(moment / 1e9, timezone.utc).isoformat()
                    source = "input" if k == 0 else "loop"
                    step += 1
                    version = step + 1
                    lines.append("\t".join((
                        thread_id, "", cid, parent_of[t] or r"\N", r"\N",
                        ckpt_tpl % (cid, ts, step // 8 + 1, user_id, version, version, version, version),
                        meta_tpl % (step - 1 if k else -1, source, user_id, session_type),
                    )))
                    parent_of[t] = cid
                step_of[t] = step
                sizes[t] += size
                if len(lines) >= 20_000:
                    copy.write("\n".join(lines) + "\n")
                    lines.clear()
            if lines:
                copy.write("\n".join(lines) + "\n")
        conn.commit()
    return {"threads": threads, "sizes": sizes}


def pick_samples(workload: dict, runs: int, seed: int = 7) -> tuple[list[dict], list[str]]:
    rng = random.Random(seed)
    threads, sizes = workload["threads"], workload["sizes"]
    owners = [rng.choice(threads) for _ in range(runs)]
    global_filters = [{"user_id": user, "session_type": kind} for _, user, kind in owners]
    by_rows = [threads[i][0] for i in rng.choices(range(len(threads)), sizes, k=runs)]
    return global_filters, by_rows


def timed(calls, warmup: int) -> list[float]:
    """Milliseconds per call, after ``warmup`` untimed calls (cache, prepared statements)."""
    for fn in calls[:warmup]:
        fn()
    times = []
    for fn in calls:
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return times


def list_calls(saver, global_filters, thread_ids) -> dict[str, list]:
    return {
        "global": [lambda f=f: list(saver.list(None, filter=f, limit=10)) for f in global_filters],
        "thread": [lambda t=t: list(saver.list({"configurable": {"thread_id": t}}, filter={"source": "input"}, limit=10))
                   for t in thread_ids],
    }


def put_calls(saver, workload: dict, n: int, seed: int) -> list:
    """New checkpoints in existing threads, the way a graph step writes one (a blob and metadata)."""
    from langgraph.checkpoint.base import empty_checkpoint

    rng = random.Random(seed)
    calls = []
    for i in range(n):
        thread_id, user_id, session_type = rng.choice(workload["threads"])

        def put(thread_id=thread_id, user_id=user_id, session_type=session_type, i=i):
            checkpoint = empty_checkpoint()
            checkpoint["id"] = uuid6_at(time.time_ns(), rng)
            version = f"{i + 1:032d}.0.{seed}"
            checkpoint["channel_values"] = {"messages": [f"message {i}"] * 3, "turns": i}
            checkpoint["channel_versions"] = {"messages": version, "turns": version}
            saver.put({"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}, checkpoint,
                      {"source": "loop", "step": i, "parents": {}, "user_id": user_id, "session_type": session_type},
                      {"messages": version, "turns": version})

        calls.append(put)
    return calls


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def plans(dsn: str, global_filter: dict, thread_id: str, cutoff: str) -> dict[str, str]:
    """The scan nodes of each query's plan, for the footnotes."""
    import psycopg
    from psycopg.types.json import Jsonb

    queries = {
        "global": ("SELECT checkpoint_id FROM checkpoints WHERE metadata @> %s ORDER BY checkpoint_id DESC LIMIT 10",
                   (Jsonb(global_filter),)),
        "thread": ("SELECT checkpoint_id FROM checkpoints WHERE thread_id = %s AND metadata @> %s "
                   "ORDER BY checkpoint_id DESC LIMIT 10", (thread_id, Jsonb({"source": "input"}))),
        "prune": ("SELECT DISTINCT thread_id FROM checkpoints WHERE checkpoint_id < %s", (cutoff,)),
    }
    out = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        for name, (sql, args) in queries.items():
            rows = [r[0] for r in conn.execute("EXPLAIN " + sql, args)]
            out[name] = "; ".join(r.strip().removeprefix("->").strip().split("  (")[0] for r in rows if "Scan" in r)
    return out


def prune_ms(dsn: str, cutoff: str, runs: int = 5) -> float:
    """Median milliseconds of pruning's "threads with checkpoints older than the cutoff" scan."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        def run():
            conn.execute("SELECT DISTINCT thread_id FROM checkpoints WHERE checkpoint_id < %s", (cutoff,)).fetchall()

        return statistics.median(timed([run] * runs, warmup=1))


def settle(dsn: str) -> None:
    """Flush what the load (or the index build) left dirty, so its write-back does not land in
    the timings; needs superuser or pg_checkpoint, and is skipped without."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        try:
            conn.execute("CHECKPOINT")
        except psycopg.errors.InsufficientPrivilege:
            pass


def measure(dsn: str, workload: dict, global_filters: list[dict], thread_ids: list[str], *,
            global_warmup: int = 20, puts: int = 0, seed: int = 0) -> dict[str, list[float]]:
    """Timings of the two lists (and of puts) through PostgresSaver on one pooled connection.

    A new pool each time, so no plan is cached from an earlier phase. PostgresSaver prepares
    every statement, so after five runs PostgreSQL may switch to a generic plan: what the app gets.
    """
    from langgraph.checkpoint.postgres import PostgresSaver

    from include.checkpoint_core.postgres_store import open_postgres_pool

    settle(dsn)
    out = {}
    with open_postgres_pool(dsn, max_size=1) as pool:
        saver = PostgresSaver(pool)
        calls = list_calls(saver, global_filters, thread_ids)
        out["global"] = timed(calls["global"], warmup=global_warmup)
        out["thread"] = timed(calls["thread"], warmup=20)
        if puts:
            # Without the commit's fsync, which is the same with or without indexes and whose
            # jitter on this disk is larger than what the indexes add.
            with pool.connection() as conn:
                conn.execute("SET synchronous_commit = off")
            out["put"] = timed(put_calls(saver, workload, puts, seed), warmup=20)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoints", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=200, help="timed calls per query, after the indexes")
    ap.add_argument("--runs-before", type=int, default=40,
                    help="timed calls of the global query before the indexes (each reads the whole table)")
    ap.add_argument("--puts", type=int, default=300, help="timed PostgresSaver.put calls, before and after")
    args = ap.parse_args()

    import psycopg

    from include.checkpoint_core.indexes import ensure_indexes
    from include.checkpoint_core.postgres_store import setup_postgres
    from include.checkpoint_core.stores import StoreTarget

    dsn = create_db("meta")
    try:
        setup_postgres(dsn, include_store=False)
        started = time.perf_counter()
        workload = load(dsn, args.checkpoints)
        load_s = time.perf_counter() - started
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE checkpoints")
            size = conn.execute("SELECT pg_size_pretty(pg_total_relation_size('checkpoints'))").fetchone()[0]
            cutoff = conn.execute("SELECT checkpoint_id FROM checkpoints ORDER BY checkpoint_id "
                                  "OFFSET %s LIMIT 1", (args.checkpoints // 10,)).fetchone()[0]
        sizes = sorted(workload["sizes"])
        print(f"loaded {args.checkpoints:,} checkpoints by COPY in {load_s:.0f}s ({size} with LangGraph's indexes): "
              f"{len(sizes):,} threads of {sizes[0]}-{sizes[-1]:,} checkpoints (median {sizes[len(sizes) // 2]}), "
              f"{len({u for _, u, _ in workload['threads']}):,} users, 4 session types", flush=True)

        global_filters, thread_ids = pick_samples(workload, args.runs)
        before = measure(dsn, workload, global_filters[:args.runs_before], thread_ids, global_warmup=3,
                         puts=args.puts, seed=1)
        prune_before = prune_ms(dsn, cutoff)
        print("measured before the indexes; creating them ...", flush=True)
        started = time.perf_counter()
        created = ensure_indexes(StoreTarget("postgres", dsn, "bench"))
        index_s = time.perf_counter() - started
        after = measure(dsn, workload, global_filters, thread_ids, puts=args.puts, seed=2)
        prune_after = prune_ms(dsn, cutoff)
        after_plans = plans(dsn, global_filters[0], thread_ids[0], cutoff)

        # The same lists with a metadata-only GIN in place of ours, to show why thread_id is in its key.
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("DROP INDEX checkpoint_ops_checkpoints_metadata_idx")
            conn.execute("CREATE INDEX bench_metadata_only_gin ON checkpoints USING gin (metadata jsonb_path_ops) "
                         "WITH (fastupdate = off)")
        plain = measure(dsn, workload, global_filters, thread_ids)

        labels = {
            "global": "list(None, filter={user_id, session_type}, limit=10)",
            "thread": 'list({thread_id}, filter={"source": "input"}, limit=10)',
            "put": "put() of one checkpoint, synchronous_commit=off",
        }
        print(f"\n{'ms per call':<56} {'runs':>9} {'p50 before':>10} {'p95 before':>10} {'p50 after':>9} "
              f"{'p95 after':>9} {'max after':>9} {'p95 b/a':>7}  p95 < {TARGET_P95_MS:g} ms after")
        for name, label in labels.items():
            b, a = before[name], after[name]
            verdict = "-" if name == "put" else ("yes" if pct(a, 95) < TARGET_P95_MS else "NO")
            print(f"{label:<56} {len(b):>4}/{len(a):<4} {pct(b, 50):>10.2f} {pct(b, 95):>10.2f} {pct(a, 50):>9.2f} "
                  f"{pct(a, 95):>9.2f} {max(a):>9.2f} {pct(b, 95) / pct(a, 95):>7.1f}  {verdict}")
        print(f"{'prune: DISTINCT thread_id of the oldest 10% (median)':<56} {'5/5':>9} {prune_before:>10.1f} "
              f"{'':>10} {prune_after:>9.1f} {'':>9} {'':>9} {prune_before / prune_after:>7.1f}")
        print("\nwith GIN (metadata jsonb_path_ops) instead of GIN (thread_id, metadata jsonb_path_ops):")
        for name in ("global", "thread"):
            print(f"  {labels[name]:<54} p50 {pct(plain[name], 50):7.2f}  p95 {pct(plain[name], 95):7.2f}  "
                  f"max {max(plain[name]):7.2f}")
        print(f"\nensure_indexes: {index_s:.1f}s on {args.checkpoints:,} checkpoints; created {', '.join(created) or 'nothing'}"
              + (f" (and extension {', '.join(created.extensions)})" if created.extensions else ""))
        for name, plan in after_plans.items():
            print(f"plan {name:<7} {plan}")
    finally:
        drop_db(dsn)
    return 0


if __name__ == "__main__":
    sys.exit(main())
