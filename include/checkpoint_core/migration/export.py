"""Snapshot the live source and stream it into checksummed batch files."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from include.checkpoint_core.migration.batches import Manifest, read_manifest, write_batch, write_manifest
from include.checkpoint_core.migration.source import TABLES, Snapshot, iter_batches, take_snapshot
from include.checkpoint_core.sqlite_store import open_sqlite_readonly

SNAPSHOT_FILE = "snapshot.sqlite"


def snapshot_into(source_path: str, folder: Any, migration_id: str) -> dict:
    """Take a consistent copy of the live source and keep it with the run's artifacts.

    Idempotent per migration id: a snapshot that is already stored (with its recorded
    watermarks) is reused, so retrying or clearing this task never moves the watermark
    under batches that were exported from the first one.
    """
    folder.mkdir(parents=True, exist_ok=True)
    meta = folder / "snapshot.json"
    if meta.exists() and (folder / SNAPSHOT_FILE).exists():
        return {**json.loads(meta.read_text()), "reused": True}
    with tempfile.TemporaryDirectory(prefix="cpo-snapshot-") as tmp:
        snap: Snapshot = take_snapshot(source_path, Path(tmp) / SNAPSHOT_FILE)
        with open(snap.path, "rb") as src, (folder / SNAPSHOT_FILE).open("wb") as dst:
            shutil.copyfileobj(src, dst, length=1 << 20)
    info = {"migration_id": migration_id, "source": str(source_path), "file": SNAPSHOT_FILE, "sha256": snap.sha256,
            "size_bytes": snap.size_bytes, "watermarks": snap.watermarks, "counts": snap.counts,
            "schema_version": snap.schema_version}
    meta.write_text(json.dumps(info, indent=1, sort_keys=True))
    return {**info, "reused": False}


def local_snapshot(folder: Any, workdir: Path) -> Path:
    """A local path to the run's snapshot (copied down when artifacts live in object storage)."""
    remote = folder / SNAPSHOT_FILE
    if isinstance(remote, Path):
        return remote
    local = workdir / SNAPSHOT_FILE
    if not local.exists():
        with remote.open("rb") as src, open(local, "wb") as dst:
            shutil.copyfileobj(src, dst, length=1 << 20)
    return local


def export_batches(snapshot_path: Path, folder: Any, snapshot_info: dict, *, batch_size: int, include_store: bool,
                   repair_nul: bool = False, progress: Callable[[int], None] | None = None) -> Manifest:
    """Write the snapshot's rows as batch files plus a manifest, in primary-key order.

    Re-running it writes the same bytes (the snapshot does not change), so a retry simply
    converges; an existing complete manifest for the same snapshot is returned as it is.
    """
    existing = read_manifest(folder)
    if existing and existing.snapshot_sha256 == snapshot_info["sha256"] and existing.batch_size == batch_size \
            and existing.repair_nul == repair_nul:
        return existing
    batches_dir = folder / "batches"
    batches_dir.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(
        migration_id=snapshot_info["migration_id"], source=snapshot_info["source"], snapshot_sha256=snapshot_info["sha256"],
        watermarks=snapshot_info["watermarks"], counts=snapshot_info["counts"], batch_size=batch_size,
        schema_version=snapshot_info["schema_version"], repair_nul=repair_nul,
    )
    tables = [t for t in TABLES if include_store or t != "store"]
    with open_sqlite_readonly(snapshot_path) as conn:
        for table in tables:
            columns, key = TABLES[table]
            key_idx = [columns.index(k) for k in key]
            for number, rows in enumerate(iter_batches(conn, table, batch_size), start=1):
                info = write_batch(batches_dir, table, number, rows, key_idx)
                manifest.batches.append(info)
                if progress:
                    progress(len(rows))
    write_manifest(folder, manifest)
    return manifest
