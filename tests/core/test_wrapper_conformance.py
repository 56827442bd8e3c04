"""LangGraph's saver suite (langgraph-checkpoint-conformance) on the wrappers the app uses.

Each wrapper runs over an async SqliteSaver and an async PostgresSaver, and must pass the base
capabilities and offer exactly the extended ones its inner saver offers (the suite detects a
capability by the class overriding the base method, and then runs its tests). OffloadSerializer
is a serializer, so it runs as the savers' serde, with a threshold low enough (8 bytes) that the
suite's values really go to the blob store.
"""

from __future__ import annotations

import asyncio

import pytest
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import DetectedCapabilities
from langgraph.checkpoint.conformance.report import ProgressCallbacks
from prometheus_client import CollectorRegistry

from include.checkpoint_core.observability.metered import MeteredSaver
from include.checkpoint_core.size_guard import SizeGuardSaver

def _offloaded(inner):
    from include.checkpoint_core.offload.blobs import LocalBlobStore
    from include.checkpoint_core.offload.serializer import OffloadSerializer

    inner.serde = OffloadSerializer(inner.serde, blobs=LocalBlobStore(OFFLOAD_DIR["path"]), threshold=8)
    return inner


OFFLOAD_DIR: dict[str, object] = {}
WRAPPERS = {
    "OffloadSerializer": _offloaded,
    "MeteredSaver": lambda inner: MeteredSaver(inner, registry=CollectorRegistry()),
    "SizeGuardSaver": lambda inner: SizeGuardSaver(inner),
    "MeteredSaver(SizeGuardSaver)": lambda inner: MeteredSaver(SizeGuardSaver(inner), registry=CollectorRegistry()),
}


def _inner(backend: str, sqlite_path, pg_dsn):
    """An async context manager yielding a fresh inner saver of ``backend``."""
    if backend == "sqlite":
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        return AsyncSqliteSaver.from_conn_string(str(sqlite_path))
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

    return AsyncPostgresSaver.from_conn_string(pg_dsn)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
@pytest.mark.parametrize("wrapper", list(WRAPPERS))
def test_wrapper_passes_the_conformance_suite_with_the_inner_savers_capabilities(wrapper, backend, tmp_path,
                                                                                 request):
    pg_dsn = request.getfixturevalue("pg_dsn") if backend == "postgres" else None
    OFFLOAD_DIR["path"] = tmp_path / "offloaded"
    counter = iter(range(1000))
    seen: dict[str, object] = {}

    @checkpointer_test(name=f"{wrapper}[{backend}]")
    async def factory():
        async with _inner(backend, tmp_path / f"c{next(counter)}.sqlite", pg_dsn) as inner:
            await inner.setup()
            if backend == "postgres":
                async with inner.conn.cursor() as cur:
                    await cur.execute("TRUNCATE checkpoints, checkpoint_blobs, checkpoint_writes")
            saver = WRAPPERS[wrapper](inner)
            seen["inner"], seen["saver"] = DetectedCapabilities.from_instance(inner), \
                DetectedCapabilities.from_instance(saver)
            yield saver

    report = asyncio.run(validate(factory, progress=ProgressCallbacks.verbose()))
    report.print_report()
    assert report.passed_all_base()
    assert seen["saver"].detected == seen["inner"].detected  # no more and no fewer than the inner saver
    assert report.passed_all()
    if wrapper == "OffloadSerializer":
        assert any((tmp_path / "offloaded").rglob("*")), "no value was offloaded: the suite did not exercise it"
