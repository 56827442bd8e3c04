"""Graphs and tools for test_fidelity: a TieredSaver that moves a thread before each read, the
graphs (interrupts, a crashing Send fan-out, nested subgraphs, custom classes), and comparisons."""

from __future__ import annotations

import operator
import time
import uuid
from collections import Counter
from typing import Annotated, TypedDict

import pytest
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, Send, interrupt

from include.checkpoint_core.tiering import directory, moves
from include.checkpoint_core.tiering.rows import has_pg_rows
from include.checkpoint_core.tiering.saver import TieredSaver


class Travelling(TieredSaver):
    """Before every read the app makes of a thread's root namespace (a run starting, get_state,
    update_state, history), moves the thread to ``stop``; the next step's first write promotes it."""

    stop = "archive"

    def _travel(self, config) -> None:
        conf = (config or {}).get("configurable", {})
        if "thread_id" not in conf or conf.get("checkpoint_ns"):
            return
        with self.pool.connection() as conn:
            out = moves.demote(conn, self.hot, conf["thread_id"])
            assert out.result in ("moved", "gone"), out
            self.moved[f"demote:{out.result}"] += 1
            if self.stop == "archive":
                out = moves.archive_thread(conn, self.hot, self.archive, conf["thread_id"])
                assert out.result in ("moved", "gone", "not-eligible"), out
                self.moved[f"archive:{out.result}"] += 1

    def get_tuple(self, config):
        self._travel(config)
        return super().get_tuple(config)

    def list(self, config, **kwargs):
        self._travel(config)
        yield from super().list(config, **kwargs)


def moved_promotions(seen: list[str]) -> int:
    """Promotions that moved a thread; "not-eligible" is a new thread's first write, or a write of the
    same step that found the thread already promoted by a concurrent one."""
    assert set(seen) <= {"moved", "not-eligible"}, seen
    return seen.count("moved")


def move(saver, tid: str, *steps: str) -> None:
    """One thread through ``steps`` (demote, archive, rehydrate, promote): each must move it."""
    with saver.pool.connection() as conn:
        for step in steps:
            out = {"demote": lambda: moves.demote(conn, saver.hot, tid),
                   "archive": lambda: moves.archive_thread(conn, saver.hot, saver.archive, tid),
                   "rehydrate": lambda: moves.rehydrate(conn, saver.hot, saver.archive, tid),
                   "promote": lambda: moves.promote(conn, saver.hot, saver.archive, tid)}[step]()
            assert out.result == "moved", (step, out)


def shape(graph, config) -> list[tuple]:
    """The history as the app sees it minus ids and timestamps (comparable across runs); each task's
    error, interrupts and result come from the checkpoint's pending writes."""
    return [(s.values, s.next, s.metadata["step"], s.metadata["source"],
             [(t.name, repr(t.error), [i.value for i in t.interrupts], t.result) for t in s.tasks])
            for s in graph.get_state_history(config)]


def settled_hot(saver, tid: str) -> None:
    """Hot only: no directory entry, no cold rows, no archive object left behind."""
    assert saver.hot.export_thread(tid).version is not None
    with saver.pool.connection() as conn:
        assert directory.entry(conn, tid) is None and not has_pg_rows(conn, tid)
    assert not [p for p in saver.archive.root.rglob("*") if p.is_file()]


def chain(schema, *nodes, checkpointer=None, **kw):
    """START -> nodes in order -> END."""
    b = StateGraph(schema)
    for name, fn in nodes:
        b.add_node(name, fn)
    names = [START, *(n for n, _ in nodes), END]
    for a, z in zip(names, names[1:]):
        b.add_edge(a, z)
    return b.compile(checkpointer=checkpointer, **kw)


def new_tid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


class Doc(TypedDict, total=False):
    topic: str
    log: Annotated[list[str], operator.add]


def review_node(state: Doc) -> dict:
    """Two interrupts in one node: while the second waits, the first answer is a pending RESUME write."""
    title = interrupt({"question": "title?", "draft": state["log"][-1]})
    go = interrupt({"question": f"publish {title!r}?"})
    return {"log": [f"title:{title}", f"go:{go}"]}


def build_review(checkpointer):
    return chain(Doc, ("draft", lambda s: {"log": [f"draft:{s['topic']}"]}), ("review", review_node),
                 ("publish", lambda s: {"log": [f"published:{len(s['log'])}"]}), checkpointer=checkpointer)


