"""The PostgreSQL side of a migration: SQL, bookkeeping tables and the batch loader.

Like LangGraph's ``postgres/base.py``, every statement lives here as a constant. A batch is
loaded in one transaction: claim the batch in ``checkpoint_ops_migration_batches`` (so a
retried or duplicated task instance skips it), COPY the rows into session-local staging
tables, move them into the saver's tables with ``ON CONFLICT``, record rejects. Either all
of that commits or none of it does, so importing a batch twice changes nothing.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import psycopg

from include.checkpoint_core.migration.transcode import (
    Rejected,
    transcode_checkpoint,
    transcode_store_item,
    transcode_write,
)

BOOKKEEPING_DDL = (
    """CREATE TABLE IF NOT EXISTS checkpoint_ops_migration_batches (
        migration_id text NOT NULL,
        table_name text NOT NULL,
        batch_no integer NOT NULL,
        sha256 text NOT NULL,
        rows_read integer NOT NULL DEFAULT 0,
        rows_imported integer NOT NULL DEFAULT 0,
        rows_rejected integer NOT NULL DEFAULT 0,
        seconds double precision NOT NULL DEFAULT 0,
        imported_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (migration_id, table_name, batch_no)
    )""",
    """CREATE TABLE IF NOT EXISTS checkpoint_ops_migration_rejects (
        migration_id text NOT NULL,
        table_name text NOT NULL,
        batch_no integer NOT NULL,
        row_key text NOT NULL,
        reason text NOT NULL
    )""",
    """CREATE UNIQUE INDEX IF NOT EXISTS checkpoint_ops_migration_rejects_row
        ON checkpoint_ops_migration_rejects (migration_id, table_name, row_key)""",
    # What the opt-in repair changed, row by row.
    """CREATE TABLE IF NOT EXISTS checkpoint_ops_migration_repairs (
        migration_id text NOT NULL,
        table_name text NOT NULL,
        row_key text NOT NULL,
        repair text NOT NULL,
        PRIMARY KEY (migration_id, table_name, row_key)
    )""",
    # A thread with a rejected row is taken out of the target whole (rejects.py).
    """CREATE TABLE IF NOT EXISTS checkpoint_ops_migration_rejected_threads (
        migration_id text NOT NULL,
        thread_id text NOT NULL,
        reason text NOT NULL,
        checkpoints integer NOT NULL,
        writes integer NOT NULL,
        removed_rows integer NOT NULL,
        settled_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (migration_id, thread_id)
    )""",
    """CREATE TABLE IF NOT EXISTS checkpoint_ops_migration_catchup (
        migration_id text NOT NULL,
        table_name text NOT NULL,
        watermark bigint NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (migration_id, table_name)
    )""",
)

STAGING_DDL = (
    """CREATE TEMP TABLE IF NOT EXISTS cpo_stage_checkpoints (
        thread_id text, checkpoint_ns text, checkpoint_id text, parent_checkpoint_id text,
        checkpoint jsonb, metadata jsonb) ON COMMIT DELETE ROWS""",
    """CREATE TEMP TABLE IF NOT EXISTS cpo_stage_blobs (
        thread_id text, checkpoint_ns text, channel text, version text, type text, blob bytea) ON COMMIT DELETE ROWS""",
    """CREATE TEMP TABLE IF NOT EXISTS cpo_stage_writes (
        thread_id text, checkpoint_ns text, checkpoint_id text, task_id text, task_path text,
        idx integer, channel text, type text, blob bytea) ON COMMIT DELETE ROWS""",
    """CREATE TEMP TABLE IF NOT EXISTS cpo_stage_store (
        prefix text, key text, value jsonb, created_at timestamptz, updated_at timestamptz,
        expires_at timestamptz, ttl_minutes double precision) ON COMMIT DELETE ROWS""",
)

CLAIM_BATCH_SQL = """
    INSERT INTO checkpoint_ops_migration_batches (migration_id, table_name, batch_no, sha256)
    VALUES (%s, %s, %s, %s)
    ON CONFLICT (migration_id, table_name, batch_no) DO NOTHING
    RETURNING batch_no
