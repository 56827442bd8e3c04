"""Writes one SqliteSaver fixture file with whatever LangGraph release is installed.

Run by generate.py inside a throwaway venv that holds an OLD LangGraph release set
(see requirements-*.txt); it never runs in the project's venv. One script serves
langgraph 0.2 / 0.3 / 1.0 and guards the API differences between them.

    python graph_script.py OUT.sqlite OUT.json

Deterministic: fixed thread ids, no LLM, no network, every value derived from
constants. Checkpoint ids and task ids are uuid6/time based in every release, so
they differ run to run; the sidecar records the ones that were written.
"""

import dataclasses
import datetime as dt
import decimal
import enum
import hashlib
import importlib.metadata as im
import json
import operator
import os
import platform
import sqlite3
import sys
import time
import uuid
from typing import Annotated, Any, TypedDict

import pydantic
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages

try:  # langgraph >= 0.2.2x
    from langgraph.types import Send
except ImportError:  # pragma: no cover - older
    from langgraph.constants import Send

try:  # langgraph >= 0.2.57
    from langgraph.types import Command, interrupt

    HAS_INTERRUPT_FN = True
except ImportError:
    Command = None
    interrupt = None
    HAS_INTERRUPT_FN = False


# --- custom classes -------------------------------------------------------------
# They live under a module name that exists only while this script runs, so a
# reader of the fixture (the migration, current LangGraph) can never import them.
CUSTOM_MODULE = "legacy_fixture_models"
sys.modules[CUSTOM_MODULE] = sys.modules[__name__]


@dataclasses.dataclass
class Money:
    __module__ = CUSTOM_MODULE
    amount_cents: int
    currency: str


class Profile(pydantic.BaseModel):
    __module__ = CUSTOM_MODULE
    name: str
    tags: list[str]
    score: float


class Priority(enum.Enum):
    __module__ = CUSTOM_MODULE
    LOW = "low"
    HIGH = "high"


for _cls in (Money, Profile, Priority):
    _cls.__qualname__ = _cls.__name__


BLOB_CHARS = 300_000


def make_blob(seed: str) -> str:
    """~300 KB of deterministic, incompressible-looking hex."""
    out, h = [], seed.encode()
    for _ in range(BLOB_CHARS // 64 + 1):
        h = hashlib.sha256(h).digest()
        out.append(h.hex())
    return "".join(out)[:BLOB_CHARS]


def msg_id(thread: str, n: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"legacy-fixture/{thread}/{n}"))


# --- states -----------------------------------------------------------------------
class BasicState(TypedDict, total=False):
    topic: str
    count: int
    log: Annotated[list, operator.add]
    messages: Annotated[list, add_messages]
    money: Money
    profile: Profile
    misc: dict
    route: str


class MapState(TypedDict, total=False):
    topic: str
    items: list
    results: Annotated[list, operator.add]
    total: int
    log: Annotated[list, operator.add]


class NestState(TypedDict, total=False):
    topic: str
    log: Annotated[list, operator.add]
    depth: int


class ReviewState(TypedDict, total=False):
    topic: str
    draft: str
    approved: bool
    log: Annotated[list, operator.add]


class FailState(TypedDict, total=False):
    topic: str
    log: Annotated[list, operator.add]
    a_out: str
    b_out: str


class BlobState(TypedDict, total=False):
    topic: str
    blob: str
    log: Annotated[list, operator.add]


