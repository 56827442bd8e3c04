"""Real LangGraph graphs on TieredSaver while their threads travel hot -> cold -> archive -> hot.

Real Redis and PostgreSQL, the ``moves`` functions the checkpoint_tiering DAG runs, and checks that
the app cannot tell: the Phase 1 witnesses, interrupts, a crashed superstep's pending writes,
classes the mover cannot import, nested subgraph namespaces, and the raw rows themselves.
"""

from __future__ import annotations

import asyncio
import importlib
import operator
import sys
import uuid
from collections import Counter
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from include.checkpoint_core.tiering import moves
from include.checkpoint_core.tiering.rows import differences, read_pg_thread
from tests import witnesses
from tests.tiering.fidelity_graphs import (
    CUSTOM,
    Crash,
    Travelling,
    Unimportable,
    build_nested,
    build_review,
    chain,
    crash_then_resume,
    crashed_fanout,
    drive_review,
    move,
    moved_promotions,
    new_tid,
    paused_nested,
    settled_hot,
    shape,
    views,
)


@pytest.fixture
def travelling(hot, pool, archive_store):
    saver = Travelling(hot, pool, archive_store)
    saver.setup()
    saver.moved = Counter()
    return saver


@pytest.fixture
def promotions(monkeypatch):
    """The result of every promotion (the real one runs; this only records)."""
    seen, real = [], moves.promote

    def spy(*args):
        out = real(*args)
        seen.append(out.result)
        return out

    monkeypatch.setattr(moves, "promote", spy)
    return seen


ROUND_TRIPS = pytest.mark.parametrize("steps", [("demote", "archive"), ("demote", "archive", "rehydrate")],
                                      ids=["promoted-from-archive", "rehydrated-then-promoted-from-cold"])


# ---- 1 + 7: the Phase 1 witnesses, every step starting from cold or archive -------------------

@pytest.mark.parametrize("stop", ["cold", "archive"])
@pytest.mark.parametrize("witness", [witnesses.witness_session_memory, witnesses.witness_time_travel,
                                     witnesses.witness_human_in_the_loop, witnesses.witness_fault_tolerance],
                         ids=lambda f: f.__name__.removeprefix("witness_"))
def test_phase1_witness_with_the_thread_moved_between_steps(travelling, promotions, stop, witness):
    travelling.stop = stop
    witness(travelling)
    demoted, promoted = travelling.moved["demote:moved"], moved_promotions(promotions)
    assert promoted >= 1 and demoted - promoted in (0, 1), "each step after a move promoted the thread first"
    assert stop == "cold" or travelling.moved["archive:moved"] == demoted


def test_async_witnesses_with_the_thread_moved_between_steps(travelling, promotions):
    async def run():
        calls: Counter = Counter()
        graph = witnesses.build_pipeline(travelling, calls, crash_once={"node3"})
        config = {"configurable": {"thread_id": new_tid("async-crash")}}
        with pytest.raises(witnesses.NodeCrash):
            await graph.ainvoke({"trail": []}, config)
        assert (await graph.aget_state(config)).next == ("node3",)
        assert (await graph.ainvoke(None, config))["trail"] == [f"node{i}" for i in range(1, 6)]
        assert calls == Counter({"node1": 1, "node2": 1, "node3": 2, "node4": 1, "node5": 1})
        chat = witnesses.build_chat_graph(travelling)
        config = {"configurable": {"thread_id": new_tid("async-chat")}}
        for word in ("one", "two", "three"):
            await chat.ainvoke({"messages": [HumanMessage(content=word)]}, config)
        replies = [m.content for m in (await chat.aget_state(config)).values["messages"][1::2]]
        assert replies == ["#1: you said one", "#2: you said two", "#3: you said three"]

    asyncio.run(run())
    # Two threads: every read moved it, every later step promoted it; the last reads are not undone.
    assert travelling.moved["archive:moved"] == 4 and moved_promotions(promotions) == 3


# ---- 2: interrupt() resumes identically --------------------------------------------------------

