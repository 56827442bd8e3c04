"""Import batches into PostgreSQL (resumably), and catch up with what the app wrote since."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from typing import Any, Callable

from include.checkpoint_core.migration.batches import BatchInfo, Manifest, read_batch
from include.checkpoint_core.migration.digests import chunks
from include.checkpoint_core.migration.source import (
    TABLES,
    iter_batches,
    max_rowids,
    select_list,
    source_tables,
    thread_ids,
)
from include.checkpoint_core.migration.rejects import rejected_thread_reasons, settle_rejected_threads
from include.checkpoint_core.migration.target import (
    BatchResult,
    ensure_bookkeeping,
    imported_batches,
    load_rows,
    prepare_session,
    transcode_rows,
    load_prepared,
    prepare_batch,
    record_rejects_and_repairs,
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
            return prepare_batch(info.table, info.number, info.sha256, rows, fail_on_reject=fail_on_reject,
                                 repair_nul=manifest.repair_nul)

        # Read and transcode the next batch while PostgreSQL loads this one: the two halves use
        # different cores, and at most two prepared batches are held in memory.
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


SAVE_WATERMARK_SQL = """
    INSERT INTO checkpoint_ops_migration_catchup (migration_id, table_name, watermark) VALUES (%s, %s, %s)
    ON CONFLICT (migration_id, table_name) DO UPDATE SET watermark = EXCLUDED.watermark, updated_at = now()
