"""Take a backup of a checkpoint store into a folder, publishing it with its manifest last.

PostgreSQL: a canary row is committed, then one REPEATABLE READ transaction exports its
snapshot; ``pg_dump --snapshot`` copies exactly that snapshot while the same transaction
counts and checksums the tables, so the manifest describes the dump byte for byte even
while the app writes. SQLite: the online backup API copies one consistent read
transaction; counts, checksums and the canary come from that copy.
"""

from __future__ import annotations

import secrets
import sqlite3
import tempfile
import time
from collections.abc import Callable
from contextlib import closing
from datetime import datetime
from pathlib import Path

import psycopg
from psycopg import sql

from include.checkpoint_core.backup.checksums import CANARY_TABLE, pg_table_digests, sqlite_table_digests
from include.checkpoint_core.backup.errors import BackupExists, BackupFailed
from include.checkpoint_core.backup.layout import (
    FORMAT_VERSION, MANIFEST, OFFLOAD_REFS, PG_FILE, SQLITE_FILE, STARTED, check_backup_id, iso, read_manifest, upload, utc,
    write_json,
)
from include.checkpoint_core.errors import NotACheckpointStore
from include.checkpoint_core.backup.pgtools import check_tool_for_server, find_tool, scrub, start_tool
from include.checkpoint_core.postgres_store import connect_postgres, describe_dsn, schema_versions
from include.checkpoint_core.stores import StoreTarget

CANARY_KEEP_DAYS = 7  # older canary rows are deleted: no backup runs that long
LOCK_WAIT_TIMEOUT_S = 120


def take_backup(
    target: StoreTarget, folder, *, backup_id: str, now: datetime | None = None, canary: bool = True,
    work_dir: str | Path | None = None, pg_bin_dir: str | Path | None = None,
    lock_wait_timeout_s: float = LOCK_WAIT_TIMEOUT_S, log: Callable[[str], None] = print,
) -> dict:
    """Back ``target`` up into ``folder/<backup_id>/`` and return the manifest.

    Re-running with the same ``backup_id`` after a failure starts over; a backup with a
    manifest is never overwritten. ``work_dir`` holds the local copy before upload (the
    store's size must fit there). ``now`` dates the backup (tests, backfills).
    ``lock_wait_timeout_s``: how long to queue behind a lock held on a checkpoint table
    (a schema migration) before failing, retryably, instead of stalling the app behind us.
    """
    check_backup_id(backup_id)
    started = time.perf_counter()
    created = utc(now)
    dest = folder / backup_id
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if read_manifest(dest) is not None:
            raise BackupExists(f"backup {backup_id} already exists in {folder}.")
        dest.mkdir(parents=True, exist_ok=True)
        # Wall-clock time, whatever ``now`` says: retention dates an unfinished backup by it.
        write_json(dest / STARTED, {"backup_id": backup_id, "started_at": iso(utc(None)), "source": target.display})
    except OSError as exc:
        raise _folder_error(folder, exc) from exc
    log(f"backup {backup_id}: {target.kind} store {target.display} -> {dest}")
    with tempfile.TemporaryDirectory(prefix="checkpoint-ops-backup-", dir=work_dir) as tmp:
        if target.kind == "postgres":
            manifest, local = _dump_postgres(target, Path(tmp), backup_id, canary, pg_bin_dir, lock_wait_timeout_s, log)
        else:
            manifest, local = _snapshot_sqlite(target, Path(tmp))
        if "checkpoints" not in manifest["rows"]:
            raise NotACheckpointStore(
                f"{target.display} has no checkpoints table: this backup would protect nothing.",
                hint="Point the connection at the store the app's saver writes to (database and schema).",
            )
        offloaded = manifest.pop("offloaded")
        t0 = time.perf_counter()
        try:
            size, digest = upload(local, dest / manifest["file"])
            # The offloaded blobs this backup's rows reference: garbage collection keeps them while
            # the backup exists, so a restore finds its values.
            write_json(dest / OFFLOAD_REFS, {"sha256": offloaded})
        except OSError as exc:
            raise _folder_error(dest, exc) from exc
        manifest["offload_references"] = len(offloaded)
        manifest["timings"]["upload_s"] = round(time.perf_counter() - t0, 3)
    manifest = {
        "format": FORMAT_VERSION, "backup_id": backup_id, "kind": target.kind, "source": target.display,
        "source_name": target.name, "created_at": iso(created), "size_bytes": size, "sha256": digest,
        **manifest, "duration_s": round(time.perf_counter() - started, 3),
    }
    try:
        write_json(dest / MANIFEST, manifest)  # last: from here on the backup exists
    except OSError as exc:
        raise _folder_error(dest, exc) from exc
    log(f"backup {backup_id}: {size} bytes, sha256 {digest[:12]}..., rows {manifest['rows']}, "
        f"{manifest['duration_s']}s")
    return manifest


