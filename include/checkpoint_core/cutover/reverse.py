"""PostgresSaver rows -> SqliteSaver rows, for a rollback: bytes carried, never objects.

PostgresSaver splits a checkpoint into a JSONB document (primitives inline) and one blob per
channel version; SqliteSaver keeps the whole checkpoint as one serialised value. The reverse
rebuilds that value around the blobs' own bytes: a msgpack blob is spliced into the checkpoint's
msgpack map as it is (a msgpack value is self-delimiting), so no app class is ever imported or
re-encoded. Writes are copied byte for byte, with their ``task_path`` and ``idx``. Metadata is
written the way SqliteSaver writes it (``json.dumps(..., ensure_ascii=False)``).

A checkpoint whose blobs cannot be spliced (pickled values) is refused with the reason; the
thread then stays where it is, whole.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable
from typing import Any

import ormsgpack

from include.checkpoint_core.migration.transcode import Rejected
from include.checkpoint_core.tiering.rows import BlobRow, CheckpointRow, ThreadRows

# The order LangGraph builds a checkpoint in (create_checkpoint / empty_checkpoint).
_KEY_ORDER = ("v", "id", "ts", "channel_values", "channel_versions", "versions_seen", "updated_channels")
_PACK = ormsgpack.OPT_NON_STR_KEYS


def _map_header(n: int) -> bytes:
    if n < 16:
        return bytes([0x80 | n])
    if n < 1 << 16:
        return b"\xde" + struct.pack(">H", n)
    return b"\xdf" + struct.pack(">I", n)


def _msgpack_value(type_: str, blob: bytes | None, where: str) -> bytes:
    """A channel value's msgpack bytes, as SqliteSaver's serializer would have nested them."""
    if type_ == "msgpack":
        return bytes(blob)
    if type_ in ("bytes", "bytearray"):
        # JsonPlusSerializer packs bytes as msgpack bin; a bytearray inside a checkpoint goes
        # through its constructor extension, which is what _msgpack_enc gives.
        if type_ == "bytes":
            return ormsgpack.packb(bytes(blob))
        from langgraph.checkpoint.serde.jsonplus import _msgpack_enc

        return _msgpack_enc(bytearray(blob))
    if type_ == "null":
        return ormsgpack.packb(None)
    raise Rejected(f"{where}: a {type_!r} value cannot be spliced into a SqliteSaver checkpoint without "
                   "deserialising it")


def _ordered(document: dict) -> list[str]:
    keys = [k for k in _KEY_ORDER if k in document]
    return keys + [k for k in document if k not in _KEY_ORDER]


def _values(c: CheckpointRow, blobs: dict[tuple[str, str], BlobRow]) -> tuple[dict[str, Any], dict[str, BlobRow]]:
    """The checkpoint's inline values and the blob rows that override them (what PostgresSaver loads)."""
    inline = dict(c.checkpoint.get("channel_values") or {})
    found: dict[str, BlobRow] = {}
    for channel, version in (c.checkpoint.get("channel_versions") or {}).items():
        b = blobs.get((channel, str(version)))
        if b is None:
            continue
        inline.pop(channel, None)
        if b.type != "empty":
            found[channel] = b
    return inline, found


def checkpoint_bytes(c: CheckpointRow, blobs: dict[tuple[str, str], BlobRow], where: str) -> tuple[str, bytes]:
    """(type, bytes) of the whole checkpoint as SqliteSaver stores it."""
    inline, found = _values(c, blobs)
    if found and all(b.type == "json" for b in found.values()):
        return "json", _json_checkpoint(c, inline, found)
    parts = []
    document = {k: v for k, v in c.checkpoint.items()}
    document.setdefault("channel_values", {})
    for key in _ordered(document):
        parts.append(ormsgpack.packb(key))
        if key != "channel_values":
            parts.append(ormsgpack.packb(document[key], option=_PACK))
            continue
        parts.append(_map_header(len(inline) + len(found)))
        for channel, value in inline.items():
            parts.append(ormsgpack.packb(channel) + ormsgpack.packb(value, option=_PACK))
        for channel, b in found.items():
            parts.append(ormsgpack.packb(channel) + _msgpack_value(b.type, b.blob, f"{where} channel {channel!r}"))
    return "msgpack", _map_header(len(document)) + b"".join(parts)


def _json_checkpoint(c: CheckpointRow, inline: dict, found: dict[str, BlobRow]) -> bytes:
    """Checkpoints from the JSON era stay JSON: each blob's text spliced in as it is."""
    document = {k: v for k, v in c.checkpoint.items() if k != "channel_values"}
    values = ", ".join([json.dumps(k) + ": " + json.dumps(v) for k, v in inline.items()]
                       + [json.dumps(k) + ": " + bytes(b.blob).decode("utf-8") for k, b in found.items()])
    head = json.dumps(document)[:-1]
    return (head + (", " if document else "") + '"channel_values": {' + values + "}}").encode("utf-8")


def metadata_bytes(metadata: dict) -> bytes:
    return json.dumps(metadata, ensure_ascii=False).encode("utf-8", "ignore")


def sqlite_rows(rows: ThreadRows) -> tuple[list[tuple], list[tuple]]:
    """(checkpoints rows, writes rows) of one thread in SqliteSaver's column order:
    checkpoints (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, type, checkpoint, metadata),
    writes (thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, idx, channel, type, value).
    Raises ``Rejected`` naming the first row that cannot be carried."""
    blobs: dict[str, dict[tuple[str, str], BlobRow]] = {}
    for b in rows.blobs:
        blobs.setdefault(b.ns, {})[(b.channel, b.version)] = b
    tid = rows.thread_id
    checkpoints = []
    for c in rows.checkpoints:
        where = f"checkpoint ({tid!r}, {c.ns!r}, {c.checkpoint_id!r})"
        type_, data = checkpoint_bytes(c, blobs.get(c.ns, {}), where)
        checkpoints.append((tid, c.ns, c.checkpoint_id, c.parent_id, type_, data, metadata_bytes(c.metadata)))
    writes = [(tid, w.ns, w.checkpoint_id, w.task_id, w.task_path, w.idx, w.channel, w.type, w.blob)
              for w in rows.writes]
    return checkpoints, writes


CHECKPOINT_INSERT = ("INSERT INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, type, "
                     "checkpoint, metadata) VALUES (?, ?, ?, ?, ?, ?, ?)")
WRITE_INSERT = ("INSERT INTO writes (thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, idx, channel, type, "
                "value) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")


def replace_threads(conn, prepared: Iterable[tuple[str, list[tuple], list[tuple]]]) -> int:
    """Replace each thread's rows in a SqliteSaver file (the caller's transaction). Returns rows written."""
    written = 0
    for tid, checkpoints, writes in prepared:
        conn.execute("DELETE FROM writes WHERE thread_id = ?", (tid,))
        conn.execute("DELETE FROM checkpoints WHERE thread_id = ?", (tid,))
        conn.executemany(CHECKPOINT_INSERT, checkpoints)
        conn.executemany(WRITE_INSERT, writes)
        written += len(checkpoints) + len(writes)
    return written
