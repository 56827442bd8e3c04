"""Import batches into PostgreSQL (resumably), and catch up with what the app wrote since."""

from __future__ import annotations

import sqlite3
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import asdict
from typing import Any, Callable

from include.checkpoint_core.migration.batches import BatchInfo, Manifest, read_batch
from include.checkpoint_core.migration.source import TABLES, iter_batches
from include.checkpoint_core.migration.target import (
    BatchResult,
    ensure_bookkeeping,
    imported_batches,
    load_rows,
    prepare_session,
    transcode_rows,
    load_prepared,
    prepare_batch,
)
from include.checkpoint_core.migration.transcode import Rejected
from include.checkpoint_core.postgres_store import connect_postgres
from include.checkpoint_core.sqlite_store import open_sqlite_readonly


def plan_groups(manifest: Manifest, batches_per_group: int) -> list[list[dict]]:
    """Split the manifest's batches into groups, one mapped import task each.

    Groups hold whole batches of any table: batches are independent (no foreign keys, blobs
    travel with their checkpoints), so groups can run in any order or in parallel.
    """
    refs = [{"table": b.table, "number": b.number} for b in manifest.batches]
    return [refs[i : i + batches_per_group] for i in range(0, len(refs), batches_per_group)] or [[]]


def import_group(
    target_dsn: str, folder: Any, manifest: Manifest, group: list[dict], *, fail_on_reject: bool,
    on_batch: Callable[[BatchResult], None] | None = None,
) -> dict:
    """Import one group of batches, each in its own transaction; already imported ones are skipped."""
    by_ref = {(b.table, b.number): b for b in manifest.batches}
    totals = {"batches": 0, "skipped": 0, "read": 0, "imported": 0, "rejected": 0, "blobs": 0}
    with closing(connect_postgres(target_dsn)) as conn, ThreadPoolExecutor(max_workers=1) as reader:
        ensure_bookkeeping(conn)
        prepare_session(conn)
        done = imported_batches(conn, manifest.migration_id)
        todo = []
        for ref in group:
            info: BatchInfo = by_ref[(ref["table"], ref["number"])]
            totals["batches"] += 1
            if (info.table, info.number) in done and done[(info.table, info.number)]["sha256"] == info.sha256:
                totals["skipped"] += 1
            else:
                todo.append(info)

        def prepare(info: BatchInfo):
            rows = read_batch(folder / "batches", info)
            return prepare_batch(info.table, info.number, info.sha256, rows, fail_on_reject=fail_on_reject)

        # Read and transcode the next batch while PostgreSQL loads this one: the two halves use
        # different cores, and the loop holds at most two batches in memory.
        upcoming = reader.submit(prepare, todo[0]) if todo else None
        for i in range(len(todo)):
            batch = upcoming.result()
            upcoming = reader.submit(prepare, todo[i + 1]) if i + 1 < len(todo) else None
            result = load_prepared(conn, manifest.migration_id, batch)
            totals["skipped"] += int(result.skipped)
            for key in ("read", "imported", "rejected", "blobs"):
                totals[key] += getattr(result, key)
            if on_batch:
                on_batch(result)
    return totals


CATCHUP_STATE_DDL = """CREATE TABLE IF NOT EXISTS checkpoint_ops_migration_catchup (
    migration_id text NOT NULL, table_name text NOT NULL, watermark bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (migration_id, table_name))"""


def catch_up(
    source_path: str, target_dsn: str, manifest: Manifest, *, include_store: bool, fail_on_reject: bool,
    batch_size: int = 1000, max_rounds: int = 20, log: Callable[[str], None] = print,
) -> dict:
    """Copy rows the app wrote to the live source after the snapshot, until none are left.

    Rows are found by rowid above the last watermark (SqliteSaver's inserts and replaces both
    take a new, larger rowid) and upserted, so a row the app rewrote is rewritten here too.
    The watermark is stored in the target with each round, so a retry picks up where it was.
    """
    tables = [t for t in TABLES if include_store or t != "store"]
    totals = {t: {"read": 0, "imported": 0, "rejected": 0} for t in tables}
    rejects: list[dict] = []
    rounds = 0
    with closing(connect_postgres(target_dsn)) as pg, open_sqlite_readonly(source_path) as src:
        ensure_bookkeeping(pg)
        pg.execute(CATCHUP_STATE_DDL)
        prepare_session(pg)
        marks = dict(manifest.watermarks)
        for r in pg.execute("SELECT table_name, watermark FROM checkpoint_ops_migration_catchup WHERE migration_id = %s",
                            (manifest.migration_id,)).fetchall():
            marks[r["table_name"]] = max(marks.get(r["table_name"], 0), r["watermark"])
        while rounds < max_rounds:
            rounds += 1
            moved = 0
            for table in tables:
                present = src.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (table,)).fetchone()
                if not present:
                    continue
                top = src.execute(f"SELECT COALESCE(MAX(rowid), 0) FROM {table}").fetchone()[0]
                low = marks.get(table, 0)
                if top <= low:
                    continue
                for rows in iter_batches(src, table, batch_size, min_rowid=low, max_rowid=top):
                    staged, bad = transcode_rows(table, rows)
                    if bad and fail_on_reject:
                        raise Rejected(f"catch-up {table}: row {bad[0][0]}: {bad[0][1]}")
                    with pg.transaction():
                        imported, _ = load_rows(pg, table, staged, "upsert")
                    totals[table]["read"] += len(rows)
                    totals[table]["imported"] += imported
                    totals[table]["rejected"] += len(bad)
                    rejects.extend({"table": table, "key": k, "reason": r} for k, r in bad)
                    moved += len(rows)
                marks[table] = top
                pg.execute(
                    "INSERT INTO checkpoint_ops_migration_catchup (migration_id, table_name, watermark) VALUES (%s, %s, %s) "
                    "ON CONFLICT (migration_id, table_name) DO UPDATE SET watermark = EXCLUDED.watermark, updated_at = now()",
                    (manifest.migration_id, table, top),
                )
            log(f"catch-up round {rounds}: {moved} new or changed rows")
            if moved == 0:
                break
    return {"rounds": rounds, "tables": totals, "watermarks": marks, "rejected": rejects[:50],
            "converged": rounds < max_rounds or moved == 0}


def summarize_batches(results: list[BatchResult]) -> list[dict]:
    return [asdict(r) for r in results]
