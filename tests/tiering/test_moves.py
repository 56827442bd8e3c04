"""Moves under fire: the app writing during a run, moves killed at every step, Redis dropping the
connection, corrupt or missing archive objects, and threads found in two tiers."""

from __future__ import annotations

import threading

import pytest
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.postgres import PostgresSaver

from include.checkpoint_core.tiering import archive as arc
from include.checkpoint_core.tiering import directory, moves
from include.checkpoint_core.tiering.rows import has_pg_rows, read_pg_thread
from tests.tiering.conftest import archive_all, demote_all


def _turn(saver, tid: str, n: int, ns: str = ""):
    """One checkpoint with a blob channel and a pending write, as a graph step would leave."""
    latest = saver.get_tuple({"configurable": {"thread_id": tid, "checkpoint_ns": ns}})
    cp = empty_checkpoint()
    cp["channel_values"] = {"messages": [f"m{i}" for i in range(n + 1)], "step": n}
    version = saver.get_next_version(latest.checkpoint["channel_versions"].get("messages") if latest else None, None)
    cp["channel_versions"] = {"messages": version, "step": version}
    config = {"configurable": {"thread_id": tid, "checkpoint_ns": ns,
                               **({"checkpoint_id": latest.config["configurable"]["checkpoint_id"]} if latest else {})}}
    stored = saver.put(config, cp, {"step": n, "source": "loop"}, {"messages": version,
                                                                                       "step": version})
    saver.put_writes(stored, [("messages", f"pending-{n}")], task_id=f"task-{n}", task_path=f"~__pregel_pull, node{n}")
    return stored


def _where(saver, tid: str) -> set[str]:
    """Every tier that holds rows of the thread (a correct state has exactly one)."""
    found = set()
    if saver.hot.export_thread(tid).version is not None:
        found.add("hot")
    with saver.pool.connection() as conn:
        if has_pg_rows(conn, tid):
            e = directory.entry(conn, tid)
            found.add("staging" if e and e.tier == "staging" else "cold")
        e = directory.entry(conn, tid)
        if e and e.tier == "archive":
            found.add("archive")
    return found


def _history(saver, tid: str) -> list[tuple]:
    return [(t.config["configurable"]["checkpoint_id"], t.checkpoint["channel_values"], t.metadata["step"],
             t.pending_writes) for t in saver.list({"configurable": {"thread_id": tid}})]


def test_the_app_writing_during_a_demotion_run_loses_nothing(tiered):
    ids = [f"busy-{i}" for i in range(30)]
    for tid in ids:
        _turn(tiered, tid, 0)
    written = {tid: 1 for tid in ids}
    stop = threading.Event()
    errors: list[BaseException] = []

    def app():
        n = 1
        try:
            while not stop.is_set():
                for tid in ids[::3]:  # a third of the threads stay busy
                    _turn(tiered, tid, n)
                    written[tid] += 1
                n += 1
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)

    writer = threading.Thread(target=app)
    writer.start()
    try:
        outcomes = [o.result for _ in range(3) for o in demote_all(tiered, ids)]
    finally:
        stop.set()
        writer.join(timeout=30)
    assert not errors, errors
    assert "moved" in outcomes
    for tid in ids:
        assert len(_where(tiered, tid)) == 1, (tid, _where(tiered, tid))
        history = _history(tiered, tid)
        assert len(history) == written[tid], tid
        assert [h[2] for h in history] == list(range(written[tid] - 1, -1, -1))
        assert history[0][3] == [(f"task-{written[tid] - 1}", "messages", f"pending-{written[tid] - 1}")]


@pytest.mark.parametrize("crash_at", ["write_pg_threads", "fence_unchanged", "directory_commit", "drop_threads"])
def test_a_demotion_killed_at_any_step_converges_on_the_retry(tiered, monkeypatch, crash_at):
    ids = [f"crash-{i}" for i in range(3)]
    for tid in ids:
        for n in range(3):
            _turn(tiered, tid, n)
    before = {tid: _history(tiered, tid) for tid in ids}
    raw = {tid: tiered.hot.export_thread(tid).rows for tid in ids}

    class Killed(BaseException):
        """Like SIGKILL for the move: nothing after it runs, no cleanup handler catches it."""

    real = {"write_pg_threads": moves.write_pg_threads, "fence_unchanged": tiered.hot.fence_unchanged,
            "directory_commit": directory.put, "drop_threads": tiered.hot.drop_threads}[crash_at]
    calls = []

    def crash(*args, **kwargs):
        calls.append(1)
        if crash_at == "directory_commit" and args[1].tier != "cold":  # the staging entry goes in
            return real(*args, **kwargs)
        if crash_at == "fence_unchanged":
            real(*args, **kwargs)  # the fence went up, then the worker died
        raise Killed(crash_at)

    target = {"write_pg_threads": (moves, "write_pg_threads"), "fence_unchanged": (tiered.hot, "fence_unchanged"),
              "directory_commit": (directory, "put"), "drop_threads": (tiered.hot, "drop_threads")}[crash_at]
    monkeypatch.setattr(*target, crash)
    with pytest.raises(Killed):
        with tiered.pool.connection() as conn:
            moves.demote_group(conn, tiered.hot, ids)  # the whole group dies at that step
    monkeypatch.undo()
    # Between the crash and the retry the app still reads every thread, and can write to one.
    assert {tid: _history(tiered, tid) for tid in ids} == before
    outcomes = [o.result for o in demote_all(tiered, ids)]
    outcomes += [o.result for o in demote_all(tiered, ids) if o.result != "gone"]  # the retry's retry
    assert "conflict" not in outcomes and "rejected" not in outcomes, outcomes
    for tid in ids:
        assert _where(tiered, tid) == {"cold"}, (tid, _where(tiered, tid), outcomes)
        with tiered.pool.connection() as conn:
            assert moves.differences(raw[tid], read_pg_thread(conn, tid)) == []
    assert {tid: _history(tiered, tid) for tid in ids} == before


