"""SQLite checkpoint rows -> PostgresSaver rows, by moving serialised bytes.

SqliteSaver stores a whole checkpoint as one serialised map. PostgresSaver stores the same
checkpoint as JSONB with primitive channel values inline, and every other channel value as
its own ``checkpoint_blobs`` row keyed by (channel, version). We split the map without
rebuilding application objects: msgpack is decoded with extension types kept as raw
``Ext`` payloads (the app's classes are never imported), and each non-primitive channel value
is re-packed on its own. msgpack is compositional, so a value's standalone encoding is
exactly what PostgresSaver's serializer would have produced for it.

Values PostgreSQL cannot hold inline (a string with NUL, NaN/Infinity) stay faithful as blob
rows, which the saver merges over inline values. What cannot be stored at all (NUL inside
metadata or ids) raises ``Rejected`` with the reason, for the caller to report, unless the
caller asked for the one repair that has an obvious answer (``repair_nul``: NUL in a metadata
string becomes U+FFFD, the Unicode replacement character, in keys and values alike).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson
import ormsgpack

MSGPACK_OPTIONS = ormsgpack.OPT_NON_STR_KEYS
EXT_DELTA_SNAPSHOT = 7  # langgraph.checkpoint.serde.jsonplus.EXT_DELTA_SNAPSHOT


class Rejected(ValueError):
    """A row PostgreSQL cannot hold; ``reason`` says why, in words an operator can act on."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class PgCheckpoint:
    thread_id: str
    checkpoint_ns: str
    checkpoint_id: str
    parent_checkpoint_id: str | None
    checkpoint_json: str  # the JSONB document, already serialised
    metadata_json: str
    blobs: tuple[tuple[str, str, str, bytes], ...]  # (channel, version, type, bytes)
    repaired: str | None = None  # what ``repair_nul`` changed in this row, in words


class RawExt:
    """A msgpack extension value kept as its code and payload: never turned into an object."""

    __slots__ = ("code", "data")

    def __init__(self, code: int, data: bytes) -> None:
        self.code = code
        self.data = data

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RawExt) and (self.code, self.data) == (other.code, other.data)

    def __repr__(self) -> str:
        return f"RawExt({self.code}, {len(self.data)} bytes)"


def _raw_ext(code: int, data: bytes) -> RawExt:
    return RawExt(code, data)


def _pack_raw(obj: Any) -> ormsgpack.Ext:
    if isinstance(obj, RawExt):
        return ormsgpack.Ext(obj.code, obj.data)
    raise TypeError(f"unexpected {type(obj).__name__} in a decoded checkpoint")


def _pg_text_ok(value: str) -> bool:
    return "\x00" not in value


def _utf8_ok(value: str) -> bool:
    """False for strings with lone surrogates (old JSON checkpoints can decode to them)."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _inline_ok(value: Any) -> bool:
    """Primitive values PostgresSaver would inline, that JSONB also gives back unchanged.

    JSONB refuses NUL and NaN/Infinity, and prints numbers in plain notation, so a float
    whose repr needs an exponent (1e+16, 1e300) would come back as an int: those, like the
    rest, stay faithful as blob rows.
    """
    if value is None or isinstance(value, bool) or isinstance(value, int):
        return True
    if isinstance(value, float):
        return math.isfinite(value) and "e" not in repr(value)
    if isinstance(value, str):
        return _pg_text_ok(value) and _utf8_ok(value)
    return False


def pg_version_text(version: Any) -> str:
    """A channel version as PostgreSQL's jsonb_each_text renders it (PostgresSaver joins blobs on it)."""
    if isinstance(version, float):
        return format(Decimal(repr(version)), "f")
    return str(version)


