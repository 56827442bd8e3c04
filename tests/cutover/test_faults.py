"""A mover killed at every point, a writer that meets its leftovers, bad input, and PostgreSQL gone for a moment."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from contextlib import closing

import psycopg
import pytest

from include.checkpoint_core.cutover import flip, jobs, routes
from include.checkpoint_core.cutover.gate import Gate, check
from include.checkpoint_core.cutover.reverse import replace_threads, sqlite_rows
from include.checkpoint_core.migration.digests import compare, source_digests, target_digests
from include.checkpoint_core.tiering.rows import read_pg_threads
from tests.conftest import ROOT
from include.sample_agent.counter import build_counter


def _threads(saver, n: int, prefix: str = "t") -> list[str]:
    graph = build_counter(saver)
    ids = [f"{prefix}-{i:03d}" for i in range(n)]
    for tid in ids:
        graph.invoke({}, {"configurable": {"thread_id": tid}})
    return ids


def _equal(pg, blue, ids) -> bool:
    want, _, _ = source_digests(blue, ids)
    have = target_digests(pg, ids)
    return all(not (r["missing"] or r["different"]) for r in compare(want, have).values())


def test_a_writer_takes_back_a_forward_move_that_died_after_fencing(routing, prepared, stores):
    pg, blue = prepared
    graph = build_counter(routing)
    (tid,) = _threads(routing, 1)
    routes.set_weight(pg, 100)
    # the mover claimed and fenced the thread, then died before its commit
    move_id = "fwd:dead"
    assert flip._claim(pg, [tid], "green", move_id, lease_s=1.0) == [tid]
    blue.execute("BEGIN IMMEDIATE")
    routes.fence(blue, [tid], move_id)
    blue.execute("COMMIT")
    routing._cache.clear()
    started = time.monotonic()
    out = graph.invoke({}, {"configurable": {"thread_id": tid}})
    waited = time.monotonic() - started
    assert out["n"] == 2 and 0.8 < waited < 10, waited
    assert routes.lookup(pg, tid) == routes.Route(tid, "blue", generation=0)
    assert routes.fence_of(blue, tid) is None, "the dead move's fence is gone"
    # and the next ramp moves it, with the turn the writer made meanwhile
    assert jobs.ramp(pg, blue, 100)["moved"] == 1
    assert routing.get_tuple({"configurable": {"thread_id": tid}}).checkpoint["channel_values"]["n"] == 2


def test_a_rollback_that_died_between_its_two_commits_is_completed_not_undone(routing, prepared, stores):
    pg, blue = prepared
    ids = _threads(routing, 2)
    jobs.ramp(pg, blue, 100)
    graph = build_counter(routing)
    for tid in ids:
        graph.invoke({}, {"configurable": {"thread_id": tid}})  # written in green only
    move_id = "rev:dead"
    blue.execute("DELETE FROM checkpoint_ops_cutover_fence WHERE thread_id = '*'")  # as rollback() does first
    assert flip._claim(pg, ids, "blue", move_id, lease_s=1.0) == ids
    green = read_pg_threads(pg, ids)
    blue.execute("BEGIN IMMEDIATE")  # the SQLite side commits ...
    routes.fence(blue, ids, move_id, state="returned")
    replace_threads(blue, [(t, *sqlite_rows(green[t])) for t in ids])
    blue.execute("COMMIT")  # ... and the mover dies before routing them blue
    time.sleep(1.1)
    assert flip.settle_expired(pg, blue) == 2
    assert {routes.lookup(pg, t).store for t in ids} == {"blue"}
    routing._cache.clear()
    assert [graph.invoke({}, {"configurable": {"thread_id": t}})["n"] for t in ids] == [3, 3]


def test_a_mover_killed_mid_ramp_converges_on_retry(pg_dsn, blue_path, routing, prepared):
    pg, blue = prepared
    ids = _threads(routing, 60)
    code = ("import sys; from include.checkpoint_core.cutover import jobs; "
            "from include.checkpoint_core.postgres_store import connect_postgres; "
            f"pg, b = connect_postgres({pg_dsn!r}), jobs.connect_blue({str(blue_path)!r}); "
            "jobs.ramp(pg, b, 100, batch_threads=1, lease_s=1.5, log=lambda m: None)")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    try:
        for _ in range(300):
            if routes.counts(pg)["green"] >= 5:
                break
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(10)
    counts = routes.counts(pg)
    assert 5 <= counts["green"] < 60, counts
    graph = build_counter(routing)
    for tid in ids[::7]:  # the app goes on meanwhile, whichever store each thread is in
        graph.invoke({}, {"configurable": {"thread_id": tid}})
    time.sleep(1.6)
    out = jobs.ramp(pg, blue, 100, lease_s=1.5)
    assert routes.counts(pg) == {"blue": 0, "green": 60, "moving": 0}
    assert out["moved"] == 60 - counts["green"] or out["moved"] >= 60 - counts["green"] - counts["moving"]
    for tid in ids:
        n = routing.get_tuple({"configurable": {"thread_id": tid}}).checkpoint["channel_values"]["n"]
        assert n == (2 if tid in ids[::7] else 1), tid


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tables(dsn: str) -> set[str]:
    with closing(psycopg.connect(dsn)) as conn:
        return {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}


def test_bad_input_is_refused_with_the_reason_and_nothing_changed(pg_dsn, blue_path, stores, mover, pool):
    blue_saver, green_saver = stores
    _threads(blue_saver, 3)
    pg, blue = mover
    before_file, before_tables = _sha(blue_path), _tables(pg_dsn)
    with pytest.raises(routes.CutoverError, match="run checkpoint_migration"):
        jobs.preflight(pg, blue, str(blue_path))
    # a target that holds other data
    pg.execute("CREATE TABLE checkpoint_ops_migration_batches (migration_id text, table_name text, batch_no int, "
               "sha256 text)")
    pg.execute("INSERT INTO checkpoint_ops_migration_batches VALUES ('m', 'checkpoints', 0, 'x')")
    build_counter(green_saver).invoke({}, {"configurable": {"thread_id": "someone-else"}})
    with pytest.raises(routes.CutoverError, match="1 threads the source does not have"):
        jobs.preflight(pg, blue, str(blue_path))
    with pg.transaction():
        pg.execute("DELETE FROM checkpoint_writes WHERE thread_id = 'someone-else'")
        pg.execute("DELETE FROM checkpoint_blobs WHERE thread_id = 'someone-else'")
        pg.execute("DELETE FROM checkpoints WHERE thread_id = 'someone-else'")
    # conflicting routing state: the target is being cut over from another file
    routes.ensure_green(pg, "other-run", "/elsewhere/app.sqlite")
    with pytest.raises(routes.ConflictingCutover, match="another source"):
        jobs.preflight(pg, blue, str(blue_path))
    with pytest.raises(routes.ConflictingCutover):
        jobs.prepare(pg, blue, str(blue_path), "this-run", settle_s=0)
    assert _sha(blue_path) == before_file, "the source file is untouched"
    assert routes.state(pg).blue == "/elsewhere/app.sqlite"
    assert not routes.blue_installed(blue)


def test_a_database_that_stops_answering_breaches_only_when_it_stays_down(pg_admin, pg_dsn):
    name = psycopg.conninfo.conninfo_to_dict(pg_dsn)["dbname"]
    gate = Gate(max_unreachable_checks=3)
    assert check(None, pg_dsn, gate)["verdict"] == "ok"
    pg_admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
    try:
        first = check(None, pg_dsn, gate)
        second = check(None, pg_dsn, gate, first["unreachable_streak"])
        assert (first["verdict"], second["verdict"], second["unreachable_streak"]) == ("ok", "ok", 2)
        assert "not currently accepting connections" in second["numbers"]["database"] or \
            "does not allow" in second["numbers"]["database"] or second["numbers"]["database"] != "ok"
        third = check(None, pg_dsn, gate, second["unreachable_streak"])
        assert third["verdict"] == "breach" and "3 checks in a row" in third["reason"]
    finally:
        pg_admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    back = check(None, pg_dsn, gate, 2)
    assert back["verdict"] == "ok" and back["unreachable_streak"] == 0


def test_a_rollback_batch_that_fails_its_comparison_leaves_the_threads_in_postgresql(routing, prepared, monkeypatch):
    from include.checkpoint_core.cutover import reverse

    pg, blue = prepared
    ids = _threads(routing, 3)
    jobs.ramp(pg, blue, 100)
    graph = build_counter(routing)
    for tid in ids:
        graph.invoke({}, {"configurable": {"thread_id": tid}})
    real = reverse.sqlite_rows
    monkeypatch.setattr(flip, "sqlite_rows", lambda rows: (real(rows)[0], real(rows)[1][:-1]))  # loses a write
    with pytest.raises(flip.VerifyFailed, match="writes: .* 3 extra"):
        jobs.rollback(pg, blue)
    assert {routes.lookup(pg, t).store for t in ids} == {"green"} and routes.counts(pg)["moving"] == 0
    assert all(routes.fence_of(blue, t) == routes.fence_of(blue, ids[0]) for t in ids)
    routing._cache.clear()
    assert [graph.invoke({}, {"configurable": {"thread_id": t}})["n"] for t in ids] == [3, 3, 3]
