"""A SqliteSaver checkpoint file shaped like real agents' data, not like the sample agent's.

    python benchmarks/rich_workload.py [--threads 2500] [--out PATH]   # prints the file's path

Every row is written by the installed LangGraph itself: real ``StateGraph`` runs through a real
``SqliteSaver``, no LLM, every decision taken from a per-thread seeded RNG. What real agents put
into checkpoint storage and the sample agent does not:

- many channels per checkpoint (17 state keys; reducers on messages, results, scores, tool
  calls, budget and labels);
- two levels of subgraphs: checkpoints under ``research:<task id>`` and under
  ``research:<task id>|analyze:<task id>``;
- map-reduce ``Send`` fan-out (3-8 parallel ``worker`` tasks per turn), so pending sends travel
  as ``__pregel_tasks`` writes;
- pending writes left behind: threads paused in ``interrupt()`` (a human's approval), and failed
  threads where one worker raises after its siblings wrote;
- custom class values (dataclasses, a set, bytes) that msgpack stores as extension types;
- a few multi-MB values: 5 threads of 2,500 end with a 2 MB ``bytes`` attachment, one of them also
  with a 2 MB report string and a 2 MB string in a worker's result.

Default size, against a real file of 2,500 threads / 43,850 checkpoints / 102,701 writes / 253 MB:
2,500 threads, 44,124 checkpoints (17.6 per thread; 31K root, 7.3K at level 1, 5.8K at level 2),
107,317 writes (2.43 per checkpoint), 255 MB; about 10% of threads paused, 6% failed.

Every thread runs as a real graph (no cloning): about 2-3 ms per checkpoint per process, so the
default size takes 1-1.5 minutes in two worker processes (one shard file each, merged at the
end). ``--real-threads N`` runs only N threads as real graphs and clones them under new thread ids
(like ``scale_source`` in benchmarks/migration.py) when a much bigger file is wanted quickly. The
result is cached under $TMPDIR by its parameters (bump WORKLOAD_VERSION when the graph changes).

Content is deterministic (seeded per thread); checkpoint ids and timestamps are LangGraph's own
(uuid6 of the clock), so they differ from run to run. Two things real files have too: ``labels``
is a set, which msgpack writes in iteration order, so two checkpoints carrying the same version
of it can hold different bytes (preflight counts these as version collisions); and a failed
worker sleeps 20 ms before raising, so that its siblings' writes are reliably saved first.
"""

from __future__ import annotations

import argparse
import hashlib
import operator
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypedDict

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Bump when the graph or the workload changes, so an old cached file is not reused.
WORKLOAD_VERSION = 1
BIG_VALUE_BYTES = 2 * 1024 * 1024
# Threads i % 500 == 137 end with a 2 MB bytes attachment; thread 137 also with a 2 MB report string, and a
# 2 MB string in one worker's result, which every later checkpoint of that turn carries.
BIG_RESULT_EVERY = 137
FANOUT_SHARE = 0.17  # turns that map-reduce over 3-8 worker tasks
RESEARCH_SHARE = 0.35  # turns that run the two-level research subgraph
TIERS = ("free", "pro", "team", "enterprise")
LOCALES = ("en-US", "en-GB", "de-DE", "fr-FR", "ja-JP", "pt-BR")
TOPICS = ("billing", "shipping", "returns", "account", "security", "integrations", "outage", "pricing")
WORDS = ("order", "invoice", "shipment", "account", "policy", "warranty", "refund", "customer", "delivery",
         "tracking", "payment", "support", "return", "address", "status", "update", "ticket", "region",
         "latency", "webhook", "token", "quota", "contract", "renewal")


# --- custom value types (stored by JsonPlusSerializer as msgpack extension types) -------------

@dataclass
class CustomerProfile:
    user_id: str
    tier: str
    locale: str
    lifetime_value: float
    open_tickets: int
    tags: list[str] = field(default_factory=list)
    flags: dict[str, bool] = field(default_factory=dict)


