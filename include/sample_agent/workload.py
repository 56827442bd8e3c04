"""Fill a checkpoint store with the sample agent's real checkpoints.

Threads are driven through the real graph, so every row is what LangGraph itself wrote.
Ages are real too: each turn runs with the clock moved to its moment (time-machine), so the
checkpoint ``ts`` and the uuid6 checkpoint id both lie in the past. LangGraph's uuid6 never
goes backwards within a process, so turns run in time order, oldest first, across all threads.
"""

from __future__ import annotations

import random
import time
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Iterator

import time_machine
from langgraph.checkpoint.base import id as checkpoint_ids
from langgraph.types import Command

from include.sample_agent.graph import (
    AgentContext,
    SimulatedCrash,
    build_agent_graph,
    start_turn,
    thread_config,
)

SESSION_TYPES = ("support", "onboarding", "billing", "escalation")
QUESTION_TEMPLATES = (
    "Where is my order #{n}? It has been a while.",
    "How do I change the delivery address on order #{n}?",
    "Can you explain the warranty on item {n}?",
    "What is the status of ticket {n}?",
)
SMALL_REFUND = "I would like a refund of ${amount} for order #{n}."
LARGE_REFUND = "Refund ${amount} for order #{n}, the whole shipment arrived broken again."
CANCEL = "Please cancel my subscription {n}."


@dataclass
class WorkloadSpec:
    threads: int = 20
    turns: int = 3
    interrupted: float = 0.1  # fraction of threads left waiting on a human
    crashed: float = 0.05  # fraction of threads whose last turn crashed with pending writes
    min_age_days: float = 0.0
    max_age_days: float = 0.0
    turn_gap_s: float = 90.0  # time between a thread's turns
    payload_bytes: int = 300  # size of the research notes per turn
    seed: int = 7
    thread_prefix: str = "thread"
    with_store: bool = True


@dataclass
class WorkloadResult:
    threads: int = 0
    turns: int = 0
    completed_threads: int = 0
    interrupted_before: list[str] = field(default_factory=list)
    interrupted_dynamic: list[str] = field(default_factory=list)
    crashed: list[str] = field(default_factory=list)
    oldest: str | None = None
    newest: str | None = None
    seconds: float = 0.0

    def summary(self) -> dict:
        d = asdict(self)
        for key in ("interrupted_before", "interrupted_dynamic", "crashed"):
            d[key] = len(d[key])
        return d


@dataclass
class _Thread:
    thread_id: str
    user_id: str
    session_type: str
    start: datetime
    fate: str  # "complete" | "interrupt_before" | "interrupt_dynamic" | "crash"


def _plan(spec: WorkloadSpec, now: datetime, rng: random.Random) -> list[_Thread]:
    span = timedelta(seconds=spec.turn_gap_s * max(spec.turns - 1, 0) + 60)
    n_int = round(spec.threads * spec.interrupted)
    n_crash = round(spec.threads * spec.crashed)
    fates = (["interrupt_before", "interrupt_dynamic"] * n_int)[:n_int] + ["crash"] * n_crash
    fates += ["complete"] * (spec.threads - len(fates))
    rng.shuffle(fates)
    threads = []
    for i in range(spec.threads):
        age = timedelta(days=rng.uniform(spec.min_age_days, spec.max_age_days))
        start = now - max(age, span)  # the whole thread must lie in the past
        threads.append(
            _Thread(
                thread_id=f"{spec.thread_prefix}-{i:06d}",
                user_id=f"user-{rng.randrange(max(spec.threads // 3, 1)):05d}",
                session_type=rng.choice(SESSION_TYPES),
                start=start,
                fate=fates[i],
            )
        )
    return threads


def _request(rng: random.Random, last: bool, fate: str) -> str:
    n = rng.randrange(10_000, 99_999)
    if last and fate == "interrupt_dynamic":
        return LARGE_REFUND.format(amount=rng.randrange(150, 900), n=n)
    if last and fate == "interrupt_before":
        return SMALL_REFUND.format(amount=rng.randrange(5, 90), n=n)
    roll = rng.random()
    if roll < 0.55:
        return rng.choice(QUESTION_TEMPLATES).format(n=n)
    if roll < 0.75:
        return SMALL_REFUND.format(amount=rng.randrange(5, 90), n=n)
    if roll < 0.9:
        return LARGE_REFUND.format(amount=rng.randrange(150, 900), n=n)
    return CANCEL.format(n=n)


