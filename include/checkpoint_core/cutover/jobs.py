"""The cutover's steps as the DAG runs them: preflight, prepare, ramp to a weight, roll back, decommission.

Each step reads the routing state first and does only what is left, so a retried or cleared task
converges: a weight already reached moves nothing, a move a killed attempt left in flight is taken
back once its lease has run out (``flip.settle_expired``), and fences an undone move left are dropped.
"""

from __future__ import annotations

import sqlite3
import stat
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import psycopg
from psycopg.rows import tuple_row

from include.checkpoint_core.cutover import flip, routes
from include.checkpoint_core.cutover.store_sync import sync_store
from include.checkpoint_core.migration.source import thread_ids as blue_thread_ids
from include.checkpoint_core.progress import Progress

Log = Callable[[str], None]
DEFAULT_BATCH_THREADS = 20


def connect_blue(path: str | Path, *, timeout_s: float = 30.0) -> sqlite3.Connection:
    """The mover's own connection to the app's SQLite file: explicit transactions, a long busy wait."""
    path = Path(path)
    if not path.is_file():
        raise routes.CutoverError(f"SQLite file {str(path)!r} does not exist; point the source connection at the "
                                  "file the app writes")
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=timeout_s)
    conn.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
    return conn


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def _green_threads(pg: psycopg.Connection) -> set[str]:
    cur = pg.cursor(row_factory=tuple_row)
    cur.execute("SELECT thread_id FROM checkpoints UNION SELECT thread_id FROM checkpoint_writes")
    return {r[0] for r in cur}


def _thread_counts(rows) -> dict[str, int]:
    return {tid: n for tid, n in rows}