@dataclass
class ToolCallRecord:
    tool: str
    args: dict[str, Any]
    latency_ms: int
    ok: bool
    output_chars: int


class SimulatedFailure(RuntimeError):
    """A worker's injected failure (raised after its siblings wrote)."""


# --- state ----------------------------------------------------------------------------------

def merge_scores(a: dict[str, float] | None, b: dict[str, float] | None) -> dict[str, float]:
    return {**(a or {}), **(b or {})}


def union(a: set[str] | None, b: set[str] | None) -> set[str]:
    return set(a or ()) | set(b or ())


def _messages_reducer():
    from langgraph.graph.message import add_messages
    return add_messages


class OuterState(TypedDict, total=False):
    messages: Annotated[list, _messages_reducer()]
    user_id: str
    session_type: str
    turn: int
    profile: CustomerProfile
    plan: list[dict]
    results: Annotated[list[dict], operator.add]
    scores: Annotated[dict[str, float], merge_scores]
    tool_calls: Annotated[list[ToolCallRecord], operator.add]
    budget_used: Annotated[float, operator.add]
    labels: Annotated[set[str], union]
    research_notes: str
    sources: list[str]
    decision: dict
    approved: bool | None
    summary: str
    attachment: bytes | None


class ResearchInput(TypedDict, total=False):
    plan: list[dict]


class ResearchOutput(TypedDict, total=False):
    research_notes: str
    sources: list[str]


class ResearchState(ResearchInput, ResearchOutput, total=False):
    draft: str


class AnalyzeInput(TypedDict, total=False):
    sources: list[str]


class AnalyzeOutput(TypedDict, total=False):
    sources: list[str]


class AnalyzeState(AnalyzeInput, total=False):
    excerpts: list[str]
    ranking: list[dict]


# --- helpers --------------------------------------------------------------------------------

def _h(*parts: Any) -> int:
    return int.from_bytes(hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest(), "big")


def prose(seed: Any, size: int) -> str:
    """Deterministic text of about ``size`` characters."""
    rng = random.Random(_h("prose", seed))
    out, n = [], 0
    while n < size:
        w = WORDS[rng.randrange(len(WORDS))]
        out.append(w)
        n += len(w) + 1
    return " ".join(out)


def big_bytes(seed: Any, size: int) -> bytes:
    """Incompressible-looking deterministic bytes (an uploaded file)."""
    block = hashlib.sha256(str(seed).encode()).digest()
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.blake2b(block + counter.to_bytes(8, "big"), digest_size=64).digest()
        counter += 1
    return bytes(out[:size])


def _p(state: dict | None = None) -> dict:
    """The turn's parameters: the run context (``invoke(..., context=...)``), not checkpointed."""
    from langgraph.runtime import get_runtime

    return get_runtime().context or {}


# --- the outer graph ------------------------------------------------------------------------

def intake(state: OuterState) -> dict:
    from langchain_core.messages import AIMessage

    p = _p(state)
    uid = state.get("user_id", "anon")
    h = _h(uid)
    profile = state.get("profile") or CustomerProfile(
        user_id=uid, tier=TIERS[h % 4], locale=LOCALES[h % 6], lifetime_value=round((h % 100_000) / 7.0, 2),
        open_tickets=h % 5, tags=[TOPICS[(h >> k) % 8] for k in range(3)], flags={"vip": h % 11 == 0, "beta": h % 3 == 0})
    turn = p.get("turn", 1)
    ack = AIMessage(content=f"Looking into it ({profile.tier}, turn {turn}). " + prose((uid, turn, "ack"), p.get("text", 300)),
                    id=f"{p.get('tid')}-ai-ack-{turn}")
    if "profile" in state:
        return {"messages": [ack]}
    return {"messages": [ack], "profile": profile, "turn": turn}


def planner(state: OuterState) -> dict:
    p = _p(state)
    rng = random.Random(_h(p.get("tid"), p.get("turn"), "plan"))
    n = p.get("fanout") or 1
    plan = [{"step": i, "topic": TOPICS[rng.randrange(8)], "query": prose((p.get("tid"), p.get("turn"), i), 60),
             "weight": round(rng.random(), 4)} for i in range(n)]
    return {"plan": plan}


