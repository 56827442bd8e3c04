"""The LangGraph Store during a cutover: items the app still wrote to SqliteStore reach PostgresStore.

Store items are not threads, so they are not routed: the app switches its Store to PostgresStore when it
deploys RoutingSaver (the runbook's step 3). Items an app process wrote to the SQLite file after the
migration's catch-up (before that deploy, or from a process not yet redeployed) are copied at ``prepare``
and again at ``decommission``, newest wins: an item the app has since updated in PostgreSQL is never
overwritten by an older SQLite copy. The migration's transcoding and staging table are reused.
"""

from __future__ import annotations

import sqlite3

import psycopg
from psycopg.rows import tuple_row

from include.checkpoint_core.migration.source import iter_batches, source_tables
from include.checkpoint_core.migration.target import COPY_SQL, STAGING_DDL, _copy, transcode_rows

NEWER_WINS_SQL = """
    INSERT INTO store (prefix, key, value, created_at, updated_at, expires_at, ttl_minutes)
    SELECT prefix, key, value, COALESCE(created_at, now()), COALESCE(updated_at, now()), expires_at, ceil(ttl_minutes)::int
    FROM cpo_stage_store
    ON CONFLICT (prefix, key) DO UPDATE SET value = EXCLUDED.value, updated_at = EXCLUDED.updated_at,
        expires_at = EXCLUDED.expires_at, ttl_minutes = EXCLUDED.ttl_minutes
    WHERE store.updated_at < EXCLUDED.updated_at
        AND (store.value, store.expires_at, store.ttl_minutes)
            IS DISTINCT FROM (EXCLUDED.value, EXCLUDED.expires_at, EXCLUDED.ttl_minutes)
"""


def sync_store(pg: psycopg.Connection, blue: sqlite3.Connection, *, batch_size: int = 1000) -> dict:
    """Copy SqliteStore items that are new or newer than PostgresStore's. Returns counts (and refusals)."""
    out = {"read": 0, "copied": 0, "refused": 0, "skipped": None}
    if "store" not in source_tables(blue):
        out["skipped"] = "the source has no store table"
        return out
    cur = pg.cursor(row_factory=tuple_row)
    cur.execute("SELECT to_regclass('store') IS NOT NULL")
    if not cur.fetchone()[0]:
        out["skipped"] = "the target has no PostgresStore table (the migration ran without include_store)"
        return out
    for rows in iter_batches(blue, "store", batch_size):
        done = transcode_rows("store", rows)
        out["read"] += len(rows)
        out["refused"] += len(done.rejects)
        with pg.transaction():
            pg.execute("SET LOCAL TIME ZONE 'UTC'")  # SqliteStore's timestamps are naive UTC
            for ddl in STAGING_DDL:
                pg.execute(ddl)
            _copy(pg.cursor(), COPY_SQL["store"], "store", done.staged["store"])
            cur.execute(NEWER_WINS_SQL)
            out["copied"] += cur.rowcount
    return out
