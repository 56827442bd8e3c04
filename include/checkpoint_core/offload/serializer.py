"""A checkpoint serializer that moves large values to an object store and keeps a reference.

The app opts in where it builds its saver::

    serde = OffloadSerializer(blobs=S3BlobStore(client, "my-bucket"))
    PostgresSaver(conn, serde=serde)        # or SqliteSaver(conn, serde=serde)

What gets offloaded is whatever the saver hands to ``dumps_typed``: PostgresSaver serializes
each non-primitive channel value and each pending write on its own (so only the big value
moves out); SqliteSaver serializes the whole checkpoint at once (so a checkpoint holding a
big value moves out as a whole, one object per checkpoint). PostgresSaver keeps ``str``,
``int``, ``float``, ``bool`` and ``None`` channel values inline in its JSONB column without
calling the serializer, so a huge *string* stays in PostgreSQL: keep big payloads as bytes.

Rows written before the serializer was switched on keep their own type and read as before;
rows of type ``offload`` need this serializer (and the same blob store) to be read.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Collection

from langgraph.checkpoint.serde.base import SerializerProtocol, maybe_add_typed_methods
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from include.checkpoint_core.offload.blobs import BlobStore, is_sha256_hex
from include.checkpoint_core.offload.errors import (
    MalformedOffloadReference,
    OffloadedBlobCorrupt,
    OffloadedBlobMissing,
)
from include.checkpoint_core.serde_allowlist import inner_with_allowlist

logger = logging.getLogger(__name__)

OFFLOAD_TYPE = "offload"
DEFAULT_THRESHOLD = 64 * 1024
DEFAULT_CACHE_BYTES = 64 * 1024 * 1024
# Re-using an object older than this renews its LastModified, so that garbage collection's
# grace period (which must be longer) also protects a value re-used by a checkpoint in flight.
DEFAULT_REFRESH_AFTER = timedelta(hours=1)


@dataclass(frozen=True)
class OffloadReference:
    sha256: str
    size: int
    type: str

    def dumps(self) -> bytes:
        return json.dumps({"sha256": self.sha256, "size": self.size, "type": self.type},
                          separators=(",", ":")).encode()


def parse_reference(data: bytes | None) -> OffloadReference:
    """Read a reference row, refusing anything that could build a key from unchecked text."""
    try:
        doc = json.loads(data or b"")
        ref = OffloadReference(doc["sha256"], doc["size"], doc["type"])
    except (ValueError, TypeError, KeyError) as exc:
        raise MalformedOffloadReference(f"an offload reference cannot be parsed ({type(exc).__name__}).") from None
    if not is_sha256_hex(ref.sha256) or not isinstance(ref.size, int) or ref.size < 0 \
            or not isinstance(ref.type, str) or not ref.type:
        raise MalformedOffloadReference(f"an offload reference holds invalid fields: {bytes(data)[:200]!r}.")
    return ref


class _ByteLRU:
    """Recently used blob bytes by digest. Content-addressed, so an entry can never be stale."""

    def __init__(self, budget: int) -> None:
        self.budget, self.used = budget, 0
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, digest: str) -> bytes | None:
        with self._lock:
            data = self._items.get(digest)
            if data is not None:
                self._items.move_to_end(digest)
            return data

    def put(self, digest: str, data: bytes) -> None:
        if len(data) > self.budget:
            return
        with self._lock:
            if digest in self._items:
                self._items.move_to_end(digest)
                return
            self._items[digest] = data
            self.used += len(data)
            while self.used > self.budget:
                _, dropped = self._items.popitem(last=False)
                self.used -= len(dropped)


# A subclass of JsonPlusSerializer only so that BaseCheckpointSaver.with_allowlist (which
# forwards LangGraph's strict-msgpack allowlist to JsonPlusSerializer instances and warns for
# anything else) reaches ``with_msgpack_allowlist`` below and, through it, the inner serializer.
class OffloadSerializer(JsonPlusSerializer):
    """Serialize with ``inner``; store results over ``threshold`` bytes in ``blobs`` by sha256."""

    def __init__(
        self,
        inner: SerializerProtocol | None = None,
        *,
        blobs: BlobStore,
        threshold: int = DEFAULT_THRESHOLD,
        refresh_after: timedelta = DEFAULT_REFRESH_AFTER,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        # JsonPlusSerializer.__init__ is deliberately not called: every (de)serialization is the inner's.
        if not isinstance(threshold, int) or threshold < 0:
            raise ValueError(f"threshold must be a byte count of 0 or more, not {threshold!r}.")
        if not isinstance(blobs, BlobStore):
            raise TypeError(f"blobs must be a BlobStore (S3BlobStore, LocalBlobStore), not {type(blobs).__name__}.")
        self.inner = maybe_add_typed_methods(inner if inner is not None else JsonPlusSerializer())
        self.blobs = blobs
        self.threshold = threshold
        self.refresh_after = refresh_after
        self._cache = _ByteLRU(cache_bytes)
        # digest -> when the object was last known fresh; saves a HEAD per re-used value.
        self._fresh: dict[str, datetime] = {}
        self._fresh_lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        # JsonPlusSerializer attributes (pickle_fallback, allowlists...) are the inner's.
        if name.startswith("__") or "inner" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.__dict__["inner"], name)

    def __repr__(self) -> str:
        return f"OffloadSerializer(inner={type(self.inner).__name__}, blobs={self.blobs.describe()!r}, " \
               f"threshold={self.threshold})"

    # -- SerializerProtocol -------------------------------------------------------------------

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        type_, data = self.inner.dumps_typed(obj)
        if data is None or len(data) <= self.threshold:
            return type_, data
        data = bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        self._upload(digest, data)
        return OFFLOAD_TYPE, OffloadReference(digest, len(data), type_).dumps()

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        type_, payload = data
        if type_ != OFFLOAD_TYPE:
            return self.inner.loads_typed(data)
        ref = parse_reference(payload)
        return self.inner.loads_typed((ref.type, self.fetch(ref)))

    # -- blob traffic ---------------------------------------------------------------------------

    def _upload(self, digest: str, data: bytes) -> None:
        """Make sure the object exists and is young enough for GC's grace period; upload at most once."""
        now = datetime.now(timezone.utc)
        with self._fresh_lock:
            known = self._fresh.get(digest)
        if known is None or now - known >= self.refresh_after:
            key = self.blobs.key_for(digest)
            info = self.blobs.stat(key)
            if info is None:
                self.blobs.put(key, data)
            elif info.size != len(data):
                # Same key, other bytes: the object was damaged. Content-addressing lets us heal it.
                logger.warning("replacing %s: it holds %d bytes, not %d", key, info.size, len(data))
                self.blobs.put(key, data)
            elif now - info.last_modified >= self.refresh_after:
                self.blobs.touch(key)
            else:
                now = info.last_modified
            with self._fresh_lock:
                if len(self._fresh) > 100_000:
                    self._fresh.clear()
                self._fresh[digest] = now
        self._cache.put(digest, data)

    def fetch(self, ref: OffloadReference) -> bytes:
        """The referenced bytes, verified against their sha256."""
        cached = self._cache.get(ref.sha256)
        if cached is not None:
            return cached
        key = self.blobs.key_for(ref.sha256)
        data = self.blobs.get(key)
        if data is None:
            raise OffloadedBlobMissing(
                f"offloaded checkpoint value {key} (sha256 {ref.sha256}, {ref.size} bytes) is missing "
                f"from {self.blobs.describe()}.",
                key=key, sha256=ref.sha256,
            )
        actual = hashlib.sha256(data).hexdigest()
        if actual != ref.sha256 or len(data) != ref.size:
            raise OffloadedBlobCorrupt(
                f"offloaded checkpoint value {key} fails its checksum: expected sha256 {ref.sha256} "
                f"({ref.size} bytes), found {actual} ({len(data)} bytes).",
                key=key, sha256=ref.sha256,
            )
        self._cache.put(ref.sha256, data)
        return data

    # -- LangGraph's strict-msgpack allowlist ----------------------------------------------------

    def with_msgpack_allowlist(self, extra_allowlist: Collection[tuple[str, ...] | type]) -> "OffloadSerializer":
        """A clone whose inner serializer allows ``extra_allowlist`` too (same blob store and cache)."""
        inner = inner_with_allowlist(self.inner, extra_allowlist)
        if inner is self.inner:
            return self
        clone = copy.copy(self)
        clone.inner = inner
        return clone


