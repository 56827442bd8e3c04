"""The seed plan's Phase 1 witnesses, written once and run against every store we ship.

Each ``witness_*`` takes a ready checkpointer, drives real graphs through it and asserts
the behaviour a LangGraph user relies on. Later suites (migration, restore, offload) call
the same functions on the stores they produce.
"""

from __future__ import annotations

import uuid
from collections import Counter
from typing import TypedDict

from langchain_core.messages import AIMessage, HumanMessage
from langgraph.graph import END, START, MessagesState, StateGraph

from include.sample_agent.graph import build_agent_graph, start_turn, thread_config


def _thread(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def build_chat_graph(checkpointer):
    """One-node chat: replies with how many human messages it has seen (its memory)."""

    def reply(state: MessagesState) -> dict:
        humans = [m for m in state["messages"] if isinstance(m, HumanMessage)]
        return {"messages": [AIMessage(content=f"#{len(humans)}: you said {humans[-1].content}")]}

    builder = StateGraph(MessagesState)
    builder.add_node("reply", reply)
    builder.add_edge(START, "reply")
    builder.add_edge("reply", END)
    return builder.compile(checkpointer=checkpointer)


class PipelineState(TypedDict, total=False):
    trail: list[str]


class NodeCrash(RuntimeError):
    pass


def build_pipeline(checkpointer, calls: Counter, crash_once: set[str]):
    """Five nodes in a row; a node named in ``crash_once`` raises the first time it runs."""

    def make(name: str):
        def node(state: PipelineState) -> dict:
            calls[name] += 1
            if name in crash_once:
                crash_once.discard(name)
                raise NodeCrash(f"{name} crashed")
            return {"trail": [*state.get("trail", []), name]}

        return node

    builder = StateGraph(PipelineState)
    names = [f"node{i}" for i in range(1, 6)]
    for name in names:
        builder.add_node(name, make(name))
    builder.add_edge(START, names[0])
    for a, b in zip(names, names[1:]):
        builder.add_edge(a, b)
    builder.add_edge(names[-1], END)
    return builder.compile(checkpointer=checkpointer)


def witness_session_memory(saver) -> None:
    """Three turns on one thread_id: each turn sees the ones before it."""
    graph = build_agent_graph(saver, interrupt_before=[])
    tid = _thread("memory")
    config = thread_config(tid, "user-mem", "support")
    questions = ["Where is my order #11111?", "What is the status of ticket 22222?", "Can you explain the warranty on item 3?"]
    for q in questions:
        start_turn(graph, config, "user-mem", q)
    state = graph.get_state({"configurable": {"thread_id": tid}}).values
    humans = [m.content for m in state["messages"] if isinstance(m, HumanMessage)]
    assert humans == questions
    assert state["turns"] == 3
    tool_calls = [m for m in state["messages"] if isinstance(m, AIMessage) and m.tool_calls]
    assert len(tool_calls) == 3 and tool_calls[0].tool_calls[0]["name"] == "lookup_account"
    # A fresh graph object on the same store continues the same conversation.
    again = build_agent_graph(saver, interrupt_before=[])
    start_turn(again, config, "user-mem", "Where is my order #44444?")
    assert again.get_state(config).values["turns"] == 4


def witness_time_travel(saver) -> None:
    """Five+ checkpoints; resume from the second with new input; a new branch appears."""
    graph = build_chat_graph(saver)
    tid = _thread("travel")
    config = {"configurable": {"thread_id": tid}}
    graph.invoke({"messages": [HumanMessage(content="first")]}, config)
    graph.invoke({"messages": [HumanMessage(content="second")]}, config)
    history = list(reversed(list(graph.get_state_history(config))))  # oldest first
    assert len(history) >= 5
    target = history[1]
    graph.invoke({"messages": [HumanMessage(content="branch")]}, target.config)

    head = graph.get_state(config)
    ancestry, cursor = [], head
    while cursor is not None and cursor.parent_config:
        ancestry.append(cursor.parent_config["configurable"]["checkpoint_id"])
        cursor = graph.get_state(cursor.parent_config)
    ids = [s.config["configurable"]["checkpoint_id"] for s in history]
    assert ids[1] in ancestry, "the new head descends from checkpoint 2"
    assert not set(ids[2:]) & set(ancestry), "and from nothing after it"
    children = [s for s in graph.get_state_history(config)
                if s.parent_config and s.parent_config["configurable"]["checkpoint_id"] == ids[1]]
    assert len(children) >= 2, "checkpoint 2 now has two children: the old line and the new branch"
    humans = [m.content for m in head.values["messages"] if isinstance(m, HumanMessage)]
    assert humans[-1] == "branch" and "second" not in humans
    # The old line is still intact and reachable.
    assert [m.content for m in graph.get_state(history[-1].config).values["messages"] if isinstance(m, HumanMessage)] == ["first", "second"]


def witness_human_in_the_loop(saver) -> None:
    """Pause before execute_action, read and change the plan, resume with the change."""
    graph = build_agent_graph(saver)
    tid = _thread("hitl")
    config = thread_config(tid, "user-hitl", "billing")
    start_turn(graph, config, "user-hitl", "I would like a refund of $60 for order #12345.")
    paused = graph.get_state(config)
    assert paused.next == ("execute_action",)
    assert paused.values["action"] == {"type": "refund", "amount": 60.0, "user_id": "user-hitl"}
    graph.update_state(config, {"action": {"type": "refund", "amount": 25.0, "user_id": "user-hitl"}})
    assert graph.get_state(config).values["action"]["amount"] == 25.0
    graph.invoke(None, config)
    done = graph.get_state(config)
    assert done.next == ()
    assert done.values["action"]["amount"] == 25.0 and done.values["outcome"] == "refund done"


def witness_fault_tolerance(saver) -> None:
    """A 5-node graph crashes after node 2; resuming on the same thread skips nodes 1-2."""
    calls: Counter = Counter()
    graph = build_pipeline(saver, calls, crash_once={"node3"})
    config = {"configurable": {"thread_id": _thread("crash")}}
    try:
        graph.invoke({"trail": []}, config)
    except NodeCrash:
        pass
    else:  # pragma: no cover - the crash is the point of the witness
        raise AssertionError("node3 should have crashed")
    assert graph.get_state(config).next == ("node3",)
    result = graph.invoke(None, config)
    assert result["trail"] == ["node1", "node2", "node3", "node4", "node5"]
    assert calls == Counter({"node1": 1, "node2": 1, "node3": 2, "node4": 1, "node5": 1})
