"""The hot tier's checkpointer against the official one: RedisRowSaver vs RedisSaver, same run.

    python benchmarks/hot_tier.py [--threads 50] [--turns 12] [--reads 3] [--replay-share 0.5]

- RedisRowSaver (include/checkpoint_core/tiering/hot.py): PostgresSaver's rows in plain Redis
  hashes, one Lua script per operation; runs on a plain ``redis-server`` from PATH.
- RedisSaver (``langgraph-checkpoint-redis``, ``from langgraph.checkpoint.redis import
  RedisSaver``): RedisJSON documents indexed by RediSearch; runs on Valkey 9.1 with Redis Stack's
  modules (scripts/redis_stack_server.sh; packages: benchmarks/requirements-redis-stack.txt).

Both servers are started by this script on free ports of 127.0.0.1 (never 6379), with no
persistence, and stopped at the end. ``--row-server valkey`` runs RedisRowSaver on a second
Valkey+modules instance instead, so that only the savers differ. If the RedisSaver side cannot start, the reason is printed
and only the RedisRowSaver half runs.

The workload is real LangGraph runs, the savers as the graphs' checkpointers: N threads x M turns
of an agent-shaped StateGraph (no LLM, every value derived from the thread and turn, so both runs
store the same content): a ``messages`` channel (add_messages; Human, AI with tool calls, Tool
messages), a profile, tool-call records (a dataclass), scores, a budget counter, a summary;
1-3 parallel tool calls per turn through ``Send``; a research subgraph (checkpoints under
``research:<task id>``) on ~40% of turns; and a 2 MB ``bytes`` attachment that arrives mid-thread
in every 25th thread and stays in the state. Defaults: 50 x 12, about 5K checkpoints, about 1.5
minutes in all on an idle 2-core machine.

Phases, each on both savers (threads interleaved, so load drift hits both alike):
1. app: ``graph.invoke`` per turn, end to end (what the app feels); INFO used_memory before and
   after (the savers' connections closed first: a 2 MB value leaves its size in a client buffer)
   gives the memory per checkpoint stored. RedisRowSaver's put/put_writes calls are recorded, and
   each call of both savers is timed (the graph makes them from its background thread).
2. reads on what phase 1 stored: ``get_tuple`` of each thread's latest checkpoint, ``--reads``
   rounds; ``list`` of each whole thread (every namespace, as both savers' ``list(thread)`` do).
   RedisSaver 0.5.2's list() leaves channel values as stored (messages as LangChain constructor
   dicts; only its get_tuple revives them), so a second list line adds, for it, the reviving call
   its get_tuple makes, on every 2nd thread: that is a list giving the app its objects back.
3. equivalence: ``graph.get_state`` of every thread from both savers must be equal (values, next,
   step), and both must list the same number of checkpoints per thread; the channel values of
   list() are compared checkpoint by checkpoint on 5 threads. A float mismatch is checked against
   a rerun on InMemorySaver (which side changed the value) and a RedisJSON round-trip probe.
4. put replay: both servers flushed, the recorded calls of the first ``--replay-share`` of the
   threads (half by default, which holds one of the 2 MB threads) replayed into both savers serially
   with no graph around them, each call timed: put throughput (checkpoints/s), put_writes (calls/s),
   and used_memory again on identical input.

Memory: used_memory is what the server holds. The "MEMORY USAGE summed over keys" line is there to
show why RedisSaver's inline copies of every channel value in every checkpoint cost less than they
seem: RedisJSON interns strings, so an unchanged message or the 2 MB attachment (a base64 string)
repeated in 50 documents is stored once, while MEMORY USAGE counts it in each document.
"""

from __future__ import annotations

import argparse
import logging
import operator
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypedDict

ROOT = Path(__file__).resolve().parent.parent
for _path in (str(ROOT), str(ROOT / "benchmarks")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from rich_workload import _h, big_bytes, prose  # noqa: E402  (the same deterministic content helpers)

BIG_VALUE_BYTES = 2 * 1024 * 1024
BIG_EVERY = 25  # threads i % 25 == 7 get the 2 MB attachment at turn M // 2
RESEARCH_SHARE = 0.4
TOOLS = ("lookup_order", "search_kb", "get_invoice", "track_shipment", "check_quota")


# --- the agent graph ------------------------------------------------------------------------

@dataclass
class ToolCallRecord:
    tool: str
    args: dict[str, Any]
    latency_ms: int
    ok: bool


def merge_scores(a: dict | None, b: dict | None) -> dict:
    return {**(a or {}), **(b or {})}


def _add_messages():
    from langgraph.graph.message import add_messages
    return add_messages


class AgentState(TypedDict, total=False):
    messages: Annotated[list, _add_messages()]
    user_id: str
    turn: int
    profile: dict
    query: str
    tool_log: Annotated[list[ToolCallRecord], operator.add]
    scores: Annotated[dict[str, float], merge_scores]
    budget_used: Annotated[float, operator.add]
    notes: str
    summary: str
    attachment: bytes | None


class ResearchIn(TypedDict, total=False):
    query: str


class ResearchOut(TypedDict, total=False):
    notes: str


class ResearchState(ResearchIn, ResearchOut, total=False):
    sources: list[str]
    excerpts: list[str]


def _tid(config) -> str:
    return config["configurable"]["thread_id"]


def intake(state: AgentState, config) -> dict:
    from langchain_core.messages import HumanMessage

    tid, turn = _tid(config), state["turn"]
    rng = random.Random(_h(tid, turn, "in"))
    out: dict[str, Any] = {
        "messages": [HumanMessage(content=prose((tid, turn, "q"), rng.randint(40, 400)), id=f"{tid}-h-{turn}")],
        "query": prose((tid, turn, "query"), 60),
    }
    if "profile" not in state:
        h = _h(tid)
        out["user_id"] = f"user-{h % 997}"
        out["profile"] = {"tier": ("free", "pro", "team")[h % 3], "locale": ("en-US", "de-DE", "ja-JP")[h % 3],
                          "lifetime_value": round((h % 100_000) / 7.0, 2), "tags": [WORDS[(h >> k) % 24] for k in range(3)],
                          "flags": {"vip": h % 11 == 0, "beta": h % 3 == 0}}
    return out


def agent(state: AgentState, config) -> dict:
    from langchain_core.messages import AIMessage

    tid, turn = _tid(config), state["turn"]
    rng = random.Random(_h(tid, turn, "agent"))
    calls = [{"name": TOOLS[rng.randrange(len(TOOLS))], "args": {"q": prose((tid, turn, i), 30), "k": rng.randint(1, 9)},
              "id": f"call-{tid}-{turn}-{i}", "type": "tool_call"} for i in range(rng.randint(1, 3))]
    msg = AIMessage(content=prose((tid, turn, "think"), rng.randint(20, 200)), id=f"{tid}-ai-tools-{turn}",
                    tool_calls=calls, response_metadata={"model": "sim-1", "finish_reason": "tool_calls"},
                    usage_metadata={"input_tokens": 900 + 40 * turn, "output_tokens": 60, "total_tokens": 960 + 40 * turn})
    return {"messages": [msg]}


def fan_out(state: AgentState):
    from langgraph.types import Send

    calls = state["messages"][-1].tool_calls
    return [Send("tool", {"call": c, "turn": state["turn"]}) for c in calls]


def tool(arg: dict, config) -> dict:
    from langchain_core.messages import ToolMessage

    call, turn, tid = arg["call"], arg["turn"], _tid(config)
    rng = random.Random(_h(tid, call["id"]))
    text = prose((tid, call["id"], "out"), rng.randint(200, 1500))
    return {"messages": [ToolMessage(content=text, tool_call_id=call["id"], id=f"{tid}-tool-{call['id']}", name=call["name"])],
            "tool_log": [ToolCallRecord(tool=call["name"], args=call["args"], latency_ms=rng.randint(20, 900), ok=True)],
            "budget_used": 0.001 * len(text) / 100}


def route_after_tools(state: AgentState, config) -> str:
    return "research" if random.Random(_h(_tid(config), state["turn"], "r")).random() < RESEARCH_SHARE else "respond"


def gather(state: ResearchState) -> dict:
    q = state.get("query", "")
    return {"sources": [f"kb://{WORDS[_h(q, i) % 24]}/{_h(q, i) % 10_000}" for i in range(2 + _h(q) % 4)]}


def extract(state: ResearchState) -> dict:
    return {"excerpts": [prose((s, "ex"), 150) for s in state.get("sources", [])]}


def write_notes(state: ResearchState) -> dict:
    return {"notes": f"[{len(state.get('sources', []))} sources] " + " / ".join(state.get("excerpts", []))[:1200]}


def respond(state: AgentState, config) -> dict:
    from langchain_core.messages import AIMessage

    tid, turn = _tid(config), state["turn"]
    rng = random.Random(_h(tid, turn, "answer"))
    out: dict[str, Any] = {
        "messages": [AIMessage(content=prose((tid, turn, "answer"), rng.randint(100, 900)), id=f"{tid}-ai-{turn}",
                               response_metadata={"model": "sim-1", "finish_reason": "stop"})],
        "scores": {f"t{turn}": round(rng.random(), 4)},
    }
    if turn % 3 == 0:
        out["summary"] = prose((tid, turn, "summary"), 400)
    return out


def build_graph(checkpointer):
    from langgraph.graph import END, START, StateGraph

    research = StateGraph(ResearchState, input_schema=ResearchIn, output_schema=ResearchOut)
    research.add_node("gather", gather)
    research.add_node("extract", extract)
    research.add_node("write_notes", write_notes)
    research.add_edge(START, "gather")
    research.add_edge("gather", "extract")
    research.add_edge("extract", "write_notes")
    research.add_edge("write_notes", END)

    g = StateGraph(AgentState)
    g.add_node("intake", intake)
    g.add_node("agent", agent)
    g.add_node("tool", tool)
    g.add_node("research", research.compile())
    g.add_node("respond", respond)
    g.add_edge(START, "intake")
    g.add_edge("intake", "agent")
    g.add_conditional_edges("agent", fan_out, ["tool"])
    g.add_conditional_edges("tool", route_after_tools, ["research", "respond"])
    g.add_edge("research", "respond")
    g.add_edge("respond", END)
    return g.compile(checkpointer=checkpointer)


def thread_ids(n: int) -> list[str]:
    return [f"bench-{i:04d}" for i in range(n)]


def run_turn(graph, tid: str, index: int, turn: int, turns: int) -> float:
    """One graph.invoke (one user turn), seconds."""
    state_in: dict[str, Any] = {"turn": turn}
    if index % BIG_EVERY == 7 and turn == turns // 2:
        state_in["attachment"] = big_bytes(tid, BIG_VALUE_BYTES)
    t0 = time.perf_counter()
    graph.invoke(state_in, {"configurable": {"thread_id": tid}})
    return time.perf_counter() - t0


# --- servers --------------------------------------------------------------------------------

def free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port != 6379:
            return port


class Server:
    """A server process this script started (stopped by its pid only)."""

    def __init__(self, name: str, argv: list[str], port: int, log: Path):
        self.name, self.port, self.log = name, port, log
        self.url = f"redis://127.0.0.1:{port}/0"
        self.proc = subprocess.Popen(argv, stdout=log.open("wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def wait_ready(self, timeout: float = 15.0) -> None:
        import redis

        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with code {self.proc.returncode}:\n{self.log_tail()}")
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name} did not answer PING on port {self.port} in {timeout:.0f}s:\n"
                                       f"{self.log_tail()}") from None
                time.sleep(0.05)
            finally:
                client.close()

    def log_tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def info(self) -> str:
        import redis

        with redis.Redis(port=self.port) as c:
            i = c.info("server")
        return f"{i.get('server_name', 'redis')} {i.get('valkey_version') or i['redis_version']}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_plain(tmp: Path) -> Server:
    exe = shutil.which("redis-server")
    if not exe:
        raise RuntimeError("no redis-server on PATH (apt-get install redis-server)")
    port = free_port()
    s = Server("redis-server", [exe, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
                                "--dir", str(tmp)], port, tmp / "plain.log")
    s.wait_ready()
    return s


def start_stack(tmp: Path, log: str = "stack.log") -> Server:
    port = free_port()
    script = ROOT / "scripts" / "redis_stack_server.sh"
    env_python = os.environ.get("PYTHON") or sys.executable
    s = Server("valkey+modules", ["env", f"PYTHON={env_python}", "bash", str(script), str(port), "--dir", str(tmp)],
               port, tmp / log)
    s.wait_ready()
    import redis

    with redis.Redis(port=port) as c:
        names = {m[b"name"].decode().lower() for m in c.module_list()}
    if not {"rejson", "search"} <= names:
        s.stop()
        raise RuntimeError(f"server on port {port} lacks RedisJSON/RediSearch (modules: {sorted(names)})")
    return s


def used_memory(server: Server) -> int:
    import redis

    with redis.Redis(port=server.port) as c:
        return int(c.info("memory")["used_memory"])


def memory_usage_sum(server: Server) -> int:
    """Sum of MEMORY USAGE over every key (RedisJSON reports each document as if it shared nothing)."""
    import redis

    total = 0
    with redis.Redis(port=server.port) as c:
        keys = list(c.scan_iter(count=1000))
        for start in range(0, len(keys), 500):
            pipe = c.pipeline(transaction=False)
            for k in keys[start:start + 500]:
                pipe.memory_usage(k, samples=0)
            total += sum(m or 0 for m in pipe.execute())
    return total


def settled_memory(sides: list[Side]) -> list[int]:
    """used_memory of each side's server once the savers' connections are closed: a 2 MB value
    leaves its size in a client's query or output buffer, which is not what the store holds."""
    for s in sides:
        client = getattr(s.saver, "client", None) or getattr(s.saver, "_redis")
        client.connection_pool.disconnect()
    time.sleep(0.2)
    return [used_memory(s.server) for s in sides]


def json_float_probe(server: Server) -> str:
    """Does RedisJSON give back the double it was given? (Python's repr is the shortest exact one.)"""
    import json
    import math

    import redis

    value = math.nextafter(0.09867, 1.0)  # 0.09867000000000001, as a sum of floats gives it
    with redis.Redis(port=server.port) as c:
        c.execute_command("JSON.SET", "bench:float-probe", "$", json.dumps([value]))
        back = json.loads(c.execute_command("JSON.GET", "bench:float-probe", "$"))[0][0]
        c.delete("bench:float-probe")
    verdict = "exact" if back == value else "NOT exact"
    return f"probe: JSON.SET [{value!r}] then JSON.GET gives [{back!r}] ({verdict}) on this server's RedisJSON"


def dbsize(server: Server) -> int:
    import redis

    with redis.Redis(port=server.port) as c:
        return int(c.dbsize())


def flushall(server: Server) -> None:
    import redis

    with redis.Redis(port=server.port) as c:
        c.execute_command("FLUSHALL", "SYNC")  # Valkey 8+ flushes lazily by default: memory would lag


# --- savers ---------------------------------------------------------------------------------

class Recorder:
    """Wraps a saver's put/put_writes on the instance: records the calls and times each one."""

    def __init__(self, saver, record: bool):
        self.saver, self.calls, self.put_s, self.writes_s = saver, [], [], []
        put, put_writes = saver.put, saver.put_writes

        def timed_put(config, checkpoint, metadata, new_versions):
            t0 = time.perf_counter()
            out = put(config, checkpoint, metadata, new_versions)
            self.put_s.append(time.perf_counter() - t0)
            if record:
                self.calls.append(("put", (config, checkpoint, metadata, new_versions)))
            return out

        def timed_put_writes(config, writes, task_id, task_path=""):
            t0 = time.perf_counter()
            put_writes(config, writes, task_id, task_path)
            self.writes_s.append(time.perf_counter() - t0)
            if record:
                self.calls.append(("put_writes", (config, list(writes), task_id, task_path)))

        saver.put, saver.put_writes = timed_put, timed_put_writes

    def unwrap(self) -> None:
        del self.saver.put, self.saver.put_writes


def make_row_saver(server: Server):
    import redis

    from include.checkpoint_core.tiering.hot import RedisRowSaver

    saver = RedisRowSaver(redis.Redis.from_url(server.url), prefix="bench")
    saver.setup()
    return saver


def make_redis_saver(server: Server):
    from langgraph.checkpoint.redis import RedisSaver

    saver = RedisSaver(redis_url=server.url)
    saver.setup()
    return saver


# --- measurement ----------------------------------------------------------------------------

def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


@dataclass
class Side:
    name: str
    server: Server
    make: Any
    saver: Any = None
    graph: Any = None
    rec: Recorder | None = None
    invoke_s: list | None = None
    mem_app: int = 0
    mem_keys: int = 0
    checkpoints: int = 0
    writes_calls: int = 0
    get_s: list | None = None
    list_s: list | None = None
    list_counts: dict | None = None
    list_decoded_s: list | None = None
    decode_values: Any = None  # for a saver whose list() leaves channel values undecoded
    replay: dict | None = None
    error: str | None = None


def phase_app(sides: list[Side], tids: list[str], turns: int) -> None:
    for s in sides:
        s.saver = s.make(s.server)
        if s.decode_values == "redis":
            s.decode_values = redis_saver_decoder(s.saver)
        s.graph = build_graph(s.saver)
        s.rec = Recorder(s.saver, record=(s is sides[0]))
        s.invoke_s = []
    for s, m in zip(sides, settled_memory(sides)):
        s.mem_app = -m
    for i, tid in enumerate(tids):
        order = sides if i % 2 == 0 else sides[::-1]
        for s in order:
            for turn in range(1, turns + 1):
                s.invoke_s.append(run_turn(s.graph, tid, i, turn, turns))
    for s, m in zip(sides, settled_memory(sides)):
        s.mem_app += m
        s.mem_keys = memory_usage_sum(s.server)
        s.checkpoints, s.writes_calls = len(s.rec.put_s), len(s.rec.writes_s)


def phase_reads(sides: list[Side], tids: list[str], rounds: int) -> None:
    for s in sides:
        s.rec.unwrap()
        s.get_s, s.list_s, s.list_decoded_s, s.list_counts = [], [], [], {}
    for r in range(rounds):
        for s in (sides if r % 2 == 0 else sides[::-1]):
            for tid in tids:
                t0 = time.perf_counter()
                got = s.saver.get_tuple({"configurable": {"thread_id": tid, "checkpoint_ns": ""}})
                s.get_s.append(time.perf_counter() - t0)
                assert got is not None, (s.name, tid)
    for i, tid in enumerate(tids):
        for s in (sides if i % 2 == 0 else sides[::-1]):
            t0 = time.perf_counter()
            items = list(s.saver.list({"configurable": {"thread_id": tid}}))
            t1 = time.perf_counter()
            s.list_s.append(t1 - t0)
            s.list_counts[tid] = len(items)
            if i % 2 == 0:  # every 2nd thread (it holds 2 MB threads too): reviving is slow, the run short
                if s.decode_values is not None:
                    for item in items:
                        s.decode_values(item.checkpoint["channel_values"])
                s.list_decoded_s.append(time.perf_counter() - t0)


def redis_saver_decoder(saver):
    """RedisSaver.list (0.5.2) returns channel values as stored: LangChain messages as
    ``{"lc": 1, "type": "constructor", ...}`` dicts, dataclasses and Sends as dicts (its get_tuple
    revives them with ``_deserialize_channel_values``; list never calls it). Timing list plus that
    call is what a list giving the app its objects back would cost."""
    return saver._deserialize_channel_values


def close_floats(a: Any, b: Any) -> bool:
    """Equal but for floats that differ in the last digits."""
    import math

    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-12)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close_floats(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(close_floats(x, y) for x, y in zip(a, b))
    return a == b


def phase_equivalence(a: Side, b: Side, tids: list[str], turns: int) -> None:
    """Print whether the latest state of every thread is the same through both savers."""
    exact, floats, other = [], [], []
    for i, tid in enumerate(tids):
        cfg = {"configurable": {"thread_id": tid}}
        sa, sb = a.graph.get_state(cfg), b.graph.get_state(cfg)
        problems = []
        float_only = False
        if sa.values != sb.values:
            keys = sorted(set(sa.values) | set(sb.values))
            diff = [k for k in keys if sa.values.get(k) != sb.values.get(k)]
            detail = "; ".join(f"{k}: {_short(sa.values.get(k))} != {_short(sb.values.get(k))}" for k in diff[:3])
            float_only = all(close_floats(sa.values.get(k), sb.values.get(k)) for k in diff)
            problems.append(f"{'floats differ in the last digits' if float_only else 'values differ'} in "
                            f"{diff}: {detail}")
        if sa.next != sb.next:
            problems.append(f"next {sa.next} != {sb.next}")
        if (sa.metadata or {}).get("step") != (sb.metadata or {}).get("step"):
            problems.append(f"step {sa.metadata.get('step')} != {sb.metadata.get('step')}")
        if a.list_counts[tid] != b.list_counts[tid]:
            problems.append(f"list() gives {a.list_counts[tid]} checkpoints on {a.name}, {b.list_counts[tid]} on {b.name}")
        if not problems:
            exact.append(tid)
        elif float_only and len(problems) == 1:
            floats.append((i, tid, problems[0]))
        else:
            other.append(f"{tid}: " + "; ".join(problems))
    sample = [t for i, t in enumerate(tids) if i % BIG_EVERY != 7][:5]
    undecoded, compared, differ = 0, 0, []
    for tid in sample:
        la = list(a.saver.list({"configurable": {"thread_id": tid}}))
        lb = list(b.saver.list({"configurable": {"thread_id": tid}}))
        for x, y in zip(la, lb):
            compared += 1
            vx, vy = x.checkpoint["channel_values"], y.checkpoint["channel_values"]
            if vx != vy:
                if b.decode_values is not None and close_floats(vx, b.decode_values(vy)):
                    undecoded += 1
                else:
                    differ.append(f"{tid} {x.config['configurable']['checkpoint_ns'] or '(root)'}: "
                                  + ", ".join(k for k in vx if vx[k] != vy.get(k)))
    print(f"list() channel values on {len(sample)} threads, {compared} checkpoints: "
          f"{compared - undecoded - len(differ)} equal, {undecoded} equal only once {b.name}'s undecoded values "
          f"are revived ({b.name}.list returns messages as {{'lc': 1, 'type': 'constructor', ...}} dicts), "
          f"{len(differ)} differ otherwise" + (": " + "; ".join(differ[:3]) if differ else ""))
    print(f"equivalence (graph.get_state values, next, step; list() counts), {len(tids)} threads: "
          f"{len(exact)} identical, {len(floats)} differ only in the last digits of a float, {len(other)} differ otherwise")
    for line in other[:10]:
        print("  DIFFERENT " + line)
    if floats:
        for _, tid, line in floats[:3]:
            print(f"  {tid}: {line}")
        # Which side kept the float the graph computed? Rerun one such thread on InMemorySaver.
        from langgraph.checkpoint.memory import InMemorySaver

        i, tid, _ = floats[0]
        ref = build_graph(InMemorySaver())
        for turn in range(1, turns + 1):
            run_turn(ref, tid, i, turn, turns)
        cfg = {"configurable": {"thread_id": tid}}
        want = ref.get_state(cfg).values
        for side in (a, b):
            got = side.graph.get_state(cfg).values
            bad = [k for k in want if want[k] != got.get(k)]
            print(f"  reference run of {tid} on InMemorySaver: {side.name} "
                  + ("gives back exactly the graph's values" if not bad else f"differs in {bad}: "
                     + "; ".join(f"{k} {_short(got.get(k))} instead of {_short(want[k])}" for k in bad)))
        print("  " + json_float_probe(b.server))


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) < 160 else r[:150] + f"...({len(r)} chars)"


