"""Pruning for PostgresSaver databases, built on LangGraph's own prune statements.

``PostgresSaver.prune`` keeps only each namespace's latest checkpoint, with no age bound and
no counts. A retention policy needs both: a thread that is still in use keeps its recent
history, a dry run must say what would go, and the report must say what went. So each thread
runs LangGraph's statements (``PRUNE_HEADS_SQL``, its DeltaChannel check, its blob
bookkeeping) with an age bound added, in one short REPEATABLE READ transaction: what the app
commits meanwhile is invisible to the prune, so it is neither seen nor deleted.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import psycopg
from langgraph.checkpoint.postgres.base import (
    PRUNE_DELTA_THREADS_SQL,
    PRUNE_HEADS_SQL,
    PRUNE_REFERENCED_BLOBS_SQL,
    PRUNE_SNAPSHOT_SQL,
    _garbage_blobs,
)
from psycopg.rows import dict_row

from include.checkpoint_core.errors import NotACheckpointStore
from include.checkpoint_core.postgres_store import connect_postgres, describe_dsn
from include.checkpoint_core.progress import Progress
from include.checkpoint_core.pruning.policy import PrunePolicy, PruneReport
from include.checkpoint_core.pruning.threads import ERROR, INTERRUPT, Heads, decide, doomed_calls, is_paused

TABLES = ("checkpoints", "checkpoint_blobs", "checkpoint_writes")
DELETED_BLOBS_GRACE = timedelta(days=1)
DELETED_THREADS_DDL = """
CREATE TABLE IF NOT EXISTS checkpoint_ops_deleted_threads (
    thread_id TEXT PRIMARY KEY,
    deleted_at TIMESTAMPTZ NOT NULL
)
"""
RECORD_DELETED_SQL = """
INSERT INTO checkpoint_ops_deleted_threads (thread_id, deleted_at) VALUES (%s, %s)
ON CONFLICT (thread_id) DO UPDATE SET deleted_at = EXCLUDED.deleted_at
"""
# Threads dropped more than the grace ago: their blobs go unless the thread came back.
DUE_DELETED_SQL = "SELECT thread_id FROM checkpoint_ops_deleted_threads WHERE deleted_at < %s"
DELETE_DEFERRED_BLOBS_SQL = """
DELETE FROM checkpoint_blobs b
WHERE b.thread_id = %s AND NOT EXISTS (SELECT 1 FROM checkpoints c WHERE c.thread_id = b.thread_id)
"""
CANDIDATES_SQL = """
SELECT DISTINCT c.thread_id FROM checkpoints c
WHERE c.checkpoint_id < %(cutoff)s AND (%(delete)s OR EXISTS (
    SELECT 1 FROM checkpoints d
    WHERE d.thread_id = c.thread_id AND d.checkpoint_ns = c.checkpoint_ns AND d.checkpoint_id > c.checkpoint_id
))
"""
ROOT_PENDING_SQL = """
SELECT v.key FROM checkpoints c
CROSS JOIN LATERAL jsonb_each_text(c.checkpoint -> 'channel_versions') AS v
WHERE c.thread_id = %s AND c.checkpoint_ns = '' AND c.checkpoint_id = %s
AND (v.key = '__start__' OR v.key LIKE 'branch:%%' OR v.key LIKE 'start:%%')
AND (c.checkpoint -> 'channel_values' ? v.key OR EXISTS (
    SELECT 1 FROM checkpoint_blobs b
    WHERE b.thread_id = c.thread_id AND b.checkpoint_ns = '' AND b.channel = v.key
    AND b.version = v.value AND b.type <> 'empty'
))
"""
# The root head's writes only: LangGraph copies a live subgraph's interrupt or error onto it,
# while an old subgraph head keeps stale ones after the thread has moved on.
HEAD_WRITES_SQL = """
SELECT DISTINCT channel FROM checkpoint_writes
WHERE thread_id = %s AND checkpoint_ns = '' AND checkpoint_id = %s AND channel = ANY(%s)
"""
DOOMED_SQL = """
SELECT checkpoint_id FROM checkpoints
WHERE thread_id = %s AND checkpoint_ns = %s AND checkpoint_id < %s AND checkpoint_id <> ALL(%s)
"""
DELETE_WRITES_SQL = "DELETE FROM checkpoint_writes WHERE thread_id = %s AND checkpoint_ns = %s AND checkpoint_id = ANY(%s)"
DELETE_CHECKPOINTS_SQL = """
WITH deleted AS (
    DELETE FROM checkpoints WHERE thread_id = %s AND checkpoint_ns = %s AND checkpoint_id = ANY(%s)
    RETURNING checkpoint -> 'channel_versions' AS versions
)
SELECT (SELECT COUNT(*) FROM deleted) AS n, v.key AS channel, v.value AS version
FROM deleted CROSS JOIN LATERAL jsonb_each_text(deleted.versions) AS v
"""
UNPARENT_SQL = """
UPDATE checkpoints SET parent_checkpoint_id = NULL
WHERE thread_id = %s AND checkpoint_ns = %s AND parent_checkpoint_id = ANY(%s)
"""
# LangGraph's PRUNE_BLOBS_SQL takes one channel per statement; this takes a namespace's
# (channel, version) pairs at once: one round trip instead of one per channel.
DELETE_BLOBS_SQL = """
DELETE FROM checkpoint_blobs b USING unnest(%s::text[], %s::text[]) AS g(channel, version)
WHERE b.thread_id = %s AND b.checkpoint_ns = %s AND b.channel = g.channel AND b.version = g.version
"""
# Blobs no checkpoint of their namespace references, below the newest version referenced for
# their channel. PostgresSaver commits a checkpoint's blobs with it (one pipeline sync), but a
# writer that commits blobs first would make a newer unreferenced version a checkpoint in
# flight: sparing those costs at most a leaked blob, never a lost one.
ORPHAN_BLOBS_SQL = """
WITH ref AS (
    SELECT c.checkpoint_ns, v.key AS channel, v.value AS version FROM checkpoints c
    CROSS JOIN LATERAL jsonb_each_text(c.checkpoint -> 'channel_versions') AS v
    WHERE c.thread_id = %(t)s
), newest AS (
    SELECT checkpoint_ns, channel, MAX(version) AS version FROM ref GROUP BY checkpoint_ns, channel
)
DELETE FROM checkpoint_blobs b USING newest n
WHERE b.thread_id = %(t)s AND b.checkpoint_ns = n.checkpoint_ns AND b.channel = n.channel
AND b.version < n.version AND NOT EXISTS (
    SELECT 1 FROM ref r WHERE r.checkpoint_ns = b.checkpoint_ns AND r.channel = b.channel AND r.version = b.version
)
"""
ORPHAN_WRITES_SQL = """
SELECT w.thread_id, w.checkpoint_ns, w.checkpoint_id FROM checkpoint_writes w
WHERE w.checkpoint_id < %s AND NOT EXISTS (
    SELECT 1 FROM checkpoints c
    WHERE c.thread_id = w.thread_id AND c.checkpoint_ns = w.checkpoint_ns AND c.checkpoint_id = w.checkpoint_id
)
GROUP BY w.thread_id, w.checkpoint_ns, w.checkpoint_id
"""
# Deletes re-check the orphan condition: a checkpoint saved since the scan keeps its writes.
DELETE_ORPHAN_WRITES_SQL = """
DELETE FROM checkpoint_writes w USING unnest(%s::text[], %s::text[], %s::text[]) AS g(thread_id, checkpoint_ns, checkpoint_id)
WHERE w.thread_id = g.thread_id AND w.checkpoint_ns = g.checkpoint_ns AND w.checkpoint_id = g.checkpoint_id
AND NOT EXISTS (
    SELECT 1 FROM checkpoints c
    WHERE c.thread_id = w.thread_id AND c.checkpoint_ns = w.checkpoint_ns AND c.checkpoint_id = w.checkpoint_id
)
"""


def _heads(cur, thread_id: str) -> Heads:
    heads = Heads()
    for r in cur.execute(PRUNE_HEADS_SQL, (thread_id,) * 4, prepare=False).fetchall():
        heads.head[r["checkpoint_ns"]] = r["head"]
        if r["sends_parent"]:
            heads.sends_parent[r["checkpoint_ns"]] = r["sends_parent"]
        if r["checkpoint_ns"] and r["root"] and r["root_saved"]:
            heads.root[r["checkpoint_ns"]] = r["root"]
    return heads


def _delete_namespace_ids(cur, thread_id: str, ns: str, ids: list[str]) -> dict[str, int]:
    counts = {"writes_deleted": cur.execute(DELETE_WRITES_SQL, (thread_id, ns, ids), prepare=False).rowcount}
    freed = cur.execute(DELETE_CHECKPOINTS_SQL, (thread_id, ns, ids), prepare=False).fetchall()
    counts["checkpoints_deleted"] = freed[0]["n"] if freed else len(ids)
    cur.execute(UNPARENT_SQL, (thread_id, ns, ids), prepare=False)
    counts["blobs_deleted"] = 0
    if freed:
        referenced = cur.execute(PRUNE_REFERENCED_BLOBS_SQL, (thread_id, ns), prepare=False).fetchall()
        pairs = [(ch, v) for ch, versions in _garbage_blobs(freed, referenced).items() for v in versions]
        if pairs:
            channels, versions = map(list, zip(*pairs))
            counts["blobs_deleted"] = cur.execute(
                DELETE_BLOBS_SQL, (channels, versions, thread_id, ns), prepare=False
            ).rowcount
    return counts


def prune_thread(cur, thread_id: str, policy: PrunePolicy) -> dict[str, int]:
    """Prune one thread; the caller owns the transaction (REPEATABLE READ, set first)."""
    heads = _heads(cur, thread_id)
    if not heads.head:
        return {}
    head_writes = {
        r["channel"]
        for r in cur.execute(HEAD_WRITES_SQL, (thread_id, heads.head.get("", ""), [INTERRUPT, ERROR]), prepare=False)
    }
    pending = [r["key"] for r in cur.execute(ROOT_PENDING_SQL, (thread_id, heads.head.get("", "")), prepare=False)]
    delta = bool(cur.execute(PRUNE_DELTA_THREADS_SQL, ([thread_id], [thread_id]), prepare=False).fetchall())
    action = decide(
        heads, policy.cutoff_id, strategy=policy.strategy, paused=is_paused(pending, head_writes),
        delta=delta, protect=policy.protect_interrupted,
    )
    if action == "protect":
        return {"threads_protected": 1}
    if action == "skip_delta":
        return {"threads_skipped_delta": 1}
    if action == "delete":
        # The blobs stay for DELETED_BLOBS_GRACE: an app that loaded this thread just before
        # the prune saves its next checkpoint pointing at them (unchanged channels are not
        # re-sent), and that checkpoint must still load.
        if not policy.dry_run:
            cur.execute(RECORD_DELETED_SQL, (thread_id, policy.now_or_utcnow()), prepare=False)
        return {
            "threads_deleted": 1,
            "checkpoints_deleted": cur.execute("DELETE FROM checkpoints WHERE thread_id = %s", (thread_id,)).rowcount,
            "writes_deleted": cur.execute("DELETE FROM checkpoint_writes WHERE thread_id = %s", (thread_id,)).rowcount,
        }
    counts = {"checkpoints_deleted": 0, "writes_deleted": 0, "blobs_deleted": 0}
    doomed = {
        ns: [r["checkpoint_id"] for r in cur.execute(DOOMED_SQL, (thread_id, ns, policy.cutoff_id, list(heads.kept(ns))), prepare=False)]
        for ns in heads.head
    }
    calls = doomed_calls(heads, set(doomed.get("", ())))
    if calls:
        for table, key in zip(TABLES, ("checkpoints_deleted", "blobs_deleted", "writes_deleted")):
            counts[key] += cur.execute(
                f"DELETE FROM {table} WHERE thread_id = %s AND checkpoint_ns = ANY(%s)", (thread_id, list(calls))
            ).rowcount
    for ns, ids in doomed.items():
        if ids and ns not in calls:
            for key, value in _delete_namespace_ids(cur, thread_id, ns, ids).items():
                counts[key] += value
    if counts["checkpoints_deleted"]:
        counts["threads_trimmed"] = 1
    counts["orphan_blobs_deleted"] = cur.execute(ORPHAN_BLOBS_SQL, {"t": thread_id}, prepare=False).rowcount
    return counts


def relation_bytes(conn: psycopg.Connection) -> int:
    row = conn.execute(
        "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) AS n FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = current_schema() AND c.relname = ANY(%s)",
        (list(TABLES),),
    ).fetchone()
    return int(row["n"])


def _sweep_orphan_writes(conn: psycopg.Connection, cutoff: str, dry_run: bool, batch: int = 1000) -> int:
    """Old writes whose checkpoint is gone (young ones may precede a checkpoint being saved):
    one scan for their keys, then short deletes of ``batch`` checkpoints' writes each."""
    keys = [(r["thread_id"], r["checkpoint_ns"], r["checkpoint_id"]) for r in conn.execute(ORPHAN_WRITES_SQL, (cutoff,))]
    total = 0
    for i in range(0, len(keys), batch):
        columns = [list(c) for c in zip(*keys[i : i + batch])]
        with conn.transaction():
            total += conn.execute(DELETE_ORPHAN_WRITES_SQL, columns).rowcount
            if dry_run:
                raise psycopg.Rollback()
    return total


