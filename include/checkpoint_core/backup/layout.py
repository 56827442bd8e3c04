"""The backup folder: one directory per backup, a manifest written last, streamed copies.

``folder`` is anything pathlib-like (``pathlib.Path`` in tests, ``airflow.sdk.ObjectStoragePath``
for file:// or s3:// in production), so only ``/``, ``open``, ``read_text``/``write_text``,
``exists``, ``is_dir``, ``iterdir``, ``mkdir``, ``unlink`` and ``rmdir`` are used. A backup
is complete once its ``manifest.json`` exists: everything else is written before it.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime, timezone
from typing import Any

from include.checkpoint_core.backup.errors import BackupFolderMissing, InvalidBackupId

MANIFEST = "manifest.json"
OFFLOAD_REFS = "offload-references.json"  # digests of the offloaded blobs the backup's rows reference
STARTED = "started.json"  # written first: dates a backup that never finished
DRILL = "drill.json"  # the last drill's verdict, written by restore_drill
PG_FILE = "dump.pgdump"
SQLITE_FILE = "checkpoints.sqlite"
FORMAT_VERSION = 1
CHUNK = 8 * 1024 * 1024
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_backup_id(backup_id: str) -> str:
    """Backup ids become directory names and object keys: keep them boring."""
    if not isinstance(backup_id, str) or not _ID.match(backup_id) or ".." in backup_id:
        raise InvalidBackupId(f"backup_id {backup_id!r} cannot name a backup folder.")
    return backup_id


def utc(moment: datetime | None) -> datetime:
    """Aware UTC; a naive datetime is taken to be UTC already (Airflow's are aware)."""
    moment = moment or datetime.now(timezone.utc)
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def iso(moment: datetime) -> str:
    return utc(moment).isoformat(timespec="seconds")


def parse_time(text: str) -> datetime:
    return utc(datetime.fromisoformat(text))


def write_json(path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))


def read_json(path) -> dict | None:
    """The JSON document at ``path``, or None when it is absent or half-written."""
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, NotADirectoryError, ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def require_folder(folder) -> None:
    try:
        present = folder.exists() and folder.is_dir()
    except OSError as exc:
        raise BackupFolderMissing(f"cannot read the backup folder {folder}: {exc}.", retryable=True) from exc
    if not present:
        raise BackupFolderMissing(f"the backup folder {folder} does not exist.")


def backup_dirs(folder) -> list:
    require_folder(folder)
    return [p for p in folder.iterdir() if p.is_dir()]


def read_manifest(backup_dir) -> dict | None:
    """A usable manifest, or None (incomplete, unreadable, foreign, or copied under another name)."""
    data = read_json(backup_dir / MANIFEST)
    if not data or data.get("backup_id") != backup_dir.name or data.get("kind") not in ("postgres", "sqlite") \
            or data.get("file") not in (PG_FILE, SQLITE_FILE) or "created_at" not in data:
        return None
    try:
        parse_time(data["created_at"])
    except (TypeError, ValueError):
        return None
    return data


def list_backups(folder) -> list[dict]:
    """Manifests of the complete backups in ``folder``, newest first.

    A directory without a manifest is a backup in progress or one that died: never listed.
    Each manifest carries ``drill`` (the last drill's verdict) when one has run.
    """
    out = []
    for d in backup_dirs(folder):
        manifest = read_manifest(d)
        if manifest is None:
            continue
        drill = read_json(d / DRILL)
        if drill is not None:
            manifest["drill"] = {k: drill.get(k) for k in ("passed", "drilled_at", "problems", "rto_s")}
        out.append(manifest)
    out.sort(key=lambda m: (parse_time(m["created_at"]), m["backup_id"]), reverse=True)
    return out


def upload(local_path, dest) -> tuple[int, str]:
    """Stream a local file to ``dest`` in chunks; return its size and sha256."""
    digest, size = hashlib.sha256(), 0
    with open(local_path, "rb") as src, dest.open("wb") as out:
        while chunk := src.read(CHUNK):
            digest.update(chunk)
            out.write(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def download(src, local_path) -> tuple[int, str]:
    """Stream ``src`` to a local file in chunks; return its size and sha256."""
    digest, size = hashlib.sha256(), 0
    with src.open("rb") as fin, open(local_path, "wb") as out:
        while chunk := fin.read(CHUNK):
            digest.update(chunk)
            out.write(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def remove_tree(path) -> None:
    """Delete a backup directory with the plain path API (object stores have no rmtree)."""
    for child in list(path.iterdir()):
        if child.is_dir():
            remove_tree(child)
        else:
            child.unlink()
    try:
        path.rmdir()
    except OSError:
        # Object stores have no directories: the prefix vanished with its last object, and
        # s3fs reports rmdir of it as an error of its own. Only a prefix still there is a failure.
        if path.exists():
            raise


def describe(manifest: dict) -> dict[str, Any]:
    """The few fields a log line or a listing needs."""
    return {k: manifest.get(k) for k in ("backup_id", "kind", "created_at", "size_bytes", "source")}
