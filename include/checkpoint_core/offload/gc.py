"""Delete offloaded objects that no checkpoint references any more.

Pruning and ``delete_thread`` remove rows, not objects, so objects outlive their checkpoints.
An object is deleted only when no row of any given store references it AND it is older than
the grace period: an app uploads a value moments before the row that references it commits,
and the serializer renews an old object's age when it re-uses it, so a young object may be
about to be referenced. The object listing is taken before the references are read, so an
object uploaded during the run is never judged against references read before it existed.

Every store that shares the blob prefix must be passed in one call: references in a store
that is not passed are invisible, and its objects would be deleted.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

from include.checkpoint_core.errors import NotACheckpointStore, UnsupportedSchema
from include.checkpoint_core.offload.blobs import BlobStore
from include.checkpoint_core.offload.errors import MalformedOffloadReference, OffloadReferencesUnreadable
from include.checkpoint_core.offload.serializer import OFFLOAD_TYPE, parse_reference
from include.checkpoint_core.stores import StoreTarget

logger = logging.getLogger(__name__)

# Per backend: the (table, data column) pairs whose ``type`` column says how the value was serialized.
SQLITE_COLUMNS = (("checkpoints", "checkpoint"), ("writes", "value"))
POSTGRES_COLUMNS = (("checkpoint_blobs", "blob"), ("checkpoint_writes", "blob"))
# Matches 'offload' and 'offload+<cipher>' (an EncryptedSerializer wrapped around ours).
_WHERE = "type = {p} OR type LIKE {p2}"
_PARAMS = (OFFLOAD_TYPE, OFFLOAD_TYPE + "+%")
MISSING_SAMPLE = 5


def _add_references(rows: Iterable[tuple[str, bytes]], where: str, into: set[str]) -> int:
    count = 0
    for type_, data in rows:
        if type_ != OFFLOAD_TYPE:
            raise OffloadReferencesUnreadable(
                f"{where} holds offload references of type {type_!r}, encrypted outside the offload serializer."
            )
        try:
            into.add(parse_reference(bytes(data)).sha256)
        except MalformedOffloadReference as exc:
            raise MalformedOffloadReference(f"{where}: {exc.message}") from None
        count += 1
    return count


def _sqlite_references(path: str, into: set[str]) -> int:
    from include.checkpoint_core.sqlite_store import (
        SCHEMA_LEGACY,
        classify_sqlite_error,
        open_sqlite_readonly,
        read_schema,
    )

    p = Path(path)
    with open_sqlite_readonly(p) as conn:
        if read_schema(conn, p).version == SCHEMA_LEGACY:
            raise UnsupportedSchema(f"{p} has the legacy thread_ts layout, which no offloading saver writes.")
        try:
            return sqlite_references_in(conn, into, where=str(p))
        except sqlite3.Error as exc:
            raise classify_sqlite_error(exc, p, "reading offload references from") from exc


def sqlite_references_in(conn: sqlite3.Connection, into: set[str], where: str = "") -> int:
    """References read on the caller's connection (a backup reads them from its own snapshot)."""
    count = 0
    for table, column in SQLITE_COLUMNS:
        sql = f"SELECT type, {column} FROM {table} WHERE " + _WHERE.format(p="?", p2="?")
        count += _add_references(conn.execute(sql, _PARAMS), f"{where} table {table}".strip(), into)
    return count


def _postgres_references(dsn: str, into: set[str]) -> int:
    from psycopg.rows import tuple_row

    from include.checkpoint_core.postgres_store import connect_postgres, describe_dsn

    where = describe_dsn(dsn)
    with connect_postgres(dsn, autocommit=True, row_factory=tuple_row) as conn:
        tables = [t for t, _ in POSTGRES_COLUMNS]
        missing = [t for t in tables if conn.execute("SELECT to_regclass(%s)", (t,)).fetchone()[0] is None]
        if missing:
            raise NotACheckpointStore(
                f"{where} has no {', '.join(missing)} table(s).",
                hint="Point the connection at the PostgresSaver database, or run checkpoint_setup first.",
            )
        count = 0
        for table, column in POSTGRES_COLUMNS:
            # A server-side cursor: a store's references stream in pages instead of landing in memory at once.
            with conn.transaction(), conn.cursor(name=f"offload_gc_{table}") as cur:
                cur.itersize = 5_000
                cur.execute(f"SELECT type, {column} FROM {table} WHERE " + _WHERE.format(p="%s", p2="%s"), _PARAMS)
                count += _add_references(cur, f"{where} table {table}", into)
        return count


def postgres_references_in(conn, into: set[str]) -> int:
    """References read on the caller's connection, inside its transaction: a backup reads them in
    the very snapshot it dumps, so its list matches its rows exactly."""
    count = 0
    for table, column in POSTGRES_COLUMNS:
        # Server-side, in pages, as the GC reads them: a million references stay out of memory.
        with conn.cursor(name=f"offload_refs_{table}") as cur:
            cur.itersize = 5_000
            cur.execute(f"SELECT type, {column} AS data FROM {table} WHERE " + _WHERE.format(p="%s", p2="%s"), _PARAMS)
            rows = ((r["type"], r["data"]) if isinstance(r, dict) else tuple(r) for r in cur)
            count += _add_references(rows, f"table {table}", into)
    return count