"""
DONE_BATCH_SQL = """
    SELECT sha256 FROM checkpoint_ops_migration_batches
    WHERE migration_id = %s AND table_name = %s AND batch_no = %s
"""
FINISH_BATCH_SQL = """
    UPDATE checkpoint_ops_migration_batches
    SET rows_read = %s, rows_imported = %s, rows_rejected = %s, seconds = %s, imported_at = now()
    WHERE migration_id = %s AND table_name = %s AND batch_no = %s
"""
RECORD_REPAIR_SQL = """
    INSERT INTO checkpoint_ops_migration_repairs (migration_id, table_name, row_key, repair)
    VALUES (%s, %s, %s, %s)
    ON CONFLICT (migration_id, table_name, row_key) DO NOTHING
"""
RECORD_REJECT_SQL = """
    INSERT INTO checkpoint_ops_migration_rejects (migration_id, table_name, batch_no, row_key, reason)
    VALUES (%s, %s, %s, %s, %s)
    ON CONFLICT (migration_id, table_name, row_key) DO NOTHING
"""

COPY_SQL = {
    "checkpoints": "COPY cpo_stage_checkpoints (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, checkpoint, metadata) FROM STDIN",
    "blobs": "COPY cpo_stage_blobs (thread_id, checkpoint_ns, channel, version, type, blob) FROM STDIN (FORMAT BINARY)",
    "writes": "COPY cpo_stage_writes (thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, idx, channel, type, blob) FROM STDIN (FORMAT BINARY)",
    "store": "COPY cpo_stage_store (prefix, key, value, created_at, updated_at, expires_at, ttl_minutes) FROM STDIN",
}
# The initial load first tries COPY straight into the saver's table (one pass instead of two);
# a row that is already there makes it fall back to the staging table and ON CONFLICT.
DIRECT_COPY_SQL = {
    "checkpoints": "COPY checkpoints (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, checkpoint, metadata) FROM STDIN",
    "writes": "COPY checkpoint_writes (thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, idx, channel, type, blob) FROM STDIN (FORMAT BINARY)",
}
# Binary COPY sends bytea as it is, instead of hex text twice its size.
BINARY_TYPES = {
    "blobs": ["text", "text", "text", "text", "text", "bytea"],
    "writes": ["text", "text", "text", "text", "text", "int4", "text", "text", "bytea"],
}

# ``insert`` leaves existing rows alone (the initial load: a row already there is this same row);
# ``upsert`` replaces them (catch-up: the app rewrote the row after the snapshot).
MOVE_SQL = {
    ("checkpoints", "insert"): """
        INSERT INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, checkpoint, metadata)
        SELECT thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, checkpoint, metadata FROM cpo_stage_checkpoints
        ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id) DO NOTHING""",
    ("checkpoints", "upsert"): """
        INSERT INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, checkpoint, metadata)
        SELECT thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, checkpoint, metadata FROM cpo_stage_checkpoints
        ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id) DO UPDATE SET
            parent_checkpoint_id = EXCLUDED.parent_checkpoint_id,
            checkpoint = EXCLUDED.checkpoint, metadata = EXCLUDED.metadata
        WHERE (checkpoints.checkpoint, checkpoints.metadata) IS DISTINCT FROM (EXCLUDED.checkpoint, EXCLUDED.metadata)""",
    ("blobs", "insert"): """
        INSERT INTO checkpoint_blobs (thread_id, checkpoint_ns, channel, version, type, blob)
        SELECT DISTINCT ON (thread_id, checkpoint_ns, channel, version) thread_id, checkpoint_ns, channel, version, type, blob
        FROM cpo_stage_blobs
        ON CONFLICT (thread_id, checkpoint_ns, channel, version) DO NOTHING""",
    ("writes", "insert"): """
        INSERT INTO checkpoint_writes (thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, idx, channel, type, blob)
        SELECT thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, idx, channel, type, blob FROM cpo_stage_writes
        ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id, task_id, idx) DO NOTHING""",
    ("writes", "upsert"): """
        INSERT INTO checkpoint_writes (thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, idx, channel, type, blob)
        SELECT thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, idx, channel, type, blob FROM cpo_stage_writes
        ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id, task_id, idx) DO UPDATE SET
            task_path = EXCLUDED.task_path, channel = EXCLUDED.channel, type = EXCLUDED.type, blob = EXCLUDED.blob
        WHERE (checkpoint_writes.channel, checkpoint_writes.type, checkpoint_writes.blob)
            IS DISTINCT FROM (EXCLUDED.channel, EXCLUDED.type, EXCLUDED.blob)""",
    ("store", "insert"): """
        INSERT INTO store (prefix, key, value, created_at, updated_at, expires_at, ttl_minutes)
        SELECT prefix, key, value, COALESCE(created_at, now()), COALESCE(updated_at, now()), expires_at, ceil(ttl_minutes)::int
        FROM cpo_stage_store
        ON CONFLICT (prefix, key) DO NOTHING""",
    ("store", "upsert"): """
        INSERT INTO store (prefix, key, value, created_at, updated_at, expires_at, ttl_minutes)
        SELECT prefix, key, value, COALESCE(created_at, now()), COALESCE(updated_at, now()), expires_at, ceil(ttl_minutes)::int
        FROM cpo_stage_store
        ON CONFLICT (prefix, key) DO UPDATE SET value = EXCLUDED.value, updated_at = EXCLUDED.updated_at,
            expires_at = EXCLUDED.expires_at, ttl_minutes = EXCLUDED.ttl_minutes
        WHERE (store.value, store.expires_at, store.ttl_minutes)
            IS DISTINCT FROM (EXCLUDED.value, EXCLUDED.expires_at, EXCLUDED.ttl_minutes)""",
}
MOVE_SQL[("blobs", "upsert")] = MOVE_SQL[("blobs", "insert")]  # a (channel, version) blob never changes


@dataclass
class BatchResult:
    table: str
    number: int
    read: int = 0
    imported: int = 0
    rejected: int = 0
    blobs: int = 0
    skipped: bool = False  # already imported by an earlier attempt
    rejects: list[tuple[str, str]] = field(default_factory=list)  # (row key, reason)
    repairs: list[tuple[str, str]] = field(default_factory=list)  # (row key, what changed)


BOOKKEEPING_LOCK = 0x63_6B_70_74_62_6B  # parallel import tasks must not race on CREATE TABLE


def ensure_bookkeeping(conn: psycopg.Connection) -> None:
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (BOOKKEEPING_LOCK,))
        for ddl in BOOKKEEPING_DDL:
            conn.execute(ddl)


def prefer_lz4(conn: psycopg.Connection) -> None:
    """TOAST-compress this session's bulk loads with lz4 where the server has it: pglz was about
    40% of the checkpoint COPY on real agents' data. Only this session's new values change; readers,
    pg_dump and the app's own writes are unaffected (the column keeps whichever method each value has)."""
    try:
        with conn.transaction():
            conn.execute("SET default_toast_compression = 'lz4'")
    except psycopg.errors.Error:
        pass  # a server built without lz4 (or older than PostgreSQL 14) keeps pglz


