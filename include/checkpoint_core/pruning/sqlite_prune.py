"""Pruning for SqliteSaver files, which LangGraph ships no prune for.

Same semantics as the PostgreSQL side (see ``threads.decide``). SQLite has one writer at a
time, so each batch of threads is one short ``BEGIN IMMEDIATE`` transaction (at most
``batch_size`` threads and about ``TXN_BUDGET_S``): the app's writes wait at most one batch,
and everything a batch reads is exactly what it deletes. A dry run executes the same
statements and rolls back.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from include.checkpoint_core.errors import UnsupportedSchema
from include.checkpoint_core.progress import Progress
from include.checkpoint_core.migration.transcode import (
    EXT_DELTA_SNAPSHOT,
    RawExt,
    Rejected,
    _decode_checkpoint,
    parse_metadata,
)
from include.checkpoint_core.pruning.policy import PrunePolicy, PruneReport
from include.checkpoint_core.pruning.threads import (
    ERROR,
    INTERRUPT,
    TASKS,
    Heads,
    decide,
    doomed_calls,
    is_paused,
    pending_channels,
)
from include.checkpoint_core.sqlite_store import (
    SCHEMA_LEGACY,
    classify_sqlite_error,
    connect_sqlite,
    inspect_sqlite,
    sqlite_file_sizes,
)

UNREADABLE = "__checkpoint_ops_unreadable__"
CHUNK = 500  # ids per IN (...) list, well under SQLite's parameter limit
TXN_BUDGET_S = 0.05  # the longest a prune transaction holds the write lock, give or take one thread
# After each batch the lock is left free this long. SQLite's busy handler retries on a timer, so
# without a gap the prune could take the lock again before a waiting app writer wakes up.
YIELD_S = 0.05
ONLINE_VACUUM_MAX_BYTES = 256 << 20  # VACUUM blocks the app's writes while it rewrites the file
DELTA_METADATA_SQL = """
SELECT 1 FROM checkpoints WHERE thread_id = ? AND (
    instr(CAST(metadata AS TEXT), 'counters_since_delta_snapshot') > 0
    OR instr(CAST(metadata AS TEXT), 'delta_writes_versioned') > 0
) LIMIT 1
"""
CANDIDATES_SQL = """
SELECT DISTINCT c.thread_id FROM checkpoints c
WHERE c.checkpoint_id < :cutoff AND (:delete OR EXISTS (
    SELECT 1 FROM checkpoints d
    WHERE d.thread_id = c.thread_id AND d.checkpoint_ns = c.checkpoint_ns AND d.checkpoint_id > c.checkpoint_id
))
"""
ORPHAN_WRITES_SQL = """
SELECT w.rowid FROM writes w
WHERE w.rowid > ? AND w.checkpoint_id < ? AND NOT EXISTS (
    SELECT 1 FROM checkpoints c
    WHERE c.thread_id = w.thread_id AND c.checkpoint_ns = w.checkpoint_ns AND c.checkpoint_id = w.checkpoint_id
) ORDER BY w.rowid LIMIT ?
"""


def _chunks(items: list, size: int = CHUNK):
    for i in range(0, len(items), size):
        yield items[i : i + size]


def file_bytes(path: Path) -> int:
    """The database file and its WAL: what a VACUUM or a WAL checkpoint gives back."""
    sizes = sqlite_file_sizes(path)
    return sizes["main"] + sizes.get("wal", 0)


def _heads(conn: sqlite3.Connection, thread_id: str) -> tuple[Heads, dict[str, tuple]]:
    heads, rows = Heads(), {}
    for ns, cid, parent, type_, blob, metadata in conn.execute(
        """SELECT c.checkpoint_ns, c.checkpoint_id, c.parent_checkpoint_id, c.type, c.checkpoint, c.metadata
           FROM checkpoints c WHERE c.thread_id = ? AND c.checkpoint_id = (
               SELECT MAX(d.checkpoint_id) FROM checkpoints d
               WHERE d.thread_id = c.thread_id AND d.checkpoint_ns = c.checkpoint_ns)""",
        (thread_id,),
    ):
        heads.head[ns] = cid
        try:
            checkpoint, _ = _decode_checkpoint(type_, blob)
        except Rejected:
            # Encrypted or pickled: its pending nodes cannot be read, so it counts as paused.
            checkpoint = {"v": 4, "channel_values": {}, UNREADABLE: True}
        try:
            meta = parse_metadata(metadata)
        except Rejected:
            meta = {}
        rows[ns] = (checkpoint, parent)
        if int(checkpoint.get("v") or 0) < 4 and parent and conn.execute(
            "SELECT 1 FROM writes WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ? AND channel = ? LIMIT 1",
            (thread_id, ns, parent, TASKS),
        ).fetchone():
            heads.sends_parent[ns] = parent
        root = (meta.get("parents") or {}).get("") if isinstance(meta.get("parents"), dict) else None
        if ns and isinstance(root, str):
            heads.root[ns] = root
    return heads, rows


def _uses_delta(conn: sqlite3.Connection, thread_id: str, rows: dict[str, tuple]) -> bool:
    if conn.execute(DELTA_METADATA_SQL, (thread_id,)).fetchone():
        return True
    return any(
        isinstance(v, RawExt) and v.code == EXT_DELTA_SNAPSHOT
        for checkpoint, _ in rows.values()
        for v in (checkpoint.get("channel_values") or {}).values()
    )


def _delete_ids(conn: sqlite3.Connection, thread_id: str, ns: str, ids: list[str]) -> dict[str, int]:
    counts = {"checkpoints_deleted": 0, "writes_deleted": 0}
    for part in _chunks(ids):
        marks = ",".join("?" * len(part))
        args = (thread_id, ns, *part)
        counts["writes_deleted"] += conn.execute(
            f"DELETE FROM writes WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id IN ({marks})", args
        ).rowcount
        counts["checkpoints_deleted"] += conn.execute(
            f"DELETE FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id IN ({marks})", args
        ).rowcount
        # A kept checkpoint whose parent is gone is left with none, as PostgresSaver.prune does.
        conn.execute(
            f"UPDATE checkpoints SET parent_checkpoint_id = NULL "
            f"WHERE thread_id = ? AND checkpoint_ns = ? AND parent_checkpoint_id IN ({marks})",
            args,
        )
    return counts


def prune_thread(conn: sqlite3.Connection, thread_id: str, policy: PrunePolicy) -> dict[str, int]:
    """Prune one thread inside the caller's transaction; return what changed."""
    cutoff = policy.cutoff_id
    heads, rows = _heads(conn, thread_id)
    if not heads.head:
        return {}
    # The root head's writes only: LangGraph copies a live subgraph's interrupt or error onto it,
    # while an old subgraph head keeps stale ones after the thread has moved on.
    head_writes = {
        r[0]
        for r in conn.execute(
            "SELECT DISTINCT channel FROM writes WHERE thread_id = ? AND checkpoint_ns = '' AND checkpoint_id = ? "
            "AND channel IN (?, ?)",
            (thread_id, heads.head.get("", ""), INTERRUPT, ERROR),
        )
    }
    root = rows.get("", ({}, None))[0]
    root_values = list((root.get("channel_values") or {}).keys()) + (["__start__"] if root.get(UNREADABLE) else [])
    action = decide(
        heads,
        cutoff,
        strategy=policy.strategy,
        paused=is_paused(pending_channels(root_values), head_writes),
        delta=_uses_delta(conn, thread_id, rows),
        protect=policy.protect_interrupted,
    )
    if action == "protect":
        return {"threads_protected": 1}
    if action == "skip_delta":
        return {"threads_skipped_delta": 1}
    if action == "delete":
        return {
            "threads_deleted": 1,
            "writes_deleted": conn.execute("DELETE FROM writes WHERE thread_id = ?", (thread_id,)).rowcount,
            "checkpoints_deleted": conn.execute("DELETE FROM checkpoints WHERE thread_id = ?", (thread_id,)).rowcount,
        }
    doomed = {
        ns: [
            r[0]
            for r in conn.execute(
                "SELECT checkpoint_id FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id < ?",
                (thread_id, ns, cutoff),
            )
            if r[0] not in heads.kept(ns)
        ]
        for ns in heads.head
    }
    counts = {"checkpoints_deleted": 0, "writes_deleted": 0}
    for ns in doomed_calls(heads, set(doomed.get("", ()))):
        counts["writes_deleted"] += conn.execute(
            "DELETE FROM writes WHERE thread_id = ? AND checkpoint_ns = ?", (thread_id, ns)
        ).rowcount
        counts["checkpoints_deleted"] += conn.execute(
            "DELETE FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = ?", (thread_id, ns)
        ).rowcount
        doomed.pop(ns)
    for ns, ids in doomed.items():
        if ids:
            for key, value in _delete_ids(conn, thread_id, ns, ids).items():
                counts[key] += value
    if counts["checkpoints_deleted"]:
        counts["threads_trimmed"] = 1
    return counts