def fan_out(state: OuterState):
    """Map step: one ``worker`` task per plan item (3-8 of them) on fan-out turns."""
    from langgraph.types import Send

    p = _p(state)
    if not p.get("fanout"):
        return "aggregate"
    return [Send("worker", {"item": item, "turn": p.get("turn", 1)}) for item in state["plan"]]


def worker(arg: dict) -> dict:
    p, item, turn = _p(), arg["item"], arg["turn"]
    i = item["step"]
    if p.get("fail_worker") == i:
        time.sleep(0.02)  # let the siblings finish and write first (they are pure CPU)
        raise SimulatedFailure(f"worker {i} failed on turn {turn}: upstream timed out")
    text = prose((p.get("tid"), turn, i, "out"), p.get("worker_text", 400))
    big = p.get("big_result") and i == 0
    record = ToolCallRecord(tool=f"search_{item['topic']}", args={"q": item["query"][:40], "k": 5},
                            latency_ms=20 + _h(p.get("tid"), turn, i) % 900, ok=True, output_chars=len(text))
    return {"results": [{"step": i, "turn": turn, "topic": item["topic"], "text": text, "score": item["weight"],
                         "call": record, "blob": prose((p.get("tid"), "big"), BIG_VALUE_BYTES) if big else None}]}


def aggregate(state: OuterState) -> dict:
    turn = _p(state).get("turn", 1)
    mine = [r for r in state.get("results", []) if r.get("turn") == turn]
    best = max(mine, key=lambda r: r["score"]) if mine else None
    decision = {"stage": "aggregated", "best": best["topic"] if best else None, "n": len(mine), "turn": turn}
    if not mine:
        return {"decision": decision}
    return {"decision": decision, "scores": {f"t{turn}.{r['step']}": r["score"] for r in mine},
            "tool_calls": [r["call"] for r in mine], "budget_used": 0.001 * len(mine), "labels": {f"topic:{best['topic']}"}}


def route_after_aggregate(state: OuterState) -> str:
    return "research" if _p(state).get("research") else "review"


def review(state: OuterState) -> dict:
    from langgraph.types import interrupt

    p = _p(state)
    if p.get("needs_approval"):
        answer = interrupt({"question": "Approve the proposed action?", "turn": p.get("turn"),
                            "amount": round(sum(state.get("scores", {}).values()), 3),
                            "evidence": [r["topic"] for r in state.get("results", [])[-3:]]})
        return {"approved": bool(answer)}
    return {"approved": None}


def finalize(state: OuterState) -> dict:
    from langchain_core.messages import AIMessage

    p = _p(state)
    turn = p.get("turn", 1)
    out: dict[str, Any] = {
        "messages": [AIMessage(content=prose((p.get("tid"), turn, "answer"), p.get("text", 300)), id=f"{p.get('tid')}-ai-{turn}")],
        "summary": prose((p.get("tid"), turn, "summary"), 120),
        "decision": {**state.get("decision", {}), "stage": "done"},
    }
    if p.get("big_final"):  # an uploaded file, and for one thread a 2 MB generated report
        out["attachment"] = big_bytes((p.get("tid"), turn), BIG_VALUE_BYTES)
        if p.get("big_result"):
            out["summary"] = prose((p.get("tid"), turn, "report"), BIG_VALUE_BYTES)
    return out


# --- the research subgraph (level 1) and its analyze subgraph (level 2) ---------------------

def gather(state: ResearchState) -> dict:
    p = _p(state)
    sources = [f"kb://{it['topic']}/{_h(it['query']) % 10_000}" for it in state.get("plan", [])]
    return {"sources": sources, "draft": prose((p.get("tid"), p.get("turn"), "draft"), p.get("notes", 500))}


def write_notes(state: ResearchState) -> dict:
    return {"research_notes": f"[{len(state.get('sources', []))} sources] " + state.get("draft", "")[:1500]}