def prepare_session(conn: psycopg.Connection) -> None:
    """Staging tables, UTC (SQLite timestamps are naive UTC) and lz4, once per connection."""
    conn.execute("SET TIME ZONE 'UTC'")
    prefer_lz4(conn)
    for ddl in STAGING_DDL:
        conn.execute(ddl)


def row_key(table: str, row) -> str:
    if table == "store":
        key = [row[0], row[1]]
    elif table == "writes":
        key = [row[0], row[1], row[2], row[3], row[5]]
    else:
        key = [row[0], row[1], row[2]]
    return json.dumps(key, ensure_ascii=True, default=repr)


@dataclass
class Transcoded:
    """A batch's rows as staging rows per staging table, with the rows refused and repaired."""

    staged: dict[str, list[tuple]]
    rejects: list[tuple[str, str]]  # (row key, reason)
    repairs: list[tuple[str, str]]  # (row key, what the repair changed)


def transcode_rows(table: str, rows, *, repair_nul: bool = False) -> Transcoded:
    """Source rows -> staging rows per staging table, plus (key, reason) for rejected rows."""
    out: dict[str, list[tuple]] = {"checkpoints": [], "blobs": [], "writes": [], "store": []}
    rejects: list[tuple[str, str]] = []
    repairs: list[tuple[str, str]] = []
    staged_blobs: dict[tuple, tuple] = {}
    for row in rows:
        try:
            if table == "checkpoints":
                cp = transcode_checkpoint(*row, repair_nul=repair_nul)
                if cp.repaired:
                    repairs.append((row_key(table, row), cp.repaired))
                out["checkpoints"].append(
                    (cp.thread_id, cp.checkpoint_ns, cp.checkpoint_id, cp.parent_checkpoint_id, cp.checkpoint_json, cp.metadata_json)
                )
                # Consecutive checkpoints carry the same (channel, version) blob: stage it once. The
                # latest checkpoint's copy wins, so where two copies differ (a version collision,
                # named by preflight) the checkpoint a thread resumes from keeps its own value.
                for b in cp.blobs:
                    staged_blobs[(cp.thread_id, cp.checkpoint_ns, b[0], b[1])] = (b[2], b[3])
            elif table == "writes":
                out["writes"].append(transcode_write(row))
            else:
                out["store"].append(transcode_store_item(dict(zip(
                    ("prefix", "key", "value", "created_at", "updated_at", "expires_at", "ttl_minutes"), row))))
        except Rejected as exc:
            rejects.append((row_key(table, row), exc.reason))
    out["blobs"] = [(*key, *value) for key, value in staged_blobs.items()]
    return Transcoded(out, rejects, repairs)


