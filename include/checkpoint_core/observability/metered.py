"""Prometheus metrics for an app's checkpoint writes: wrap its checkpointer in ``MeteredSaver``.

The lifecycle DAGs see a checkpoint store from the outside, once a night; the app sees every
write as it happens. ``MeteredSaver`` wraps any LangGraph checkpointer (SqliteSaver,
PostgresSaver, their async versions, InMemorySaver, a SizeGuardSaver...) and counts, times and
sizes each write, so alerts can fire on write errors, slow writes and oversized checkpoints::

    graph = builder.compile(checkpointer=MeteredSaver(SqliteSaver(conn)))
    prometheus_client.start_http_server(9464)  # or mount prometheus_client.make_asgi_app()

Exported (names, labels and buckets in ``names.py``; labels ``backend``, ``operation``, where
the operation is ``put``, ``put_writes`` or ``delete_thread``, async variants included):

- ``checkpoint_writes_total``: every write attempt, failed ones included;
- ``checkpoint_write_errors_total``: attempts that raised (the exception propagates unchanged);
- ``checkpoint_write_duration_seconds``: histogram of every attempt's duration;
- ``checkpoint_size_bytes``: histogram, per successful ``put``/``put_writes``, of the bytes the
  saver's serializer produced for it. Nothing is serialised twice: the saver's ``serde`` is
  wrapped in a ``MeasuringSerializer`` that adds ``len()`` of each ``dumps_typed`` result to a
  per-call counter held in a ``ContextVar``. With an ``OffloadSerializer`` (or any serializer
  that wraps another) the size is what the store receives, e.g. the reference, not the blob.
  SqliteSaver serialises the whole checkpoint (its JSON metadata is not counted); PostgresSaver
  keeps ``None``/str/int/float/bool channel values inline in JSONB without the serializer, so
  its sizes are a lower bound, and a write that serialised nothing records no size at all.

The counter reaches the serializer through the context: LangGraph's savers serialise in the
calling thread or coroutine, or through ``asyncio.to_thread`` (AsyncPostgresSaver), and the sync
methods of the async savers go through ``run_coroutine_threadsafe``; all of these carry the
context along. A saver that serialised in ``loop.run_in_executor`` or a thread pool of its own
would not, and its writes would record no size (counts and durations are unaffected).

Overhead per write: two ``perf_counter`` calls, a ContextVar set/reset and the Prometheus
updates, on label children resolved once in ``__init__`` (see ``benchmarks/metered_overhead.py``).
Every (backend, operation) series exists from construction on, at 0, so rates and error ratios
are 0 rather than missing. Savers on one registry share its metric objects (a second
MeteredSaver does not raise "Duplicated timeseries"). Reads and everything else go to the inner
saver unchanged (``DelegatingSaver``).
"""

from __future__ import annotations

import logging
import threading
import weakref
from contextvars import ContextVar
from dataclasses import dataclass
from time import perf_counter
from typing import Any, Collection, Sequence

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver, ChannelVersions, Checkpoint, CheckpointMetadata
from langgraph.checkpoint.serde.base import SerializerProtocol, maybe_add_typed_methods
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

from include.checkpoint_core.delegating_saver import DelegatingSaver
from include.checkpoint_core.observability import names
from include.checkpoint_core.serde_allowlist import inner_with_allowlist

logger = logging.getLogger(__name__)

# [bytes, dumps_typed calls] of the metered write running in this context; None outside one.
_WRITE_BYTES: ContextVar[list[int] | None] = ContextVar("checkpoint_write_bytes", default=None)

# Class names -> backend label; the saver's MRO is searched, so subclasses map too.
SAVER_BACKENDS = {
    "SqliteSaver": "sqlite",
    "AsyncSqliteSaver": "sqlite",
    "BasePostgresSaver": "postgres",  # PostgresSaver, AsyncPostgresSaver, the Shallow ones
    "PostgresSaver": "postgres",
    "AsyncPostgresSaver": "postgres",
    "ShallowPostgresSaver": "postgres",
    "AsyncShallowPostgresSaver": "postgres",
    "InMemorySaver": "memory",
}


