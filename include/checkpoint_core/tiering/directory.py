"""Where each thread lives: one small table in the cold database, and a per-thread lock.

A thread with hot rows and no fence is hot, and reading it costs no lookup here. Otherwise this
table decides: ``archive`` (the object named here holds it), ``staging`` (a demotion is copying it;
the hot copy still rules), or ``cold`` / no row (PostgreSQL holds it; a thread the app wrote with a
plain PostgresSaver has no row and is cold). Every move and every promotion of a thread takes
the same advisory transaction lock, so the app's first write to a cold thread and a move of that
thread never interleave.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg.rows import tuple_row

TABLE = "checkpoint_ops_tiers"
TIERS = ("staging", "cold", "archive")

DDL = [f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    thread_id TEXT PRIMARY KEY,
    tier TEXT NOT NULL CHECK (tier IN ('staging', 'cold', 'archive')),
    token TEXT,
    archive_key TEXT,
    archive_sha256 TEXT,
    archive_bytes BIGINT,
    row_bytes BIGINT,
    checkpoints INTEGER,
    moved_at TIMESTAMPTZ NOT NULL DEFAULT now()
)""", f"CREATE INDEX IF NOT EXISTS {TABLE}_tier_idx ON {TABLE} (tier)"]


@dataclass(frozen=True)
class Entry:
    thread_id: str
    tier: str
    token: str | None = None
    archive_key: str | None = None
    archive_sha256: str | None = None
    archive_bytes: int | None = None
    row_bytes: int | None = None
    checkpoints: int | None = None


_COLUMNS = "thread_id, tier, token, archive_key, archive_sha256, archive_bytes, row_bytes, checkpoints"


def ensure(conn: psycopg.Connection) -> None:
    with conn.transaction():
        for statement in DDL:
            conn.execute(statement)


def lock(conn: psycopg.Connection, *thread_ids: str) -> None:
    """Hold these threads' tier locks until the current transaction ends (taken in one order, so
    two movers of overlapping groups never deadlock)."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('checkpoint_ops_tier:' || t, 0)) "
                 "FROM (SELECT DISTINCT t FROM unnest(%s::text[]) t ORDER BY t) s", (list(thread_ids),))


def entry(conn: psycopg.Connection, thread_id: str) -> Entry | None:
    row = conn.cursor(row_factory=tuple_row).execute(
        f"SELECT {_COLUMNS} FROM {TABLE} WHERE thread_id = %s", (thread_id,)).fetchone()
    return Entry(*row) if row else None


def entries_of(conn: psycopg.Connection, thread_ids: list[str]) -> dict[str, Entry]:
    cur = conn.cursor(row_factory=tuple_row)
    cur.execute(f"SELECT {_COLUMNS} FROM {TABLE} WHERE thread_id = ANY(%s)", (list(thread_ids),))
    return {r[0]: Entry(*r) for r in cur.fetchall()}


def entries(conn: psycopg.Connection, tier: str | None = None) -> list[Entry]:
    cur = conn.cursor(row_factory=tuple_row)
    if tier is None:
        cur.execute(f"SELECT {_COLUMNS} FROM {TABLE} ORDER BY thread_id")
    else:
        cur.execute(f"SELECT {_COLUMNS} FROM {TABLE} WHERE tier = %s ORDER BY thread_id", (tier,))
    return [Entry(*r) for r in cur.fetchall()]


def put(conn: psycopg.Connection, *batch: Entry) -> None:
    if not batch:
        return
    conn.cursor().executemany(
        f"INSERT INTO {TABLE} ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (thread_id) DO UPDATE SET tier = EXCLUDED.tier, token = EXCLUDED.token, "
        "archive_key = EXCLUDED.archive_key, archive_sha256 = EXCLUDED.archive_sha256, "
        "archive_bytes = EXCLUDED.archive_bytes, row_bytes = EXCLUDED.row_bytes, "
        "checkpoints = EXCLUDED.checkpoints, moved_at = now()",
        [(e.thread_id, e.tier, e.token, e.archive_key, e.archive_sha256, e.archive_bytes, e.row_bytes, e.checkpoints)
         for e in batch])


def remove(conn: psycopg.Connection, *thread_ids: str) -> None:
    conn.execute(f"DELETE FROM {TABLE} WHERE thread_id = ANY(%s)", (list(thread_ids),))