"""
THREAD_COUNTS_SQL = {
    "checkpoints": "SELECT thread_id, COUNT(*) AS n FROM checkpoints WHERE thread_id = ANY(%s) GROUP BY 1",
    "writes": "SELECT thread_id, COUNT(*) AS n FROM checkpoint_writes WHERE thread_id = ANY(%s) GROUP BY 1",
}


class _CatchUp:
    """One catch-up run: upserts rows and keeps the tallies, rejects recorded in the target."""

    def __init__(self, pg, migration_id: str, tables: list[str], fail_on_reject: bool, repair_nul: bool) -> None:
        self.pg, self.migration_id, self.fail_on_reject, self.repair_nul = pg, migration_id, fail_on_reject, repair_nul
        self.totals = {t: {"read": 0, "imported": 0, "rejected": 0} for t in tables}
        self.rejected_threads = set(rejected_thread_reasons(pg, migration_id))

    def upsert(self, table: str, rows: list, *, new_rows: bool = True) -> int:
        """Upsert ``rows``; ``new_rows=False`` marks a reconciliation pass over rows already seen.

        Rows of a thread already rejected are left out: the thread stays whole in the source only."""
        read = len(rows)
        if table != "store" and self.rejected_threads:
            rows = [r for r in rows if r[0] not in self.rejected_threads]
        done = transcode_rows(table, rows, repair_nul=self.repair_nul)
        if done.rejects and self.fail_on_reject:
            raise Rejected(f"catch-up {table}: row {done.rejects[0][0]}: {done.rejects[0][1]}")
        with self.pg.transaction():
            imported, _ = load_rows(self.pg, table, done.staged, "upsert")
            record_rejects_and_repairs(self.pg, self.migration_id, table, -1, done.rejects, done.repairs)
        if table != "store":
            self.rejected_threads.update(json.loads(k)[0] for k, _ in done.rejects)
        tally = self.totals[table]
        tally["read"] += read if new_rows else 0
        tally["imported"] += imported
        tally["rejected"] += len(done.rejects)
        return read


def _rowid_batches(src, table: str, low: int, high: int, batch_size: int):
    """Rows written after the watermark, in rowid order (the table's own b-tree: no sort)."""
    select = select_list(src, table)
    while True:
        rows = src.execute(f"SELECT {select}, rowid FROM {table} WHERE rowid > ? AND rowid <= ? ORDER BY rowid LIMIT ?",
                           (low, high, batch_size)).fetchall()
        if not rows:
            return
        yield [r[:-1] for r in rows]
        low = rows[-1][-1]


def _reconcile_threads(src, cu: _CatchUp, batch_size: int, log) -> dict:
    """Copy whole threads whose row counts differ between source and target.

    Watermarks miss rows that reused a rowid at or below them (SQLite hands out max(rowid)+1,
    so after the app deletes its newest rows, new ones can land below the mark). SqliteSaver
    never updates a row in place, so a thread with the same counts on both sides is complete.
    """
    threads = thread_ids(src)
    stale, shrunk = set(), set()
    threads = [t for t in threads if t not in cu.rejected_threads]  # absent from the target on purpose
    for chunk in chunks(threads, 500):
        marks = ", ".join("?" * len(chunk))
        for table in ("checkpoints", "writes"):
            source = dict(src.execute(f"SELECT thread_id, COUNT(*) FROM {table} WHERE thread_id IN ({marks}) GROUP BY 1", chunk))
            target = {r["thread_id"]: r["n"] for r in cu.pg.execute(THREAD_COUNTS_SQL[table], (chunk,))}
            for tid, n in source.items():
                if n > target.get(tid, 0):
                    stale.add(tid)
                elif n < target.get(tid, 0):
                    shrunk.add(tid)
    copied = 0
    for chunk in chunks(sorted(stale), 200):
        for table in ("checkpoints", "writes"):
            for rows in iter_batches(src, table, batch_size, thread_ids=chunk):
                copied += cu.upsert(table, rows)
    if stale:
        log(f"reconciled {len(stale)} threads whose rows the watermark missed ({copied} rows upserted)")
    return {"threads_recopied": len(stale), "threads_with_fewer_source_rows": len(shrunk)}


def catch_up(
    source_path: str, target_dsn: str, manifest: Manifest, *, include_store: bool, fail_on_reject: bool,
    batch_size: int = 1000, max_rounds: int = 20, log: Callable[[str], None] = print,
) -> dict:
    """Copy what the app wrote to the live source after the snapshot, until nothing new is left.

    Each round upserts the rows above each table's rowid watermark (SqliteSaver's inserts and
    replaces both take a new, larger rowid), so a row the app rewrote is rewritten here too; the
    watermark is stored in the target, so a retry picks up where it was. Then threads whose row
    counts still differ are copied whole, and store items, which SqliteStore updates in place
    (TTL refreshes), are reconciled by content. Deletes in the source are counted, not copied.
    """
    tables = [t for t in TABLES if include_store or t != "store"]
    rounds = moved = 0
    with closing(connect_postgres(target_dsn)) as pg, open_sqlite_readonly(source_path) as src:
        ensure_bookkeeping(pg)
        prepare_session(pg)
        cu = _CatchUp(pg, manifest.migration_id, tables, fail_on_reject, manifest.repair_nul)
        marks = dict(manifest.watermarks)
        for r in pg.execute("SELECT table_name, watermark FROM checkpoint_ops_migration_catchup WHERE migration_id = %s",
                            (manifest.migration_id,)).fetchall():
            marks[r["table_name"]] = max(marks.get(r["table_name"], 0), r["watermark"])
        while rounds < max_rounds:
            rounds += 1
            moved = 0
            tops = max_rowids(src)
            for table in [t for t in tables if t in tops]:
                top = tops[table]
                if top > marks.get(table, 0):
                    for rows in _rowid_batches(src, table, marks.get(table, 0), top, batch_size):
                        moved += cu.upsert(table, rows)
                    marks[table] = top
                    pg.execute(SAVE_WATERMARK_SQL, (manifest.migration_id, table, top))
            log(f"catch-up round {rounds}: {moved} new or changed rows")
            if moved == 0:
                break
        reconciled = _reconcile_threads(src, cu, batch_size, log)
        if "store" in tables and "store" in source_tables(src):
            for rows in iter_batches(src, "store", batch_size):
                cu.upsert("store", rows, new_rows=False)  # unchanged items are skipped by the upsert's WHERE
        settled = settle_rejected_threads(pg, src, manifest.migration_id, log=log)
    converged = moved == 0
    if not converged:
        log(f"the app is still writing: {moved} rows arrived in the last of {max_rounds} rounds; "
            "stop it (or run catch_up again) before cutting over")
    return {"rounds": rounds, "tables": cu.totals, "watermarks": marks, "converged": converged, **reconciled,
            "rejected_threads": settled["threads"]}