def backend_of(saver: BaseCheckpointSaver) -> str:
    """The ``backend`` label of a saver: wrappers with ``.inner`` are looked through."""
    for _ in range(32):  # a wrapper chain, never a cycle
        inner = getattr(saver, "inner", None)
        if not isinstance(inner, BaseCheckpointSaver):
            break
        saver = inner
    for cls in type(saver).__mro__:
        if cls.__name__ in SAVER_BACKENDS:
            return SAVER_BACKENDS[cls.__name__]
    return type(saver).__name__.lower()


# --- the serializer ---------------------------------------------------------------------------


# A subclass of JsonPlusSerializer only so that BaseCheckpointSaver.with_allowlist (graph.compile
# calls it) reaches ``with_msgpack_allowlist`` below instead of warning and dropping strict msgpack.
# JsonPlusSerializer.__init__ is not called: every (de)serialization is the inner's.
class MeasuringSerializer(JsonPlusSerializer):
    """Delegates to ``inner``; inside a metered write, adds each ``dumps_typed`` result's length to it."""

    def __init__(self, inner: SerializerProtocol) -> None:
        self.inner = maybe_add_typed_methods(inner)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or "inner" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.__dict__["inner"], name)

    def __repr__(self) -> str:
        return f"MeasuringSerializer({self.inner!r})"

    @property
    def unmetered(self) -> SerializerProtocol:
        """The serializer underneath: what SizeGuardSaver measures with, so its checks are not counted."""
        return self.inner

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        typed = self.inner.dumps_typed(obj)
        acc = _WRITE_BYTES.get()
        if acc is not None:
            data = typed[1]
            if data is not None:
                acc[0] += len(data)
            acc[1] += 1
        return typed

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        return self.inner.loads_typed(data)

    def with_msgpack_allowlist(self, extra_allowlist: Collection[tuple[str, ...] | type]) -> MeasuringSerializer:
        inner = inner_with_allowlist(self.inner, extra_allowlist)
        return self if inner is self.inner else MeasuringSerializer(inner)


# --- the metrics ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Families:
    writes: Counter
    errors: Counter
    duration: Histogram
    size: Histogram


_FAMILIES: weakref.WeakKeyDictionary[CollectorRegistry, _Families] = weakref.WeakKeyDictionary()
_FAMILIES_LOCK = threading.Lock()


def _families(registry: CollectorRegistry) -> _Families:
    """The metric objects of ``registry``, created on first use and shared by every MeteredSaver."""
    if registry is None:
        raise ValueError("MeteredSaver needs a registry to export to: leave registry= out for "
                         "prometheus_client's default one, or pass a CollectorRegistry")
    with _FAMILIES_LOCK:
        families = _FAMILIES.get(registry)
        if families is None:
            labels = names.APP_LABELS
            # Built unregistered, then registered together: a clash with metrics someone else
            # registered under these names leaves nothing of ours half-registered behind.
            families = _Families(
                writes=Counter(names.WRITES, "Checkpoint write attempts, failed ones included.",
                               labels, registry=None),
                errors=Counter(names.WRITE_ERRORS, "Checkpoint write attempts that raised.",
                               labels, registry=None),
                duration=Histogram(names.WRITE_DURATION, "Duration of checkpoint write attempts.",
                                   labels, registry=None, buckets=names.DURATION_BUCKETS),
                size=Histogram(names.CHECKPOINT_SIZE, "Bytes the checkpoint serializer produced per write.",
                               labels, registry=None, buckets=names.SIZE_BUCKETS),
            )
            registered = []
            try:
                for metric in (families.writes, families.errors, families.duration, families.size):
                    registry.register(metric)
                    registered.append(metric)
            except ValueError as exc:  # "Duplicated timeseries"
                for metric in registered:
                    registry.unregister(metric)
                raise ValueError(f"{exc}: this registry already holds checkpoint metrics that MeteredSaver "
                                 f"did not create; pass another registry=") from None
            _FAMILIES[registry] = families
    return families