def test_redis_dropping_the_connection_mid_move_leaves_one_tier(tiered, monkeypatch):
    tid = "dropped"
    for n in range(3):
        _turn(tiered, tid, n)
    before = _history(tiered, tid)
    real = tiered.hot.fence_unchanged

    def drop_then_fence(*args):
        tiered.hot.client.client_kill_filter(_type="normal", skipme=False)  # every connection, ours too
        return real(*args)

    monkeypatch.setattr(tiered.hot, "fence_unchanged", drop_then_fence)
    try:
        result = demote_all(tiered, [tid])[0].result
    except Exception:  # noqa: BLE001 - the client may or may not reconnect by itself; both must converge
        result = "raised"
    monkeypatch.undo()
    assert result in ("moved", "raised")
    if result != "moved":
        demote_all(tiered, [tid])
    assert _where(tiered, tid) == {"cold"}
    assert _history(tiered, tid) == before


def test_a_write_to_a_thread_fenced_by_a_dead_move_goes_through(tiered):
    tid = "stale-fence"
    _turn(tiered, tid, 0)
    snap = tiered.hot.export_thread(tid)
    assert tiered.hot.fence_if_unchanged(tid, snap.version, "demote:dead-worker")
    _turn(tiered, tid, 1)  # the worker died before committing: the app breaks the fence and writes hot
    assert _where(tiered, tid) == {"hot"}
    assert [h[2] for h in _history(tiered, tid)] == [1, 0]


def test_a_thread_in_two_tiers_is_reported_and_left_alone(tiered, pool):
    tid = "twice"
    _turn(tiered, tid, 0)
    foreign = PostgresSaver(pool)
    cp = empty_checkpoint()
    foreign.put({"configurable": {"thread_id": tid, "checkpoint_ns": ""}}, cp, {"step": 99, "source": "foreign"}, {})
    hot_before = tiered.hot.export_thread(tid).rows
    with pool.connection() as conn:
        cold_before = read_pg_thread(conn, tid)
    out = demote_all(tiered, [tid])[0]
    assert out.result == "conflict" and "outside tiering" in out.detail
    assert moves.differences(hot_before, tiered.hot.export_thread(tid).rows) == []
    with pool.connection() as conn:
        assert moves.differences(cold_before, read_pg_thread(conn, tid)) == []
        assert directory.entry(conn, tid) is None


def test_a_thread_postgres_cannot_hold_stays_hot_whole(tiered):
    tid = "nul"
    _turn(tiered, tid, 0)
    cp = empty_checkpoint()
    cp["channel_values"] = {"note": "bad\x00byte"}  # an inline string: jsonb cannot hold NUL
    cp["channel_versions"] = {"note": tiered.get_next_version(None, None)}
    tiered.put({"configurable": {"thread_id": tid, "checkpoint_ns": ""}}, cp, {"step": 1}, cp["channel_versions"])
    before = tiered.hot.export_thread(tid).rows
    out = demote_all(tiered, [tid])[0]
    assert out.result == "rejected" and "PostgreSQL refused" in out.detail
    assert _where(tiered, tid) == {"hot"}
    assert moves.differences(before, tiered.hot.export_thread(tid).rows) == []


def test_a_corrupt_or_missing_archive_object_is_named_and_the_thread_stays_archived(tiered, archive_store):
    ids = ["arch-corrupt", "arch-missing"]
    for tid in ids:
        _turn(tiered, tid, 0)
    demote_all(tiered, ids)
    assert [o.result for o in archive_all(tiered, ids)] == ["moved", "moved"]
    with tiered.pool.connection() as conn:
        corrupt, missing = (directory.entry(conn, t) for t in ids)
    path = archive_store.root / corrupt.archive_key
    path.write_bytes(path.read_bytes()[:-10])
    (archive_store.root / missing.archive_key).unlink()
    with tiered.pool.connection() as conn:
        results = [moves.rehydrate(conn, tiered.hot, archive_store, t) for t in ids]
    assert [r.result for r in results] == ["corrupt", "missing"]
    assert "does not match its recorded SHA-256" in results[0].detail
    assert "is missing" in results[1].detail
    assert _where(tiered, ids[0]) == {"archive"} and _where(tiered, ids[1]) == {"archive"}
    tiered._cache.clear()
    with pytest.raises(arc.ArchiveCorrupt):
        tiered.get_tuple({"configurable": {"thread_id": ids[0], "checkpoint_ns": ""}})