@ROUND_TRIPS
def test_an_interrupted_thread_resumes_identically_after_the_round_trip(tiered, promotions, steps):
    expected = drive_review(build_review(InMemorySaver()), "ref", lambda *_: None)
    graph = build_review(tiered)

    def round_trip(tid, snap):
        move(tiered, tid, *steps)
        assert graph.get_state({"configurable": {"thread_id": tid}}) == snap, "read from the far tier"

    tid = new_tid("review")
    assert drive_review(graph, tid, round_trip) == expected, "same questions, state and history as in memory"
    assert expected[1]["log"][-3:] == ["title:Cold storage", "go:yes", "published:3"]
    assert moved_promotions(promotions) == 2, "each resume's first write promoted the thread"
    settled_hot(tiered, tid)


# ---- 3: a crashed superstep's pending writes survive --------------------------------------------

@ROUND_TRIPS
def test_a_crashed_superstep_resumes_without_rerunning_the_siblings_that_finished(tiered, promotions, steps):
    expected = crash_then_resume(InMemorySaver(), "ref", lambda *_: None)

    def round_trip(graph, config):
        pending = tiered.get_tuple(config).pending_writes
        assert sorted(v for _, ch, v in pending if ch == "done") == [["w1"], ["w3"]], pending
        assert any(ch == "__error__" for _, ch, _ in pending)
        before = graph.get_state(config)
        move(tiered, config["configurable"]["thread_id"], *steps)
        assert tiered.get_tuple(config).pending_writes == pending and graph.get_state(config) == before

    tid = new_tid("fan")
    after_crash, calls, final, history = got = crash_then_resume(tiered, tid, round_trip)
    assert after_crash == Counter({1: 1, 2: 1, 3: 1})
    assert calls == Counter({1: 1, 2: 2, 3: 1}), "only the crashed task ran again"
    assert got == expected, "same calls, state and history as in memory"
    assert final["done"] == ["plan", "w1", "w2", "w3", "join:4"]
    assert any("Crash('work 2')" in t[1] for s in history for t in s[4]), "the crash is still in the history"
    assert moved_promotions(promotions) == 1
    settled_hot(tiered, tid)


# ---- 4: classes the mover cannot import ---------------------------------------------------------

def test_custom_classes_travel_as_bytes_through_a_worker_that_cannot_import_them(tiered, tmp_path, promotions):
    name = f"cpo_tier_custom_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(CUSTOM)
    sys.path.insert(0, str(tmp_path))
    try:
        app = importlib.import_module(name)
    finally:
        sys.path.remove(str(tmp_path))

    class State(TypedDict, total=False):
        order: Any
        customer: Any
        log: Annotated[list[str], operator.add]

    def ship(state):
        order = state["order"]
        assert isinstance(order, app.Order) and isinstance(state["customer"], app.Customer)
        return {"order": app.Order(order.order_id + 1, [*order.items, "pen"]), "log": ["ship"]}

    def enrich(state):
        return {"order": app.Order(42, ["book"]), "customer": app.Customer(name="Ada", tier="pro"), "log": ["enrich"]}
    graph = chain(State, ("enrich", enrich), ("ship", ship), checkpointer=tiered, interrupt_before=["ship"])
    config = {"configurable": {"thread_id": (tid := new_tid("custom"))}}
    graph.invoke({"log": []}, config)
    before = tiered.hot.export_thread(tid).rows

    blocker = Unimportable(name)
    sys.modules.pop(name)
    sys.meta_path.insert(0, blocker)
    try:
        with pytest.raises(ImportError):
            importlib.import_module(name)
        order = next(b for b in before.blobs if b.channel == "order")
        try:  # decoding here would need the class, and the blocker sees it try
            decoded = tiered.serde.loads_typed((order.type, order.blob))
        except ImportError:
            decoded = None
        assert blocker.attempts and not isinstance(decoded, app.Order), decoded
        blocker.attempts.clear()
        move(tiered, tid, "demote", "archive", "rehydrate")  # bytes only: no import, no decode
        assert blocker.attempts == [], "a move tried to import the app's classes"
        with tiered.pool.connection() as conn:
            assert differences(before, read_pg_thread(conn, tid)) == []
    finally:
        sys.meta_path.remove(blocker)
        sys.modules[name] = app
    try:
        snap = graph.get_state(config)  # served by the cold tier, decoded by the app
        assert snap.next == ("ship",) and isinstance(snap.values["order"], app.Order)
        assert snap.values["order"] == app.Order(42, ["book"])
        assert snap.values["customer"] == app.Customer(name="Ada", tier="pro")
        graph.invoke(None, config)
        done = graph.get_state(config).values
        assert isinstance(done["order"], app.Order) and done["order"] == app.Order(43, ["book", "pen"])
        assert isinstance(done["customer"], app.Customer) and done["customer"].name == "Ada"
        assert done["log"] == ["enrich", "ship"] and moved_promotions(promotions) == 1
    finally:
        sys.modules.pop(name)