def _sweep_orphan_writes(conn: sqlite3.Connection, cutoff: str, dry_run: bool, batch: int = 1000) -> int:
    """Writes whose checkpoint is gone. Only old ones: a run may save writes just before
    their checkpoint, so a young orphan may be a checkpoint still on its way."""
    total, after = 0, 0
    while True:
        rowids = [r[0] for r in conn.execute(ORPHAN_WRITES_SQL, (after, cutoff, batch))]
        if not rowids:
            return total
        after = rowids[-1]
        if dry_run:
            total += len(rowids)
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            for part in _chunks(rowids):
                # Checked again under the write lock: a checkpoint saved since the scan keeps its writes.
                total += conn.execute(
                    f"DELETE FROM writes WHERE rowid IN ({','.join('?' * len(part))}) AND checkpoint_id < ? "
                    "AND NOT EXISTS (SELECT 1 FROM checkpoints c WHERE c.thread_id = writes.thread_id "
                    "AND c.checkpoint_ns = writes.checkpoint_ns AND c.checkpoint_id = writes.checkpoint_id)",
                    (*part, cutoff),
                ).rowcount
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def _sweep_store(conn: sqlite3.Connection, dry_run: bool) -> int:
    cols = {r[1] for r in conn.execute("PRAGMA table_info(store)")}
    if "expires_at" not in cols:
        return 0
    if dry_run:
        return conn.execute(
            "SELECT COUNT(*) FROM store WHERE expires_at IS NOT NULL AND expires_at < CURRENT_TIMESTAMP"
        ).fetchone()[0]
    from langgraph.store.sqlite import SqliteStore

    return SqliteStore(conn).sweep_ttl()


