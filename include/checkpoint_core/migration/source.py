"""Reading a SQLite checkpoint source: a consistent snapshot, then key-ordered batches.

The live file is only ever opened read-only. The snapshot is taken with SQLite's online
backup API, so the app can keep writing meanwhile; each table's largest rowid at that moment
is the watermark that catch-up starts from (SqliteSaver's INSERT and INSERT OR REPLACE both
give a row a new, larger rowid).
"""

from __future__ import annotations

import hashlib
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from include.checkpoint_core.sqlite_store import (
    SCHEMA_LEGACY,
    SqliteSchema,
    read_schema,
    check_sqlite_integrity,
    open_sqlite_readonly,
)
from include.checkpoint_core.errors import UnsupportedSchema

CHECKPOINT_COLUMNS = ("thread_id", "checkpoint_ns", "checkpoint_id", "parent_checkpoint_id", "type", "checkpoint", "metadata")
CHECKPOINT_KEY = ("thread_id", "checkpoint_ns", "checkpoint_id")
WRITE_COLUMNS = ("thread_id", "checkpoint_ns", "checkpoint_id", "task_id", "task_path", "idx", "channel", "type", "value")
WRITE_KEY = ("thread_id", "checkpoint_ns", "checkpoint_id", "task_id", "idx")
STORE_COLUMNS = ("prefix", "key", "value", "created_at", "updated_at", "expires_at", "ttl_minutes")
STORE_KEY = ("prefix", "key")

TABLES = {
    "checkpoints": (CHECKPOINT_COLUMNS, CHECKPOINT_KEY),
    "writes": (WRITE_COLUMNS, WRITE_KEY),
    "store": (STORE_COLUMNS, STORE_KEY),
}


@dataclass(frozen=True)
class Snapshot:
    path: str
    watermarks: dict[str, int]  # table -> max rowid at snapshot time
    counts: dict[str, int]
    sha256: str
    size_bytes: int
    schema_version: int


def source_tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def select_list(conn: sqlite3.Connection, table: str) -> str:
    """Column list for ``table``; columns older layouts lack are read as their default."""
    columns, _ = TABLES[table]
    present = {row[1] for row in conn.execute(f"PRAGMA table_info('{table}')")}
    defaults = {"task_path": "''", "expires_at": "NULL", "ttl_minutes": "NULL", "created_at": "NULL", "updated_at": "NULL"}
    return ", ".join(c if c in present else f"{defaults[c]} AS {c}" for c in columns)


def inspect_source(path: str | Path, *, check_integrity: bool = True) -> tuple[SqliteSchema, dict[str, int]]:
    """Validate a migration source and count what it holds. Never writes to it."""
    p = Path(path)
    with open_sqlite_readonly(p) as conn:
        schema = read_schema(conn, p)
        if schema.version == SCHEMA_LEGACY:
            raise UnsupportedSchema(f"{p} uses the {schema.version_name}; LangGraph can no longer read it.")
        if check_integrity:
            check_sqlite_integrity(conn, p)
        counts = table_counts(conn)
    return schema, counts


def table_counts(conn: sqlite3.Connection) -> dict[str, int]:
    tables = source_tables(conn)
    counts = {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in TABLES if t in tables}
    counts["threads"] = conn.execute("SELECT COUNT(DISTINCT thread_id) FROM checkpoints").fetchone()[0]
    return counts


