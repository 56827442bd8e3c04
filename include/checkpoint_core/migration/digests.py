"""Content digests of migrated rows, computed the same way from either side.

A checkpoint's digest is its parent plus the parsed JSON document and metadata (parsed, so
key order and JSONB's number formatting drop out); blobs and writes are digested over their
exact bytes with sha256. Equal digests mean the target holds what the source held, row for row.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from typing import Iterable

import psycopg
from psycopg.rows import tuple_row

from include.checkpoint_core.migration.source import iter_batches
from include.checkpoint_core.migration.transcode import Rejected, transcode_checkpoint, transcode_write


def checkpoint_digest(parent, checkpoint_json, metadata_json) -> tuple:
    """Parsed documents compare by value: key order and JSONB's number formatting drop out."""
    return (parent or "", json.loads(checkpoint_json), json.loads(metadata_json))


def _sha(blob) -> str | None:
    return None if blob is None else hashlib.sha256(blob).hexdigest()


Digests = dict[str, dict[tuple, object]]


def source_digests(conn: sqlite3.Connection, thread_ids: list[str], *, batch_size: int = 2000) -> tuple[Digests, int]:
    """Digests of what the target should hold for ``thread_ids``; also the rejected-row count."""
    out: Digests = {"checkpoints": {}, "blobs": {}, "writes": {}}
    rejected = 0
    for rows in iter_batches(conn, "checkpoints", batch_size, thread_ids=thread_ids):
        for row in rows:
            try:
                cp = transcode_checkpoint(*row)
            except Rejected:
                rejected += 1
                continue
            out["checkpoints"][(cp.thread_id, cp.checkpoint_ns, cp.checkpoint_id)] = checkpoint_digest(
                cp.parent_checkpoint_id, cp.checkpoint_json, cp.metadata_json
            )
            for channel, version, type_, blob in cp.blobs:
                out["blobs"][(cp.thread_id, cp.checkpoint_ns, channel, version)] = (type_, _sha(blob))
    for rows in iter_batches(conn, "writes", batch_size, thread_ids=thread_ids):
        for row in rows:
            try:
                w = transcode_write(row)
            except Rejected:
                rejected += 1
                continue
            out["writes"][(w[0], w[1], w[2], w[3], w[5])] = (w[4], w[6], w[7], _sha(w[8]))
    return out, rejected


# Bytes are hashed by the server (sha256() is built in since PostgreSQL 11), so verify moves
# 32-byte digests instead of the blobs themselves.
TARGET_SQL = {
    "checkpoints": """SELECT thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, checkpoint::text AS c,
                             metadata::text AS m FROM checkpoints WHERE thread_id = ANY(%s)""",
    "blobs": """SELECT thread_id, checkpoint_ns, channel, version, type, encode(sha256(blob), 'hex') AS h
                FROM checkpoint_blobs WHERE thread_id = ANY(%s)""",
    "writes": """SELECT thread_id, checkpoint_ns, checkpoint_id, task_id, idx, task_path, channel, type,
                        encode(sha256(blob), 'hex') AS h FROM checkpoint_writes WHERE thread_id = ANY(%s)""",
}


def target_digests(conn: psycopg.Connection, thread_ids: list[str]) -> Digests:
    out: Digests = {"checkpoints": {}, "blobs": {}, "writes": {}}
    # Plain tuples: building a dict per row costs more than the comparison itself.
    with conn.cursor(row_factory=tuple_row) as cur:  # callers pass thread chunks: results stay small
        cur.execute(TARGET_SQL["checkpoints"], (thread_ids,))
        loads = json.loads
        out["checkpoints"] = {(t, ns, c): (p or "", loads(doc), loads(meta)) for t, ns, c, p, doc, meta in cur}
        cur.execute(TARGET_SQL["blobs"], (thread_ids,))
        out["blobs"] = {(t, ns, ch, v): (ty, h) for t, ns, ch, v, ty, h in cur}
        cur.execute(TARGET_SQL["writes"], (thread_ids,))
        out["writes"] = {(t, ns, c, task, idx): (path, ch, ty, h) for t, ns, c, task, idx, path, ch, ty, h in cur}
    return out


def compare(expected: Digests, actual: Digests, *, limit: int = 20) -> dict[str, dict]:
    """Per table: rows missing from the target, rows that differ, and rows only the target has."""
    result = {}
    for table, want in expected.items():
        have = actual.get(table, {})
        missing = [k for k in want if k not in have]
        differ = [k for k, d in want.items() if k in have and have[k] != d]
        extra = [k for k in have if k not in want]
        result[table] = {
            "expected": len(want),
            "found": len(have),
            "missing": len(missing),
            "different": len(differ),
            "extra": len(extra),
            "examples": {"missing": [list(k) for k in missing[:limit]], "different": [list(k) for k in differ[:limit]]},
        }
    return result


def chunks(items: list, size: int) -> Iterable[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
