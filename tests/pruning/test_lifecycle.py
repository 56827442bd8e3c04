"""Pruning over time and under load: steady state, long-lived threads, DeltaChannel, a live writer."""

from __future__ import annotations

import operator
import threading
from datetime import datetime, timedelta, timezone
from typing import Annotated, TypedDict

import time_machine
from langgraph.channels.delta import DeltaChannel
from langgraph.graph import END, START, StateGraph

from include.checkpoint_core.pruning import PrunePolicy, prune_store
from include.sample_agent.workload import _allow_past_ids
from tests.pruning.conftest import open_saver
from tests.pruning.helpers import old_non_heads, query, thread_ids


class Notes(TypedDict, total=False):
    notes: Annotated[list, operator.add]
    last: str


class Flat(TypedDict, total=False):
    notes: list  # replaced each turn: a thread's state stays the same size however long it lives
    last: str


def _fold(state, writes):
    return (state or []) + [x for w in writes for x in (w if isinstance(w, list) else [w])]


class DeltaNotes(TypedDict, total=False):
    notes: Annotated[list, DeltaChannel(_fold, snapshot_frequency=50)]
    last: str


def _graph(saver, state=Notes):
    def write(s):
        n = len(s.get("notes") or [])
        return {"notes": [f"note {n} " + "x" * 2000], "last": f"turn {n}"}

    b = StateGraph(state)
    b.add_node("write", write)
    b.add_edge(START, "write")
    b.add_edge("write", END)
    return b.compile(checkpointer=saver)


def _turns(graph, thread: str, count: int, at: datetime | None = None) -> None:
    config = {"configurable": {"thread_id": thread}}
    for _ in range(count):
        if at is None:
            graph.invoke({"last": "go"}, config)
        else:
            with time_machine.travel(at, tick=True):
                graph.invoke({"last": "go"}, config)
            at += timedelta(minutes=5)


def _size(target) -> int:
    if target.kind == "sqlite":
        from include.checkpoint_core.pruning.sqlite_prune import file_bytes

        return file_bytes(__import__("pathlib").Path(target.location))
    import psycopg

    from include.checkpoint_core.pruning.postgres_prune import relation_bytes

    with psycopg.connect(target.location, row_factory=__import__("psycopg").rows.dict_row) as conn:
        return relation_bytes(conn)


def test_size_levels_off_over_cycles_of_work_and_prune(empty_store):
    """Ten-day cycles of traffic on the same threads, pruned to 15 days each time: rows and
    bytes stop growing once the first retention window has passed."""
    target = empty_store
    _allow_past_ids()
    start = datetime.now(timezone.utc) - timedelta(days=100)
    rows, sizes = [], []
    with open_saver(target) as (saver, _):
        graph = _graph(saver, Flat)
        for cycle in range(8):
            moment = start + timedelta(days=10 * cycle)
            for t in range(6):
                _turns(graph, f"steady-{t}", 4, at=moment + timedelta(minutes=t * 30))
            prune_store(target, PrunePolicy(retention_days=15, now=moment + timedelta(hours=6)), log=lambda _: None)
            rows.append(query(target, "SELECT count(*) FROM checkpoints")[0][0])
            sizes.append(_size(target))
    assert rows[2:] == [rows[2]] * 6, rows  # two cycles' worth of checkpoints, every time
    assert max(sizes[3:]) <= sizes[2] * 1.3, sizes  # the freed space is reused


def test_long_lived_thread_loses_only_history_older_than_the_retention(empty_store):
    target = empty_store
    _allow_past_ids()
    with open_saver(target) as (saver, _):
        graph = _graph(saver)
        _turns(graph, "long", 3, at=datetime.now(timezone.utc) - timedelta(days=60))
        _turns(graph, "long", 2)
        config = {"configurable": {"thread_id": "long"}}
        before = graph.get_state(config)
        recent = [s.config["configurable"]["checkpoint_id"] for s in graph.get_state_history(config)]
    policy = PrunePolicy(retention_days=30)
    recent = [c for c in recent if c >= policy.cutoff_id]
    report = prune_store(target, policy, log=lambda _: None)
    assert report["threads_trimmed"] == 1 and report["checkpoints_deleted"] > 0
    with open_saver(target) as (saver, _):
        graph = _graph(saver)
        after = graph.get_state(config)
        history = [s.config["configurable"]["checkpoint_id"] for s in graph.get_state_history(config)]
    assert (after.values, after.config) == (before.values, before.config)
    assert history == recent  # every recent checkpoint stays; nothing older does
    assert all(c >= policy.cutoff_id for c in history)


def test_threads_with_a_delta_channel_are_skipped_by_keep_latest(empty_store):
    target = empty_store
    _allow_past_ids()
    with open_saver(target) as (saver, _):
        graph = _graph(saver, DeltaNotes)
        _turns(graph, "delta", 4, at=datetime.now(timezone.utc) - timedelta(days=60))
        before = graph.get_state({"configurable": {"thread_id": "delta"}}).values
    count = query(target, "SELECT count(*) FROM checkpoints")
    report = prune_store(target, PrunePolicy(retention_days=30), log=lambda _: None)
    assert report["threads_skipped_delta"] == 1 and report["checkpoints_deleted"] == 0
    assert query(target, "SELECT count(*) FROM checkpoints") == count
    with open_saver(target) as (saver, _):
        assert _graph(saver, DeltaNotes).get_state({"configurable": {"thread_id": "delta"}}).values == before
    gone = prune_store(target, PrunePolicy(retention_days=30, strategy="delete"), log=lambda _: None)
    assert gone["threads_deleted"] == 1 and thread_ids(target) == []


def test_a_writer_running_during_the_prune_loses_nothing(empty_store):
    """The app keeps working on new threads and wakes an idle one while the prune runs."""
    target = empty_store
    _allow_past_ids()
    with open_saver(target) as (saver, _):
        graph = _graph(saver)
        for t in range(40):
            _turns(graph, f"old-{t}", 3, at=datetime.now(timezone.utc) - timedelta(days=50, hours=t))
    done, written, errors = threading.Event(), {}, []

    def app():
        try:
            with open_saver(target) as (saver, _):
                graph = _graph(saver)
                n = 0
                while not done.is_set() or n < 10:
                    tid = "old-0" if n % 5 == 0 else f"live-{n}"
                    graph.invoke({"last": "go"}, {"configurable": {"thread_id": tid}})
                    written.setdefault(tid, []).append(graph.get_state({"configurable": {"thread_id": tid}}).values)
                    n += 1
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    writer = threading.Thread(target=app)
    writer.start()
    try:
        report = prune_store(target, PrunePolicy(retention_days=30, batch_size=2), log=lambda _: None)
    finally:
        done.set()
        writer.join(60)
    assert not errors, errors
    assert report["threads_trimmed"] >= 39
    with open_saver(target) as (saver, _):
        graph = _graph(saver)
        for tid, values in written.items():
            assert graph.get_state({"configurable": {"thread_id": tid}}).values == values[-1], tid
            if tid != "old-0":
                assert len(list(graph.get_state_history({"configurable": {"thread_id": tid}}))) == 3 * len(values)
    # The thread the app woke keeps its old history when the prune met it mid-run (a run in
    # flight looks paused, so it is protected) or after the prune passed it: the next run trims it.
    assert {t for t, _, _ in old_non_heads(target, PrunePolicy(retention_days=30).cutoff_id)} <= {"old-0"}