def drive_review(graph, tid: str, between) -> tuple:
    """Start, answer twice; ``between(tid, snapshot)`` runs at each pause."""
    config, asked = {"configurable": {"thread_id": tid}}, []
    for payload in ({"topic": "tiers"}, Command(resume="Cold storage"), Command(resume="yes")):
        graph.invoke(payload, config)
        snap = graph.get_state(config)
        if snap.next:
            asked.append([i.value for i in snap.interrupts])
            between(tid, snap)
    return asked, graph.get_state(config).values, shape(graph, config)


class Fan(TypedDict, total=False):
    done: Annotated[list[str], operator.add]


class Crash(RuntimeError):
    pass


def build_fanout(checkpointer, calls: Counter, crash_once: set[int]):
    """plan -> Send("work", i) for i in 1..3 -> join; work(i in crash_once) raises once, after its
    siblings have finished, so their writes are pending on the checkpoint."""

    def work(arg: dict) -> dict:
        calls[arg["i"]] += 1
        if arg["i"] in crash_once:
            time.sleep(0.2)
            crash_once.discard(arg["i"])
            raise Crash(f"work {arg['i']}")
        return {"done": [f"w{arg['i']}"]}

    b = StateGraph(Fan)
    b.add_node("plan", lambda s: {"done": ["plan"]})
    b.add_node("work", work)
    b.add_node("join", lambda s: {"done": [f"join:{len(s['done'])}"]})
    b.add_edge(START, "plan")
    b.add_conditional_edges("plan", lambda s: [Send("work", {"i": i}) for i in (1, 2, 3)], ["work"])
    b.add_edge("work", "join")
    b.add_edge("join", END)
    return b.compile(checkpointer=checkpointer)


def crash_then_resume(checkpointer, tid: str, between) -> tuple:
    """Crash work(2) once, ``between(graph, config)``, resume: calls after the crash and at the end."""
    calls: Counter = Counter()
    graph, config = build_fanout(checkpointer, calls, {2}), {"configurable": {"thread_id": tid}}
    with pytest.raises(Crash):
        graph.invoke({"done": []}, config)
    after_crash = Counter(calls)
    between(graph, config)
    graph.invoke(None, config)
    return after_crash, calls, graph.get_state(config).values, shape(graph, config)


# The app's own classes, in a module the worker cannot import: the migration's fidelity suite's.
from tests.migration.test_fidelity import CUSTOM_TYPES as CUSTOM  # noqa: E402


class Unimportable:
    """A meta-path finder that makes one module unimportable and records every attempt."""

    def __init__(self, name: str):
        self.name, self.attempts = name, []

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] == self.name:
            self.attempts.append(fullname)
            raise ImportError(f"{fullname} is the app's module: the tiering worker cannot import it")
        return None


def union(old: list[str], new: list[str]) -> list[str]:
    """Appends what is new (a subgraph hands its whole state back)."""
    return old + [x for x in new if x not in old]


class Nest(TypedDict, total=False):
    log: Annotated[list[str], union]


def build_nested(checkpointer):
    """prep -> outer[o1 -> inner[i1 -> ask (interrupt)] -> o2] -> finish: checkpoints in three namespaces."""
    node = lambda label: (label, lambda s: {"log": [label]})  # noqa: E731
    ask = ("ask", lambda s: {"log": [f"answer:{interrupt({'question': 'go on?', 'seen': list(s['log'])})}"]})
    inner = chain(Nest, node("i1"), ask)
    outer = chain(Nest, node("o1"), ("inner", inner), node("o2"))
    return chain(Nest, node("prep"), ("outer", outer), node("finish"), checkpointer=checkpointer)


def views(graph, saver, tid: str, namespaces: list[str]) -> dict:
    """Everything the app can read of a thread: state with subgraphs, histories, list() per namespace."""
    config = {"configurable": {"thread_id": tid}}
    state = graph.get_state(config, subgraphs=True)
    nested, cursor = [], state
    while cursor.tasks and cursor.tasks[0].state is not None:
        cursor = cursor.tasks[0].state
        nested.append(cursor)
    return {"state": state, "nested": nested, "history": list(graph.get_state_history(config)),
            "sub_history": [list(graph.get_state_history(s.config)) for s in nested],
            "per_ns": {ns: list(saver.list({"configurable": {"thread_id": tid, "checkpoint_ns": ns}}))
                       for ns in namespaces},
            "all": list(saver.list(config))}


def paused_nested(saver) -> str:
    tid = new_tid("raw-nested")
    build_nested(saver).invoke({"log": []}, {"configurable": {"thread_id": tid}})
    return tid


def crashed_fanout(saver) -> str:
    tid = new_tid("raw-fan")
    with pytest.raises(Crash):
        build_fanout(saver, Counter(), {2}).invoke({"done": []}, {"configurable": {"thread_id": tid}})
    return tid