def _is_primitive(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _explain(value: Any, where: str) -> None:
    """Walk ``value`` and raise ``Rejected`` naming what JSONB cannot hold (the slow path)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not _pg_text_ok(item):
                raise Rejected(f"{where} holds a string with a NUL character (\\u0000), which PostgreSQL text cannot store")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise Rejected(f"{where} holds {item!r}, which JSONB cannot store")
        elif isinstance(item, dict):
            for k, v in item.items():
                stack.append(k)
                stack.append(v)
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, (RawExt, bytes, bytearray, tuple)):
            raise Rejected(f"{where} holds a serialised object ({type(item).__name__}) outside channel_values")
        elif item is not None and not isinstance(item, (bool, int)):
            raise Rejected(f"{where} holds a {type(item).__name__}, which JSON cannot store")


def _json_for_pg(value: Any, where: str) -> str:
    """``value`` as JSON text JSONB accepts, or ``Rejected``.

    The fast path is one C-speed ``json.dumps``; only a failure, or an escaped NUL in its
    output, takes the slow walk that names the problem (an escaped backslash before
    "u0000" is a false alarm the walk clears).
    """
    try:
        text = _dumps(value)
    except (ValueError, TypeError):
        _explain(value, where)
        raise Rejected(f"{where} cannot be written as JSON") from None
    if "\\u0000" in text:
        _explain(value, where)
    if not text.isascii() and not _utf8_ok(text):
        raise Rejected(f"{where} holds a string with a lone surrogate, which is not valid UTF-8")
    return text


_ORJSON = orjson.OPT_NON_STR_KEYS
_LONG_NUMBER = re.compile(r"\d{19}")


def _dumps(value: Any) -> str:
    """Compact JSON, as ``json.dumps`` would write it, at orjson's speed where orjson agrees.

    orjson writes NaN/Infinity as null where json refuses them, and refuses ints beyond 64 bits
    and lone surrogates, which json takes: those few values go to json, so the result and every
    refusal stay as before."""
    try:
        text = orjson.dumps(value, option=_ORJSON).decode()
    except TypeError:
        pass
    else:
        if "null" not in text or not _has_non_finite(value):
            return text
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


_INFINITIES = (math.inf, -math.inf)


def _has_non_finite(value: Any) -> bool:
    """Whether ``value`` holds NaN or an infinity (orjson wrote them as null). Runs for every
    document with a null in it, so it stacks containers only and tests leaves by exact type."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if not isinstance(value, (dict, list)):
        return False
    stack = [value]
    while stack:
        item = stack.pop()
        for v in item.values() if isinstance(item, dict) else item:
            t = type(v)
            if t is str or t is int or t is bool or v is None:
                continue
            if t is float:
                if v != v or v in _INFINITIES:
                    return True
            elif isinstance(v, (dict, list)):
                stack.append(v)
            elif isinstance(v, float) and not math.isfinite(v):
                return True
    return False


def parse_metadata(raw: Any) -> dict:
    """SqliteSaver metadata: JSON text today, JSON bytes in older releases."""
    if raw is None:
        return {}
    if isinstance(raw, (bytes, bytearray, memoryview)):
        raw = bytes(raw)
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            try:
                value = ormsgpack.unpackb(raw, ext_hook=_raw_ext, option=MSGPACK_OPTIONS)
            except ormsgpack.MsgpackDecodeError:
                raise Rejected("metadata is neither JSON nor msgpack") from None
            if not isinstance(value, dict):
                raise Rejected("metadata is not a JSON object")
            return value
    if _LONG_NUMBER.search(raw):  # orjson would read an int beyond 64 bits as a float
        value = _loads_strict(raw)
    else:
        try:
            value = orjson.loads(raw)  # refuses NaN, Infinity and lone surrogates: json below names them
        except orjson.JSONDecodeError:
            value = _loads_strict(raw)
    if not isinstance(value, dict):
        raise Rejected("metadata is not a JSON object")
    return value


def _loads_strict(raw: str) -> Any:
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except ValueError as exc:
        if isinstance(exc, Rejected):
            raise
        raise Rejected(f"metadata is not valid JSON ({exc})") from None


REPLACEMENT = "\ufffd"


def replace_nul(value: Any) -> tuple[Any, int]:
    """``value`` with every NUL in its strings (dict keys included) replaced by U+FFFD, and how
    many strings changed. The same rule for every row, so verify can apply it too."""
    if isinstance(value, str):
        return (value.replace("\x00", REPLACEMENT), 1) if "\x00" in value else (value, 0)
    if isinstance(value, dict):
        out, n = {}, 0
        for k, v in value.items():
            k2, a = replace_nul(k)
            v2, b = replace_nul(v)
            out[k2] = v2
            n += a + b
        return out, n
    if isinstance(value, list):
        items = [replace_nul(v) for v in value]
        return [v for v, _ in items], sum(n for _, n in items)
    return value, 0


def _reject_constant(name: str):
    raise Rejected(f"metadata holds {name}, which JSONB cannot store")


def _decode_checkpoint(type_: str | None, blob: bytes) -> tuple[dict, str]:
    """The checkpoint map with channel values still raw, and the blob type to use."""
    if type_ == "msgpack":
        try:
            value = ormsgpack.unpackb(blob, ext_hook=_raw_ext, option=MSGPACK_OPTIONS)
        except ormsgpack.MsgpackDecodeError as exc:
            raise Rejected(f"checkpoint bytes are not valid msgpack ({exc})") from None
        kind = "msgpack"
    elif type_ == "json":  # langgraph-checkpoint < 2.0 wrote JSON
        try:
            value = json.loads(bytes(blob).decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise Rejected(f"checkpoint bytes are not valid JSON ({exc})") from None
        kind = "json"
    else:
        raise Rejected(
            f"checkpoint serialised as {type_!r}: only msgpack and json checkpoints can be split without "
            "the application's code (pickle or encrypted checkpoints need the app's serializer)"
        )
    if not isinstance(value, dict) or not isinstance(value.get("channel_values", {}), dict):
        raise Rejected("checkpoint is not a LangGraph checkpoint map")
    return value, kind


def _encode_value(kind: str, value: Any) -> tuple[str, bytes]:
    """(type, bytes) of a channel value, as PostgresSaver's serializer stores it."""
    if kind == "msgpack":
        if isinstance(value, bytes):
            return "bytes", value  # JsonPlusSerializer.dumps_typed keeps bytes as they are
        return "msgpack", ormsgpack.packb(value, default=_pack_raw, option=MSGPACK_OPTIONS)
    # Old JSON checkpoints: escaped ASCII, so even a lone surrogate survives the round trip.
    return "json", json.dumps(value, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def split_checkpoint(
    thread_id: str,
    checkpoint_ns: str,
    checkpoint_id: str,
    parent_checkpoint_id: str | None,
    type_: str | None,
    blob: bytes,
    metadata: Any,
    *,
    repair_nul: bool = False,
) -> tuple[dict, tuple[tuple[str, str, str, bytes], ...], dict, int]:
    """The JSONB document (as Python data), its blob rows, the metadata of one checkpoint row and
    how many metadata strings ``repair_nul`` changed.

    Rejects what cannot be split; JSONB's own limits are checked when the document is
    serialised (``transcode_checkpoint``).
    """
    for name, text in (("thread_id", thread_id), ("checkpoint_ns", checkpoint_ns), ("checkpoint_id", checkpoint_id)):
        if not isinstance(text, str) or not _pg_text_ok(text):
            raise Rejected(f"{name} {text!r} cannot be stored in PostgreSQL text")
    if blob is None:
        raise Rejected("checkpoint bytes are NULL")
    checkpoint, kind = _decode_checkpoint(type_, bytes(blob))
    versions = checkpoint.get("channel_versions") or {}
    inline: dict[str, Any] = {}
    blobs: list[tuple[str, str, str, bytes]] = []
    for channel, value in (checkpoint.get("channel_values") or {}).items():
        if not isinstance(channel, str) or not _pg_text_ok(channel):
            raise Rejected(f"channel name {channel!r} cannot be stored in PostgreSQL")
        if _is_primitive(value) and _inline_ok(value):
            inline[channel] = value
            continue
        if channel not in versions:
            raise Rejected(f"channel {channel!r} has a value but no version, so PostgresSaver could not load it")
        if kind == "msgpack" and isinstance(value, RawExt) and value.code == EXT_DELTA_SNAPSHOT:
            inline[channel] = True  # PostgresSaver's marker: the snapshot is in the blob behind it
        blobs.append((channel, pg_version_text(versions[channel]), *_encode_value(kind, value)))
    document = {k: v for k, v in checkpoint.items() if k != "channel_values"}
    document["channel_values"] = inline  # inline values are already known to be JSONB-safe
    if "pending_sends" in document:
        # Checkpoints before format v4 kept sends inline; PostgresSaver never stored them there but
        # rebuilds them from the parent's TASKS writes on read, which are migrated with the writes.
        document["pending_sends"] = []
    meta = parse_metadata(metadata)
    meta.pop("writes", None)  # PostgresSaver drops it too (get_serializable_checkpoint_metadata)
    repaired = 0
    if repair_nul:
        meta, repaired = replace_nul(meta)
    return document, tuple(blobs), meta, repaired


def transcode_checkpoint(*row: Any, repair_nul: bool = False) -> PgCheckpoint:
    """One SqliteSaver ``checkpoints`` row (the columns ``split_checkpoint`` takes, in order) as
    PostgresSaver would have stored it."""
    document, blobs, meta, repaired = split_checkpoint(*row, repair_nul=repair_nul)
    thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id = row[:4]
    return PgCheckpoint(
        thread_id=thread_id,
        checkpoint_ns=checkpoint_ns,
        checkpoint_id=checkpoint_id,
        parent_checkpoint_id=parent_checkpoint_id,
        checkpoint_json=_json_for_pg(document, "checkpoint"),
        metadata_json=_json_for_pg(meta, "metadata"),
        blobs=blobs,
        repaired=f"replaced NUL with U+FFFD in {repaired} metadata strings" if repaired else None,
    )


def transcode_write(row: tuple) -> tuple:
    """One SqliteSaver ``writes`` row as a ``checkpoint_writes`` row (bytes copied as they are).

    ``row`` is (thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, idx, channel, type, value);
    ``task_path`` and ``idx`` come from the row itself: never recomputed.
    """
    thread_id, ns, checkpoint_id, task_id, task_path, idx, channel, type_, value = row
    for name, text in (("thread_id", thread_id), ("checkpoint_ns", ns), ("checkpoint_id", checkpoint_id),
                       ("task_id", task_id), ("task_path", task_path), ("channel", channel), ("type", type_ or "")):
        if not isinstance(text, str) or not _pg_text_ok(text):
            raise Rejected(f"write {name} {text!r} cannot be stored in PostgreSQL text")
    if value is None:
        if type_ not in ("null", "empty"):
            raise Rejected(f"write value is NULL but its type is {type_!r}")
        value = b""
    return (thread_id, ns, checkpoint_id, task_id, task_path or "", int(idx), channel, type_, bytes(value))


def transcode_store_item(row: dict) -> tuple:
    """One SqliteStore ``store`` row for PostgresStore: the JSON value must fit JSONB."""
    prefix, key, value = row["prefix"], row["key"], row["value"]
    for name, text in (("prefix", prefix), ("key", key)):
        if not isinstance(text, str) or not _pg_text_ok(text):
            raise Rejected(f"store item {name} {text!r} cannot be stored in PostgreSQL text")
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", errors="strict")
    try:
        parsed = json.loads(value, parse_constant=_reject_constant)
    except ValueError as exc:
        if isinstance(exc, Rejected):
            raise Rejected(f"store item value: {exc.reason}") from None
        raise Rejected(f"store item value is not valid JSON ({exc})") from None
    return (prefix, key, _json_for_pg(parsed, "store item value"), row.get("created_at"), row.get("updated_at"),
            row.get("expires_at"), row.get("ttl_minutes"))