def extract(state: AnalyzeState) -> dict:
    p = _p(state)
    return {"excerpts": [prose((s, "ex"), p.get("excerpt", 120)) for s in state.get("sources", [])]}


def rank(state: AnalyzeState) -> dict:
    ranking = sorted(({"source": s, "score": (_h(s) % 1000) / 1000} for s in state.get("sources", [])),
                     key=lambda r: -r["score"])
    return {"ranking": ranking, "sources": [r["source"] for r in ranking]}


def build_graph(checkpointer):
    from langgraph.graph import END, START, StateGraph

    inner = StateGraph(AnalyzeState, input_schema=AnalyzeInput, output_schema=AnalyzeOutput)
    inner.add_node("extract", extract)
    inner.add_node("rank", rank)
    inner.add_edge(START, "extract")
    inner.add_edge("extract", "rank")
    inner.add_edge("rank", END)

    mid = StateGraph(ResearchState, input_schema=ResearchInput, output_schema=ResearchOutput)
    mid.add_node("gather", gather)
    mid.add_node("analyze", inner.compile())
    mid.add_node("write_notes", write_notes)
    mid.add_edge(START, "gather")
    mid.add_edge("gather", "analyze")
    mid.add_edge("analyze", "write_notes")
    mid.add_edge("write_notes", END)

    outer = StateGraph(OuterState, context_schema=dict)
    outer.add_node("intake", intake)
    outer.add_node("planner", planner)
    outer.add_node("worker", worker)
    outer.add_node("aggregate", aggregate)
    outer.add_node("research", mid.compile())
    outer.add_node("review", review)
    outer.add_node("finalize", finalize)
    outer.add_edge(START, "intake")
    outer.add_edge("intake", "planner")
    outer.add_conditional_edges("planner", fan_out, ["worker", "aggregate"])
    outer.add_edge("worker", "aggregate")
    outer.add_conditional_edges("aggregate", route_after_aggregate, ["research", "review"])
    outer.add_edge("research", "review")
    outer.add_edge("review", "finalize")
    outer.add_edge("finalize", END)
    return outer.compile(checkpointer=checkpointer)


# --- the workload ---------------------------------------------------------------------------

@dataclass
class ThreadPlan:
    index: int
    tid: str
    turns: int
    kind: str  # "ok", "paused" (left in interrupt()), "failed" (a worker raised on the last turn)
    big: bool


def thread_plan(index: int, seed: int) -> ThreadPlan:
    rng = random.Random(_h(seed, index, "thread"))
    r = rng.random()
    kind = "paused" if r < 0.10 else "failed" if r < 0.16 else "ok"
    turns = rng.choice((1, 1, 1, 2, 2, 2, 3))
    big = index % 500 == BIG_RESULT_EVERY  # 5 threads of 2,500
    return ThreadPlan(index, f"rich-{index:06d}", turns, kind, big)


def run_thread(graph, plan: ThreadPlan, seed: int) -> None:
    from langchain_core.messages import HumanMessage
    from langgraph.types import Command

    rng = random.Random(_h(seed, plan.index, "run"))
    config = {"configurable": {"thread_id": plan.tid},
              "metadata": {"user_id": f"user-{plan.index % 997}", "session_type": rng.choice(("chat", "email", "api")),
                           "tenant": f"tenant-{plan.index % 13}", "agent_version": "2025.11.3"}}
    for turn in range(1, plan.turns + 1):
        last = turn == plan.turns
        fails = last and plan.kind == "failed"
        params = {"tid": plan.tid, "turn": turn, "text": rng.randint(30, 180), "worker_text": rng.randint(60, 220),
                  "notes": rng.randint(120, 450), "excerpt": rng.randint(40, 150),
                  "research": rng.random() < RESEARCH_SHARE, "needs_approval": rng.random() < 0.30 or (last and plan.kind == "paused"),
                  "fanout": rng.randint(3, 8) if rng.random() < FANOUT_SHARE or fails else 0}
        if fails:
            params["fail_worker"] = rng.randrange(params["fanout"])
        if last and plan.big:
            params.update(big_final=True, needs_approval=False)
            if plan.index == BIG_RESULT_EVERY:
                params.update(big_result=True, fanout=params["fanout"] or 3)
        question = HumanMessage(content=prose((plan.tid, turn, "q"), rng.randint(30, 180)), id=f"{plan.tid}-h-{turn}")
        state_in: dict[str, Any] = {"messages": [question]}
        if turn == 1:
            state_in.update(user_id=config["metadata"]["user_id"], session_type=config["metadata"]["session_type"])
        try:
            graph.invoke(state_in, config, context=params)
        except SimulatedFailure:
            return  # the thread stays failed: siblings' writes and the error are pending
        if params["needs_approval"] and not (last and plan.kind == "paused"):
            graph.invoke(Command(resume=rng.random() < 0.8), config, context=params)