# --- graphs -------------------------------------------------------------------------
def build_basic():
    def plan(state: BasicState):
        n = state.get("count", 0) + 1
        topic = state["topic"]
        return {
            "count": n,
            "log": [f"plan:{topic}:{n}"],
            "messages": [AIMessage(content=f"plan {n} for {topic}", id=msg_id(topic, 100 + n))],
            "money": Money(amount_cents=1250 * n, currency="EUR"),
            "profile": Profile(name=topic, tags=["a", f"n{n}"], score=0.5 * n),
            "misc": {
                "when": dt.datetime(2024, 5, 1, 12, n, tzinfo=dt.timezone.utc),
                "day": dt.date(2024, 5, n),
                "uid": uuid.UUID(int=n),
                "tags": {3, 1, 2},  # ints: a str set would repr in hash-seed order
                "pair": (n, "two"),
                "raw": b"\x00\x01legacy",
                "price": decimal.Decimal("19.99"),
                "prio": Priority.HIGH if n % 2 else Priority.LOW,
            },
            "route": "even" if n % 2 == 0 else "odd",
        }

    def odd(state: BasicState):
        return {"log": ["odd"]}

    def even(state: BasicState):
        return {"log": ["even"]}

    g = StateGraph(BasicState)
    g.add_node("plan", plan)
    g.add_node("odd", odd)
    g.add_node("even", even)
    g.add_edge(START, "plan")
    g.add_conditional_edges("plan", lambda s: s["route"], {"odd": "odd", "even": "even"})
    g.add_edge("odd", END)
    g.add_edge("even", END)
    return g


def build_mapreduce(worker_interrupts: bool = False):
    def split(state: MapState):
        return {"log": [f"split:{len(state['items'])}"]}

    def fan_out(state: MapState):
        return [Send("work", {"item": it, "topic": state["topic"]}) for it in state["items"]]

    def work(arg: dict):
        item = arg["item"]
        if worker_interrupts and item == 2:
            answer = interrupt({"question": f"weight for item {item}?"})
            return {"results": [item * int(answer)]}
        return {"results": [item * item]}

    def reduce_(state: MapState):
        return {"total": sum(state["results"]), "log": ["reduce"]}

    g = StateGraph(MapState)
    g.add_node("split", split)
    g.add_node("work", work)
    g.add_node("reduce", reduce_)
    g.add_edge(START, "split")
    g.add_conditional_edges("split", fan_out, ["work"])
    g.add_edge("work", "reduce")
    g.add_edge("reduce", END)
    return g


def build_nested(mode: str):
    """outer -> child (subgraph) -> grandchild (subgraph): two levels of checkpoint_ns.

    mode: "run" (plain), "before" (interrupt_before inside the grandchild),
    "interrupt" (interrupt() inside the grandchild).
    """

    def g_step(state: NestState):
        if mode == "interrupt":
            answer = interrupt({"question": "grandchild needs input", "depth": 2})
            return {"log": [f"grandchild:{answer}"], "depth": 2}
        return {"log": ["grandchild"], "depth": 2}

    def g_prep(state: NestState):
        return {"log": ["grandchild-prep"]}

    gg = StateGraph(NestState)
    gg.add_node("g_prep", g_prep)
    gg.add_node("g_step", g_step)
    gg.add_edge(START, "g_prep")
    gg.add_edge("g_prep", "g_step")
    gg.add_edge("g_step", END)
    grandchild = gg.compile(interrupt_before=["g_step"] if mode == "before" else None)

    def c_step(state: NestState):
        return {"log": ["child"], "depth": 1}

    cg = StateGraph(NestState)
    cg.add_node("c_step", c_step)
    cg.add_node("grandchild", grandchild)
    cg.add_edge(START, "c_step")
    cg.add_edge("c_step", "grandchild")
    cg.add_edge("grandchild", END)
    child = cg.compile()

    def o_start(state: NestState):
        return {"log": ["outer-start"], "depth": 0}

    def o_end(state: NestState):
        return {"log": ["outer-end"]}

    og = StateGraph(NestState)
    og.add_node("o_start", o_start)
    og.add_node("child", child)
    og.add_node("o_end", o_end)
    og.add_edge(START, "o_start")
    og.add_edge("o_start", "child")
    og.add_edge("child", "o_end")
    og.add_edge("o_end", END)
    return og


