"""After a migration, the agent carries on in PostgreSQL exactly where it stopped in SQLite."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from collections import Counter
from contextlib import closing

import pytest
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.types import Command

from include.checkpoint_core.postgres_store import connect_postgres
from include.sample_agent import graph as agent
from tests.conftest import ROOT
from tests.migration.helpers import migrate, sha256, verify_full


@pytest.fixture
def migrated(source, pg_dsn, tmp_path):
    path, result = source
    before = sha256(path)
    migrate(path, pg_dsn, tmp_path / "run")
    assert sha256(path) == before, "the source file is never modified"
    report = verify_full(tmp_path / "run", pg_dsn)
    assert report["ok"], report
    conn = connect_postgres(pg_dsn)
    yield PostgresSaver(conn), result, path
    conn.close()


def test_session_memory_continues(migrated):
    saver, result, _ = migrated
    graph = agent.build_agent_graph(saver, interrupt_before=[])
    left_open = result.interrupted_before + result.interrupted_dynamic + result.crashed
    tid = next(t for t in (f"thread-{i:06d}" for i in range(24)) if t not in left_open)
    before = graph.get_state({"configurable": {"thread_id": tid}}).values
    config = agent.thread_config(tid, before["user_id"], "support")
    agent.start_turn(graph, config, before["user_id"], "Where is my order #777?")
    after = graph.get_state(config).values
    assert after["turns"] == before["turns"] + 1
    assert after["messages"][: len(before["messages"])] == before["messages"]


def test_time_travel_to_a_checkpoint_from_before_the_migration(migrated):
    saver, result, _ = migrated
    graph = agent.build_agent_graph(saver, interrupt_before=[])
    tid = next(f"thread-{i:06d}" for i in range(24) if f"thread-{i:06d}" not in result.crashed)
    history = list(graph.get_state_history({"configurable": {"thread_id": tid}}))
    old = next(s for s in reversed(history) if s.next == ("intake",))  # the first turn's input, long ago
    graph.invoke({"messages": [HumanMessage(content="What is the status of ticket 5?")]}, old.config,
                 context=agent.AgentContext())
    head = graph.get_state({"configurable": {"thread_id": tid}})
    assert head.values["messages"][-1].content.startswith("Done: answered")
    humans = [m.content for m in head.values["messages"] if isinstance(m, HumanMessage)]
    assert humans[-1] == "What is the status of ticket 5?" and len(humans) == 2, "a branch from turn one"


def test_interrupted_threads_resume(migrated):
    saver, result, _ = migrated
    graph = agent.build_agent_graph(saver)
    assert result.interrupted_before and result.interrupted_dynamic
    for tid in result.interrupted_before:
        config = {"configurable": {"thread_id": tid}}
        assert graph.get_state(config).next == ("execute_action",)
        graph.invoke(None, config, context=agent.AgentContext())
        assert graph.get_state(config).values["outcome"].endswith("done")
    for tid in result.interrupted_dynamic:
        config = {"configurable": {"thread_id": tid}}
        snap = graph.get_state(config)
        assert snap.interrupts and "Approve a refund" in snap.interrupts[0].value["question"]
        graph.invoke(Command(resume="approve"), config, context=agent.AgentContext())
        done = graph.get_state(config)
        assert done.next == () and done.values["approved"] is True


def test_crashed_thread_resumes_without_rerunning_finished_nodes(migrated, monkeypatch):
    saver, result, _ = migrated
    calls: Counter = Counter()
    for name in ("assess_sentiment", "check_policy"):
        original = getattr(agent, name)

        def spy(state, runtime, _original=original, _name=name):
            calls[_name] += 1
            return _original(state, runtime)

        monkeypatch.setattr(agent, name, spy)
    graph = agent.build_agent_graph(saver, interrupt_before=[])
    tid = result.crashed[0]
    config = {"configurable": {"thread_id": tid}}
    assert graph.get_state(config).next  # stopped mid-turn
    graph.invoke(None, config, context=agent.AgentContext())
    assert calls["check_policy"] == 1, "the crashed node runs again"
    assert calls["assess_sentiment"] == 0, "its sibling's pending write is reused, not recomputed"
    assert graph.get_state(config).next == ()


def test_subgraph_namespaces_are_intact(migrated):
    saver, _, path = migrated
    with closing(sqlite3.connect(path)) as conn:
        source = set(conn.execute("SELECT DISTINCT thread_id, checkpoint_ns FROM checkpoints"))
    rows = saver.conn.execute("SELECT DISTINCT thread_id, checkpoint_ns FROM checkpoints").fetchall()
    assert {(r["thread_id"], r["checkpoint_ns"]) for r in rows} == source
    assert any(ns.startswith("research:") for _, ns in source)


CUSTOM_TYPES = textwrap.dedent('''
    from dataclasses import dataclass
    from pydantic import BaseModel

    @dataclass
    class Order:
        order_id: int
        items: list

    class Customer(BaseModel):
        name: str
        tier: str
''')

WRITE_SOURCE = textwrap.dedent('''
    import sys, sqlite3
    from typing import TypedDict
    from langgraph.checkpoint.sqlite import SqliteSaver
    from langgraph.graph import StateGraph, START, END
    from cpo_custom_types import Order, Customer

    class State(TypedDict, total=False):
        order: Order
        customer: Customer

    def enrich(state):
        return {"order": Order(order_id=42, items=["book", "pen"]), "customer": Customer(name="Ada", tier="pro")}

    b = StateGraph(State)
    b.add_node("enrich", enrich)
    b.add_edge(START, "enrich")
    b.add_edge("enrich", END)
    conn = sqlite3.connect(sys.argv[1], check_same_thread=False)
    g = b.compile(checkpointer=SqliteSaver(conn))
    g.invoke({}, {"configurable": {"thread_id": "custom"}})
    conn.commit()
''')

READ_TARGET = textwrap.dedent('''
    import sys, json
    from langgraph.checkpoint.postgres import PostgresSaver
    from cpo_custom_types import Order, Customer
    with PostgresSaver.from_conn_string(sys.argv[1]) as saver:
        values = saver.get_tuple({"configurable": {"thread_id": "custom"}}).checkpoint["channel_values"]
    print(json.dumps({"order": type(values["order"]).__name__, "customer": type(values["customer"]).__name__,
                      "items": values["order"].items, "name": values["customer"].name}))
''')


def test_custom_types_travel_as_bytes(tmp_path, pg_dsn):
    """The app's classes live in a module this process cannot import; they still come back."""
    app = tmp_path / "app"
    app.mkdir()
    (app / "cpo_custom_types.py").write_text(CUSTOM_TYPES)
    src = tmp_path / "custom.sqlite"
    env = {"PYTHONPATH": f"{app}:{ROOT}", "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-c", WRITE_SOURCE, str(src)], env=env, check=True, capture_output=True)
    with pytest.raises(ImportError):
        __import__("cpo_custom_types")
    migrate(src, pg_dsn, tmp_path / "run")
    assert verify_full(tmp_path / "run", pg_dsn)["ok"]
    out = subprocess.run([sys.executable, "-c", READ_TARGET, pg_dsn], env=env, check=True, capture_output=True, text=True)
    assert json.loads(out.stdout) == {"order": "Order", "customer": "Customer", "items": ["book", "pen"], "name": "Ada"}


def test_files_without_writes_task_path_verify(source, pg_dsn, tmp_path):
    """Files from langgraph-checkpoint-sqlite < 2.0.5 have no writes.task_path: verify reads
    them through SqliteSaver read-only (the file never upgraded) and compares every row."""
    path, _ = source
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("ALTER TABLE writes DROP COLUMN task_path")
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.commit()
    before = sha256(path)
    migrate(path, pg_dsn, tmp_path / "run")
    report = verify_full(tmp_path / "run", pg_dsn)
    assert report["ok"], report
    assert report["semantic"]["threads"] > 0 and not report["semantic"]["problems"]
    assert sha256(path) == before