def _run_turn(graph, t: _Thread, text: str, last: bool, spec: WorkloadSpec, rng: random.Random) -> str:
    """Drive one user request to the state its fate asks for; return the state it ended in."""
    config = thread_config(t.thread_id, t.user_id, t.session_type)
    crash_here = last and t.fate == "crash"
    ctx = AgentContext(crash_at="check_policy" if crash_here else None, payload_bytes=spec.payload_bytes)
    try:
        start_turn(graph, config, t.user_id, text, ctx)
    except SimulatedCrash:
        return "crash"
    ctx = AgentContext(payload_bytes=spec.payload_bytes)
    for _ in range(3):  # static interrupt, then at most one dynamic interrupt
        snapshot = graph.get_state(config)
        if not snapshot.next:
            return "complete"
        if last and t.fate == "interrupt_before" and snapshot.next == ("execute_action",) and not snapshot.interrupts:
            return "interrupt_before"
        if snapshot.interrupts:
            if last and t.fate == "interrupt_dynamic":
                return "interrupt_dynamic"
            graph.invoke(Command(resume=rng.choice(["approve", "approve", "decline"])), config, context=ctx)
        else:
            graph.invoke(None, config, context=ctx)
    return "complete" if not graph.get_state(config).next else "stuck"


@contextmanager
def _clock_at(moment: datetime | None) -> Iterator[None]:
    if moment is None:
        yield
        return
    with time_machine.travel(moment, tick=True):
        yield


def _allow_past_ids() -> None:
    """Let uuid6 produce ids in the past for the new threads this run creates.

    LangGraph's uuid6 keeps a process-wide "last timestamp" and never issues an id below it,
    so after any real-time checkpoint in this process, past-dated ids would silently become
    "now". Lowering the guard is safe here: only brand-new threads get past ids (``generate``
    refuses existing thread ids), and every later real-time id is above them anyway.
    """
    checkpoint_ids._last_v6_timestamp = None


def generate(checkpointer, spec: WorkloadSpec, store=None, *, now: datetime | None = None, progress=None) -> WorkloadResult:
    """Run the workload against any BaseCheckpointSaver (and optional BaseStore)."""
    rng = random.Random(spec.seed)
    real_now = datetime.now(timezone.utc)
    now = now or real_now
    graph = build_agent_graph(checkpointer, store if spec.with_store else None)
    threads = _plan(spec, now, rng)
    taken = [t.thread_id for t in threads if checkpointer.get_tuple({"configurable": {"thread_id": t.thread_id}})]
    if taken:
        raise ValueError(
            f"{len(taken)} thread ids already exist in this store (first: {taken[0]}); "
            "pick another thread_prefix so generated history never mixes with existing threads."
        )
    _allow_past_ids()
    events = sorted(
        ((t.start + timedelta(seconds=spec.turn_gap_s * k), k, t) for t in threads for k in range(spec.turns)),
        key=lambda e: (e[0], e[2].thread_id),
    )
    result = WorkloadResult(threads=len(threads))
    started = time.perf_counter()
    ended: dict[str, str] = {}
    travel = spec.max_age_days > 0 or spec.min_age_days > 0
    for n, (moment, k, t) in enumerate(events, 1):
        last = k == spec.turns - 1
        text = _request(rng, last, t.fate)
        # Leave a minute of margin: the clock ticks while a turn runs, and uuid6 must keep rising.
        with ExitStack() as stack:
            if travel and moment < real_now - timedelta(minutes=1):
                stack.enter_context(_clock_at(moment))
            state = _run_turn(graph, t, text, last, spec, rng)
        result.turns += 1
        if last:
            ended[t.thread_id] = state
        if progress and n % 200 == 0:
            progress(n, len(events))
    result.seconds = round(time.perf_counter() - started, 3)
    for tid, state in ended.items():
        if state == "complete":
            result.completed_threads += 1
        elif state == "interrupt_before":
            result.interrupted_before.append(tid)
        elif state == "interrupt_dynamic":
            result.interrupted_dynamic.append(tid)
        elif state == "crash":
            result.crashed.append(tid)
    if events:
        result.oldest = events[0][0].isoformat()
        result.newest = events[-1][0].isoformat()
    return result