def _offload_references(conn, counts: dict) -> list[str]:
    """Sorted sha256 digests of the offloaded values the snapshot's rows reference."""
    from include.checkpoint_core.offload.gc import (
        POSTGRES_COLUMNS, SQLITE_COLUMNS, postgres_references_in, sqlite_references_in,
    )

    found: set[str] = set()
    if isinstance(conn, sqlite3.Connection):
        if all(t in counts for t, _ in SQLITE_COLUMNS):
            sqlite_references_in(conn, found)
    elif all(t in counts for t, _ in POSTGRES_COLUMNS):
        postgres_references_in(conn, found)
    return sorted(found)


def _folder_error(where, exc: OSError) -> BackupFailed:
    """Permission and path problems need a person; a network hiccup only a retry."""
    permanent = isinstance(exc, (PermissionError, NotADirectoryError, FileExistsError, IsADirectoryError))
    return BackupFailed(f"cannot write the backup to {where}: {exc}.", retryable=not permanent,
                        hint="Check the backup folder's path and the worker's write access to it." if permanent else None)


def _write_canary(dsn: str, backup_id: str) -> dict:
    """Commit a fresh token before the snapshot: a restore that holds it is no older than this backup."""
    token = secrets.token_hex(16)
    where = describe_dsn(dsn)
    with closing(connect_postgres(dsn)) as conn:
        try:
            conn.execute(sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (id text PRIMARY KEY, written_at timestamptz NOT NULL, token text NOT NULL)"
            ).format(sql.Identifier(CANARY_TABLE)))
        except psycopg.errors.UniqueViolation:
            pass  # another backup created it at the same moment
        except psycopg.errors.InsufficientPrivilege as exc:
            raise BackupFailed(
                f"cannot create {CANARY_TABLE} in {where}: {' '.join(str(exc).split())}.",
                hint=f"Grant CREATE on the schema to the backup's user, create {CANARY_TABLE} once as an owner, "
                     "or pass canary=False.", retryable=False,
            ) from exc
        with conn.transaction():
            row = conn.execute(sql.SQL(
                "INSERT INTO {t} (id, written_at, token) VALUES (%s, now(), %s) "
                "ON CONFLICT (id) DO UPDATE SET written_at = excluded.written_at, token = excluded.token "
                "RETURNING written_at"
            ).format(t=sql.Identifier(CANARY_TABLE)), (backup_id, token)).fetchone()
            conn.execute(sql.SQL("DELETE FROM {} WHERE written_at < now() - make_interval(days => %s)")
                         .format(sql.Identifier(CANARY_TABLE)), (CANARY_KEEP_DAYS,))
    return {"table": CANARY_TABLE, "id": backup_id, "token": token, "written_at": iso(row["written_at"])}


