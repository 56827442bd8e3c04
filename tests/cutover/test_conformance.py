"""LangGraph's own saver suite (langgraph-checkpoint-conformance) on RoutingSaver at weights 0, 50 and 100,
and mid-ramp with threads moving under it (every write is followed by a move of its thread)."""

from __future__ import annotations

import asyncio

import pytest
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.report import ProgressCallbacks

from include.checkpoint_core.cutover import flip, routes
from include.checkpoint_core.cutover.saver import RoutingSaver


def _clear(pg, blue) -> None:
    pg.execute("TRUNCATE checkpoint_ops_routes")
    with pg.transaction():
        pg.execute("SET LOCAL checkpoint_ops.mover = 'on'")
        pg.execute("TRUNCATE checkpoints, checkpoint_blobs, checkpoint_writes")
    blue.execute("DELETE FROM checkpoint_ops_cutover_fence")
    blue.execute("DROP TRIGGER IF EXISTS checkpoint_ops_fence_checkpoints_delete")
    blue.execute("DROP TRIGGER IF EXISTS checkpoint_ops_fence_writes_delete")
    blue.execute("DELETE FROM checkpoints")
    blue.execute("DELETE FROM writes")
    routes.ensure_blue(blue)


class _Moving(RoutingSaver):
    """After each write, moves the thread to the other store (green <-> blue) through the DAG's own moves."""

    def _after(self, tid: str) -> None:
        pg, blue = self.mover
        r = routes.lookup(pg, tid)
        move = flip.move_to_blue if r.store == "green" else flip.move_to_green
        out = move(pg, blue, [tid])
        assert out.moved == [tid], out
        self.moves += 1

    def put(self, config, checkpoint, metadata, new_versions):
        out = super().put(config, checkpoint, metadata, new_versions)
        self._after(str(config["configurable"]["thread_id"]))
        return out

    def put_writes(self, config, writes, task_id, task_path=""):
        super().put_writes(config, writes, task_id, task_path)
        self._after(str(config["configurable"]["thread_id"]))


@pytest.mark.parametrize("weight", [0, 50, 100, "moving"])
def test_routing_saver_passes_the_conformance_suite(weight, stores, pool, prepared):
    pg, blue = prepared
    blue_saver, green_saver = stores
    cls = _Moving if weight == "moving" else RoutingSaver
    saver = cls(blue_saver, green_saver, pool)
    saver.mover, saver.moves = prepared, 0
    routes.set_weight(pg, 50 if weight == "moving" else weight)
    seen = {"blue": 0, "green": 0}

    @checkpointer_test(name=f"RoutingSaver[{weight}]")
    async def factory():
        _clear(pg, blue)
        saver._cache.clear()
        yield saver
        for store, n in routes.counts(pg).items():
            if store in seen:
                seen[store] += n

    report = asyncio.run(validate(factory, progress=ProgressCallbacks.verbose()))
    report.print_report()
    assert report.passed_all_base(), "conformance failures: see the report above"
    if weight == 0:
        assert seen["green"] == 0 and seen["blue"] > 20
    elif weight == 100:
        assert seen["blue"] == 0 and seen["green"] > 20
    else:
        assert seen["blue"] > 10 and seen["green"] > 10, seen
    if weight == "moving":
        assert saver.moves > 50
