"""checkpoint_migration on SqliteSaver files written by older LangGraph releases.

The files in tests/fixtures/legacy/ were written by langgraph-checkpoint-sqlite 1.0.4, 2.0.11
and 3.0.3 (scripts/legacy_fixtures/ regenerates them in venvs of their own; the product stays on
current LangGraph). Each goes through the whole DAG with full verify, and every thread's latest
checkpoint reads the same through PostgresSaver as through SqliteSaver, with current LangGraph.
"""

from __future__ import annotations

import shutil
from contextlib import closing
from pathlib import Path

import pytest

from tests.airflow.conftest import task_instances, xcom
from tests.conftest import ROOT, postgres_conn_env, sqlite_conn_env
from tests.migration.helpers import sha256

FIXTURES = sorted((ROOT / "tests" / "fixtures" / "legacy").glob("*.sqlite"))


def test_the_legacy_fixtures_are_there():
    names = " ".join(p.name for p in FIXTURES)
    assert all(v in names for v in ("1.0.4", "2.0.11", "3.0.3")), names


@pytest.mark.parametrize("fixture", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_an_older_file_migrates_verifies_and_reads_the_same(fixture, fresh_dag, monkeypatch, pg_dsn, tmp_path):
    from langgraph.checkpoint.postgres import PostgresSaver

    from include.checkpoint_core.migration.verify import _differs
    from include.checkpoint_core.postgres_store import connect_postgres
    from include.checkpoint_core.sqlite_store import open_sqlite_readonly, readonly_saver

    path = tmp_path / fixture.name
    shutil.copyfile(fixture, path)
    before = sha256(path)
    monkeypatch.setenv("AIRFLOW_CONN_CHECKPOINTS_SQLITE", sqlite_conn_env(path))
    monkeypatch.setenv("AIRFLOW_CONN_CHECKPOINTS_POSTGRES", postgres_conn_env(pg_dsn))
    dag = fresh_dag("checkpoint_migration")
    dr = dag.test(run_conf={"batch_size": 100, "verify_mode": "full", "verify_threads_per_task": 5})
    tis = task_instances(dr)
    assert dr.state == "success", {k: ti.state for k, ti in tis.items()}
    assert tis[("verify", -1)].try_number == 1, "verify passed the first time"
    summary = xcom(dr, "report")
    assert summary["verified"] is True
    assert sha256(path) == before, "the source file is never altered"

    with open_sqlite_readonly(path) as conn, closing(connect_postgres(pg_dsn)) as pg:
        lite, post = readonly_saver(conn), PostgresSaver(pg)
        # A thread LangGraph itself could not resume on PostgreSQL is reported, not half-migrated.
        rejected = {r["thread_id"] for r in pg.execute("SELECT thread_id FROM checkpoint_ops_migration_rejected_threads")}
        threads = [r[0] for r in conn.execute("SELECT DISTINCT thread_id FROM checkpoints ORDER BY 1")]
        assert threads
        for tid in threads:
            config = {"configurable": {"thread_id": tid, "checkpoint_ns": ""}}
            a, b = lite.get_tuple(config), post.get_tuple(config)
            if tid in rejected:
                assert b is None
                continue
            assert b is not None and _differs(a, b) is None, tid
