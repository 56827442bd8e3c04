"""Content digests of migrated rows, computed the same way from either side.

A checkpoint's digest covers its key, parent, the JSON document (canonicalised: key order
and number formatting differ between our JSON text and JSONB's) and its metadata; blobs and
writes are digested over their exact bytes. Equal digests mean the target holds what the
source held, row for row.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from typing import Iterable

import psycopg

from include.checkpoint_core.migration.source import iter_batches
from include.checkpoint_core.migration.transcode import Rejected, transcode_checkpoint, transcode_write


def _canonical(value) -> bytes:
    if isinstance(value, str):
        value = json.loads(value)
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def _h(*parts) -> str:
    digest = hashlib.sha256()
    for p in parts:
        digest.update(p if isinstance(p, bytes) else str(p).encode())
        digest.update(b"\x1f")
    return digest.hexdigest()


def checkpoint_digest(parent, checkpoint_json, metadata_json) -> str:
    return _h(parent or "", _canonical(checkpoint_json), _canonical(metadata_json))


def blob_digest(type_, blob) -> str:
    return _h(type_ or "", bytes(blob) if blob is not None else b"\x00null")


def write_digest(task_path, channel, type_, blob) -> str:
    return _h(task_path or "", channel, type_ or "", bytes(blob))


Digests = dict[str, dict[tuple, str]]


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
                out["blobs"][(cp.thread_id, cp.checkpoint_ns, channel, version)] = blob_digest(type_, blob)
    for rows in iter_batches(conn, "writes", batch_size, thread_ids=thread_ids):
        for row in rows:
            try:
                w = transcode_write(row)
            except Rejected:
                rejected += 1
                continue
            out["writes"][(w[0], w[1], w[2], w[3], w[5])] = write_digest(w[4], w[6], w[7], w[8])
    return out, rejected


TARGET_SQL = {
    "checkpoints": """SELECT thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, checkpoint::text AS c,
                             metadata::text AS m FROM checkpoints WHERE thread_id = ANY(%s)""",
    "blobs": "SELECT thread_id, checkpoint_ns, channel, version, type, blob FROM checkpoint_blobs WHERE thread_id = ANY(%s)",
    "writes": """SELECT thread_id, checkpoint_ns, checkpoint_id, task_id, idx, task_path, channel, type, blob
                 FROM checkpoint_writes WHERE thread_id = ANY(%s)""",
}


def target_digests(conn: psycopg.Connection, thread_ids: list[str]) -> Digests:
    out: Digests = {"checkpoints": {}, "blobs": {}, "writes": {}}
    with conn.cursor() as cur:  # callers pass thread chunks, so each result set stays small
        cur.execute(TARGET_SQL["checkpoints"], (thread_ids,))
        for r in cur:
            out["checkpoints"][(r["thread_id"], r["checkpoint_ns"], r["checkpoint_id"])] = checkpoint_digest(
                r["parent_checkpoint_id"], r["c"], r["m"]
            )
        cur.execute(TARGET_SQL["blobs"], (thread_ids,))
        for r in cur:
            out["blobs"][(r["thread_id"], r["checkpoint_ns"], r["channel"], r["version"])] = blob_digest(r["type"], r["blob"])
        cur.execute(TARGET_SQL["writes"], (thread_ids,))
        for r in cur:
            out["writes"][(r["thread_id"], r["checkpoint_ns"], r["checkpoint_id"], r["task_id"], r["idx"])] = write_digest(
                r["task_path"], r["channel"], r["type"], r["blob"]
            )
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
