"""A thread as PostgresSaver's rows: the one shape every tier stores and every move copies.

The hot tier keeps exactly these rows in Redis and the archive keeps them in one object per
thread, so a move is a copy of bytes: a blob's ``(type, bytes)`` is never decoded, and the app's
classes never need to be importable where tiering runs. ``RowCodec`` turns the saver API's
objects into rows and back with PostgresSaver's own encoding (it *is* a ``BasePostgresSaver``,
used only for those helpers), so a row written hot equals the row PostgresSaver would have written.
"""

from __future__ import annotations

import hashlib
import json
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg
from psycopg.rows import tuple_row
from psycopg.types.json import Jsonb, set_json_loads
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_serializable_checkpoint_metadata,
)
from langgraph.checkpoint.postgres.base import BasePostgresSaver
from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.types import TASKS

from include.checkpoint_core.migration.target import BINARY_TYPES, prefer_lz4


@dataclass(frozen=True)
class CheckpointRow:
    ns: str
    checkpoint_id: str
    parent_id: str | None
    checkpoint: dict  # without the channel values kept as blobs, as in the checkpoints table
    metadata: dict
    type: str | None = None


@dataclass(frozen=True)
class BlobRow:
    ns: str
    channel: str
    version: str
    type: str
    blob: bytes | None


@dataclass(frozen=True)
class WriteRow:
    ns: str
    checkpoint_id: str
    task_id: str
    task_path: str
    idx: int
    channel: str
    type: str | None
    blob: bytes


@dataclass
class ThreadRows:
    thread_id: str
    checkpoints: list[CheckpointRow] = field(default_factory=list)
    blobs: list[BlobRow] = field(default_factory=list)
    writes: list[WriteRow] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.checkpoints or self.blobs or self.writes)

    @property
    def nbytes(self) -> int:
        """Serialised size: the JSON documents and blobs, what a tier pays to hold."""
        size = sum(len(_dumps(c.checkpoint)) + len(_dumps(c.metadata)) for c in self.checkpoints)
        size += sum(len(b.blob or b"") for b in self.blobs) + sum(len(w.blob) for w in self.writes)
        return size

    def keyed(self) -> dict[str, dict]:
        """Every row under its primary key, for row-level comparison."""
        return {
            "checkpoints": {(c.ns, c.checkpoint_id): (c.parent_id, c.checkpoint, c.metadata) for c in self.checkpoints},
            "blobs": {(b.ns, b.channel, b.version): (b.type, b.blob) for b in self.blobs},
            "writes": {(w.ns, w.checkpoint_id, w.task_id, w.idx): (w.task_path, w.channel, w.type, w.blob)
                       for w in self.writes},
        }

    def digested(self) -> ThreadRows:
        """The same rows with each blob replaced by its MD5, to compare with ``read_pg_threads(digests=True)``."""
        return ThreadRows(self.thread_id, self.checkpoints,
                          [BlobRow(b.ns, b.channel, b.version, b.type, _md5(b.blob)) for b in self.blobs],
                          [WriteRow(w.ns, w.checkpoint_id, w.task_id, w.task_path, w.idx, w.channel, w.type,
                                    _md5(w.blob)) for w in self.writes])


def differences(expected: ThreadRows, actual: ThreadRows, *, limit: int = 5) -> list[str]:
    """Row-level comparison of two copies of a thread; empty when they are equal."""
    found: list[str] = []
    want, have = expected.keyed(), actual.keyed()
    for table, rows in want.items():
        other = have[table]
        for key in rows.keys() - other.keys():
            found.append(f"{table} {key} missing")
        for key in other.keys() - rows.keys():
            found.append(f"{table} {key} unexpected")
        for key in rows.keys() & other.keys():
            if rows[key] != other[key]:
                found.append(f"{table} {key} differs")
    return sorted(found)[:limit] if limit else sorted(found)


def _dumps(value: Any) -> bytes:
    """JSON as jsonb will hold it; orjson where it can (10x json), json for what orjson refuses."""
    try:
        return orjson.dumps(value)
    except TypeError:  # ints beyond 64 bits, non-string keys
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _md5(blob: bytes | None) -> str | None:
    return None if blob is None else hashlib.md5(blob, usedforsecurity=False).hexdigest()


def contains(document: Any, pattern: Any) -> bool:
    """jsonb's ``@>`` on Python values: the metadata filter PostgresSaver applies."""
    if isinstance(pattern, dict):
        return isinstance(document, dict) and all(k in document and contains(document[k], v)
                                                  for k, v in pattern.items())
    if isinstance(pattern, list):
        return isinstance(document, list) and all(any(contains(d, p) for d in document) for p in pattern)
    if isinstance(document, list):  # an array contains a scalar it holds
        return any(contains(d, pattern) for d in document)
    if isinstance(document, bool) or isinstance(pattern, bool):
        return document is pattern
    return document == pattern