# ---- 5: nested subgraph namespaces ---------------------------------------------------------------

def test_nested_subgraph_namespaces_are_intact_in_every_tier(tiered, promotions):
    graph, tid = build_nested(tiered), new_tid("nested")
    config = {"configurable": {"thread_id": tid}}
    graph.invoke({"log": []}, config)
    namespaces = sorted({c.ns for c in tiered.hot.export_thread(tid).rows.checkpoints})
    assert len(namespaces) == 3 and namespaces[0] == "" and "|inner:" in namespaces[2], namespaces
    before = views(graph, tiered, tid, namespaces)
    assert len(before["nested"]) == 2 and before["nested"][1].interrupts
    assert all(before["per_ns"].values()) and all(before["sub_history"])
    for step in ("demote", "archive", "rehydrate", "promote"):
        move(tiered, tid, step)
        assert views(graph, tiered, tid, namespaces) == before, f"after {step}"
    move(tiered, tid, "demote", "archive")
    graph.invoke(Command(resume="yes"), config)

    reference, ref_config = build_nested(InMemorySaver()), {"configurable": {"thread_id": "ref"}}
    reference.invoke({"log": []}, ref_config)
    reference.invoke(Command(resume="yes"), ref_config)
    assert graph.get_state(config).values["log"] == ["prep", "o1", "i1", "answer:yes", "o2", "finish"]
    assert shape(graph, config) == shape(reference, ref_config)
    assert moved_promotions(promotions) == 2  # the explicit promote, then the resume's first write


# ---- 6: raw rows, byte for byte ------------------------------------------------------------------

@pytest.mark.parametrize("make", [paused_nested, crashed_fanout], ids=["paused-nested", "crashed-fanout"])
def test_raw_rows_are_unchanged_by_the_round_trip(tiered, make):
    tid = make(tiered)
    before = tiered.hot.export_thread(tid).rows
    assert before.writes and all(w.task_path for w in before.writes)
    assert any(w.idx < 0 for w in before.writes), "special writes (interrupt, error) with negative idx"
    move(tiered, tid, "demote", "archive", "rehydrate", "promote")
    after = tiered.hot.export_thread(tid).rows
    assert differences(before, after) == []
    for table, key in (("writes", lambda w: (w.ns, w.checkpoint_id, w.task_id, w.idx)),
                       ("checkpoints", lambda c: (c.ns, c.checkpoint_id)),
                       ("blobs", lambda b: (b.ns, b.channel, b.version))):
        assert sorted(getattr(after, table), key=key) == sorted(getattr(before, table), key=key), table
    settled_hot(tiered, tid)


# ---- the promotion racing a demotion's last step -------------------------------------------------

def test_a_step_writing_between_a_demotions_commit_and_its_hot_drop_goes_through(tiered, monkeypatch):
    """The directory says cold, the hot copy is still fenced by the committed demotion: the app's next
    step must promote the thread (the stale fenced copy is the demotion's to drop, not the app's error)."""
    graph, tid = witnesses.build_chat_graph(tiered), new_tid("window")
    config = {"configurable": {"thread_id": tid}}
    graph.invoke({"messages": [HumanMessage(content="one")]}, config)
    real, errors, ran = tiered.hot.drop_threads, [], []

    def drop_after_a_step(tokens):  # the app's step runs in the window, then the demotion drops
        if tid in tokens and tokens[tid].startswith("demote:") and not ran:
            ran.append(1)
            try:
                graph.invoke({"messages": [HumanMessage(content="two")]}, config)
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
        return real(tokens)

    monkeypatch.setattr(tiered.hot, "drop_threads", drop_after_a_step)
    move(tiered, tid, "demote")
    assert ran, "the demotion dropped its hot copy through drop_threads"
    assert not errors, ("PRODUCT BUG, moves.promote: a write in the window between a demotion's commit and "
                        f"its drop_threads fails instead of promoting the thread: {errors!r}")
    assert [m.content for m in graph.get_state(config).values["messages"]][-1] == "#2: you said two"