def _open_saver(path: Path):
    from langgraph.checkpoint.sqlite import SqliteSaver

    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")  # a generated file: durability does not matter
    saver = SqliteSaver(conn)
    saver.setup()
    return conn, saver


def generate_shard(out: Path, indices: range, seed: int) -> None:
    """Run the threads ``indices`` as real graphs into a fresh SqliteSaver file."""
    import logging
    logging.getLogger("langgraph").setLevel(logging.ERROR)  # "unregistered type" warnings for our dataclasses
    conn, saver = _open_saver(out)
    with closing(conn):
        graph = build_graph(saver)
        for i in indices:
            run_thread(graph, thread_plan(i, seed), seed)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _merge(shards: list[Path], out: Path) -> None:
    with closing(sqlite3.connect(shards[0])) as conn:
        conn.execute("PRAGMA journal_mode=DELETE")
    shards[0].replace(out)
    with closing(sqlite3.connect(out, isolation_level=None)) as conn:
        for shard in shards[1:]:
            conn.execute("ATTACH DATABASE ? AS s", (str(shard),))
            conn.execute("BEGIN")
            conn.execute("INSERT INTO checkpoints SELECT * FROM s.checkpoints")
            conn.execute("INSERT INTO writes SELECT * FROM s.writes")
            conn.execute("COMMIT")
            conn.execute("DETACH DATABASE s")
            shard.unlink()


def clone_threads(path: Path, real: int, total: int) -> None:
    """Copies of the real threads under new thread ids until ``total`` threads exist."""
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("BEGIN")
        made, k = real, 1
        while made < total:
            n = min(real, total - made)
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS pick (thread_id TEXT PRIMARY KEY)")
            conn.execute("DELETE FROM pick")
            conn.execute("INSERT INTO pick SELECT DISTINCT thread_id FROM checkpoints WHERE thread_id NOT LIKE '%~%' "
                         "ORDER BY thread_id LIMIT ?", (n,))
            conn.execute("INSERT INTO checkpoints SELECT thread_id || ?, checkpoint_ns, checkpoint_id, parent_checkpoint_id, "
                         "type, checkpoint, metadata FROM checkpoints WHERE thread_id IN (SELECT thread_id FROM pick)", (f"~{k}",))
            conn.execute("INSERT INTO writes SELECT thread_id || ?, checkpoint_ns, checkpoint_id, task_id, task_path, idx, "
                         "channel, type, value FROM writes WHERE thread_id IN (SELECT thread_id FROM pick)", (f"~{k}",))
            made += n
            k += 1
        conn.execute("COMMIT")


