"""A checkpointer that hands every call to the saver it wraps: the base of the app-side wrappers.

``SizeGuardSaver`` (refuses oversized state) and ``MeteredSaver`` (exports write metrics) each
add something to a few methods and must pass everything else through unchanged. Every public
method of ``BaseCheckpointSaver`` is spelled out here, because the base class's defaults would
otherwise run instead of the inner saver's overrides (``__getattr__`` never sees a name the class
defines); names the base class does not have (``setup()``, ``conn``, ``is_setup``...) go
through ``__getattr__``. A subclass overrides the methods it adds to and calls ``super()`` or
``self.inner`` for the actual work.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Collection, Iterator, Mapping, Sequence
from inspect import signature
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    DeltaChannelHistory,
)
from langgraph.checkpoint.serde.base import SerializerProtocol


class _DeleteForRuns:
    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        return self.inner.delete_for_runs(run_ids)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        return await self.inner.adelete_for_runs(run_ids)


class _CopyThread:
    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        return self.inner.copy_thread(source_thread_id, target_thread_id)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        return await self.inner.acopy_thread(source_thread_id, target_thread_id)


class _Prune:
    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        return self.inner.prune(thread_ids, strategy=strategy)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        return await self.inner.aprune(thread_ids, strategy=strategy)


_CAPABILITIES = ((_DeleteForRuns, ("delete_for_runs", "adelete_for_runs")),
                 (_CopyThread, ("copy_thread", "acopy_thread")),
                 (_Prune, ("prune", "aprune")))
_CLASSES: dict[tuple[type, tuple[type, ...]], type] = {}


def _with_capabilities_of(cls: type, inner_type: type) -> type:
    """``cls`` with the delegating methods of each extended capability ``inner_type`` implements."""
    mixins = tuple(mixin for mixin, names in _CAPABILITIES
                   if any(getattr(inner_type, n, None) is not getattr(BaseCheckpointSaver, n) for n in names))
    if not mixins:
        return cls
    key = (cls, mixins)
    if key not in _CLASSES:
        _CLASSES[key] = type(cls.__name__, (*mixins, cls), {"__qualname__": cls.__qualname__,
                                                             "__module__": cls.__module__})
    return _CLASSES[key]


def _accepts_task_path(method: Any) -> bool:
    try:
        return "task_path" in signature(method).parameters
    except (TypeError, ValueError):
        return False


class DelegatingSaver(BaseCheckpointSaver):
    """Delegates every call to ``inner``; on its own it changes nothing.

    It offers exactly the inner saver's capabilities: ``copy_thread``, ``prune`` and
    ``delete_for_runs`` are methods of the wrapper's class only when the inner saver's class
    implements them (LangGraph, and its conformance suite, detect a capability by the class
    overriding the base method), so a wrapper never claims what the saver it wraps cannot do.
    """

    def __new__(cls, inner: BaseCheckpointSaver | None = None, *args: Any, **kwargs: Any):
        # copy.copy() calls __new__ with the class alone: that class already has its capabilities.
        return super().__new__(cls if inner is None else _with_capabilities_of(cls, type(inner)))

    def __init__(self, inner: BaseCheckpointSaver) -> None:
        # BaseCheckpointSaver.__init__ is not called: it would set a serde of our own, and every
        # read and write must go through the serde the inner saver actually uses.
        if not isinstance(inner, BaseCheckpointSaver):
            raise TypeError(f"{type(self).__name__} wraps a BaseCheckpointSaver, not {type(inner).__name__}")
        self.inner = inner
        # Savers written before task_path existed do not take it (LangGraph checks the same way).
        self._path_kwarg = _accepts_task_path(inner.put_writes)
        self._apath_kwarg = _accepts_task_path(inner.aput_writes)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"

    def __getattr__(self, name: str) -> Any:
        # Only reached for names this class does not define (setup(), conn, is_setup, ...).
        if name == "inner" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.inner, name)

    def _rewrap(self, inner: BaseCheckpointSaver) -> DelegatingSaver:
        """This wrapper around another inner saver, settings kept (used by ``with_allowlist``)."""
        clone = copy.copy(self)
        clone.inner = inner
        return clone

    # --- writes ------------------------------------------------------------------------

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return self.inner.put(config, checkpoint, metadata, new_versions)

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await self.inner.aput(config, checkpoint, metadata, new_versions)

    def put_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        self.inner.put_writes(config, writes, task_id, **({"task_path": task_path} if self._path_kwarg else {}))

    async def aput_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        await self.inner.aput_writes(config, writes, task_id, **({"task_path": task_path} if self._apath_kwarg else {}))

    def delete_thread(self, thread_id: str) -> None:
        return self.inner.delete_thread(thread_id)

    async def adelete_thread(self, thread_id: str) -> None:
        return await self.inner.adelete_thread(thread_id)

    # --- plain delegation --------------------------------------------------------------

    @property
    def serde(self) -> SerializerProtocol:  # type: ignore[override]
        return self.inner.serde

    @serde.setter
    def serde(self, value: SerializerProtocol) -> None:
        self.inner.serde = value

    @property
    def config_specs(self) -> list:
        return self.inner.config_specs

    def get(self, config: RunnableConfig) -> Checkpoint | None:
        return self.inner.get(config)

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self.inner.get_tuple(config)

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        return self.inner.list(config, filter=filter, before=before, limit=limit)

    async def aget(self, config: RunnableConfig) -> Checkpoint | None:
        return await self.inner.aget(config)

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await self.inner.aget_tuple(config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        async for item in self.inner.alist(config, filter=filter, before=before, limit=limit):
            yield item

    def get_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        return self.inner.get_delta_channel_history(config=config, channels=channels)

    async def aget_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        return await self.inner.aget_delta_channel_history(config=config, channels=channels)

    def get_next_version(self, current: Any, channel: None) -> Any:
        return self.inner.get_next_version(current, channel)

    def with_allowlist(self, extra_allowlist: Collection[tuple[str, ...]]) -> BaseCheckpointSaver:
        # graph.compile() calls this; the clone must stay wrapped, so wrap the inner's clone.
        inner = self.inner.with_allowlist(extra_allowlist)
        return self if inner is self.inner else self._rewrap(inner)

    # Context managers (InMemorySaver, for one) work through the wrapper and hand it back.
    def __enter__(self):
        self.inner.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> Any:
        return self.inner.__exit__(*exc_info)

    async def __aenter__(self):
        await self.inner.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> Any:
        return await self.inner.__aexit__(*exc_info)
