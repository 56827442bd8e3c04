"""Before anything is written: is the source a checkpoint DB, is the target usable, what
will the run move, what cannot be moved, and does the target already disagree with us?"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from contextlib import closing
from pathlib import Path

from include.checkpoint_core.errors import CheckpointStoreError
from include.checkpoint_core.migration import digests
from include.checkpoint_core.migration.source import inspect_source, iter_batches, thread_ids
from include.checkpoint_core.migration.target import row_key
from include.checkpoint_core.migration.transcode import Rejected, transcode_checkpoint, transcode_store_item, transcode_write
from include.checkpoint_core.postgres_store import connect_postgres, describe_dsn, schema_versions
from include.checkpoint_core.sqlite_store import open_sqlite_readonly

# Rows per second for import and full verify, measured by benchmarks/migration.py on a 2-core
# machine; the estimate scales them by how fast this machine transcoded the source.
IMPORT_ROWS_PER_S = 15_000
VERIFY_ROWS_PER_S = 30_000
REFERENCE_SCAN_ROWS_PER_S = 60_000


class TargetConflict(CheckpointStoreError):
    hint = (
        "The target already holds these checkpoints with other content. Migrate into an empty "
        "database, or delete those threads from the target if they are stale copies."
    )


class RowsRejected(CheckpointStoreError):
    hint = "Set on_reject to 'reject' to migrate everything else and get these rows in the report, or fix them in the source."


def scan_rejects(conn: sqlite3.Connection, *, include_store: bool, repair_nul: bool = False, limit: int = 50) -> dict:
    """Transcode every source row (read-only) to find what PostgreSQL cannot hold.

    Also finds channel versions one thread uses for two different values (possible in forks
    made by releases whose versions were plain counters): PostgresSaver keys blobs by
    (thread, namespace, channel, version), so it can keep only one of them.
    """
    examples: list[dict] = []
    total = rows_seen = repaired = 0
    threads_hit: set[str] = set()
    collisions: list[list] = []
    collision_count = 0
    started = time.monotonic()
    tables = ("checkpoints", "writes", "store") if include_store else ("checkpoints", "writes")
    fn = {"writes": transcode_write,
          "store": lambda r: transcode_store_item(dict(zip(("prefix", "key", "value", "created_at", "updated_at", "expires_at", "ttl_minutes"), r)))}
    thread, seen = None, {}
    for table in tables:
        for rows in iter_batches(conn, table, 2000):
            for row in rows:
                rows_seen += 1
                try:
                    if table != "checkpoints":
                        fn[table](row)
                        continue
                    cp = transcode_checkpoint(*row, repair_nul=repair_nul)
                except Rejected as exc:
                    total += 1
                    if table != "store":
                        threads_hit.add(row[0])
                    if len(examples) < limit:
                        examples.append({"table": table, "key": row_key(table, row), "reason": exc.reason})
                    continue
                repaired += cp.repaired is not None
                if cp.thread_id != thread:  # rows come in primary-key order: one thread at a time
                    thread, seen = cp.thread_id, {}
                for channel, version, type_, data in cp.blobs:
                    digest = hashlib.sha256(data).digest()
                    if seen.setdefault((cp.checkpoint_ns, channel, version), digest) != digest:
                        collision_count += 1
                        if len(collisions) < limit:
                            collisions.append([cp.thread_id, cp.checkpoint_ns, channel, version])
    return {"examples": examples, "count": total, "threads": len(threads_hit), "repaired": repaired, "rows_per_s": rows_seen / max(time.monotonic() - started, 1e-6),
            "version_collisions": {"count": collision_count, "examples": collisions}}


def find_conflicts(src: sqlite3.Connection, target_dsn: str, *, limit: int = 20) -> tuple[list[dict], int]:
    """Checkpoints present on both sides under the same key but with different content."""
    threads = thread_ids(src)
    conflicts: list[dict] = []
    overlapping = 0
    with closing(connect_postgres(target_dsn)) as pg:
        if pg.execute("SELECT to_regclass('checkpoints') IS NOT NULL AS ok").fetchone()["ok"] is False:
            return [], 0
        for chunk in digests.chunks(threads, 500):
            present = pg.execute("SELECT DISTINCT thread_id FROM checkpoints WHERE thread_id = ANY(%s)", (chunk,)).fetchall()
            if not present:
                continue
            shared = [r["thread_id"] for r in present]
            want, _, refs = digests.source_digests(src, shared)
            have = digests.target_digests(pg, shared)
            digests.settle_disagreements(src, want, have, refs)
            for table in ("checkpoints", "writes", "blobs"):
                for key, digest in want[table].items():
                    if key in have[table]:
                        overlapping += 1
                        if not digests.matches(digest, have[table][key]) and len(conflicts) < limit:
                            conflicts.append({"table": table, "key": list(key)})
    return conflicts, overlapping


def preflight(source_path: str, target_dsn: str, *, include_store: bool = True, on_reject: str = "reject",
              repair_nul: bool = False, check_integrity: bool = True) -> dict:
    """Everything a run needs to know before it writes; raises on what must stop it."""
    schema, counts = inspect_source(source_path, check_integrity=check_integrity)
    with closing(connect_postgres(target_dsn)) as pg:
        versions = schema_versions(pg)
        server = pg.execute("SHOW server_version").fetchone()["server_version"]
    with open_sqlite_readonly(source_path) as src:
        scan = scan_rejects(src, include_store=include_store, repair_nul=repair_nul)
        rejects, rejected, scan_rate = scan["examples"], scan["count"], scan["rows_per_s"]
        conflicts, overlapping = find_conflicts(src, target_dsn)
        payload = src.execute("SELECT COALESCE(SUM(LENGTH(checkpoint)), 0) FROM checkpoints").fetchone()[0]
    if conflicts:
        shown = "; ".join(f"{c['table']} {c['key']}" for c in conflicts[:5])
        raise TargetConflict(f"{len(conflicts)}+ rows differ between source and target, e.g. {shown}.")
    if rejected and on_reject == "fail":
        shown = "; ".join(f"{r['table']} {r['key']}: {r['reason']}" for r in rejects[:3])
        raise RowsRejected(f"{rejected} source rows cannot be stored in PostgreSQL, e.g. {shown}.")
    rows = counts.get("checkpoints", 0) + counts.get("writes", 0) + (counts.get("store", 0) if include_store else 0)
    speed = min(scan_rate / REFERENCE_SCAN_ROWS_PER_S, 1.0) if scan_rate else 1.0
    return {
        "source": {"path": str(Path(source_path)), "schema_version": schema.version, "schema": schema.version_name,
                   "size_bytes": schema.size_bytes + schema.wal_bytes, "checkpoint_bytes": payload, "counts": counts},
        "target": {"database": describe_dsn(target_dsn), "server_version": server, "schema_versions": versions,
                   "needs_setup": versions["checkpoints"] is None or (include_store and versions["store"] is None),
                   "overlapping_rows": overlapping},
        # Every row of a thread with a refused row is rejected with it (rejects.py).
        "rejected": {"count": rejected, "threads": scan["threads"], "examples": rejects},
        "repaired": {"checkpoints": scan["repaired"], "repair_nul": repair_nul},
        "version_collisions": scan["version_collisions"],
        "estimate_s": {"import": round(rows / (IMPORT_ROWS_PER_S * speed), 1),
                       "verify_full": round(rows / (VERIFY_ROWS_PER_S * speed), 1)},
    }
