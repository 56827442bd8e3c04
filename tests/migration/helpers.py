"""Running the migration steps in-process (the same calls the operators make)."""

from __future__ import annotations

import hashlib
from contextlib import closing
from pathlib import Path

from include.checkpoint_core.migration import export, load, rejects, verify
from include.checkpoint_core.postgres_store import connect_postgres, setup_postgres
from include.checkpoint_core.sqlite_store import open_sqlite_readonly


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def migrate(source: Path, dsn: str, folder: Path, migration_id: str = "m1", *, batch_size: int = 100,
            batches_per_group: int = 5, include_store: bool = True, fail_on_reject: bool = False, on_batch=None,
            repair_nul: bool = False) -> dict:
    """Snapshot, export, import every group, then settle rejected threads: the DAG's steps in order."""
    setup_postgres(dsn)
    snap = export.snapshot_into(str(source), folder, migration_id)
    manifest = export.export_batches(folder / export.SNAPSHOT_FILE, folder, snap, batch_size=batch_size,
                                     include_store=include_store, repair_nul=repair_nul)
    totals = [load.import_group(dsn, folder, manifest, group, fail_on_reject=fail_on_reject, on_batch=on_batch)
              for group in load.plan_groups(manifest, batches_per_group)]
    with closing(connect_postgres(dsn)) as pg, open_sqlite_readonly(folder / export.SNAPSHOT_FILE) as src:
        settled = rejects.settle_rejected_threads(pg, src, migration_id, log=lambda _: None)
    return {"manifest": manifest, "totals": totals, "settled": settled}


def rejected_threads(dsn: str, migration_id: str = "m1") -> set[str]:
    with closing(connect_postgres(dsn)) as pg:
        if not pg.execute("SELECT to_regclass('checkpoint_ops_migration_rejected_threads') IS NOT NULL AS ok").fetchone()["ok"]:
            return set()
        return {r["thread_id"] for r in rejects.rejected_threads(pg, migration_id)}


def verify_full(folder: Path, dsn: str, migration_id: str = "m1", **kw) -> dict:
    return verify.verify(folder / export.SNAPSHOT_FILE, dsn, mode="full", seed="t",
                         rejected_threads=rejected_threads(dsn, migration_id), **kw)


def target_fingerprint(dsn: str) -> dict[str, str]:
    """A digest of every saver table's full content, to compare two targets."""
    out = {}
    queries = {
        "checkpoints": "SELECT thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, checkpoint::text, metadata::text FROM checkpoints ORDER BY 1,2,3",
        "checkpoint_blobs": "SELECT thread_id, checkpoint_ns, channel, version, type, encode(blob, 'hex') FROM checkpoint_blobs ORDER BY 1,2,3,4",
        "checkpoint_writes": "SELECT thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, idx, channel, type, encode(blob, 'hex') FROM checkpoint_writes ORDER BY 1,2,3,4,6",
        "store": "SELECT prefix, key, value::text, expires_at, ttl_minutes FROM store ORDER BY 1,2",
    }
    with closing(connect_postgres(dsn)) as conn:
        for table, sql in queries.items():
            digest = hashlib.sha256()
            n = 0
            for row in conn.execute(sql):
                digest.update(repr(tuple(row.values())).encode())
                n += 1
            out[table] = f"{n}:{digest.hexdigest()}"
    return out
