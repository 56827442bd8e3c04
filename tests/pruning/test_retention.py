"""Retention on both backends: what goes, what stays byte for byte, and that threads resume."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from langgraph.types import Command

from include.checkpoint_core.pruning import PrunePolicy, prune_store
from include.sample_agent.graph import AgentContext, build_agent_graph
from tests.pruning.conftest import open_saver
from tests.pruning.helpers import newest_ids, old_non_heads, query, raw_rows, states, thread_ids


def _split(target, cutoff_id):
    newest = newest_ids(target)
    oldest = dict(query(target, "SELECT thread_id, MIN(checkpoint_id) FROM checkpoints GROUP BY thread_id"))
    young = sorted(t for t in newest if oldest[t] >= cutoff_id)
    idle = sorted(t for t in newest if newest[t] < cutoff_id)
    return young, idle


def test_keep_latest_prunes_old_history_and_every_thread_still_resumes(aged_store):
    target, result = aged_store
    policy = PrunePolicy(retention_days=30, protect_interrupted=False, batch_size=7)
    young, idle = _split(target, policy.cutoff_id)
    assert young and idle, "the workload must straddle the retention"
    everyone = thread_ids(target)
    before_states = states(target, everyone)
    before_young = raw_rows(target, young)
    assert old_non_heads(target, policy.cutoff_id)

    report = prune_store(target, policy, log=lambda _: None)

    assert report["checkpoints_deleted"] > 0 and report["writes_deleted"] > 0
    assert report["threads_trimmed"] == len(idle)
    assert old_non_heads(target, policy.cutoff_id) == []
    assert thread_ids(target) == everyone  # keep_latest never drops a thread
    assert raw_rows(target, young) == before_young  # untouched, byte for byte
    after_states = states(target, everyone)
    assert after_states == before_states
    if target.kind == "postgres":
        assert report["blobs_deleted"] > 0
        orphans = query(
            target,
            """SELECT count(*) FROM checkpoint_blobs b WHERE NOT EXISTS (
                 SELECT 1 FROM checkpoints c WHERE c.thread_id = b.thread_id AND c.checkpoint_ns = b.checkpoint_ns
                 AND c.checkpoint -> 'channel_versions' ->> b.channel = b.version)""",
        )
        assert orphans == [(0,)]

    again = prune_store(target, policy, log=lambda _: None)
    assert again["checkpoints_deleted"] == again["writes_deleted"] == again["threads_trimmed"] == 0

    # Threads left waiting on a human resume from what the prune kept.
    waiting = [t for t in result.interrupted_dynamic + result.interrupted_before if t in idle]
    assert waiting, "some interrupted threads must be older than the retention"
    with open_saver(target) as (saver, store):
        graph = build_agent_graph(saver, store)
        for tid in waiting:
            config = {"configurable": {"thread_id": tid}}
            resume = Command(resume="approve") if tid in result.interrupted_dynamic else None
            graph.invoke(resume, config, context=AgentContext())
            assert graph.get_state(config).next == (), tid



def test_dry_run_reports_the_same_counts_and_changes_nothing(aged_store):
    target, _ = aged_store
    before = raw_rows(target, thread_ids(target))
    dry = prune_store(target, PrunePolicy(dry_run=True), log=lambda _: None)
    assert raw_rows(target, thread_ids(target)) == before
    real = prune_store(target, PrunePolicy(), log=lambda _: None)
    keys = ("threads_trimmed", "threads_protected", "checkpoints_deleted", "writes_deleted", "blobs_deleted")
    assert {k: dry[k] for k in keys} == {k: real[k] for k in keys}
    assert real["checkpoints_deleted"] > 0


def test_protected_threads_keep_their_whole_history(aged_store):
    target, result = aged_store
    waiting = result.interrupted_dynamic + result.interrupted_before
    before = raw_rows(target, waiting)
    report = prune_store(target, PrunePolicy(retention_days=0, strategy="delete"), log=lambda _: None)
    assert report["threads_protected"] == len(waiting)
    assert raw_rows(target, waiting) == before
    # Everything else was idle for "0 days", so it went; crashed threads are not protected.
    assert sorted(thread_ids(target)) == sorted(waiting)
    assert report["threads_deleted"] == result.threads - len(waiting)


def test_delete_drops_idle_threads_whole_and_trims_the_rest(aged_store):
    target, _ = aged_store
    policy = PrunePolicy(retention_days=30, strategy="delete", protect_interrupted=False)
    young, idle = _split(target, policy.cutoff_id)
    before_young = raw_rows(target, young)
    report = prune_store(target, policy, log=lambda _: None)
    assert report["threads_deleted"] == len(idle)
    assert sorted(thread_ids(target)) == young
    assert raw_rows(target, young) == before_young
    writes = "writes" if target.kind == "sqlite" else "checkpoint_writes"
    assert [r for r in query(target, f"SELECT thread_id FROM {writes}") if r[0] in idle] == []
    if target.kind == "postgres":
        # Blobs outlive their thread by a day: an app that loaded it just before the prune may
        # still save a checkpoint that points at them. Then they go.
        assert [r for r in query(target, "SELECT thread_id FROM checkpoint_blobs") if r[0] in idle]
        later = prune_store(target, PrunePolicy(retention_days=30, strategy="delete",
                                                now=datetime.now(timezone.utc) + timedelta(days=2)), log=lambda _: None)
        assert later["orphan_blobs_deleted"] > 0
        assert [r for r in query(target, "SELECT thread_id FROM checkpoint_blobs") if r[0] in idle] == []


def test_sweep_limit_bounds_a_run_and_the_next_run_carries_on(aged_store):
    target, _ = aged_store
    first = prune_store(target, PrunePolicy(max_threads=3, batch_size=2), log=lambda _: None)
    assert first["threads_trimmed"] == 3 and first["sweep_limit_reached"]
    rest = prune_store(target, PrunePolicy(), log=lambda _: None)
    assert rest["threads_trimmed"] > 0 and not rest["sweep_limit_reached"]
    assert old_non_heads(target, PrunePolicy().cutoff_id) != []  # protected threads keep theirs
    assert prune_store(target, PrunePolicy(), log=lambda _: None)["threads_trimmed"] == 0


@pytest.mark.parametrize("bad", [dict(strategy="shrink"), dict(retention_days=-1), dict(batch_size=0)])
def test_bad_policy_is_refused_before_touching_the_store(aged_store, bad):
    target, _ = aged_store
    before = raw_rows(target, thread_ids(target))
    with pytest.raises(ValueError):
        prune_store(target, PrunePolicy(**bad), log=lambda _: None)
    assert raw_rows(target, thread_ids(target)) == before
