"""SizeGuardSaver and the size audit, on real graphs over real SQLite files and PostgreSQL databases."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import uuid
from contextlib import asynccontextmanager, closing, contextmanager
from dataclasses import dataclass
from typing import TypedDict

import pytest
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph

from include.checkpoint_core import postgres_store, size_audit, sqlite_store
from include.checkpoint_core.errors import CheckpointStoreError, NotACheckpointStore
from include.checkpoint_core.size_audit import largest_checkpoints
from include.checkpoint_core.size_guard import CheckpointTooLarge, SizeGuardSaver
from include.checkpoint_core.stores import StoreTarget

MB = 1024 * 1024
LIMIT = 10 * MB
HUGE = os.urandom(15 * MB)  # random bytes: no compression anywhere makes them look small
BIG = os.urandom(9 * MB)


class State(TypedDict, total=False):
    payload: bytes
    size: int  # when set, `grow` generates a payload of this many bytes
    note: str


def grow(state: State) -> dict:
    if state.get("size"):
        return {"payload": os.urandom(state["size"]), "size": 0}
    return {"note": "done"}


def build_graph(checkpointer):
    builder = StateGraph(State)
    builder.add_node("grow", grow)
    builder.add_edge(START, "grow")
    builder.add_edge("grow", END)
    return builder.compile(checkpointer=checkpointer)


def thread(name: str) -> dict:
    return {"configurable": {"thread_id": name}}


@dataclass
class Store:
    """A real store, with the sync and async savers an app would open on it."""

    target: StoreTarget

    def rows(self) -> dict[str, int]:
        if self.target.kind == "sqlite":
            with sqlite_store.open_sqlite_readonly(self.target.location) as conn:
                return sqlite_store.count_rows(conn)
        with postgres_store.postgres_connection(self.target.location) as conn:
            return postgres_store.count_rows(conn)

    @contextmanager
    def saver(self):
        if self.target.kind == "sqlite":
            from langgraph.checkpoint.sqlite import SqliteSaver

            with closing(sqlite_store.connect_sqlite(self.target.location)) as conn:
                yield SqliteSaver(conn)
        else:
            from langgraph.checkpoint.postgres import PostgresSaver

            with closing(postgres_store.open_postgres_pool(self.target.location)) as pool:
                yield PostgresSaver(pool)

    @asynccontextmanager
    async def asaver(self):
        if self.target.kind == "sqlite":
            from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

            async with AsyncSqliteSaver.from_conn_string(self.target.location) as saver:
                yield saver
        else:
            from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

            async with AsyncPostgresSaver.from_conn_string(self.target.location) as saver:
                yield saver


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, sqlite_path) -> Store:
    if request.param == "sqlite":
        sqlite_store.setup_sqlite(sqlite_path)
        return Store(StoreTarget("sqlite", str(sqlite_path), name="test_sqlite"))
    dsn = request.getfixturevalue("pg_dsn")
    postgres_store.setup_postgres(dsn, include_store=False)
    return Store(StoreTarget("postgres", dsn, name="test_postgres"))


def assert_audit_sees_big_state_first(store: Store, thread_id: str) -> None:
    report = largest_checkpoints(store.target, limit=3, max_bytes=LIMIT)
    assert report["over_limit"] == 0
    assert report["max_bytes"] == LIMIT
    top = report["largest"][0]
    assert top["thread_id"] == thread_id
    assert 9 * MB < top["bytes"] < 10 * MB, report
    assert [r["bytes"] for r in report["largest"]] == sorted((r["bytes"] for r in report["largest"]), reverse=True)


# --- the guard on real graphs ---------------------------------------------------------------


def test_oversized_state_is_refused_before_anything_is_written_and_9mb_passes(store):
    with store.saver() as inner:
        graph = build_graph(SizeGuardSaver(inner, max_bytes=LIMIT))
        cfg = thread("t-sync")
        graph.invoke({"note": "hi"}, cfg)
        rows, values = store.rows(), graph.get_state(cfg).values

        # The input checkpoint carries the 15 MB (channel "__start__"); "sync" stops the run right after.
        with pytest.raises(CheckpointTooLarge) as refused:
            graph.invoke({"payload": HUGE}, cfg, durability="sync")
        assert refused.value.largest[0][0] == "__start__"
        assert refused.value.input_keys[0][0] == "payload"
        assert "'payload' 15.0 MB" in str(refused.value) and "'t-sync'" in str(refused.value)
        assert "S3" in refused.value.hint and not refused.value.retryable
        assert refused.value.total_bytes > 15 * MB

        # update_state on an existing thread first stores the update as writes: refused there.
        with pytest.raises(CheckpointTooLarge) as refused:
            graph.update_state(cfg, {"payload": HUGE})
        assert refused.value.largest[0] == ("payload", pytest.approx(15 * MB, rel=0.01))

        assert store.rows() == rows
        assert graph.get_state(cfg).values == values

        # Default durability ("async"): saves run in the background and the run goes on, but every
        # later save waits for the refused one, so no checkpoint of the run is stored. (Small task
        # writes may be, under the never-saved checkpoint ids: see SizeGuardSaver's docstring.)
        history = [c.config for c in graph.get_state_history(cfg)]
        with pytest.raises(CheckpointTooLarge):
            graph.invoke({"payload": HUGE}, cfg)
        assert [c.config for c in graph.get_state_history(cfg)] == history
        after = store.rows()
        assert after["checkpoints"] == rows["checkpoints"]
        assert after.get("checkpoint_blobs") == rows.get("checkpoint_blobs")
        assert largest_checkpoints(store.target, limit=1)["largest"][0]["bytes"] < 10_000

        graph.invoke({"payload": BIG}, cfg)
        assert graph.get_state(cfg).values["payload"] == BIG
    assert_audit_sees_big_state_first(store, "t-sync")


def test_async_savers_are_guarded_the_same_way(store):
    async def scenario():
        async with store.asaver() as inner:
            graph = build_graph(SizeGuardSaver(inner, max_bytes=LIMIT))
            cfg = thread("t-async")
            await graph.ainvoke({"note": "hi"}, cfg)
            rows, values = store.rows(), (await graph.aget_state(cfg)).values
            with pytest.raises(CheckpointTooLarge) as refused:
                await graph.ainvoke({"payload": HUGE}, cfg, durability="sync")
            assert refused.value.input_keys[0][0] == "payload"
            with pytest.raises(CheckpointTooLarge) as refused:
                await graph.aupdate_state(cfg, {"payload": HUGE})
            assert refused.value.largest[0][0] == "payload"
            assert store.rows() == rows
            assert (await graph.aget_state(cfg)).values == values

            await graph.ainvoke({"payload": BIG}, cfg)
            assert (await graph.aget_state(cfg)).values["payload"] == BIG

            # The async reads and deletes reach the inner saver.
            guard = graph.checkpointer
            await graph.ainvoke({"note": "bye"}, thread("drop"))
            listed = [t.config async for t in guard.alist(cfg)]
            assert listed and listed == [t.config async for t in inner.alist(cfg)]
            assert (await guard.aget_tuple(cfg)).config == listed[0]
            assert (await guard.aget(cfg))["id"] == listed[0]["configurable"]["checkpoint_id"]
            await guard.adelete_thread("drop")
            assert await inner.aget_tuple(thread("drop")) is None

    asyncio.run(scenario())
    assert_audit_sees_big_state_first(store, "t-async")


def test_writes_over_the_limit_are_refused(store):
    with store.saver() as inner:
        guard = SizeGuardSaver(inner, max_bytes=LIMIT)
        graph = build_graph(guard)
        cfg = thread("t-writes")
        graph.invoke({"note": "hi"}, cfg)
        latest = graph.get_state(cfg).config
        rows = store.rows()

        with pytest.raises(CheckpointTooLarge) as refused:
            guard.put_writes(latest, [("payload", HUGE), ("note", "x")], task_id=str(uuid.uuid4()), task_path="~x")
        assert refused.value.what.startswith("writes of task")
        assert [ch for ch, _ in refused.value.largest] == ["payload", "note"]
        assert store.rows() == rows

        # A node producing 15 MB: its writes (and the checkpoint after them) are refused.
        with pytest.raises(CheckpointTooLarge) as refused:
            graph.invoke({"size": 15 * MB}, cfg, durability="sync")
        assert refused.value.largest[0][0] == "payload"
        assert "payload" not in graph.get_state(cfg).values

        # Writes under the limit go through to the store.
        guard.put_writes(latest, [("note", "small")], task_id=str(uuid.uuid4()))
        assert ("note", "small") in [(ch, v) for _, ch, v in inner.get_tuple(latest).pending_writes]
    assert largest_checkpoints(store.target)["over_limit"] == 0


# --- delegation ------------------------------------------------------------------------------


def test_everything_but_the_writes_goes_to_the_inner_saver(saver):
    guard = SizeGuardSaver(saver)
    graph = build_graph(guard)
    assert isinstance(graph.checkpointer, SizeGuardSaver)  # compile's with_allowlist keeps the guard
    for name in ("keep", "drop"):
        graph.invoke({"note": name}, thread(name))
        graph.invoke({"note": name + "2"}, thread(name))

    assert guard.serde is saver.serde
    assert guard.config_specs == saver.config_specs
    assert guard.get_next_version(None, None).split(".")[0] == saver.get_next_version(None, None).split(".")[0]
    guard.setup()  # not on BaseCheckpointSaver: reached through __getattr__
    assert guard.conn is saver.conn
    assert [t.config for t in guard.list(thread("keep"))] == [t.config for t in saver.list(thread("keep"))]
    assert guard.get_tuple(thread("keep")).config == saver.get_tuple(thread("keep")).config
    assert guard.get(thread("keep"))["id"] == saver.get(thread("keep"))["id"]
    history = guard.get_delta_channel_history(config=saver.get_tuple(thread("keep")).config, channels=["note"])
    assert set(history) == {"note"}

    guard.delete_thread("drop")
    assert saver.get_tuple(thread("drop")) is None
    assert saver.get_tuple(thread("keep")) is not None

    if hasattr(type(saver), "prune") and type(saver).prune is not BaseCheckpointSaver.prune:
        guard.prune(["keep"], strategy="keep_latest")
        assert len(list(saver.list(thread("keep")))) == 1
    else:  # SqliteSaver has no prune: the wrapper says so exactly as the saver does
        with pytest.raises(NotImplementedError):
            guard.prune(["keep"])


EXTENDED = {"delete_for_runs", "adelete_for_runs", "copy_thread", "acopy_thread", "prune", "aprune"}


def test_every_public_saver_method_is_delegated_explicitly():
    """BaseCheckpointSaver's defaults would shadow the inner saver's overrides (no __getattr__ for
    them); the extended capabilities are delegated exactly when the inner saver has them."""

    class Full(InMemorySaver):
        pass

    for name in EXTENDED:
        setattr(Full, name, lambda self, *a, **k: None)
    public = {n for n in dir(BaseCheckpointSaver) if not n.startswith("_")}

    def defined(saver):
        mro = type(saver).__mro__  # the wrapper's classes, not BaseCheckpointSaver's defaults
        return set().union(*(vars(c) for c in mro[: mro.index(BaseCheckpointSaver)]))

    assert public - defined(SizeGuardSaver(Full())) == set()
    bare = SizeGuardSaver(InMemorySaver())
    missing = {n for n in EXTENDED if getattr(type(InMemorySaver()), n) is getattr(BaseCheckpointSaver, n)}
    assert public - defined(bare) == missing
    assert isinstance(bare, SizeGuardSaver) and type(bare).__name__ == "SizeGuardSaver"


def test_wrapping_in_memory_saver_and_rewrapping():
    inner = InMemorySaver()
    with SizeGuardSaver(SizeGuardSaver(inner, max_bytes=5), max_bytes=2 * MB) as guard:
        assert guard.inner is inner and guard.max_bytes == 2 * MB
        graph = build_graph(guard)
        graph.invoke({"note": "hi"}, thread("mem"))
        with pytest.raises(CheckpointTooLarge):
            graph.invoke({"size": 3 * MB}, thread("mem"))
        assert "payload" not in graph.get_state(thread("mem")).values
    with pytest.raises(ValueError):
        SizeGuardSaver(inner, max_bytes=0)


def test_error_survives_pickling():
    import pickle

    error = CheckpointTooLarge("t", 15 * MB, LIMIT, [("payload", 15 * MB)], input_keys=[("a", 1)])
    copy = pickle.loads(pickle.dumps(error))
    assert str(copy) == str(error) and copy.largest == error.largest
    assert isinstance(copy, CheckpointStoreError)


# --- the audit ------------------------------------------------------------------------------


def test_audit_ranks_across_threads_and_counts_over_limit(store, monkeypatch):
    with store.saver() as inner:
        graph = build_graph(inner)  # unguarded: the audit is for what got in before the guard
        graph.invoke({"size": 600_000}, thread("medium"))
        graph.invoke({"size": 1_200_000}, thread("large"))
        graph.invoke({"note": "hi"}, thread("small"))
    report = largest_checkpoints(store.target, limit=2, max_bytes=1 * MB)
    # Only the last checkpoint of each thread holds the payload `grow` made.
    assert [r["thread_id"] for r in report["largest"]] == ["large", "medium"]
    assert 1_200_000 < report["largest"][0]["bytes"] < 1_300_000
    assert 600_000 < report["largest"][1]["bytes"] < 700_000
    assert report["over_limit"] == 1
    assert report["checkpoints"] == store.rows()["checkpoints"]
    assert report["store"] == store.target.kind and report["conn_id"] == store.target.name

    everything = largest_checkpoints(store.target, limit=100, max_bytes=500_000)
    assert len(everything["largest"]) == everything["checkpoints"]
    assert everything["over_limit"] == 2
    assert largest_checkpoints(store.target, limit=0, max_bytes=500_000)["over_limit"] == 2

    # One thread per query on PostgreSQL: the scan stops once no thread's bound can beat the top 1.
    first = largest_checkpoints(store.target, limit=1, max_bytes=1 * MB)
    monkeypatch.setattr(size_audit, "FIRST_BATCH", 1)
    assert largest_checkpoints(store.target, limit=1, max_bytes=1 * MB) == first
    assert first["largest"][0]["thread_id"] == "large" and first["checkpoints"] == report["checkpoints"]


def test_audit_refuses_a_store_without_checkpoint_tables(tmp_path, pg_dsn):
    other = tmp_path / "app.sqlite"
    with closing(sqlite3.connect(other)) as conn:
        conn.execute("CREATE TABLE users (id INTEGER)")
    with pytest.raises(NotACheckpointStore):
        largest_checkpoints(StoreTarget("sqlite", str(other)))
    with pytest.raises(NotACheckpointStore) as missing:
        largest_checkpoints(StoreTarget("postgres", pg_dsn))
    assert "checkpoint_setup" in missing.value.hint
