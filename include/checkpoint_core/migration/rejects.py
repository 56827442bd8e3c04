"""A thread is migrated whole or rejected whole.

Batches hold one table each and import in parallel, so the batch that refuses a thread's
checkpoint cannot see the batches that hold its writes. After every import (and at the end of
catch-up) ``settle_rejected_threads`` takes each thread with a refused row out of the target:
its checkpoints, writes and blobs, keyed by what the source holds (a row only the target has is
never touched), one transaction per thread, recorded in
``checkpoint_ops_migration_rejected_threads``. ``write_rejected_file`` keeps every source row of
those threads, bytes as they are, in a SqliteSaver-layout file the user can repair and migrate.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Callable

import psycopg

from include.checkpoint_core.migration.source import iter_batches
from include.checkpoint_core.migration.transcode import Rejected, split_checkpoint

REJECTED_ROWS_SQL = """
    SELECT table_name, row_key, reason FROM checkpoint_ops_migration_rejects
    WHERE migration_id = %s AND table_name IN ('checkpoints', 'writes')
    ORDER BY table_name, batch_no, row_key
"""
SETTLED_SQL = "SELECT thread_id FROM checkpoint_ops_migration_rejected_threads WHERE migration_id = %s"
DELETE_SQL = {
    "checkpoints": """DELETE FROM checkpoints WHERE (thread_id, checkpoint_ns, checkpoint_id) IN (
        SELECT * FROM unnest(%s::text[], %s::text[], %s::text[]))""",
    "writes": """DELETE FROM checkpoint_writes WHERE (thread_id, checkpoint_ns, checkpoint_id, task_id, idx) IN (
        SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::int[]))""",
    "blobs": """DELETE FROM checkpoint_blobs WHERE (thread_id, checkpoint_ns, channel, version) IN (
        SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[]))""",
}
RECORD_SQL = """
    INSERT INTO checkpoint_ops_migration_rejected_threads (migration_id, thread_id, reason, checkpoints, writes, removed_rows)
    VALUES (%s, %s, %s, %s, %s, %s)
    ON CONFLICT (migration_id, thread_id) DO UPDATE SET
        checkpoints = EXCLUDED.checkpoints, writes = EXCLUDED.writes,
        removed_rows = checkpoint_ops_migration_rejected_threads.removed_rows + EXCLUDED.removed_rows,
        settled_at = now()
"""
THREADS_SQL = """
    SELECT thread_id, reason, checkpoints, writes, removed_rows FROM checkpoint_ops_migration_rejected_threads
    WHERE migration_id = %s ORDER BY thread_id
"""


def rejected_thread_reasons(pg: psycopg.Connection, migration_id: str) -> dict[str, str]:
    """Each thread with a refused checkpoint or write, and the first reason given."""
    reasons: dict[str, str] = {}
    for r in pg.execute(REJECTED_ROWS_SQL, (migration_id,)).fetchall():
        key = json.loads(r["row_key"])
        reasons.setdefault(key[0], f"{r['table_name']} {key}: {r['reason']}")
    return reasons


def rejected_threads(pg: psycopg.Connection, migration_id: str) -> list[dict]:
    return pg.execute(THREADS_SQL, (migration_id,)).fetchall()


def unsettled_threads(pg: psycopg.Connection, migration_id: str) -> list[str]:
    settled = {r["thread_id"] for r in pg.execute(SETTLED_SQL, (migration_id,)).fetchall()}
    return sorted(set(rejected_thread_reasons(pg, migration_id)) - settled)


def _thread_keys(src: sqlite3.Connection, thread_id: str) -> dict[str, list[tuple]]:
    """Every key the source holds for one thread, blobs derived as the import derives them."""
    keys: dict[str, list[tuple]] = {"checkpoints": [], "writes": [], "blobs": []}
    for rows in iter_batches(src, "checkpoints", 500, thread_ids=[thread_id]):
        for row in rows:
            keys["checkpoints"].append((row[0], row[1], row[2]))
            try:
                _, blobs, _, _ = split_checkpoint(*row)
            except Rejected:
                continue  # refused: it produced no blob rows
            keys["blobs"].extend((row[0], row[1], channel, version) for channel, version, _, _ in blobs)
    for rows in iter_batches(src, "writes", 1000, thread_ids=[thread_id]):
        keys["writes"].extend((r[0], r[1], r[2], r[3], int(r[5])) for r in rows)
    return keys


def settle_rejected_threads(pg: psycopg.Connection, src: sqlite3.Connection, migration_id: str, *,
                            log: Callable[[str], None] = print) -> dict:
    """Take every thread with a refused row out of the target whole. Idempotent: a thread
    already taken out has nothing left to delete, and its record is refreshed."""
    reasons = rejected_thread_reasons(pg, migration_id)
    removed_total = 0
    for thread_id in sorted(reasons):
        keys = _thread_keys(src, thread_id)
        removed = 0
        with pg.transaction(), pg.cursor() as cur:
            for table in ("writes", "blobs", "checkpoints"):
                if keys[table]:
                    cur.execute(DELETE_SQL[table], [list(col) for col in zip(*keys[table])])
                    removed += cur.rowcount
            cur.execute(RECORD_SQL, (migration_id, thread_id, reasons[thread_id], len(keys["checkpoints"]),
                                     len(keys["writes"]), removed))
        removed_total += removed
        log(f"rejected thread {thread_id!r} whole ({len(keys['checkpoints'])} checkpoints, {len(keys['writes'])} "
            f"writes; {removed} rows taken out of the target): {reasons[thread_id]}")
    return {"threads": len(reasons), "removed_rows": removed_total}


def write_rejected_file(source_path: str | Path, thread_ids: list[str], dest: Path) -> dict:
    """Every source row of ``thread_ids`` in a new SQLite file with the source's own table
    layout (bytes copied as they are): repair it, then migrate it as a source of its own."""
    dest.unlink(missing_ok=True)
    counts = {"checkpoints": 0, "writes": 0}
    with closing(sqlite3.connect(dest.resolve().as_uri(), uri=True)) as out:  # uri: so ATTACH takes mode=ro
        out.execute("ATTACH DATABASE ? AS src", (f"{Path(source_path).resolve().as_uri()}?mode=ro",))
        for table in counts:
            ddl = out.execute("SELECT sql FROM src.sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone()
            if ddl is None:
                continue
            out.execute(ddl[0])
            for i in range(0, len(thread_ids), 500):
                part = thread_ids[i : i + 500]
                counts[table] += out.execute(
                    f"INSERT INTO main.{table} SELECT * FROM src.{table} WHERE thread_id IN ({', '.join('?' * len(part))})",
                    part).rowcount
        out.commit()
        out.execute("DETACH DATABASE src")
    return counts