def referenced_digests(target: StoreTarget, into: set[str] | None = None) -> tuple[set[str], int]:
    """The sha256 digests a store's offload rows reference, and how many rows reference one."""
    digests = set() if into is None else into
    if target.kind == "sqlite":
        rows = _sqlite_references(target.location, digests)
    else:
        rows = _postgres_references(target.location, digests)
    return digests, rows


def collect_offloaded_garbage(
    target: StoreTarget | Sequence[StoreTarget],
    blobs: BlobStore,
    *,
    grace_hours: float = 24,
    now: datetime | None = None,
    dry_run: bool = False,
    log: Callable[[str], None] | None = None,
    also_referenced: Iterable[str] = (),
) -> dict:
    """Delete unreferenced objects older than ``grace_hours`` from ``blobs``; return a plain-dict report.

    ``also_referenced``: digests to keep besides the stores' own, e.g. those the retained backups
    reference (a restore must find its blobs).

    ``grace_hours`` must exceed the serializer's ``refresh_after`` (1 h by default) plus the
    longest time an app takes between serializing a checkpoint and committing it; 0 is for tests.
    Any store that cannot be read fully stops the run before anything is deleted.
    """
    log = log or logger.info
    targets = [target] if isinstance(target, StoreTarget) else list(target)
    if not targets or not all(isinstance(t, StoreTarget) for t in targets):
        raise ValueError("collect_offloaded_garbage needs one StoreTarget or a non-empty list of them.")
    if isinstance(grace_hours, bool) or not isinstance(grace_hours, (int, float)) or not grace_hours >= 0:
        raise ValueError(f"grace_hours must be 0 or more, not {grace_hours!r}.")
    now = now or datetime.now(timezone.utc)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC).")
    cutoff = now - timedelta(hours=grace_hours)

    # 1. What exists (before reading references: see the module docstring).
    listed, scanned, scanned_bytes, foreign = {}, 0, 0, 0
    for info in blobs.list():
        scanned += 1
        scanned_bytes += info.size
        digest = blobs.sha256_of(info.key)
        if digest is None:
            foreign += 1  # not ours: never deleted
        else:
            listed[digest] = info
    log(f"{blobs.describe()}: {scanned:,} objects ({scanned_bytes:,} bytes), {foreign:,} not in the blob layout")

    # 2. What every store references; a store that cannot be read raises here, before any delete.
    referenced: set[str] = set(also_referenced)
    rows = 0
    for t in targets:
        before = len(referenced)
        _, n = referenced_digests(t, referenced)
        rows += n
        log(f"{t.name or t.display}: {n:,} offload references, {len(referenced) - before:,} new digests")

    # 3. Judge each object.
    kept_referenced = kept_young = 0
    doomed: list[tuple[str, int]] = []
    for digest, info in listed.items():
        if digest in referenced:
            kept_referenced += 1
        elif info.last_modified > cutoff:
            kept_young += 1
        else:
            doomed.append((info.key, info.size))
    missing = sorted(referenced - listed.keys())
    if missing:
        log(f"WARNING: {len(missing):,} referenced digests were not listed (missing, or uploaded during this run): "
            + ", ".join(missing[:MISSING_SAMPLE]))

    deleted = freed = 0
    doomed_bytes = sum(size for _, size in doomed)
    if doomed and not dry_run:
        # Looked at again right before deleting: the app may have reused (and so refreshed) an
        # object while the references were being read, and its new checkpoint may not be readable yet.
        still = []
        for key, size in doomed:
            info = blobs.stat(key)
            if info is not None and info.last_modified <= cutoff:
                still.append((key, size))
            else:
                kept_young += 1
        doomed, doomed_bytes = still, sum(size for _, size in still)
        deleted = blobs.delete(key for key, _ in doomed)
        freed = doomed_bytes  # every listed object asked for is gone now (deleting a gone key succeeds)
    log(f"{'would delete' if dry_run else 'deleted'} {len(doomed) if dry_run else deleted:,} objects "
        f"({doomed_bytes if dry_run else freed:,} bytes); kept {kept_referenced:,} referenced, {kept_young:,} young")
    return {
        "stores": [t.name or t.display for t in targets],
        "blob_store": blobs.describe(),
        "dry_run": dry_run,
        "grace_hours": grace_hours,
        "cutoff": cutoff.isoformat(timespec="seconds"),
        "objects_scanned": scanned,
        "bytes_scanned": scanned_bytes,
        "foreign_objects": foreign,
        "reference_rows": rows,
        "referenced": len(referenced),
        "kept_referenced": kept_referenced,
        "kept_young": kept_young,
        "deletable": len(doomed),
        "deletable_bytes": doomed_bytes,
        "deleted": deleted,
        "bytes_freed": freed,
        "referenced_missing": len(missing),
        "referenced_missing_sample": missing[:MISSING_SAMPLE],
    }