def _copy(cur: psycopg.Cursor, sql: str, staging: str, rows: list[tuple]) -> None:
    with cur.copy(sql) as copy:
        if "BINARY" in sql:
            copy.set_types(BINARY_TYPES[staging])
        for r in rows:
            copy.write_row(r)


def load_rows(conn: psycopg.Connection, table: str, staged: dict[str, list[tuple]], mode: str) -> tuple[int, int]:
    """Move staged rows into the saver's tables inside the caller's transaction.

    Returns (rows of ``table`` inserted or changed, blob rows inserted).
    """
    imported = blobs = 0
    with conn.cursor() as cur:
        for staging in (("checkpoints", "blobs") if table == "checkpoints" else (table,)):
            rows = staged[staging]
            if not rows:
                continue
            if mode == "insert" and staging in DIRECT_COPY_SQL:
                try:
                    with conn.transaction():  # a savepoint: a conflict undoes only this attempt
                        _copy(cur, DIRECT_COPY_SQL[staging], staging, rows)
                    imported = len(rows)
                    continue
                except psycopg.errors.UniqueViolation:
                    pass
            _copy(cur, COPY_SQL[staging], staging, rows)
            cur.execute(MOVE_SQL[(staging, mode)])
            if staging == "blobs":
                blobs = cur.rowcount
            else:
                imported = cur.rowcount
    return imported, blobs


@dataclass
class PreparedBatch:
    """A batch transcoded and ready to load (preparing is pure CPU, so it can run ahead)."""

    table: str
    number: int
    sha256: str
    read: int
    staged: dict[str, list[tuple]]
    rejects: list[tuple[str, str]]
    repairs: list[tuple[str, str]]
    seconds: float


