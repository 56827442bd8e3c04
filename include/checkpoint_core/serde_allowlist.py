"""Strict msgpack for serializers that wrap another one.

``graph.compile()`` calls ``BaseCheckpointSaver.with_allowlist``, which hands the allowlist to
the saver's serde only if it is a JsonPlusSerializer (or an EncryptedSerializer around one).
A wrapping serializer (OffloadSerializer, MeteredSaver's MeasuringSerializer) must pass it on
to what it wraps, or strict msgpack is silently dropped for the values underneath.
"""

from __future__ import annotations

import logging
from typing import Collection

from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.encrypted import EncryptedSerializer
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

logger = logging.getLogger(__name__)


def inner_with_allowlist(serde: SerializerProtocol, extra: Collection) -> SerializerProtocol:
    """What BaseCheckpointSaver.with_allowlist does to a serde, applied one level down."""
    if isinstance(serde, JsonPlusSerializer):  # a nested wrapping serializer too
        return serde.with_msgpack_allowlist(extra)
    if isinstance(serde, EncryptedSerializer):
        updated = inner_with_allowlist(serde.serde, extra)
        return serde if updated is serde.serde else EncryptedSerializer(serde.cipher, updated)
    logger.warning("serializer %s has no msgpack allowlist; strict msgpack is not enforced for it",
                   type(serde).__name__)
    return serde