def _sweep_deleted_threads_blobs(conn: psycopg.Connection, policy: PrunePolicy) -> int:
    """Blobs of threads ``delete`` dropped over a grace period ago and that nobody resumed since
    (a resumed thread keeps them: its new checkpoints may reference them)."""
    if not conn.execute("SELECT to_regclass('checkpoint_ops_deleted_threads') AS t").fetchone()["t"]:
        return 0
    due = [r["thread_id"] for r in conn.execute(DUE_DELETED_SQL, (policy.now_or_utcnow() - DELETED_BLOBS_GRACE,))]
    total = 0
    for thread_id in due:
        with conn.transaction():
            total += conn.execute(DELETE_DEFERRED_BLOBS_SQL, (thread_id,)).rowcount
            conn.execute("DELETE FROM checkpoint_ops_deleted_threads WHERE thread_id = %s", (thread_id,))
            if policy.dry_run:
                raise psycopg.Rollback()
    return total


def _sweep_store(conn: psycopg.Connection, dry_run: bool) -> int:
    has_ttl = conn.execute(
        "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() "
        "AND table_name = 'store' AND column_name = 'expires_at'"
    ).fetchone()
    if not has_ttl:
        return 0
    if dry_run:
        return conn.execute("SELECT COUNT(*) AS n FROM store WHERE expires_at IS NOT NULL AND expires_at < NOW()").fetchone()["n"]
    from langgraph.store.postgres import PostgresStore

    return PostgresStore(conn).sweep_ttl()