class RowCodec(BasePostgresSaver):
    """PostgresSaver's encoding, without a database: objects <-> rows."""

    def __init__(self, serde: SerializerProtocol | None = None) -> None:
        super().__init__(serde=serde)

    def checkpoint_rows(self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata,
                        new_versions: ChannelVersions) -> tuple[CheckpointRow, list[BlobRow]]:
        """What PostgresSaver.put stores: primitives inline, other values as blobs of new versions."""
        from langgraph.checkpoint.postgres import _DeltaSnapshot  # type: ignore[attr-defined]

        conf = config["configurable"]
        thread_id, ns = conf["thread_id"], conf.get("checkpoint_ns", "")
        copy = checkpoint.copy()
        copy["channel_values"] = copy["channel_values"].copy()
        blob_values = {}
        for k, v in checkpoint["channel_values"].items():
            if isinstance(v, _DeltaSnapshot):
                blob_values[k] = copy["channel_values"].pop(k)
                copy["channel_values"][k] = True
            elif v is None or isinstance(v, (str, int, float, bool)):
                pass
            else:
                blob_values[k] = copy["channel_values"].pop(k)
        blob_versions = {k: v for k, v in new_versions.items() if k in blob_values}
        blobs = [BlobRow(ns, channel, str(version), type_, blob)
                 for _, _, channel, version, type_, blob in self._dump_blobs(thread_id, ns, blob_values, blob_versions)]
        # Through JSON once, as jsonb would: the hot and cold copies then hold equal documents.
        row = CheckpointRow(ns, checkpoint["id"], conf.get("checkpoint_id"), json.loads(_dumps(copy)),
                            json.loads(_dumps(get_serializable_checkpoint_metadata(config, metadata))))
        return row, blobs

    def write_rows(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str,
                   task_path: str = "") -> tuple[list[WriteRow], bool]:
        """PostgresSaver.put_writes' rows, and whether they overwrite (all special channels) or not."""
        conf = config["configurable"]
        rows = [WriteRow(ns, cid, tid, path, idx, channel, type_, blob)
                for _, ns, cid, tid, path, idx, channel, type_, blob in self._dump_writes(
                    conf["thread_id"], conf.get("checkpoint_ns", ""), conf["checkpoint_id"], task_id, task_path,
                    writes)]
        return rows, all(w[0] in WRITES_IDX_MAP for w in writes)

    def to_tuple(self, thread_id: str, row: CheckpointRow, blobs: Iterable[BlobRow], writes: Iterable[WriteRow],
                 parent_sends: Sequence[WriteRow] = ()) -> CheckpointTuple:
        """PostgresSaver._load_checkpoint_tuple on rows (including v<4 sends from the parent)."""
        checkpoint = json.loads(_dumps(row.checkpoint))
        versions = checkpoint.get("channel_versions") or {}
        values = [(b.channel.encode(), b.type.encode(), b.blob) for b in blobs
                  if b.channel in versions and str(versions[b.channel]) == b.version]
        if checkpoint.get("v", 4) < 4 and row.parent_id and parent_sends:
            ordered = sorted(parent_sends, key=lambda w: (w.task_path, w.task_id, w.idx))
            self._migrate_pending_sends([((w.type or "").encode(), w.blob) for w in ordered], checkpoint, values)
        pending = [(w.task_id.encode(), w.channel.encode(), (w.type or "").encode(), w.blob, w.task_path.encode(),
                    str(w.idx).encode()) for w in writes]
        conf = {"thread_id": thread_id, "checkpoint_ns": row.ns}
        return CheckpointTuple(
            {"configurable": {**conf, "checkpoint_id": row.checkpoint_id}},
            {**checkpoint, "channel_values": {**(checkpoint.get("channel_values") or {}), **self._load_blobs(values)}},
            row.metadata,
            {"configurable": {**conf, "checkpoint_id": row.parent_id}} if row.parent_id else None,
            self._load_writes(pending),
        )


def sends_of(writes: Iterable[WriteRow], ns: str, checkpoint_id: str | None) -> list[WriteRow]:
    return [w for w in writes if w.ns == ns and w.checkpoint_id == checkpoint_id and w.channel == TASKS]


# ---- the cold tier's rows (PostgreSQL) -------------------------------------------------------

def read_pg_threads(conn: psycopg.Connection, thread_ids: Sequence[str], *,
                    digests: bool = False) -> dict[str, ThreadRows]:
    """Every row of these threads in the checkpoint tables, bytes as stored (three queries in all).
    ``digests``: each blob as its MD5, computed by the server (a verify needs no bytes sent back)."""
    out = {tid: ThreadRows(tid) for tid in thread_ids}
    ids = list(out)
    blob = "md5(blob)" if digests else "blob"
    cur = conn.cursor(row_factory=tuple_row)
    set_json_loads(orjson.loads, cur)
    cur.execute("SELECT thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, checkpoint, metadata, type "
                "FROM checkpoints WHERE thread_id = ANY(%s)", (ids,))
    for tid, *r in cur:
        out[tid].checkpoints.append(CheckpointRow(*r))
    cur.execute(f"SELECT thread_id, checkpoint_ns, channel, version, type, {blob} FROM checkpoint_blobs "
                "WHERE thread_id = ANY(%s)", (ids,))
    for tid, *r in cur:
        out[tid].blobs.append(BlobRow(*r))
    cur.execute(f"SELECT thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, idx, channel, type, {blob} "
                "FROM checkpoint_writes WHERE thread_id = ANY(%s)", (ids,))
    for tid, *r in cur:
        out[tid].writes.append(WriteRow(*r))
    return out


