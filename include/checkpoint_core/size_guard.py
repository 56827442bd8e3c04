"""Refuse oversized LangGraph checkpoints before they reach the store.

One huge value in graph state (a PDF, a dataframe, a long transcript) makes every later
checkpoint of that thread huge too: each one is written, read back on the next step, and
copied by migrations and backups. ``SizeGuardSaver`` wraps the app's checkpointer and fails
the write fast, naming the channel to blame, instead of letting the store fill up::

    graph = builder.compile(checkpointer=SizeGuardSaver(saver, max_bytes=10 * 1024 * 1024))

What is measured: every channel value of the checkpoint (not only the channels in
``new_versions``), each serialised with the inner saver's own ``serde.dumps_typed``, plus the
rest of the checkpoint and its metadata. SqliteSaver stores the whole checkpoint in one row
each time, and every saver's ``get_tuple`` loads all channel values, so the whole state is
what a reader pays for, even on PostgreSQL where unchanged channels are not rewritten.
The price is one extra serialisation of the state per put; nothing is cached, because a
cache keyed by channel version could be wrong for savers whose versions repeat across forks.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    get_serializable_checkpoint_metadata,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from include.checkpoint_core.delegating_saver import DelegatingSaver
from include.checkpoint_core.errors import CheckpointStoreError

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
TOP_CHANNELS = 3
START_CHANNEL = "__start__"  # langgraph.constants.START: the graph input's channel


def human_bytes(n: int) -> str:
    """1536 -> '1.5 KB': sizes in messages are read by people, not parsed."""
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):.1f} MB"
    if n >= 1024:
        return f"{n / 1024:.1f} KB"
    return f"{n} B"


def _sizes(items: Sequence[tuple[str, int]]) -> str:
    return ", ".join(f"'{name}' {human_bytes(n)}" for name, n in items) or "none"


class CheckpointTooLarge(CheckpointStoreError):
    """A checkpoint (or one task's writes) is over the size limit; none of it was saved."""

    hint = (
        "Keep large values out of graph state: put big blobs in object storage (such as S3) and store "
        "a reference (key or URL) in the state instead; or raise max_bytes on SizeGuardSaver if the store "
        "and every reader can afford checkpoints this large."
    )

    def __init__(
        self,
        thread_id: str | None,
        total_bytes: int,
        max_bytes: int,
        largest: Sequence[tuple[str, int]],
        *,
        what: str = "checkpoint",
        input_keys: Sequence[tuple[str, int]] = (),
    ) -> None:
        self.thread_id = thread_id
        self.total_bytes = total_bytes
        self.max_bytes = max_bytes
        self.largest = list(largest)  # [(channel, bytes)], largest first
        self.what = what
        self.input_keys = list(input_keys)
        # "__start__" holds the graph's input until the first step consumes it: name the
        # input's keys too, since those are the state fields the caller knows.
        inputs = f"; '__start__' is the graph input, largest keys: {_sizes(self.input_keys)}" if self.input_keys else ""
        super().__init__(
            f"{what} for thread {thread_id!r}: {human_bytes(total_bytes)}, over the {human_bytes(max_bytes)} "
            f"limit (largest channels: {_sizes(self.largest)}{inputs}); it was not saved."
        )

    def __reduce__(self):
        # Pickling would otherwise call __init__ with the formatted message alone.
        return (
            _rebuild_too_large,
            (self.thread_id, self.total_bytes, self.max_bytes, self.largest, self.what, self.input_keys),
        )


def _rebuild_too_large(thread_id, total_bytes, max_bytes, largest, what, input_keys):
    return CheckpointTooLarge(thread_id, total_bytes, max_bytes, largest, what=what, input_keys=input_keys)


def _typed_size(serde: SerializerProtocol, value: Any) -> int:
    type_, data = serde.dumps_typed(value)
    return len(type_) + (len(data) if data is not None else 0)


def measure_checkpoint(
    serde: SerializerProtocol, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata
) -> tuple[int, dict[str, int]]:
    """(total bytes, bytes per channel) of a checkpoint as ``serde`` would store it."""
    per_channel = {ch: _typed_size(serde, v) for ch, v in checkpoint["channel_values"].items()}
    # Versions, versions_seen and friends: small, but they grow with the graph's node count.
    envelope = _typed_size(serde, {k: v for k, v in checkpoint.items() if k != "channel_values"})
    # SqliteSaver and PostgresSaver both store metadata as JSON; default=str only keeps the
    # measurement from failing on a value the saver itself would reject more clearly.
    meta = json.dumps(get_serializable_checkpoint_metadata(config, metadata), ensure_ascii=False, default=str)
    return sum(per_channel.values()) + envelope + len(meta.encode("utf-8", "ignore")), per_channel


def measure_writes(serde: SerializerProtocol, writes: Sequence[tuple[str, Any]]) -> tuple[int, dict[str, int]]:
    """(total bytes, bytes per channel) of one task's writes as ``serde`` would store them."""
    per_channel: dict[str, int] = {}
    for channel, value in writes:
        per_channel[channel] = per_channel.get(channel, 0) + _typed_size(serde, value)
    return sum(per_channel.values()), per_channel


def _largest(per_channel: Mapping[str, int]) -> list[tuple[str, int]]:
    return sorted(per_channel.items(), key=lambda kv: kv[1], reverse=True)[:TOP_CHANNELS]


def _measuring_serde(saver: BaseCheckpointSaver) -> SerializerProtocol:
    """The serde to measure with: the saver's own, without MeteredSaver's byte counter around it.

    MeteredSaver counts the bytes the serde produces while a write runs; the guard's own
    measurement writes nothing and must not be counted. (A class attribute is checked, so a
    serializer that forwards unknown attributes to an inner one is never mistaken for it.)
    """
    serde = saver.serde
    return serde.unmetered if getattr(type(serde), "unmetered", None) is not None else serde


class SizeGuardSaver(DelegatingSaver):
    """A checkpointer that refuses checkpoints over ``max_bytes`` and delegates the rest.

    The check runs before the inner saver is called, so a refused checkpoint leaves no row
    or blob behind. One task's writes are checked too: a pending write becomes channel state
    at the next step, so letting it in would only move the failure.

    How far a run gets after a refusal is LangGraph's doing, not the guard's. With the
    default ``durability="async"`` checkpoints are saved in the background: the run goes on
    to its end, every later checkpoint of it is refused as well (each save waits for the one
    before), and the error is raised when the run ends; the small writes its tasks made may
    be stored under checkpoint ids that were never saved (no reader loads them; delete_thread
    and prune remove them). ``durability="sync"`` stops the run after the refused step.
    Everything but ``put``/``put_writes`` (and their async variants) is ``DelegatingSaver``'s.
    """

    def __init__(self, inner: BaseCheckpointSaver, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if isinstance(inner, SizeGuardSaver):  # re-wrapping replaces the limit instead of stacking two
            inner = inner.inner
        super().__init__(inner)
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.max_bytes = int(max_bytes)

    def __repr__(self) -> str:
        return f"SizeGuardSaver({self.inner!r}, max_bytes={self.max_bytes})"

    # --- the guard -------------------------------------------------------------------

    def _check_checkpoint(self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata) -> None:
        serde = _measuring_serde(self.inner)
        total, per_channel = measure_checkpoint(serde, config, checkpoint, metadata)
        if total > self.max_bytes:
            largest = _largest(per_channel)
            graph_input = checkpoint["channel_values"].get(START_CHANNEL)
            input_keys: list[tuple[str, int]] = []
            if any(ch == START_CHANNEL for ch, _ in largest) and isinstance(graph_input, Mapping):
                # Only on the way to an error: the input's own keys are measured once more.
                input_keys = _largest({str(k): _typed_size(serde, v) for k, v in graph_input.items()})
            raise CheckpointTooLarge(_thread_id(config), total, self.max_bytes, largest, input_keys=input_keys)

    def _check_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str) -> None:
        total, per_channel = measure_writes(_measuring_serde(self.inner), writes)
        if total > self.max_bytes:
            raise CheckpointTooLarge(
                _thread_id(config), total, self.max_bytes, _largest(per_channel), what=f"writes of task {task_id}"
            )

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        self._check_checkpoint(config, checkpoint, metadata)
        return self.inner.put(config, checkpoint, metadata, new_versions)

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        self._check_checkpoint(config, checkpoint, metadata)
        return await self.inner.aput(config, checkpoint, metadata, new_versions)

    def put_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        self._check_writes(config, writes, task_id)
        super().put_writes(config, writes, task_id, task_path)

    async def aput_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        self._check_writes(config, writes, task_id)
        await super().aput_writes(config, writes, task_id, task_path)


def _thread_id(config: RunnableConfig) -> str | None:
    return (config.get("configurable") or {}).get("thread_id")
