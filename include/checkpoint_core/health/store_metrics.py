"""What a checkpoint store says about its own load, without any metrics pipeline.

* Writes/s: checkpoint ids are uuid6, so the checkpoints saved in the last N minutes are an
  index range scan (the lifecycle age index ``checkpoint_setup`` creates). Each ``put`` is one
  checkpoint and each ``put_writes`` one (checkpoint, task) group of writes, so their sum over
  the window is the write transactions the app made, the number SQLite's single writer limits.
  Rows the pruning already deleted are not counted, and ids outside the uuid6 range (very old
  LangGraph versions) are ignored by bounding the range on both sides.
* Size: SQLite's file plus its ``-wal`` and ``-shm`` side files (the WAL can be most of it);
  PostgreSQL's checkpoint tables with their indexes and TOAST.
* Threads and the largest checkpoints (the size audit, read-only).

Every reading is read-only. One that fails for a reason that will not go away (an unsupported
old schema, say) is listed in ``missing`` rather than failing the whole check.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from include.checkpoint_core.errors import CheckpointStoreError
from include.checkpoint_core.ids import uuid6_floor
from include.checkpoint_core.stores import StoreTarget

# Ids minted up to this far ahead (clock skew between app servers) still count as "now".
FUTURE_SKEW = timedelta(hours=1)
PG_TABLES = ("checkpoints", "checkpoint_blobs", "checkpoint_writes", "checkpoint_migrations")


@dataclass
class StoreReadings:
    store_bytes: int | None = None
    bytes_detail: dict[str, int] = field(default_factory=dict)
    threads: int | None = None
    checkpoints_in_window: int | None = None
    write_groups_in_window: int | None = None
    writes_per_second: float | None = None
    largest: list[dict] = field(default_factory=list)
    largest_checkpoint_bytes: int | None = None
    over_checkpoint_limit: int | None = None
    missing: list[str] = field(default_factory=list)


def _window_bounds(window_minutes: float, now: datetime | None) -> tuple[str, str]:
    now = now or datetime.now(timezone.utc)
    return uuid6_floor(now - timedelta(minutes=window_minutes)), uuid6_floor(now + FUTURE_SKEW)


# (label, SQL): one read each; %s/? placeholders get the window's low and high ids.
SQLITE_READS = {
    "threads": "SELECT COUNT(DISTINCT thread_id) FROM checkpoints",
    "checkpoints_in_window": "SELECT COUNT(*) FROM checkpoints WHERE checkpoint_id >= ? AND checkpoint_id < ?",
    "write_groups_in_window": (
        "SELECT COUNT(*) FROM (SELECT DISTINCT thread_id, checkpoint_ns, checkpoint_id, task_id FROM writes "
        "WHERE checkpoint_id >= ? AND checkpoint_id < ?)"
    ),
}
PG_READS = {
    "threads": "SELECT COUNT(DISTINCT thread_id) AS n FROM checkpoints",
    "checkpoints_in_window": "SELECT COUNT(*) AS n FROM checkpoints WHERE checkpoint_id >= %s AND checkpoint_id < %s",
    "write_groups_in_window": (
        "SELECT COUNT(*) AS n FROM (SELECT DISTINCT thread_id, checkpoint_ns, checkpoint_id, task_id "
        "FROM checkpoint_writes WHERE checkpoint_id >= %s AND checkpoint_id < %s) g"
    ),
}
PG_SIZE_SQL = "SELECT COALESCE(pg_total_relation_size(to_regclass(%s)), 0) AS n"


def read_store(
    target: StoreTarget, *, window_minutes: float = 15, largest_top_n: int = 5,
    checkpoint_limit_bytes: int = 5 * 1024 * 1024, now: datetime | None = None, full_scans: bool = True,
) -> StoreReadings:
    """Size and writes/s over the window (index range scans), and with ``full_scans`` the thread
    count and the largest checkpoints, which read every row and so are worth doing less often."""
    out = StoreReadings()
    low, high = _window_bounds(window_minutes, now)
    reads = {k: v for k, v in (SQLITE_READS if target.kind == "sqlite" else PG_READS).items()
             if full_scans or k != "threads"}
    if target.kind == "sqlite":
        _read_sqlite(Path(target.location), low, high, reads, out)
    else:
        _read_postgres(target.location, low, high, reads, out)
    if out.checkpoints_in_window is not None and out.write_groups_in_window is not None:
        out.writes_per_second = (out.checkpoints_in_window + out.write_groups_in_window) / (window_minutes * 60)
    if full_scans and largest_top_n > 0:
        _read_largest(target, largest_top_n, checkpoint_limit_bytes, out)
    return out


def _read_sqlite(path: Path, low: str, high: str, reads: dict[str, str], out: StoreReadings) -> None:
    from include.checkpoint_core.sqlite_store import (
        classify_sqlite_error,
        open_sqlite_readonly,
        read_schema,
        sqlite_file_sizes,
    )

    with open_sqlite_readonly(path) as conn:  # raises StoreNotFound / NotSqliteFile with a hint
        read_schema(conn, path)  # NotACheckpointStore when the tables are missing
        out.bytes_detail = sqlite_file_sizes(path)  # after opening: the WAL is current
        out.store_bytes = sum(out.bytes_detail.values())
        for label, sql in reads.items():
            params = () if label == "threads" else (low, high)
            try:
                setattr(out, label, conn.execute(sql, params).fetchone()[0])
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc) or "no such column" in str(exc):
                    out.missing.append(f"store: {label} unavailable in this schema ({exc})")
                else:
                    raise classify_sqlite_error(exc, path, "reading") from exc


def _read_postgres(dsn: str, low: str, high: str, reads: dict[str, str], out: StoreReadings) -> None:
    from include.checkpoint_core.errors import NotACheckpointStore
    from include.checkpoint_core.postgres_store import describe_dsn, postgres_connection

    with postgres_connection(dsn) as conn:  # autocommit, dict rows
        conn.execute("SET default_transaction_read_only = on")
        if conn.execute("SELECT to_regclass('checkpoints') AS t").fetchone()["t"] is None:
            raise NotACheckpointStore(f"{describe_dsn(dsn)} has no PostgresSaver tables (checkpoints).")
        for table in PG_TABLES:
            out.bytes_detail[table] = conn.execute(PG_SIZE_SQL, (table,)).fetchone()["n"]
        out.store_bytes = sum(out.bytes_detail.values())
        for label, sql in reads.items():
            params = () if label == "threads" else (low, high)
            setattr(out, label, conn.execute(sql, params).fetchone()["n"])


def _read_largest(target: StoreTarget, top_n: int, limit_bytes: int, out: StoreReadings) -> None:
    from include.checkpoint_core.size_audit import largest_checkpoints

    try:
        audit = largest_checkpoints(target, limit=top_n, max_bytes=limit_bytes)
    except CheckpointStoreError as exc:
        if exc.retryable:
            raise
        out.missing.append(f"store: largest checkpoints unavailable: {exc}")
        return
    out.largest = audit["largest"]
    out.over_checkpoint_limit = audit["over_limit"]
    out.largest_checkpoint_bytes = audit["largest"][0]["bytes"] if audit["largest"] else 0