def build_review():
    def draft(state: ReviewState):
        return {"draft": f"draft about {state['topic']}", "log": ["draft"]}

    def review(state: ReviewState):
        return {"approved": True, "log": [f"review:{state['draft']}"]}

    def finalize(state: ReviewState):
        return {"log": ["finalize"]}

    g = StateGraph(ReviewState)
    g.add_node("write_draft", draft)
    g.add_node("do_review", review)
    g.add_node("finalize", finalize)
    g.add_edge(START, "write_draft")
    g.add_edge("write_draft", "do_review")
    g.add_edge("do_review", "finalize")
    g.add_edge("finalize", END)
    return g


def build_ask(questions: int = 1):
    def ask(state: ReviewState):
        answers = [interrupt({"question": f"q{i} about {state['topic']}?"}) for i in range(questions)]
        return {"draft": " / ".join(map(str, answers)), "log": ["ask"]}

    def answer(state: ReviewState):
        return {"approved": True, "log": [f"answer:{state['draft']}"]}

    g = StateGraph(ReviewState)
    g.add_node("ask", ask)
    g.add_node("answer", answer)
    g.add_edge(START, "ask")
    g.add_edge("ask", "answer")
    g.add_edge("answer", END)
    return g


class Boom(RuntimeError):
    pass


def build_fail():
    def a(state: FailState):
        return {"a_out": "a-done", "log": ["a"]}

    def b(state: FailState):
        return {"b_out": "b-done", "log": ["b"]}

    def boom(state: FailState):
        time.sleep(0.5)  # let the siblings finish and commit their writes first
        raise ValueError(f"deterministic failure in boom for {state['topic']}")

    def join(state: FailState):
        return {"log": ["join"]}

    g = StateGraph(FailState)
    for name, fn in (("a", a), ("b", b), ("boom", boom), ("join", join)):
        g.add_node(name, fn)
    for name in ("a", "b", "boom"):
        g.add_edge(START, name)
    g.add_edge(["a", "b", "boom"], "join")
    g.add_edge("join", END)
    return g


def build_blob():
    def fill(state: BlobState):
        return {"blob": make_blob(state["topic"]), "log": ["fill"]}

    g = StateGraph(BlobState)
    g.add_node("fill", fill)
    g.add_edge(START, "fill")
    g.add_edge("fill", END)
    return g


# --- run ----------------------------------------------------------------------------
def cfg(tid: str) -> dict:
    return {"configurable": {"thread_id": tid}}


LARGE = 4096


def rep(value: Any) -> str:
    return repr(value)


def values_repr(values: Any) -> tuple[dict, dict]:
    small, large = {}, {}
    if not isinstance(values, dict):
        return {"__root__": rep(values)}, {}
    for k in sorted(values):
        r = rep(values[k])
        if len(r) > LARGE:
            large[k] = {
                "repr_sha256": hashlib.sha256(r.encode()).hexdigest(),
                "repr_len": len(r),
                "repr_head": r[:120],
            }
        else:
            small[k] = r
    return small, large


def snapshot_info(snap) -> dict:
    values, large = values_repr(snap.values)
    tasks = []
    for t in getattr(snap, "tasks", ()) or ():
        tasks.append(
            {
                "id": t.id,
                "name": t.name,
                "error": rep(t.error) if getattr(t, "error", None) is not None else None,
                "interrupts": [rep(i) for i in (getattr(t, "interrupts", ()) or ())],
            }
        )
    conf = snap.config["configurable"]
    return {
        "checkpoint_id": conf.get("checkpoint_id"),
        "checkpoint_ns": conf.get("checkpoint_ns", ""),
        "next": list(snap.next),
        "values": values,
        "large_values": large,
        "tasks": tasks,
        "metadata": rep(snap.metadata) if len(rep(snap.metadata)) <= LARGE else {
            "repr_sha256": hashlib.sha256(rep(snap.metadata).encode()).hexdigest(),
            "repr_len": len(rep(snap.metadata)),
            "repr_head": rep(snap.metadata)[:120],
        },
    }


