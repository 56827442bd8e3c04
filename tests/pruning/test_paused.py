"""Which threads count as paused: read from the root head, never from stale subgraph heads."""

from __future__ import annotations

import operator
import sqlite3
from contextlib import closing
from datetime import datetime, timedelta, timezone
from typing import Annotated, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.types import interrupt

from include.checkpoint_core.pruning import PrunePolicy, prune_store
from tests.pruning.conftest import open_saver


class S(TypedDict):
    x: Annotated[list, operator.add]


def _later() -> PrunePolicy:
    """Everything is 60 days older than the retention, as seen from this policy."""
    return PrunePolicy(retention_days=30, strategy="delete", dry_run=True,
                       now=datetime.now(timezone.utc) + timedelta(days=60))


def test_a_stale_subgraph_error_does_not_unprotect_a_paused_thread(empty_store):
    calls = {"n": 0}

    def flaky(s):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return {"x": ["ok"]}

    sub = StateGraph(S)
    sub.add_node("w", flaky)
    sub.add_edge(START, "w")
    b = StateGraph(S)
    b.add_node("sub", sub.compile())
    b.add_node("human", lambda s: {"x": ["h"]})
    b.add_edge(START, "sub")
    b.add_edge("sub", "human")
    b.add_edge("human", END)
    with open_saver(empty_store) as (saver, _):
        g = b.compile(checkpointer=saver, interrupt_before=["human"])
        cfg = {"configurable": {"thread_id": "t"}}
        try:
            g.invoke({"x": ["1"]}, cfg)
        except RuntimeError:
            pass
        g.invoke({"x": ["2"]}, cfg)  # the user starts over; the run stops before "human"
        assert g.get_state(cfg).next == ("human",)
    report = prune_store(empty_store, _later(), log=lambda _: None)
    assert report["threads_protected"] == 1 and report["threads_deleted"] == 0


def test_a_stale_subgraph_interrupt_does_not_protect_a_finished_thread(empty_store):
    def ask(s):
        return {"x": [interrupt("ok?")]}

    sub = StateGraph(S)
    sub.add_node("ask", ask)
    sub.add_edge(START, "ask")
    b = StateGraph(S)
    b.add_node("sub", sub.compile())
    b.add_edge(START, "sub")
    b.add_edge("sub", END)
    with open_saver(empty_store) as (saver, _):
        g = b.compile(checkpointer=saver)
        cfg = {"configurable": {"thread_id": "t"}}
        g.invoke({"x": ["1"]}, cfg)
        g.update_state(cfg, {"x": ["skipped"]}, as_node="sub")  # the user moves on without answering
        state = g.get_state(cfg)
        assert state.next == () and not state.interrupts
    report = prune_store(empty_store, _later(), log=lambda _: None)
    assert report["threads_protected"] == 0 and report["threads_deleted"] == 1


def test_an_unreadable_head_counts_as_paused(tmp_path):
    """An encrypted (or pickled) checkpoint cannot say whether it waits on a human: keep it."""
    from include.checkpoint_core.sqlite_store import setup_sqlite
    from include.checkpoint_core.stores import StoreTarget

    path = tmp_path / "enc.sqlite"
    setup_sqlite(path)
    with closing(sqlite3.connect(path)) as conn:
        conn.execute(
            "INSERT INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, type, checkpoint, metadata) "
            "VALUES ('t', '', '1f000000-0000-6000-8000-000000000000', NULL, 'msgpack+aes', X'00112233', '{}')"
        )
        conn.commit()
    report = prune_store(StoreTarget("sqlite", str(path)), _later(), log=lambda _: None)
    assert report["threads_protected"] == 1 and report["threads_deleted"] == 0
