"""Content digests of migrated rows, computed the same way from either side.

A checkpoint's digest is its parent plus the parsed JSON document and metadata (parsed, so
key order and JSONB's number formatting drop out); blobs and writes are digested over their
exact bytes with sha256. Equal digests mean the target holds what the source held, row for row.
"""

from __future__ import annotations

import hashlib
import sqlite3
from typing import Iterable

import orjson
import psycopg
from psycopg.rows import tuple_row

from include.checkpoint_core.migration.source import iter_batches
from include.checkpoint_core.migration.transcode import Rejected, split_checkpoint, transcode_checkpoint, transcode_write


_CANON = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


def canonical(parent, document, metadata) -> bytes | None:
    """Sorted-key JSON of parsed data: key order and JSONB's number formatting drop out, while
    types stay apart (true is not 1, 4.0 is not 4). None when it is not plain JSON data."""
    try:
        return orjson.dumps([parent or "", document, metadata], option=_CANON)
    except TypeError:
        return None


def checkpoint_digest(parent, checkpoint_json, metadata_json) -> bytes | None:
    return canonical(parent, orjson.loads(checkpoint_json), orjson.loads(metadata_json))


def _sha(blob) -> str | None:
    return None if blob is None else hashlib.sha256(blob).hexdigest()


Digests = dict[str, dict[tuple, object]]


def source_digests(conn: sqlite3.Connection, thread_ids: list[str], *, batch_size: int = 2000,
                   repair_nul: bool = False) -> tuple[Digests, int, dict]:
    """Digests of what the target should hold for ``thread_ids``, the rejected-row count, and how
    many checkpoints reference each blob (a blob is expected while one of them is).

    Checkpoint documents are compared as the Python data the JSON is made from, skipping a
    serialise-and-parse round trip per row; ``settle_disagreements`` settles the few rows
    where that shortcut and the target disagree (e.g. a row JSONB had to refuse).

    When checkpoints hold one channel version with different bytes (a set in another iteration
    order, or a value LangGraph changed without a new version), PostgresSaver can keep only one
    blob per version, so any of the source's copies is a faithful target row: the expected digest
    is the set of them. Preflight names such version collisions before anything is written.
    """
    out: Digests = {"checkpoints": {}, "blobs": {}, "writes": {}}
    refs: dict[tuple, list[tuple]] = {}
    rejected = 0
    for rows in iter_batches(conn, "checkpoints", batch_size, thread_ids=thread_ids):
        for row in rows:
            try:
                document, blobs, meta, _ = split_checkpoint(*row, repair_nul=repair_nul)
            except Rejected:
                rejected += 1
                continue
            thread_id, ns = row[0], row[1]
            out["checkpoints"][(thread_id, ns, row[2])] = canonical(row[3], document, meta)
            for channel, version, type_, blob in blobs:
                key = (thread_id, ns, channel, version)
                digest = (type_, _sha(blob))
                seen = out["blobs"].get(key)
                if isinstance(seen, frozenset):
                    digest = seen | {digest}
                elif seen is not None and seen != digest:
                    digest = frozenset((seen, digest))
                out["blobs"][key] = digest
                refs.setdefault(key, []).append(row[2])
    for rows in iter_batches(conn, "writes", batch_size, thread_ids=thread_ids):
        for row in rows:
            try:
                w = transcode_write(row)
            except Rejected:
                rejected += 1
                continue
            out["writes"][(w[0], w[1], w[2], w[3], w[5])] = (w[4], w[6], w[7], _sha(w[8]))
    return out, rejected, refs


def settle_disagreements(conn: sqlite3.Connection, want: Digests, have: Digests, refs: dict, *,
                         repair_nul: bool = False) -> int:
    """Recompute, by the exact path, every checkpoint where the fast digest and the target
    disagree; forget those PostgreSQL refused (and their blobs). Returns how many it refused."""
    suspects = [k for k, d in want["checkpoints"].items() if have["checkpoints"].get(k) != d]
    refused = 0
    for key, exact in exact_checkpoint_digests(conn, suspects, repair_nul=repair_nul).items():
        if exact is None:  # refused by PostgreSQL: rightly absent
            drop_checkpoint(want, refs, key)
            refused += 1
        else:
            want["checkpoints"][key] = exact
    return refused