class _Children:
    """One (backend, operation)'s label children, resolved once."""

    __slots__ = ("writes", "errors", "duration", "size")

    def __init__(self, families: _Families, backend: str, operation: str, sized: bool) -> None:
        self.writes = families.writes.labels(backend, operation)
        self.errors = families.errors.labels(backend, operation)
        self.duration = families.duration.labels(backend, operation)
        self.size = families.size.labels(backend, operation) if sized else None


# --- the saver --------------------------------------------------------------------------------


class MeteredSaver(DelegatingSaver):
    """A checkpointer that exports Prometheus metrics for each write of ``inner``.

    ``backend`` overrides the label derived from the saver's class; ``registry`` is where the
    metrics live (``prometheus_client.REGISTRY`` by default). The inner saver's ``serde`` is
    replaced by a ``MeasuringSerializer`` around it (it behaves exactly as before). Put it outside
    a SizeGuardSaver to count the guard's refusals as errors (the guard's own measuring is not
    counted as written bytes). A MeteredSaver wrapped in another one: each write's bytes go to the
    innermost, so the outer one records counts and durations but no sizes.
    """

    def __init__(
        self,
        inner: BaseCheckpointSaver,
        *,
        backend: str | None = None,
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        super().__init__(inner)
        self.backend = backend or backend_of(inner)
        self.registry = registry
        families = _families(registry)
        self._put = _Children(families, self.backend, "put", sized=True)
        self._put_writes = _Children(families, self.backend, "put_writes", sized=True)
        self._delete = _Children(families, self.backend, "delete_thread", sized=False)
        serde = inner.serde
        if not isinstance(serde, MeasuringSerializer):  # a second MeteredSaver shares the first's
            try:
                inner.serde = MeasuringSerializer(serde)
            except AttributeError:  # a read-only serde: counts and durations still work
                logger.warning("%s has a read-only serde: checkpoint sizes will not be recorded",
                               type(inner).__name__)

    def __repr__(self) -> str:
        return f"MeteredSaver({self.inner!r}, backend={self.backend!r})"

    # Each write runs inside ``_Metered``: one slotted context manager for the sync and async
    # methods alike (a generator-based one would cost a few microseconds more per write).

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        with _Metered(self._put):
            return self.inner.put(config, checkpoint, metadata, new_versions)

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        with _Metered(self._put):
            return await self.inner.aput(config, checkpoint, metadata, new_versions)

    def put_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        with _Metered(self._put_writes):
            super().put_writes(config, writes, task_id, task_path)

    async def aput_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        with _Metered(self._put_writes):
            await super().aput_writes(config, writes, task_id, task_path)

    def delete_thread(self, thread_id: str) -> None:
        with _Metered(self._delete):
            self.inner.delete_thread(thread_id)

    async def adelete_thread(self, thread_id: str) -> None:
        with _Metered(self._delete):
            await self.inner.adelete_thread(thread_id)


class _Metered:
    """One metered write: counts the attempt, times it, and sizes it through the context's
    byte counter; an ``Exception`` is counted as an error (a cancellation is not) and re-raised."""

    __slots__ = ("m", "acc", "token", "start")

    def __init__(self, m: _Children) -> None:
        self.m = m

    def __enter__(self) -> None:
        self.acc = [0, 0]  # [bytes, dumps_typed calls]
        self.token = _WRITE_BYTES.set(self.acc)
        self.start = perf_counter()

    def __exit__(self, exc_type, exc, tb) -> bool:
        m = self.m
        m.duration.observe(perf_counter() - self.start)
        m.writes.inc()
        if exc_type is not None:
            if issubclass(exc_type, Exception):
                m.errors.inc()
        elif self.acc[1] and m.size is not None:
            m.size.observe(self.acc[0])
        try:
            _WRITE_BYTES.reset(self.token)
        except ValueError:  # a coroutine closed from another context (e.g. collected after its loop)
            pass
        return False