def prepare_batch(table: str, number: int, sha256: str, rows: list, *, fail_on_reject: bool,
                  repair_nul: bool = False) -> PreparedBatch:
    started = time.perf_counter()
    done = transcode_rows(table, rows, repair_nul=repair_nul)
    if done.rejects and fail_on_reject:
        key, reason = done.rejects[0]
        raise Rejected(f"{table} batch {number}: row {key}: {reason} ({len(done.rejects)} such rows in this batch)")
    return PreparedBatch(table, number, sha256, len(rows), done.staged, done.rejects, done.repairs,
                         time.perf_counter() - started)


def load_prepared(conn: psycopg.Connection, migration_id: str, batch: PreparedBatch) -> BatchResult:
    """Load one prepared batch exactly once. Safe to call again: a recorded batch is skipped."""
    started = time.perf_counter()
    table, number, sha256 = batch.table, batch.number, batch.sha256
    result = BatchResult(table=table, number=number, read=batch.read)
    with conn.transaction():
        claimed = conn.execute(CLAIM_BATCH_SQL, (migration_id, table, number, sha256)).fetchone()
        if claimed is None:
            done = conn.execute(DONE_BATCH_SQL, (migration_id, table, number)).fetchone()
            recorded = done["sha256"] if isinstance(done, dict) else done[0]
            if recorded != sha256:
                raise ValueError(
                    f"{table} batch {number} was imported from different bytes (sha256 {recorded[:12]}…); "
                    "this target belongs to another export of the same migration id. Start a new run."
                )
            result.skipped = True
            return result
        result.imported, result.blobs = load_rows(conn, table, batch.staged, "insert")
        record_rejects_and_repairs(conn, migration_id, table, number, batch.rejects, batch.repairs)
        result.rejected = len(batch.rejects)
        result.rejects, result.repairs = batch.rejects, batch.repairs
        seconds = batch.seconds + time.perf_counter() - started
        conn.execute(FINISH_BATCH_SQL, (batch.read, result.imported, result.rejected, seconds, migration_id, table, number))
    return result


def record_rejects_and_repairs(conn: psycopg.Connection, migration_id: str, table: str, number: int,
                               rejects: list[tuple[str, str]], repairs: list[tuple[str, str]]) -> None:
    """Inside the caller's transaction, so a batch and its bookkeeping commit together."""
    with conn.cursor() as cur:
        if rejects:
            cur.executemany(RECORD_REJECT_SQL, [(migration_id, table, number, k, r) for k, r in rejects])
        if repairs:
            cur.executemany(RECORD_REPAIR_SQL, [(migration_id, table, k, r) for k, r in repairs])


def imported_batches(conn: psycopg.Connection, migration_id: str) -> dict[tuple[str, int], dict]:
    rows = conn.execute(
        "SELECT table_name, batch_no, sha256, rows_read, rows_imported, rows_rejected, seconds "
        "FROM checkpoint_ops_migration_batches WHERE migration_id = %s",
        (migration_id,),
    ).fetchall()
    return {(r["table_name"], r["batch_no"]): r for r in rows}


def rejects_for(conn: psycopg.Connection, migration_id: str) -> list[dict]:
    return conn.execute(
        "SELECT table_name, batch_no, row_key, reason FROM checkpoint_ops_migration_rejects "
        "WHERE migration_id = %s ORDER BY table_name, batch_no, row_key",
        (migration_id,),
    ).fetchall()


def repairs_for(conn: psycopg.Connection, migration_id: str) -> list[dict]:
    return conn.execute(
        "SELECT table_name, row_key, repair FROM checkpoint_ops_migration_repairs "
        "WHERE migration_id = %s ORDER BY table_name, row_key",
        (migration_id,),
    ).fetchall()