def drop_checkpoint(want: Digests, refs: dict, key: tuple) -> None:
    """Forget a checkpoint PostgreSQL refused, and the blobs only it referenced."""
    del want["checkpoints"][key]
    thread_id, ns, checkpoint_id = key
    for blob_key in [k for k in want["blobs"] if k[0] == thread_id and k[1] == ns]:
        holders = refs.get(blob_key, [])
        if checkpoint_id in holders:
            holders.remove(checkpoint_id)
            if not holders:
                del want["blobs"][blob_key]


def exact_checkpoint_digests(conn: sqlite3.Connection, keys: list[tuple], *,
                             repair_nul: bool = False) -> dict[tuple, tuple | None]:
    """The digest of each checkpoint as it was actually imported (None: PostgreSQL refuses it)."""
    out: dict[tuple, tuple | None] = {}
    for key in keys:
        row = conn.execute(
            "SELECT thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, type, checkpoint, metadata "
            "FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ?", key
        ).fetchone()
        try:
            cp = transcode_checkpoint(*row, repair_nul=repair_nul)
        except Rejected:
            out[key] = None
            continue
        out[key] = checkpoint_digest(cp.parent_checkpoint_id, cp.checkpoint_json, cp.metadata_json)
    return out


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
        loads = orjson.loads
        out["checkpoints"] = {(t, ns, c): canonical(p, loads(doc), loads(meta)) for t, ns, c, p, doc, meta in cur}
        cur.execute(TARGET_SQL["blobs"], (thread_ids,))
        out["blobs"] = {(t, ns, ch, v): (ty, h) for t, ns, ch, v, ty, h in cur}
        cur.execute(TARGET_SQL["writes"], (thread_ids,))
        out["writes"] = {(t, ns, c, task, idx): (path, ch, ty, h) for t, ns, c, task, idx, path, ch, ty, h in cur}
    return out


def matches(expected, actual) -> bool:
    """A frozenset holds equally faithful copies (one version held with different bytes): any one matches."""
    return actual in expected if isinstance(expected, frozenset) else actual == expected


def compare(expected: Digests, actual: Digests, *, limit: int = 20) -> dict[str, dict]:
    """Per table: rows missing from the target, rows that differ, and rows only the target has."""
    result = {}
    for table, want in expected.items():
        have = actual.get(table, {})
        missing = [k for k in want if k not in have]
        differ = [k for k, d in want.items() if k in have and not matches(d, have[k])]
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


def store_digests(conn: sqlite3.Connection, pg: psycopg.Connection, *, batch_size: int = 2000) -> dict:
    """Store items: every source item must be in the target with the same value."""
    from include.checkpoint_core.migration.transcode import transcode_store_item

    result = {"expected": 0, "found": 0, "missing": 0, "different": 0, "rejected": 0,
              "examples": {"missing": [], "different": []}}
    for rows in iter_batches(conn, "store", batch_size):
        want = {}
        for row in rows:
            try:
                item = transcode_store_item(dict(zip(("prefix", "key", "value", "created_at", "updated_at", "expires_at", "ttl_minutes"), row)))
            except Rejected:
                result["rejected"] += 1
                continue
            want[(item[0], item[1])] = orjson.dumps(orjson.loads(item[2]), option=_CANON)
        prefixes = sorted({k[0] for k in want})
        keys = sorted({k[1] for k in want})
        with pg.cursor(row_factory=tuple_row) as cur:
            cur.execute("SELECT prefix, key, value::text FROM store WHERE prefix = ANY(%s) AND key = ANY(%s)", (prefixes, keys))
            have = {(p, k): orjson.dumps(orjson.loads(v), option=_CANON) for p, k, v in cur if (p, k) in want}
        result["expected"] += len(want)
        result["found"] += len(have)
        for key, value in want.items():
            kind = "missing" if key not in have else "different" if have[key] != value else None
            if kind:
                result[kind] += 1
                if len(result["examples"][kind]) < 20:
                    result["examples"][kind].append(list(key))
    return result