def main(out_db: str, out_json: str) -> None:
    os.environ["LANGCHAIN_TRACING_V2"] = "false"
    os.environ["LANGSMITH_TRACING"] = "false"
    for p in (out_db, out_db + "-wal", out_db + "-shm", out_json):
        if os.path.exists(p):
            os.remove(p)

    conn = sqlite3.connect(out_db, check_same_thread=False)
    saver = SqliteSaver(conn)
    threads: dict[str, dict] = {}
    skipped: list[str] = []
    outcome: dict[str, str] = {}

    def note(tid: str, graph: str, exercises: str):
        threads[tid] = {"graph": graph, "exercises": exercises}

    def run(app, tid, inp, **kw):
        try:
            app.invoke(inp, cfg(tid), **kw)
            outcome.setdefault(tid, "ok")
        except Exception as e:  # noqa: BLE001 - the fail threads raise on purpose
            outcome[tid] = f"raised {type(e).__name__}: {e}"

    # basic: channels, reducers, messages, custom classes, conditional branch
    basic = build_basic().compile(checkpointer=saver)
    for i in range(8):
        tid = f"basic-{i:02d}"
        note(tid, "basic", "StateGraph with several channels, operator.add list reducer, add_messages, "
             "dataclass/pydantic/enum custom values, datetime/uuid/set/tuple/bytes/Decimal, conditional branch")
        run(basic, tid, {"topic": tid, "messages": [HumanMessage(content=f"hi {tid}", id=msg_id(tid, 0))]})
    for i in range(3):
        tid = f"basic-multiturn-{i}"
        note(tid, "basic", "same graph invoked 3 times on one thread (checkpoint history across runs)")
        for turn in range(3):
            run(basic, tid, {"topic": tid, "messages": [HumanMessage(content=f"turn {turn}", id=msg_id(tid, turn))]})

    # map-reduce with Send
    mr = build_mapreduce().compile(checkpointer=saver)
    for i in range(4):
        tid = f"mapreduce-{i}"
        note(tid, "mapreduce", "Send fan-out map-reduce run to completion (pending_sends / TASKS writes in history)")
        run(mr, tid, {"topic": tid, "items": list(range(1, 4 + i))})
    mr_paused = build_mapreduce().compile(checkpointer=saver, interrupt_before=["work"])
    for i in range(2):
        tid = f"mapreduce-paused-{i}"
        note(tid, "mapreduce", "paused by interrupt_before=['work'] right after the Send fan-out: the LATEST "
             "checkpoint carries the pending Sends (v1 pending_sends / __pregel_tasks writes)")
        run(mr_paused, tid, {"topic": tid, "items": [1, 2, 3]})
    tid = "mapreduce-paused-resumed"
    note(tid, "mapreduce", "paused after the Send fan-out by interrupt_before, then resumed with invoke(None)")
    run(mr_paused, tid, {"topic": tid, "items": [1, 2, 3]})
    run(mr_paused, tid, None)
    if HAS_INTERRUPT_FN:
        mr_int = build_mapreduce(worker_interrupts=True).compile(checkpointer=saver)
        tid = "mapreduce-worker-interrupt"
        note(tid, "mapreduce", "one Send worker called interrupt() while its siblings finished: pending writes "
             "of the siblings plus an __interrupt__ write on the latest checkpoint")
        run(mr_int, tid, {"topic": tid, "items": [1, 2, 3]})
        tid = "mapreduce-worker-interrupt-resumed"
        note(tid, "mapreduce", "as mapreduce-worker-interrupt, then resumed with Command(resume=10)")
        run(mr_int, tid, {"topic": tid, "items": [1, 2, 3]})
        run(mr_int, tid, Command(resume=10))
    else:
        skipped += ["mapreduce-worker-interrupt", "mapreduce-worker-interrupt-resumed"]

    # nested subgraphs, two levels
    nested = build_nested("run").compile(checkpointer=saver)
    for i in range(3):
        tid = f"nested-{i}"
        note(tid, "nested", "two-level nested subgraph run to completion (checkpoint_ns 'child:<id>' and "
             "'child:<id>|grandchild:<id>')")
        run(nested, tid, {"topic": tid, "log": []})
    nested_before = build_nested("before").compile(checkpointer=saver)
    tid = "nested-paused-before"
    note(tid, "nested", "paused by interrupt_before inside the grandchild (depth 2)")
    run(nested_before, tid, {"topic": tid, "log": []})
    tid = "nested-paused-before-resumed"
    note(tid, "nested", "paused by interrupt_before inside the grandchild, then resumed with invoke(None)")
    run(nested_before, tid, {"topic": tid, "log": []})
    run(nested_before, tid, None)
    if HAS_INTERRUPT_FN:
        nested_int = build_nested("interrupt").compile(checkpointer=saver)
        tid = "nested-interrupt"
        note(tid, "nested", "paused by interrupt() inside the grandchild (depth 2)")
        run(nested_int, tid, {"topic": tid, "log": []})
        tid = "nested-interrupt-resumed"
        note(tid, "nested", "paused by interrupt() inside the grandchild, then resumed with Command(resume='deep')")
        run(nested_int, tid, {"topic": tid, "log": []})
        run(nested_int, tid, Command(resume="deep"))
    else:
        skipped += ["nested-interrupt", "nested-interrupt-resumed"]

    # interrupt_before
    review = build_review().compile(checkpointer=saver, interrupt_before=["do_review"])
    for i in range(3):
        tid = f"review-paused-{i}"
        note(tid, "review", "paused by interrupt_before=['do_review']")
        run(review, tid, {"topic": tid})
    tid = "review-resumed"
    note(tid, "review", "paused by interrupt_before, resumed with invoke(None), ran to END")
    run(review, tid, {"topic": tid})
    run(review, tid, None)
    tid = "review-updated-resumed"
    note(tid, "review", "paused by interrupt_before, update_state(as_node='write_draft') then resumed to END")
    run(review, tid, {"topic": tid})
    review.update_state(cfg(tid), {"draft": "edited by a human", "log": ["human-edit"]}, as_node="write_draft")
    run(review, tid, None)

    # interrupt()
    if HAS_INTERRUPT_FN:
        ask = build_ask().compile(checkpointer=saver)
        for i in range(3):
            tid = f"ask-paused-{i}"
            note(tid, "ask", "paused by interrupt() in node 'ask' (__interrupt__ write on the latest checkpoint)")
            run(ask, tid, {"topic": tid})
        for i in range(2):
            tid = f"ask-resumed-{i}"
            note(tid, "ask", "paused by interrupt(), resumed with Command(resume=...), ran to END")
            run(ask, tid, {"topic": tid})
            run(ask, tid, Command(resume=f"yes-{i}"))
        ask2 = build_ask(questions=2).compile(checkpointer=saver)
        tid = "ask-two-questions-half"
        note(tid, "ask", "node with two interrupt() calls; first answered, paused on the second "
             "(__resume__ write + __interrupt__ write)")
        run(ask2, tid, {"topic": tid})
        run(ask2, tid, Command(resume="first"))
        tid = "ask-two-questions-done"
        note(tid, "ask", "node with two interrupt() calls, both answered, ran to END")
        run(ask2, tid, {"topic": tid})
        run(ask2, tid, Command(resume="first"))
        run(ask2, tid, Command(resume="second"))
    else:
        skipped += ["ask-paused-0", "ask-paused-1", "ask-paused-2", "ask-resumed-0", "ask-resumed-1",
                    "ask-two-questions-half", "ask-two-questions-done"]

    # failure with sibling writes
    fail = build_fail().compile(checkpointer=saver)
    for i in range(2):
        tid = f"fail-{i}"
        note(tid, "fail", "three parallel tasks: 'a' and 'b' wrote, 'boom' raised ValueError; pending writes "
             "of a/b plus an __error__ write remain on the latest checkpoint")
        run(fail, tid, {"topic": tid})

    # ~300 KB value
    blob = build_blob().compile(checkpointer=saver)
    tid = "blob-300k"
    note(tid, "blob", f"one channel holding a {BLOB_CHARS}-character str (~300 KB)")
    run(blob, tid, {"topic": tid})

    # --- record what THIS release reads back ----------------------------------------
    apps = {"basic": basic, "mapreduce": mr, "nested": nested, "review": review, "fail": fail, "blob": blob}
    if HAS_INTERRUPT_FN:
        apps["ask"] = ask
    for tid, info in threads.items():
        app = apps[info["graph"]]
        snap = app.get_state(cfg(tid))
        info.update(snapshot_info(snap))
        info["outcome"] = outcome.get(tid)
        try:
            sub = app.get_state(cfg(tid), subgraphs=True)
            subs = []
            for t in sub.tasks:
                if getattr(t, "state", None) is not None and hasattr(t.state, "values"):
                    s = t.state
                    while True:
                        subs.append(snapshot_info(s))
                        inner = [x.state for x in s.tasks if getattr(x, "state", None) is not None
                                 and hasattr(x.state, "values")]
                        if not inner:
                            break
                        s = inner[0]
            if subs:
                info["subgraph_states"] = subs
        except TypeError:
            pass
        # raw rows as the old saver sees them, per namespace
        nss = [r[0] for r in conn.execute(
            "SELECT DISTINCT checkpoint_ns FROM checkpoints WHERE thread_id=? ORDER BY checkpoint_ns", (tid,))]
        info["namespaces"] = {}
        for ns in nss:
            tup = saver.get_tuple({"configurable": {"thread_id": tid, "checkpoint_ns": ns}})
            n = conn.execute("SELECT count(*) FROM checkpoints WHERE thread_id=? AND checkpoint_ns=?",
                             (tid, ns)).fetchone()[0]
            info["namespaces"][ns] = {
                "checkpoints": n,
                "latest_checkpoint_id": tup.checkpoint["id"],
                "checkpoint_v": tup.checkpoint.get("v"),
                "channels": sorted(tup.checkpoint["channel_values"]),
                "pending_sends": [rep(s) for s in tup.checkpoint.get("pending_sends", []) or []],
                # sorted: the saver returns them in task_id order, and task ids are random per run
                "pending_writes": sorted([[t, c, rep(v)[:300]] for t, c, v in (tup.pending_writes or [])],
                                         key=lambda w: (w[1], w[2], w[0])),
            }

    conn.close()
    # close the file cleanly: fold the WAL back in and leave rollback-journal mode
    c = sqlite3.connect(out_db)
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    c.execute("PRAGMA journal_mode=DELETE")
    c.close()
    for side in ("-wal", "-shm"):
        if os.path.exists(out_db + side):
            raise SystemExit(f"{out_db}{side} left behind")

    dists = ["langgraph", "langgraph-checkpoint", "langgraph-checkpoint-sqlite", "langchain-core",
             "langgraph-prebuilt", "langgraph-sdk", "aiosqlite", "msgpack", "ormsgpack", "pydantic"]
    pins = {}
    for d in dists:
        try:
            pins[d] = im.version(d)
        except im.PackageNotFoundError:
            pass
    side = {
        "pins": pins,
        "python": platform.python_version(),
        "sqlite_library": sqlite3.sqlite_version,
        "custom_class_module": CUSTOM_MODULE,
        "custom_classes": [f"{CUSTOM_MODULE}.{c.__name__}" for c in (Money, Profile, Priority)],
        "has_interrupt_fn": HAS_INTERRUPT_FN,
        "skipped_threads_api_missing": skipped,
        "note": "values/tasks/metadata are repr() strings of what this release's get_state() returned; "
                "values longer than 4096 chars are in large_values (metadata: in place) as sha256 of the repr. namespaces[ns] is "
                "what this release's SqliteSaver.get_tuple() returned for that checkpoint_ns "
                "(pending_writes: [task_id, channel, repr(value) cut to 300 chars], sorted by channel and value).",
        "threads": threads,
    }
    with open(out_json, "w") as f:
        json.dump(side, f, indent=1, sort_keys=False)
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
