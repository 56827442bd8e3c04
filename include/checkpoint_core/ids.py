"""Checkpoint ids carry their creation time: LangGraph's ids are uuid6.

There is no created_at column in either schema, so age-based work (pruning, health, the
workload's own checks) reads time from the id, falling back to the checkpoint's ``ts``.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from uuid import UUID

UUID_EPOCH_OFFSET = 0x01B21DD213814000  # 100 ns intervals from 1582-10-15 to 1970-01-01


def uuid6_datetime(checkpoint_id: str) -> datetime | None:
    """The UTC time inside a version-6 UUID, or None for ids of another kind."""
    try:
        u = UUID(checkpoint_id)
    except (ValueError, TypeError, AttributeError):
        return None
    if u.version != 6:
        return None
    value = u.int
    timestamp = (((value >> 80) & 0xFFFFFFFFFFFF) << 12) | ((value >> 64) & 0x0FFF)
    return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=(timestamp - UUID_EPOCH_OFFSET) // 10)


def uuid6_floor(moment: datetime) -> str:
    """The smallest uuid6 text for ``moment``: every id minted before it sorts below."""
    ticks = int((moment - datetime(1970, 1, 1, tzinfo=timezone.utc)) / timedelta(microseconds=1)) * 10
    ticks += UUID_EPOCH_OFFSET
    high, low = ticks >> 12, ticks & 0xFFF
    return f"{high >> 16:08x}-{high & 0xFFFF:04x}-6{low:03x}-0000-000000000000"