def phase_replay(sides: list[Side], calls: list) -> None:
    """Flush each server, replay the recorded calls serially; interleaved in chunks of 500 calls."""
    for s in sides:
        flushall(s.server)
        s.saver = s.make(s.server)  # recreates RedisSaver's indexes
        s.replay = {"put": [], "put_writes": []}
    for s, m in zip(sides, settled_memory(sides)):
        s.replay["mem"] = -m
    chunk = 500
    for n, start in enumerate(range(0, len(calls), chunk)):
        for s in (sides if n % 2 == 0 else sides[::-1]):
            put, put_writes = s.saver.put, s.saver.put_writes
            tp, tw = s.replay["put"], s.replay["put_writes"]
            for kind, args in calls[start:start + chunk]:
                t0 = time.perf_counter()
                if kind == "put":
                    put(*args)
                    tp.append(time.perf_counter() - t0)
                else:
                    put_writes(*args)
                    tw.append(time.perf_counter() - t0)
    for s, m in zip(sides, settled_memory(sides)):
        s.replay["mem"] += m


# --- report ---------------------------------------------------------------------------------

def fmt(v: float, unit: str) -> str:
    if v != v:
        return "-"
    if unit == "ms":
        return f"{v * 1000:.2f} ms"
    if unit == "/s":
        return f"{v:,.0f}/s"
    if unit == "B":
        return f"{v / 1024:,.1f} KiB"
    return f"{v:,.2f}"