def build_rich_source(threads: int = 2500, *, real_threads: int | None = None, seed: int = 11, workers: int = 2,
                      out: Path | None = None, quiet: bool = False) -> Path:
    """The rich-shape file for ``threads`` threads (cached under $TMPDIR). ``real_threads`` of
    them run as real graphs (default: all), the rest are clones of those."""
    real = min(real_threads or threads, threads)
    tag = f"{threads}" if real == threads else f"{threads}-from-{real}"
    cache = out or Path(tempfile.gettempdir()) / f"cpo-bench-rich-v{WORKLOAD_VERSION}-{tag}-s{seed}.sqlite"
    if cache.exists():
        return cache
    if not quiet:
        print(f"generating the rich source: {real:,} threads as real LangGraph runs"
              + (f", cloned to {threads:,}" if real < threads else "") + f" ({workers} processes) ...", flush=True)
    started = time.perf_counter()
    workers = max(1, min(workers, real))
    shards = [cache.with_name(cache.name + f".shard{k}") for k in range(workers)]
    for s in shards:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{s}{suffix}").unlink(missing_ok=True)
    procs = [subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--shard", str(s), str(k), str(workers),
                               str(real), str(seed)], cwd=ROOT) for k, s in enumerate(shards)]
    if any(p.wait() for p in procs):
        raise SystemExit("a generator shard failed")
    tmp = cache.with_name(cache.name + ".partial")
    tmp.unlink(missing_ok=True)
    _merge(shards, tmp)
    if real < threads:
        clone_threads(tmp, real, threads)
    with closing(sqlite3.connect(tmp)) as conn:
        conn.execute("VACUUM")
    tmp.replace(cache)
    if not quiet:
        print(f"  generated in {time.perf_counter() - started:.0f}s: {cache}", flush=True)
    return cache


def describe(path: Path) -> dict:
    with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as conn:
        one = lambda sql: conn.execute(sql).fetchone()[0]  # noqa: E731
        return {
            "threads": one("SELECT COUNT(DISTINCT thread_id) FROM checkpoints"),
            "checkpoints": one("SELECT COUNT(*) FROM checkpoints"),
            "writes": one("SELECT COUNT(*) FROM writes"),
            "size_mb": round(path.stat().st_size / 1e6, 1),
            "namespaces": {"root": one("SELECT COUNT(*) FROM checkpoints WHERE checkpoint_ns = ''"),
                           "level 1": one("SELECT COUNT(*) FROM checkpoints WHERE checkpoint_ns <> '' AND checkpoint_ns NOT LIKE '%|%'"),
                           "level 2": one("SELECT COUNT(*) FROM checkpoints WHERE checkpoint_ns LIKE '%|%'")},
            "avg_checkpoint_bytes": int(one("SELECT AVG(LENGTH(checkpoint)) FROM checkpoints")),
            "max_checkpoint_bytes": one("SELECT MAX(LENGTH(checkpoint)) FROM checkpoints"),
            "rows_over_1mb": one("SELECT (SELECT COUNT(*) FROM checkpoints WHERE LENGTH(checkpoint) > 1000000) + "
                                 "(SELECT COUNT(*) FROM writes WHERE LENGTH(value) > 1000000)"),
            "writes_by_channel": dict(conn.execute("SELECT channel, COUNT(*) FROM writes GROUP BY 1 ORDER BY 2 DESC LIMIT 12")),
            "error_writes": one("SELECT COUNT(*) FROM writes WHERE channel = '__error__'"),
            "interrupt_writes": one("SELECT COUNT(*) FROM writes WHERE channel = '__interrupt__'"),
        }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2500)
    ap.add_argument("--real-threads", type=int, default=None, help="run only this many as real graphs, clone the rest")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--describe", action="store_true", help="print the file's shape")
    ap.add_argument("--shard", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.shard:
        out, k, n, total, seed = args.shard
        generate_shard(Path(out), range(int(k), int(total), int(n)), int(seed))
        return 0
    path = build_rich_source(args.threads, real_threads=args.real_threads, seed=args.seed, workers=args.workers, out=args.out)
    if args.describe:
        import json
        print(json.dumps(describe(path), indent=1))
    print(path)
    return 0


if __name__ == "__main__":
    # Run as the importable module, so the dataclasses pickle/serialise as benchmarks.rich_workload.*
    # (a class defined in __main__ could not be revived by another process).
    from benchmarks import rich_workload

    sys.exit(rich_workload.main())
