"""The workload generator writes what real agent runs write, at the ages asked for."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from contextlib import closing
from datetime import datetime, timedelta, timezone

import pytest
from langgraph.checkpoint.sqlite import SqliteSaver

from include.checkpoint_core.ids import uuid6_datetime
from include.checkpoint_core.sqlite_store import connect_sqlite, setup_sqlite
from include.sample_agent.graph import build_agent_graph
from include.sample_agent.workload import WorkloadSpec, generate
from tests.conftest import ROOT

@pytest.fixture
def generated(sqlite_path):
    setup_sqlite(sqlite_path)
    spec = WorkloadSpec(threads=12, turns=3, interrupted=0.34, crashed=0.17, min_age_days=5, max_age_days=60, seed=3)
    with closing(connect_sqlite(sqlite_path)) as conn:
        result = generate(SqliteSaver(conn), spec)
        conn.commit()
    return sqlite_path, spec, result


def test_thread_fates(generated):
    path, spec, result = generated
    assert result.threads == 12 and result.turns == 36
    assert len(result.interrupted_before) == 2 and len(result.interrupted_dynamic) == 2
    assert len(result.crashed) == 2 and result.completed_threads == 6
    with closing(connect_sqlite(path)) as conn:
        graph = build_agent_graph(SqliteSaver(conn))
        for tid in result.interrupted_before:
            snap = graph.get_state({"configurable": {"thread_id": tid}})
            assert snap.next == ("execute_action",) and not snap.interrupts
        for tid in result.interrupted_dynamic:
            snap = graph.get_state({"configurable": {"thread_id": tid}})
            assert snap.interrupts and "Approve a refund" in snap.interrupts[0].value["question"]
        saver = SqliteSaver(conn)
        for tid in result.crashed:
            tup = saver.get_tuple({"configurable": {"thread_id": tid}})
            channels = {w[1] for w in tup.pending_writes}
            assert "__error__" in channels and "findings" in channels, "the other branch's write is pending"


def test_rows_look_like_a_real_agent(generated):
    path, _, _ = generated
    with closing(sqlite3.connect(path)) as conn:
        namespaces = {r[0].split(":")[0] for r in conn.execute("SELECT DISTINCT checkpoint_ns FROM checkpoints")}
        assert namespaces == {"", "research"}, "subgraph checkpoints live under their own namespace"
        meta = [json.loads(r[0]) for r in conn.execute("SELECT metadata FROM checkpoints WHERE checkpoint_ns = ''")]
        assert all({"user_id", "session_type", "step"} <= m.keys() for m in meta)
        special = {r[0] for r in conn.execute("SELECT DISTINCT idx FROM writes WHERE idx < 0")}
        assert {-1, -3, -4} <= special, "error, interrupt and resume writes use negative idx"
        types = {r[0] for r in conn.execute("SELECT DISTINCT type FROM checkpoints")}
        assert types == {"msgpack"}


def test_checkpoints_really_lie_in_the_past(generated):
    path, spec, result = generated
    now = datetime.now(timezone.utc)
    with closing(sqlite3.connect(path)) as conn:
        saver_rows = conn.execute("SELECT thread_id, checkpoint_id FROM checkpoints").fetchall()
    with closing(connect_sqlite(path)) as conn:
        saver = SqliteSaver(conn)
        for tid in {r[0] for r in saver_rows}:
            for tup in saver.list({"configurable": {"thread_id": tid}}):
                ts = datetime.fromisoformat(tup.checkpoint["ts"])
                age = now - ts
                assert timedelta(days=spec.min_age_days) - timedelta(hours=1) <= age <= timedelta(days=spec.max_age_days, hours=1)
                id_time = uuid6_datetime(tup.checkpoint["id"])
                assert abs(id_time - ts) < timedelta(seconds=5), "the uuid6 id carries the same past time"


def test_refuses_to_mix_with_existing_threads(generated):
    path, spec, _ = generated
    with closing(connect_sqlite(path)) as conn:
        with pytest.raises(ValueError, match="already exist"):
            generate(SqliteSaver(conn), spec)


def test_postgres_target(pg_dsn):
    from langgraph.checkpoint.postgres import PostgresSaver

    from include.checkpoint_core.postgres_store import count_rows, open_postgres_pool, setup_postgres

    setup_postgres(pg_dsn)
    with closing(open_postgres_pool(pg_dsn)) as pool:
        result = generate(PostgresSaver(pool), WorkloadSpec(threads=4, turns=2, crashed=0.25, max_age_days=10))
        with pool.connection() as conn:
            rows = count_rows(conn)
    assert result.threads == 4 and len(result.crashed) == 1
    assert rows["checkpoints"] > 20 and rows["checkpoint_blobs"] > 0 and rows["checkpoint_writes"] > 0


def test_cli(tmp_path):
    path = tmp_path / "cli.sqlite"
    proc = subprocess.run(
        [sys.executable, "-m", "include.sample_agent", "--sqlite", str(path), "--threads", "5", "--turns", "2",
         "--interrupted", "0.2", "--age-days", "1:30"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )
    out = json.loads(proc.stdout)
    assert out["threads"] == 5 and out["interrupted_before"] == 1 and out["rows"]["threads"] == 5
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT COUNT(*) FROM store").fetchone()[0] > 0, "memories went to the SqliteStore"
    bad = subprocess.run([sys.executable, "-m", "include.sample_agent", "--sqlite", str(path), "--age-days", "9:1"],
                         cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "MIN:MAX" in bad.stderr
    again = subprocess.run([sys.executable, "-m", "include.sample_agent", "--sqlite", str(path), "--threads", "5"],
                           cwd=ROOT, capture_output=True, text=True)
    assert again.returncode == 2 and "already exist" in again.stderr