def report(sides: list[Side], args, load0, wall: float) -> None:
    rows: list[tuple[str, str, bool, list[float]]] = []  # label, unit, higher is better, per-side values

    def row(label, unit, higher, fn):
        rows.append((label, unit, higher, [fn(s) for s in sides]))

    row("graph.invoke per turn p50", "ms", False, lambda s: pct(s.invoke_s, 50))
    row("graph.invoke per turn p99", "ms", False, lambda s: pct(s.invoke_s, 99))
    row("graph.invoke turns/s (serial)", "/s", True, lambda s: len(s.invoke_s) / sum(s.invoke_s))
    row("put in the graph run p50", "ms", False, lambda s: pct(s.rec.put_s, 50))
    row("put_writes in the graph run p50", "ms", False, lambda s: pct(s.rec.writes_s, 50))
    row("put replay: checkpoints/s", "/s", True, lambda s: len(s.replay["put"]) / sum(s.replay["put"]))
    row("put replay p50", "ms", False, lambda s: pct(s.replay["put"], 50))
    row("put replay p99", "ms", False, lambda s: pct(s.replay["put"], 99))
    row("put_writes replay: calls/s", "/s", True, lambda s: len(s.replay["put_writes"]) / sum(s.replay["put_writes"]))
    row("put_writes replay p50", "ms", False, lambda s: pct(s.replay["put_writes"], 50))
    row("get_tuple latest p50", "ms", False, lambda s: pct(s.get_s, 50))
    row("get_tuple latest p99", "ms", False, lambda s: pct(s.get_s, 99))
    row("list(thread) p50", "ms", False, lambda s: pct(s.list_s, 50))
    row("list(thread) p99", "ms", False, lambda s: pct(s.list_s, 99))
    row("list + decoding, every 2nd thread p50", "ms", False, lambda s: pct(s.list_decoded_s, 50))
    row("list + decoding, every 2nd thread p99", "ms", False, lambda s: pct(s.list_decoded_s, 99))
    row("used_memory / checkpoint (app run)", "B", False, lambda s: s.mem_app / max(1, s.checkpoints))
    row("used_memory / checkpoint (replay)", "B", False, lambda s: s.replay["mem"] / max(1, len(s.replay["put"])))
    row("MEMORY USAGE summed over keys / ckpt", "B", False, lambda s: s.mem_keys / max(1, s.checkpoints))

    names = [s.name for s in sides]
    w = 36
    head = f"{'metric':<{w}}" + "".join(f"{n:>18}" for n in names)
    if len(sides) == 2:
        head += f"{'Row / RedisSaver':>18}   better"
    print(head)
    print("-" * len(head))
    for label, unit, higher, vals in rows:
        line = f"{label:<{w}}" + "".join(f"{fmt(v, unit):>18}" for v in vals)
        if len(sides) == 2:
            a, b = vals
            ratio = a / b if b else float("nan")
            if higher:
                win, x = (names[0], a / b) if a >= b else (names[1], b / a)
            else:
                win, x = (names[0], b / a) if a <= b else (names[1], a / b)
            line += f"{ratio:>18.2f}   {win} {x:.1f}x"
        print(line)
    print()
    for s in sides:
        print(f"{s.name}: {s.server.info()} on 127.0.0.1:{s.server.port}; {s.checkpoints:,} checkpoints and "
              f"{s.writes_calls:,} put_writes calls in the app run, {len(s.invoke_s):,} invokes; "
              f"{dbsize(s.server):,} keys after the replay")
    print(f"\nwall {wall:.1f}s; load average (1/5/15 min) at start {load0[0]:.2f}/{load0[1]:.2f}/{load0[2]:.2f}, "
          f"at end " + "/".join(f"{x:.2f}" for x in os.getloadavg()) + f"; {os.cpu_count()} CPUs")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=50)
    parser.add_argument("--turns", type=int, default=12)
    parser.add_argument("--reads", type=int, default=3, help="rounds of get_tuple over every thread")
    parser.add_argument("--row-server", choices=("redis", "valkey"), default="redis",
                        help="RedisRowSaver's server: the plain redis-server from PATH (default), or a second "
                             "Valkey+modules instance like RedisSaver's, to take the server out of the comparison")
    parser.add_argument("--replay-share", type=float, default=0.5,
                        help="share of the threads (the first ones) whose put/put_writes calls are replayed")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    for noisy in ("langgraph", "redisvl", "langgraph.checkpoint.redis"):
        logging.getLogger(noisy).setLevel(logging.ERROR)

    load0 = os.getloadavg()
    t_start = time.perf_counter()
    tids = thread_ids(args.threads)
    print(f"workload: {args.threads} threads x {args.turns} turns; 2 MB attachment in "
          f"{sum(1 for i in range(args.threads) if i % BIG_EVERY == 7)} threads; "
          f"load average {load0[0]:.2f} on {os.cpu_count()} CPUs", flush=True)
    servers: list[Server] = []
    with tempfile.TemporaryDirectory(prefix="hot-tier-bench-") as tmp_s:
        tmp = Path(tmp_s)
        try:
            plain = start_plain(tmp) if args.row_server == "redis" else start_stack(tmp, "row.log")
            servers.append(plain)
            sides = [Side("RedisRowSaver", plain, make_row_saver)]
            try:
                stack = start_stack(tmp)
                servers.append(stack)
                make_redis_saver(stack)  # fails here if the package or the modules are unusable
                flushall(stack)
                sides.append(Side("RedisSaver", stack, make_redis_saver))
                sides[-1].decode_values = "redis"
            except Exception as exc:  # noqa: BLE001 - reported, the RowSaver half still runs
                print(f"RedisSaver NOT measured: {type(exc).__name__}: {exc}\n"
                      f"(needs: .venv/bin/pip install -r benchmarks/requirements-redis-stack.txt -c constraints.txt)",
                      flush=True)

            t0 = time.perf_counter()
            phase_app(sides, tids, args.turns)
            print(f"app run: {time.perf_counter() - t0:.1f}s", flush=True)
            t0 = time.perf_counter()
            phase_reads(sides, tids, args.reads)
            print(f"reads: {time.perf_counter() - t0:.1f}s", flush=True)
            if len(sides) == 2:
                phase_equivalence(sides[0], sides[1], tids, args.turns)
            replay_tids = set(tids[:max(1, round(len(tids) * args.replay_share))])
            calls = [c for c in sides[0].rec.calls if c[1][0]["configurable"]["thread_id"] in replay_tids]
            t0 = time.perf_counter()
            phase_replay(sides, calls)
            print(f"replay of {len(calls):,} calls ({len(replay_tids)} threads): {time.perf_counter() - t0:.1f}s\n",
                  flush=True)
            report(sides, args, load0, time.perf_counter() - t_start)
        finally:
            for s in servers:
                s.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