def prune_postgres(dsn: str, policy: PrunePolicy, report: PruneReport, log: Callable[[str], None]) -> None:
    where = describe_dsn(dsn)
    with connect_postgres(dsn, autocommit=True, row_factory=dict_row) as conn:
        missing = [t for t in TABLES if not conn.execute("SELECT to_regclass(%s) AS r", (t,)).fetchone()["r"]]
        if missing:
            raise NotACheckpointStore(
                f"{where} has no {', '.join(missing)} table(s).",
                hint="Point the connection at the PostgresSaver database, or run checkpoint_setup first.",
            )
        report.bytes_before = relation_bytes(conn)
        if not policy.dry_run:
            conn.execute(DELETED_THREADS_DDL)
        cutoff = policy.cutoff_id
        candidates = [
            r["thread_id"]
            for r in conn.execute(CANDIDATES_SQL, {"cutoff": cutoff, "delete": policy.strategy == "delete"})
        ]
        log(f"{len(candidates):,} threads hold checkpoints older than {policy.cutoff:%Y-%m-%d %H:%M} UTC")
        changed, progress = 0, Progress(len(candidates), "threads", log, label="prune")
        for thread_id in candidates:
            if changed >= policy.max_threads:
                report.sweep_limit_reached = True
                break
            counts = _prune_one(conn, thread_id, policy)
            report.threads_examined += 1
            report.add(counts)
            changed += bool(counts.get("threads_trimmed") or counts.get("threads_deleted"))
            progress.advance()
        progress.finish()
        report.orphan_writes_deleted = _sweep_orphan_writes(conn, policy.orphan_cutoff_id, policy.dry_run)
        report.orphan_blobs_deleted += _sweep_deleted_threads_blobs(conn, policy)
        report.store_items_expired = _sweep_store(conn, policy.dry_run)
        if not policy.dry_run and policy.vacuum != "off":
            conn.execute(f"VACUUM (ANALYZE) {', '.join(TABLES)}")
            report.space = {"vacuum": "VACUUM (ANALYZE) " + ", ".join(TABLES)}
        report.bytes_after = relation_bytes(conn)


def _prune_one(conn: psycopg.Connection, thread_id: str, policy: PrunePolicy, attempts: int = 3) -> dict[str, int]:
    """One thread, one transaction; a clash with the app's writes is retried, then left for the
    next run (counted as busy) rather than failing the whole prune."""
    for attempt in range(attempts):
        counts: dict[str, int] = {}
        try:
            with conn.transaction(), conn.cursor() as cur:
                cur.execute(PRUNE_SNAPSHOT_SQL)
                counts = prune_thread(cur, thread_id, policy)
                if policy.dry_run:
                    raise psycopg.Rollback()  # the transaction block undoes it and swallows this
        except (psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected):
            if attempt + 1 == attempts:
                return {"threads_busy": 1}
            continue
        return counts
    return {"threads_busy": 1}