def _reclaim(conn: sqlite3.Connection, policy: PrunePolicy) -> dict:
    """Give space back: a WAL checkpoint always; incremental vacuum where the file enables it;
    otherwise VACUUM only when a quarter of the file is free and the file is small enough to
    rewrite quickly (it holds the write lock throughout)."""
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0] * page_size
    total = conn.execute("PRAGMA page_count").fetchone()[0] * page_size
    done = {"free_bytes_before": free}
    if policy.vacuum != "off":
        if conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2:
            conn.execute("PRAGMA incremental_vacuum").fetchall()
            done["vacuum"] = "incremental"
        elif policy.vacuum == "auto" and total > ONLINE_VACUUM_MAX_BYTES and free * 4 >= total:
            done["vacuum"] = (
                "skipped: the file is too big to rewrite while the app writes; free pages are reused. Run with "
                "vacuum=full in a quiet hour, or enable PRAGMA auto_vacuum=INCREMENTAL (then VACUUM once)."
            )
        elif policy.vacuum == "full" or (free >= 1 << 20 and free * 4 >= total):
            try:
                conn.execute("VACUUM")
                done["vacuum"] = "full"
            except sqlite3.OperationalError as exc:
                done["vacuum"] = f"skipped: {exc}"
    busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    done["wal_checkpoint"] = "busy (readers still on the WAL; it is reused, not grown)" if busy else "truncated"
    return done


def prune_sqlite(path: str | Path, policy: PrunePolicy, report: PruneReport, log: Callable[[str], None]) -> None:
    path = Path(path)
    schema = inspect_sqlite(path)
    if schema.version == SCHEMA_LEGACY:
        raise UnsupportedSchema(
            f"{path} holds the pre-0.2 LangGraph layout (checkpoints keyed by thread_ts).",
            hint="Open it once with a current SqliteSaver (or migrate it) before pruning.",
        )
    report.bytes_before = file_bytes(path)
    cutoff = policy.cutoff_id
    conn = connect_sqlite(path, policy.busy_timeout_ms, autocommit=True)
    try:
        if schema.journal_mode == "wal":
            # In WAL mode NORMAL never corrupts the file; a power cut may only undo the last
            # batches, which the next run deletes again. It spares an fsync per commit, which
            # the app's writers would otherwise wait for.
            conn.execute("PRAGMA synchronous = NORMAL")
        candidates = [
            r[0] for r in conn.execute(CANDIDATES_SQL, {"cutoff": cutoff, "delete": policy.strategy == "delete"})
        ]
        log(f"{len(candidates):,} threads hold checkpoints older than {policy.cutoff:%Y-%m-%d %H:%M} UTC")
        changed, progress, todo = 0, Progress(len(candidates), "threads", log, label="prune"), iter(candidates)
        thread_id = next(todo, None)
        while thread_id is not None:
            if changed >= policy.max_threads:
                report.sweep_limit_reached = True
                break
            conn.execute("BEGIN IMMEDIATE")
            began, in_batch = time.monotonic(), 0
            try:
                # A batch ends at batch_size threads or TXN_BUDGET_S, whichever comes first: the
                # app's writers queue behind this transaction, however big the threads are.
                while thread_id is not None and in_batch < policy.batch_size and changed < policy.max_threads:
                    if in_batch and time.monotonic() - began >= TXN_BUDGET_S:
                        break
                    counts = prune_thread(conn, thread_id, policy)
                    report.threads_examined += 1
                    report.add(counts)
                    progress.advance()
                    changed += bool(counts.get("threads_trimmed") or counts.get("threads_deleted"))
                    in_batch += 1
                    thread_id = next(todo, None)
                conn.execute("ROLLBACK" if policy.dry_run else "COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            if thread_id is not None:
                time.sleep(YIELD_S)
        progress.finish()
        report.orphan_writes_deleted = _sweep_orphan_writes(conn, policy.orphan_cutoff_id, policy.dry_run)
        report.store_items_expired = _sweep_store(conn, policy.dry_run)
        if not policy.dry_run:
            report.space = _reclaim(conn, policy)
    except sqlite3.Error as exc:
        raise classify_sqlite_error(exc, path, "pruning") from exc
    finally:
        conn.close()
    report.bytes_after = file_bytes(path)