def preflight(pg: psycopg.Connection, blue: sqlite3.Connection, blue_ident: str, *,
              max_delta_pct: float = 10.0, log: Log = print) -> dict:
    """Refuse to start what cannot end well; changes nothing. Returns the figures it checked."""
    tables = {r[0] for r in blue.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not {"checkpoints", "writes"} <= tables:
        raise routes.CutoverError("the source is not a SqliteSaver file (no checkpoints/writes tables)")
    columns = {r[1] for r in blue.execute("PRAGMA table_info('writes')")}
    if "task_path" not in columns:
        raise routes.CutoverError(
            "the source's writes table has no task_path column (an older SqliteSaver layout): the app must run a "
            "current langgraph-checkpoint-sqlite, whose setup() upgrades the file, before it can cut over")
    cur = pg.cursor(row_factory=tuple_row)
    cur.execute("SELECT to_regclass('checkpoints') IS NOT NULL, to_regclass('checkpoint_ops_migration_batches') IS NOT NULL")
    has_saver, migrated = cur.fetchone()
    if not has_saver or not migrated:
        raise routes.CutoverError(
            "the target has not been migrated into: run checkpoint_migration (with verify) from this source to this "
            "target first, then trigger the cutover")
    cur.execute("SELECT count(DISTINCT migration_id) FROM checkpoint_ops_migration_batches")
    migrations = cur.fetchone()[0]
    if migrations == 0:
        raise routes.CutoverError("the target records no imported migration batch: run checkpoint_migration first")
    st = routes.state(pg) if routes.green_installed(pg) else None
    if st is not None and st.blue != blue_ident:
        raise routes.ConflictingCutover(
            f"the target's routing state belongs to another source ({st.blue!r}), not {blue_ident!r}: finish or roll "
            "back that cutover first; nothing was changed")
    blue_ids = set(blue_thread_ids(blue))
    green_ids = _green_threads(pg)
    routed_green = set()
    if st is not None:
        cur.execute("SELECT thread_id FROM checkpoint_ops_routes WHERE store = 'green'")
        routed_green = {r[0] for r in cur}
    foreign = sorted(green_ids - blue_ids - routed_green)
    if foreign:
        raise routes.CutoverError(
            f"the target holds {len(foreign)} threads the source does not have (e.g. {foreign[:3]}): it holds other "
            "data. Cut over into the database the migration filled, or remove those threads; nothing was changed")
    # The catch-up delta: checkpoints the source has beyond the target's copy (each flip copies its threads
    # whole under the fence, so a delta is safe; a large one means the migration is stale).
    b = _thread_counts(blue.execute("SELECT thread_id, count(*) FROM checkpoints GROUP BY thread_id"))
    cur.execute("SELECT thread_id, count(*) FROM checkpoints GROUP BY thread_id")
    g = _thread_counts(cur.fetchall())
    pending = [t for t in blue_ids - routed_green if b.get(t, 0) != g.get(t, 0)]
    behind = sum(max(0, b.get(t, 0) - g.get(t, 0)) for t in pending)
    pct = 100.0 * behind / max(sum(b.values()), 1)
    log(f"preflight: {len(blue_ids):,} threads in the source, {len(green_ids):,} in the target; "
        f"{len(pending):,} threads changed since the migration, {behind:,} checkpoints ({pct:.1f}%) behind")
    if st is None and pct > max_delta_pct:
        raise routes.CutoverError(
            f"the target is {pct:.1f}% of the source's checkpoints behind (limit {max_delta_pct}%): run "
            "checkpoint_migration again (its catch-up copies what changed) or raise max_delta_pct, then trigger "
            "the cutover; nothing was changed")
    return {"threads": len(blue_ids), "target_threads": len(green_ids), "delta_threads": len(pending),
            "delta_checkpoints": behind, "delta_pct": round(pct, 2), "migrations": migrations, "resumed": st is not None,
            "weight": st.weight if st else 0, "phase": st.phase if st else None}


def prepare(pg: psycopg.Connection, blue: sqlite3.Connection, blue_ident: str, cutover_id: str, *,
            settle_s: float = 2.0, log: Log = print) -> dict:
    """Routing tables and guards on both sides, every source thread registered as blue."""
    st = routes.ensure_green(pg, cutover_id, blue_ident)
    routes.ensure_blue(blue)
    with pg.transaction():
        new = routes.enroll(pg, blue_thread_ids(blue))
    store = sync_store(pg, blue)
    counts = routes.counts(pg)
    log(f"prepare: store items newer in SQLite than in PostgreSQL copied: {store}")
    log(f"prepare: routing state for {blue_ident!r} (cutover {st.cutover_id}, weight {st.weight}%, {st.phase}); "
        f"{new:,} threads registered now, {counts['blue']:,} blue, {counts['green']:,} green")
    time.sleep(settle_s)  # every app process's cached "no cutover" has expired before any thread moves
    return {"cutover_id": st.cutover_id, "registered": new, **counts, "weight": st.weight, "phase": st.phase,
            "store": store}


def _move_all(pg, blue, ids: list[str], direction: str, *, batch_threads: int, lease_s: float, log: Log,
              label: str) -> dict:
    move = flip.move_to_green if direction == "green" else flip.move_to_blue
    progress = Progress(len(ids), "threads", log, label=label)
    totals = {"moved": 0, "checkpoints": 0, "writes": 0, "refused": {}, "skipped": 0}
    waits: list[float] = []
    for i in range(0, len(ids), batch_threads):
        r = move(pg, blue, ids[i:i + batch_threads], lease_s=lease_s)
        totals["moved"] += len(r.moved)
        totals["checkpoints"] += r.checkpoints
        totals["writes"] += r.writes
        totals["refused"].update(r.refused)
        totals["skipped"] += len(r.skipped)
        if r.moved:
            waits.append(r.wait_s)
        progress.advance(len(ids[i:i + batch_threads]))
    totals["seconds"] = progress.finish()["seconds"]
    totals["batch_seconds_p50"] = round(_percentile(waits, 0.5), 4)
    totals["batch_seconds_p99"] = round(_percentile(waits, 0.99), 4)
    totals["batch_seconds_max"] = round(max(waits, default=0.0), 4)
    return totals


def _tidy(pg, blue, log: Log) -> None:
    taken = flip.settle_expired(pg, blue)
    loose = flip.stale_fences(pg, blue)
    if taken or loose:
        log(f"settled {taken} moves a stopped attempt left in flight and {loose} fences it left behind")


def ramp(pg: psycopg.Connection, blue: sqlite3.Connection, weight: int, *, batch_threads: int = DEFAULT_BATCH_THREADS,
         lease_s: float = flip.DEFAULT_LEASE_S, log: Log = print) -> dict:
    """Route ``weight``% of threads (by bucket) to green, moving the blue ones below it."""
    if not 0 <= weight <= 100:
        raise routes.CutoverError(f"weight {weight} is not a percentage (0-100)")
    st = routes.state(pg)
    if st is None:
        raise routes.CutoverNotPrepared("no cutover is prepared on this target: run the DAG's prepare step")
    if st.phase != "ramping":
        raise routes.CutoverError(f"the cutover is {st.phase}; a new run is needed to ramp again")
    _tidy(pg, blue, log)
    if weight > st.weight:
        routes.set_weight(pg, weight)
    with pg.transaction():  # threads the app created in blue without registering (e.g. an old app process)
        late = routes.enroll(pg, blue_thread_ids(blue))
    out = _move_all(pg, blue, _blue_below(pg, max(weight, st.weight)), "green", batch_threads=batch_threads,
                    lease_s=lease_s, log=log, label=f"to {weight}%")
    if weight == 100:
        # Close the file to every writer, then move whatever an unrouted writer slipped in before that.
        blue.execute("BEGIN IMMEDIATE")
        routes.fence(blue, [routes.GLOBAL_FENCE], "final")
        blue.execute("COMMIT")
        with pg.transaction():
            late += routes.enroll(pg, blue_thread_ids(blue))
        rest = _move_all(pg, blue, _blue_below(pg, 100), "green", batch_threads=batch_threads, lease_s=lease_s,
                         log=log, label="final sweep")
        for key in ("moved", "checkpoints", "writes", "skipped"):
            out[key] += rest[key]
        out["refused"].update(rest["refused"])
    counts = routes.counts(pg)
    out.update(weight=max(weight, st.weight), late_registered=late, **{f"threads_{k}": v for k, v in counts.items()})
    log(f"weight {out['weight']}%: moved {out['moved']:,} threads ({out['checkpoints']:,} checkpoints) in "
        f"{out['seconds']:.1f} s; batch p50 {out['batch_seconds_p50']*1000:.0f} ms, p99 "
        f"{out['batch_seconds_p99']*1000:.0f} ms; now {counts['blue']:,} blue / {counts['green']:,} green")
    if out["refused"]:
        tid, why = next(iter(out["refused"].items()))
        log(f"{len(out['refused'])} threads stay blue, whole: e.g. {tid!r}: {why}")
    return out


def _blue_below(pg, weight: int) -> list[str]:
    cur = pg.cursor(row_factory=tuple_row)
    cur.execute("SELECT thread_id FROM checkpoint_ops_routes WHERE store = 'blue' AND moving_to IS NULL "
                "AND bucket < %s ORDER BY thread_id", (weight,))
    return [r[0] for r in cur]


def rollback(pg: psycopg.Connection, blue: sqlite3.Connection, *, batch_threads: int = DEFAULT_BATCH_THREADS,
             lease_s: float = flip.DEFAULT_LEASE_S, log: Log = print) -> dict:
    """Every thread back to blue with everything it wrote in green; new threads register blue."""
    st = routes.state(pg)
    if st is None:
        raise routes.CutoverNotPrepared("no cutover is prepared on this target: there is nothing to roll back")
    if st.phase == "complete":
        raise routes.CutoverError("the cutover is complete and the SQLite file decommissioned: a rollback now would "
                                  "need the file reopened; restore it from the decommission backup instead")
    _tidy(pg, blue, log)
    routes.set_weight(pg, 0, st.phase)
    blue.execute("DELETE FROM checkpoint_ops_cutover_fence WHERE thread_id = ?", (routes.GLOBAL_FENCE,))
    cur = pg.cursor(row_factory=tuple_row)
    cur.execute("SELECT thread_id FROM checkpoint_ops_routes WHERE store = 'green' AND moving_to IS NULL "
                "ORDER BY thread_id")
    ids = [r[0] for r in cur]
    out = _move_all(pg, blue, ids, "blue", batch_threads=batch_threads, lease_s=lease_s, log=log, label="rollback")
    counts = routes.counts(pg)
    if counts["green"] == 0:
        routes.set_weight(pg, 0, "rolled_back")
    out.update(weight=0, **{f"threads_{k}": v for k, v in counts.items()})
    log(f"rollback: moved {out['moved']:,} threads ({out['checkpoints']:,} checkpoints) back to SQLite; "
        f"now {counts['blue']:,} blue / {counts['green']:,} green")
    if out["refused"]:
        tid, why = next(iter(out["refused"].items()))
        log(f"{len(out['refused'])} threads stay in PostgreSQL, whole: e.g. {tid!r}: {why}")
    return out


def ready_to_decommission(pg: psycopg.Connection) -> routes.State:
    st = routes.state(pg)
    if st is None:
        raise routes.CutoverNotPrepared("no cutover is prepared on this target")
    counts = routes.counts(pg)
    if st.phase != "complete" and (counts["blue"] or counts["moving"] or st.weight != 100):
        raise routes.CutoverError(
            f"{counts['blue']:,} threads are still blue and {counts['moving']:,} moving (weight {st.weight}%): "
            "the file is decommissioned only after the 100% step moved every thread")
    return st


def decommission(pg: psycopg.Connection, blue: sqlite3.Connection, path: str | Path, *, log: Log = print) -> dict:
    """After 100% (and the caller's backup of the file): the guards dropped, the phase complete, the SQLite
    file read-only and fenced for every writer."""
    ready_to_decommission(pg)
    store = sync_store(pg, blue)  # what an app process still wrote to SqliteStore
    log(f"decommission: store items newer in SQLite than in PostgreSQL copied: {store}")
    counts = routes.counts(pg)
    with pg.transaction():
        routes.drop_guards(pg)
        pg.execute("UPDATE checkpoint_ops_cutover SET weight = 100, phase = 'complete', updated_at = now()")
    path = Path(path)
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        if p.exists():
            p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    log(f"decommissioned {str(path)!r}: read-only (mode {oct(path.stat().st_mode & 0o777)}), every writer fenced; "
        f"{counts['green']:,} threads on PostgreSQL")
    return {"phase": "complete", "threads_green": counts["green"], "mode": oct(path.stat().st_mode & 0o777),
            "store": store}


def plan(pg: psycopg.Connection, blue: sqlite3.Connection, steps: list[int]) -> list[dict]:
    """How many threads (and checkpoints) each step moves, by the buckets of the threads still blue."""
    routed: dict[str, str] = {}
    if routes.green_installed(pg):
        routed = routes.all_routes(pg)
    per_thread = dict(blue.execute("SELECT thread_id, count(*) FROM checkpoints GROUP BY thread_id").fetchall())
    by_bucket = [[0, 0] for _ in range(routes.BUCKETS)]
    for tid in blue_thread_ids(blue):
        if routed.get(tid, "blue") == "blue":
            b = by_bucket[routes.bucket(tid)]
            b[0] += 1
            b[1] += per_thread.get(tid, 0)
    out, low = [], 0
    for weight in steps:
        part = by_bucket[low:weight]
        out.append({"weight": weight, "threads": sum(p[0] for p in part), "checkpoints": sum(p[1] for p in part)})
        low = weight
    return out


def cutover_registry(summary: dict, now: float):
    """The cutover gauges of one task's summary, in a registry of their own (pushed, replacing the group)."""
    from prometheus_client import CollectorRegistry, Gauge

    from include.checkpoint_core.observability import names

    registry = CollectorRegistry()
    Gauge(names.CUTOVER_WEIGHT, "Share of threads routed to PostgreSQL by the cutover (percent)",
          registry=registry).set(summary.get("weight", 0))
    threads = Gauge(names.CUTOVER_THREADS, "Threads per store during the cutover", ["store"], registry=registry)
    for store in ("blue", "green", "moving"):
        threads.labels(store).set(summary.get(store, summary.get(f"threads_{store}", 0)) or 0)
    flips = Gauge(names.CUTOVER_FLIP_SECONDS, "Seconds a batch of threads was unwritable while it moved",
                  ["quantile"], registry=registry)
    for q, key in (("0.5", "batch_seconds_p50"), ("0.99", "batch_seconds_p99"), ("1", "batch_seconds_max")):
        flips.labels(q).set(summary.get(key, 0) or 0)
    Gauge(names.CUTOVER_LAST_RUN, "When a cutover task last changed the routing (unix time)",
          registry=registry).set(now)
    return registry


def status(pg: psycopg.Connection) -> dict:
    st = routes.state(pg) if routes.green_installed(pg) else None
    if st is None:
        return {"phase": None, "weight": 0}
    return {"phase": st.phase, "weight": st.weight, "cutover_id": st.cutover_id, **routes.counts(pg)}


def open_pair(dsn: str, path: str | Path):
    """(green autocommit connection, blue connection), both closed by the caller."""
    from include.checkpoint_core.postgres_store import connect_postgres

    return closing(connect_postgres(dsn)), closing(connect_blue(path))