def read_pg_thread(conn: psycopg.Connection, thread_id: str) -> ThreadRows:
    return read_pg_threads(conn, [thread_id])[thread_id]


_LZ4_SESSIONS: weakref.WeakSet = weakref.WeakSet()
_CHECKPOINT_TYPES = ["text", "text", "text", "text", "text", "jsonb", "jsonb"]


def _jsonb(value: Any) -> Jsonb:
    return Jsonb(value, dumps=lambda v: _dumps(v).decode())


def write_pg_threads(conn: psycopg.Connection, threads: Iterable[ThreadRows]) -> None:
    """Insert threads' rows as they are: one binary COPY per table (the caller's transaction decides)."""
    threads = list(threads)
    cur = conn.cursor()
    if conn not in _LZ4_SESSIONS:
        prefer_lz4(conn)
        _LZ4_SESSIONS.add(conn)
    with cur.copy("COPY checkpoints (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, type, "
                  "checkpoint, metadata) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(_CHECKPOINT_TYPES)
        for rows in threads:
            for c in rows.checkpoints:
                copy.write_row((rows.thread_id, c.ns, c.checkpoint_id, c.parent_id, c.type, _jsonb(c.checkpoint),
                                _jsonb(c.metadata)))
    with cur.copy("COPY checkpoint_blobs (thread_id, checkpoint_ns, channel, version, type, blob) "
                  "FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(BINARY_TYPES["blobs"])
        for rows in threads:
            for b in rows.blobs:
                copy.write_row((rows.thread_id, b.ns, b.channel, b.version, b.type, b.blob))
    with cur.copy("COPY checkpoint_writes (thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, idx, "
                  "channel, type, blob) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(BINARY_TYPES["writes"])
        for rows in threads:
            for w in rows.writes:
                copy.write_row((rows.thread_id, w.ns, w.checkpoint_id, w.task_id, w.task_path, w.idx, w.channel,
                                w.type, w.blob))


def write_pg_thread(conn: psycopg.Connection, rows: ThreadRows) -> None:
    write_pg_threads(conn, [rows])


def pg_threads_with_rows(conn: psycopg.Connection, thread_ids: Sequence[str]) -> set[str]:
    cur = conn.cursor(row_factory=tuple_row)
    cur.execute("SELECT DISTINCT thread_id FROM checkpoints WHERE thread_id = ANY(%s) UNION "
                "SELECT DISTINCT thread_id FROM checkpoint_writes WHERE thread_id = ANY(%s)",
                (list(thread_ids), list(thread_ids)))
    return {r[0] for r in cur}


def has_pg_rows(conn: psycopg.Connection, thread_id: str) -> bool:
    return bool(pg_threads_with_rows(conn, [thread_id]))


def delete_pg_threads(conn: psycopg.Connection, thread_ids: Sequence[str]) -> int:
    deleted, cur = 0, conn.cursor()
    for table in ("checkpoint_writes", "checkpoint_blobs", "checkpoints"):
        cur.execute(f"DELETE FROM {table} WHERE thread_id = ANY(%s)", (list(thread_ids),))
        deleted += cur.rowcount
    return deleted


def delete_pg_thread(conn: psycopg.Connection, thread_id: str) -> int:
    return delete_pg_threads(conn, [thread_id])


def tuples_from_rows(codec: RowCodec, rows: ThreadRows, *, ns: str | None = None, checkpoint_id: str | None = None,
                     before: str | None = None, filter: dict | None = None,
                     limit: int | None = None) -> Iterable[CheckpointTuple]:
    """A thread held as rows (an archive object) read as PostgresSaver.list would read it."""
    cps = sorted((c for c in rows.checkpoints
                  if (ns is None or c.ns == ns) and (checkpoint_id is None or c.checkpoint_id == checkpoint_id)
                  and (before is None or c.checkpoint_id < before)),
                 key=lambda c: c.checkpoint_id, reverse=True)
    blobs: dict[str, list[BlobRow]] = {}
    for b in rows.blobs:
        blobs.setdefault(b.ns, []).append(b)
    writes: dict[tuple[str, str], list[WriteRow]] = {}
    for w in rows.writes:
        writes.setdefault((w.ns, w.checkpoint_id), []).append(w)
    n = 0
    for c in cps:
        if filter and not contains(c.metadata, filter):
            continue
        yield codec.to_tuple(rows.thread_id, c, blobs.get(c.ns, []), writes.get((c.ns, c.checkpoint_id), []),
                             sends_of(writes.get((c.ns, c.parent_id), []), c.ns, c.parent_id) if c.parent_id else ())
        n += 1
        if limit is not None and n >= limit:
            return
