"""LangGraph's own saver suite (langgraph-checkpoint-conformance) on the savers tiering ships.

TieredSaver runs it in three states: every thread hot; every thread cold (each write is followed
by a demotion, so every read is served by PostgreSQL and every write promotes first); and mixed
(by thread id: hot, cold, or cold then archived). Extended capabilities the savers do not offer
are reported as not implemented, which is what the suite expects of them.
"""

from __future__ import annotations

import asyncio
import zlib

import pytest
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.report import ProgressCallbacks

from include.checkpoint_core.tiering import moves
from include.checkpoint_core.tiering.saver import TieredSaver


class _Settling(TieredSaver):
    """After every write, moves the thread to the tier its id picks (``placement``)."""

    placement = staticmethod(lambda thread_id: "cold")
    moved: dict[str, int]

    def _settle(self, config):
        tid = config["configurable"]["thread_id"]
        where = self.placement(tid)
        if where == "hot":
            return
        with self.pool.connection() as conn:
            assert moves.demote(conn, self.hot, tid).result == "moved"
            if where == "archive":
                assert moves.archive_thread(conn, self.hot, self.archive, tid).result == "moved"
        self.moved[where] = self.moved.get(where, 0) + 1

    def put(self, config, checkpoint, metadata, new_versions):
        out = super().put(config, checkpoint, metadata, new_versions)
        self._settle(config)
        return out

    def put_writes(self, config, writes, task_id, task_path=""):
        super().put_writes(config, writes, task_id, task_path)
        self._settle(config)


def _by_id(thread_id: str) -> str:
    return ("hot", "cold", "archive")[zlib.crc32(thread_id.encode()) % 3]


def _run(factory) -> None:
    report = asyncio.run(validate(factory, progress=ProgressCallbacks.verbose()))
    report.print_report()
    assert report.passed_all_base(), "conformance failures: see the report above"


def _clear(saver) -> None:
    saver.hot.client.flushdb()
    with saver.pool.connection() as conn:
        conn.execute("TRUNCATE checkpoints, checkpoint_blobs, checkpoint_writes, checkpoint_ops_tiers")


def test_redis_row_saver_passes_the_conformance_suite(hot):
    @checkpointer_test(name="RedisRowSaver")
    async def factory():
        hot.client.flushdb()
        yield hot

    _run(factory)


@pytest.mark.parametrize("state", ["hot", "cold", "mixed"])
def test_tiered_saver_passes_the_conformance_suite(state, hot, pool, archive_store):
    saver = {"hot": TieredSaver, "cold": _Settling, "mixed": _Settling}[state](hot, pool, archive_store)
    if state == "mixed":
        saver.placement = _by_id
    saver.moved = {}
    saver.setup()

    @checkpointer_test(name=f"TieredSaver[{state}]")
    async def factory():
        _clear(saver)
        yield saver

    _run(factory)
    if state != "hot":  # the suite really was served by the other tiers
        assert saver.moved.get("cold", 0) > 20
        assert state == "cold" or saver.moved.get("archive", 0) > 20