def _dump_postgres(target: StoreTarget, tmp: Path, backup_id: str, canary: bool, pg_bin_dir, lock_wait_s: float,
                   log) -> tuple[dict, Path]:
    dsn, where = target.location, target.display
    pg_dump = find_tool("pg_dump", pg_bin_dir)
    canary_row = _write_canary(dsn, backup_id) if canary else None
    local = tmp / PG_FILE
    t0 = time.perf_counter()
    with closing(connect_postgres(dsn, autocommit=False)) as conn:
        try:
            server = conn.execute("SHOW server_version_num").fetchone()["server_version_num"]
            encoding = conn.execute("SELECT pg_encoding_to_char(encoding) AS e FROM pg_database "
                                    "WHERE datname = current_database()").fetchone()["e"]
            tool = check_tool_for_server(pg_dump, int(server))
            conn.rollback()
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            snapshot = conn.execute("SELECT pg_export_snapshot() AS s").fetchone()["s"]
            wait_ms = max(int(lock_wait_s * 1000), 1)
            conn.execute("SELECT set_config('lock_timeout', %s, true)", (f"{wait_ms}ms",))
            schema = conn.execute("SELECT current_schema() AS s").fetchone()["s"]
            args = [pg_dump, "--format=custom", "--no-password", f"--snapshot={snapshot}",
                    f"--lock-wait-timeout={wait_ms}", f"--file={local}"]
            with start_tool(args, dsn) as proc:
                # pg_dump imports the snapshot while this transaction, which owns it, stays open.
                counts, checksums = pg_table_digests(conn)
                versions = schema_versions(conn)
                offloaded = _offload_references(conn, counts)
                _, stderr = proc.communicate()
            if proc.returncode != 0:
                retry = not any(m in stderr for m in ("permission denied", "aborting because of server version"))
                raise BackupFailed(f"pg_dump of {where} failed (exit {proc.returncode}): {scrub(stderr, dsn)}",
                                   retryable=retry)
        except psycopg.errors.LockNotAvailable as exc:
            raise BackupFailed(f"a checkpoint table in {where} stayed locked for over {lock_wait_s}s "
                               "(a schema migration or VACUUM FULL?).") from exc
        except psycopg.OperationalError as exc:
            raise BackupFailed(f"lost PostgreSQL at {where} during the backup: {' '.join(str(exc).split())}.") from exc
        finally:
            if not conn.closed:
                conn.rollback()
    dump_s = round(time.perf_counter() - t0, 3)
    log(f"pg_dump of {where}: {local.stat().st_size} bytes in {dump_s}s")
    return {
        "file": PG_FILE, "format_detail": "pg_dump custom format (pg_restore)", "tool": tool,
        "server_version_num": int(server), "encoding": encoding, "schema": schema, "rows": counts, "checksums": checksums,
        "schema_versions": versions, "canary": canary_row, "timings": {"dump_s": dump_s}, "offloaded": offloaded,
    }, local


def _snapshot_sqlite(target: StoreTarget, tmp: Path) -> tuple[dict, Path]:
    """A consistent copy via the online backup API (the live file is only read)."""
    from include.checkpoint_core.migration.source import take_snapshot
    from include.checkpoint_core.sqlite_store import SCHEMA_NAMES, open_sqlite_readonly

    t0 = time.perf_counter()
    snap = take_snapshot(target.location, tmp / SQLITE_FILE)
    with open_sqlite_readonly(snap.path) as conn:
        counts, checksums = sqlite_table_digests(conn)
        offloaded = _offload_references(conn, counts)
        newest = conn.execute(
            "SELECT thread_id, checkpoint_ns, checkpoint_id FROM checkpoints ORDER BY checkpoint_id DESC LIMIT 1"
        ).fetchone()
    # SQLite's canary is the newest checkpoint at snapshot time (uuid6 ids sort by time): adding
    # a table to the app's own file is not ours to do, and the restore must hold that checkpoint.
    canary = None if newest is None else {
        "kind": "newest_checkpoint", "thread_id": newest[0], "checkpoint_ns": newest[1], "checkpoint_id": newest[2],
    }
    return {
        "file": SQLITE_FILE, "format_detail": "SQLite database file (online backup API)",
        "rows": counts, "checksums": checksums,
        "schema_versions": {"sqlite": snap.schema_version, "name": SCHEMA_NAMES[snap.schema_version]},
        "canary": canary, "timings": {"snapshot_s": round(time.perf_counter() - t0, 3)}, "offloaded": offloaded,
    }, Path(snap.path)