def max_rowids(conn: sqlite3.Connection) -> dict[str, int]:
    """Each present table's highest rowid: the snapshot's watermarks, and catch-up's next ones."""
    tables = source_tables(conn)
    return {t: conn.execute(f"SELECT COALESCE(MAX(rowid), 0) FROM {t}").fetchone()[0] for t in TABLES if t in tables}


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def take_snapshot(source: str | Path, dest: str | Path) -> Snapshot:
    """Copy the live source into ``dest`` with the online backup API (the source stays untouched).

    One step (``pages=-1``) is one read transaction: a consistent point in time that, in WAL
    mode, never blocks the app's writers. A multi-step backup restarts whenever another
    connection writes, so on a busy app it never finishes.
    """
    src_path, dest_path = Path(source), Path(dest)
    dest_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest_path.with_name(dest_path.name + ".partial")
    tmp.unlink(missing_ok=True)
    with open_sqlite_readonly(src_path) as src, closing(sqlite3.connect(tmp)) as out:
        src.backup(out, pages=-1)
        out.execute("PRAGMA journal_mode=DELETE")  # a single self-contained file
        watermarks = max_rowids(out)
        counts = table_counts(out)
        schema = read_schema(out, tmp)
    tmp.replace(dest_path)
    return Snapshot(
        path=str(dest_path),
        watermarks=watermarks,
        counts=counts,
        sha256=file_sha256(dest_path),
        size_bytes=dest_path.stat().st_size,
        schema_version=schema.version,
    )


MAX_BATCH_BYTES = 64 * 1024 * 1024


# The columns that carry a row's bulk: enough to bound a batch's memory without measuring every field.
BULK_COLUMNS = {"checkpoints": (5, 6), "writes": (8,), "store": (2,)}
FETCH_ROWS = 100  # rows read at a time while a batch is filled, so one batch never overshoots by much


def _cut(rows: list[tuple], table: str, budget: int) -> tuple[list[tuple], bool, int]:
    """The leading ``rows`` whose bulk fits ``budget`` (the row that crosses it included), whether
    the list was cut there, and the bytes they use."""
    cols = BULK_COLUMNS[table]
    sizes = [sum(len(r[c]) for c in cols if r[c] is not None) for r in rows]
    total = sum(sizes)
    if total < budget:
        return rows, False, total
    total = 0
    for i, size in enumerate(sizes):
        total += size
        if total >= budget:
            return rows[: i + 1], True, total
    return rows, False, total  # pragma: no cover - the sum said otherwise


def iter_batches(
    conn: sqlite3.Connection, table: str, batch_size: int, *, min_rowid: int = 0, max_rowid: int | None = None,
    thread_ids: list[str] | None = None, max_bytes: int = MAX_BATCH_BYTES,
) -> Iterator[list[tuple]]:
    """Rows of ``table`` in primary-key order, ``batch_size`` rows or ``max_bytes`` at a time
    (keyset pagination), so memory stays bounded however big single checkpoints are.

    ``min_rowid``/``max_rowid`` select rows written after/before a watermark;
    ``thread_ids`` restricts checkpoints and writes to some threads (sampled verification).
    """
    if table not in source_tables(conn):
        return
    columns, key = TABLES[table]
    select = select_list(conn, table)
    key_list = ", ".join(key)
    where, params = ["rowid > ?"], [min_rowid]
    if max_rowid is not None:
        where.append("rowid <= ?")
        params.append(max_rowid)
    if thread_ids is not None:
        where.append(f"thread_id IN ({', '.join('?' * len(thread_ids))})")
        params.extend(thread_ids)
    last: tuple | None = None
    key_idx = [columns.index(k) for k in key]
    while True:
        clause = list(where)
        args = list(params)
        if last is not None:
            clause.append(f"({key_list}) > ({', '.join('?' * len(key))})")
            args.extend(last)
        cursor = conn.execute(
            f"SELECT {select} FROM {table} WHERE {' AND '.join(clause)} ORDER BY {key_list} LIMIT ?",
            (*args, batch_size),
        )
        rows: list[tuple] = []
        budget, was_cut = max_bytes, False
        while not was_cut and (chunk := cursor.fetchmany(FETCH_ROWS)):
            kept, was_cut, used = _cut(chunk, table, budget)
            rows.extend(kept)
            budget -= used
        cursor.close()
        if not rows:
            return
        yield rows
        if not (len(rows) == batch_size or was_cut):
            return
        last = tuple(rows[-1][i] for i in key_idx)


def thread_ids(conn: sqlite3.Connection) -> list[str]:
    """Every thread with rows, including one that has only writes left (its checkpoints deleted)."""
    return [r[0] for r in conn.execute(
        "SELECT thread_id FROM checkpoints UNION SELECT thread_id FROM writes ORDER BY thread_id")]
