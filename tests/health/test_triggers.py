"""Each trigger of the matrix, and each anomaly, on real stores (the Prometheus-fed triggers are in
test_with_prometheus.py, the multi-server one in test_health_dag.py)."""

from __future__ import annotations

import os
import shutil
from contextlib import closing
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from include.checkpoint_core.health.evaluate import check_health, record
from include.checkpoint_core.health.history import mark_delivered, read_history
from include.checkpoint_core.stores import StoreTarget
from tests.airflow.conftest import xcom
from tests.health.conftest import run_health as _run
from tests.health.test_store_metrics import _add_sqlite_checkpoints, _recent_ids


def test_sqlite_file_over_5_gb_means_migrate_soon(source, tmp_path):
    path, _ = source
    big = tmp_path / "big.sqlite"
    shutil.copyfile(path, big)
    # A sparse tail: the file is 5 GiB on st_size (what the check reads) without using the disk.
    # SQLite trusts the page count in its header, so the file still reads normally.
    os.truncate(big, 5 * 1024**3 + 4096)
    report = check_health(StoreTarget("sqlite", str(big), "big"), prometheus=None, largest_top_n=1)
    assert report["decision"] == "migrate_soon"
    assert report["reasons"][0].startswith("SQLite file 5.00 GiB with its WAL (5,368,7")
    assert report["inputs"]["threads"] == 24  # and the rest of the store was still read


def test_store_side_throughput_over_100_writes_per_second_means_migrate_now(source):
    path, _ = source
    _add_sqlite_checkpoints(path, _recent_ids(6100))  # 6,100 checkpoints in the last minute: 101.7/s
    report = check_health(StoreTarget("sqlite", str(path), "s"), prometheus=None, window_minutes=1, largest_top_n=0)
    assert report["decision"] == "migrate_now"
    assert report["reasons"] == ["101.7 writes/s sustained over the last 1 min (store: checkpoint ids) > 100/s"]


def _six_mb_checkpoint(path: Path) -> None:
    from langgraph.checkpoint.base import empty_checkpoint
    from langgraph.checkpoint.sqlite import SqliteSaver

    from include.checkpoint_core.sqlite_store import connect_sqlite

    with closing(connect_sqlite(path)) as conn:
        saver = SqliteSaver(conn)
        checkpoint = empty_checkpoint()
        checkpoint["channel_values"] = {"document": os.urandom(6 * 1024 * 1024)}
        checkpoint["channel_versions"] = {"document": saver.get_next_version(None, None)}
        saver.put({"configurable": {"thread_id": "pdf", "checkpoint_ns": ""}}, checkpoint, {"step": 1},
                  checkpoint["channel_versions"])


def test_a_checkpoint_over_5_mb_is_an_anomaly_alerted_once(fresh_dag, wired):
    _six_mb_checkpoint(wired["path"])
    dr, states = _run(fresh_dag)
    report = xcom(dr, "evaluate")
    assert report["decision"] == "sqlite_sufficient"  # an anomaly, not a reason to migrate
    assert [a["kind"] for a in report["anomalies"]] == ["large_checkpoint"]
    assert report["inputs"]["largest"][0]["thread_id"] == "pdf"
    assert states["alert"] == "success"
    assert len(wired["posts"]) == 1 and "anomaly: a checkpoint of 6.0 MiB > 5 MiB" in wired["posts"][0]["text"]
    dr, states = _run(fresh_dag)  # still there, but not new: no second alert
    assert states["alert"] == "skipped" and len(wired["posts"]) == 1


def test_postgres_store_keeps_its_history_in_postgres(pg_dsn):
    from langgraph.checkpoint.postgres import PostgresSaver

    from include.checkpoint_core.postgres_store import connect_postgres
    from include.sample_agent.workload import WorkloadSpec, generate

    with closing(connect_postgres(pg_dsn, autocommit=True)) as conn:
        saver = PostgresSaver(conn)
        saver.setup()
        generate(saver, WorkloadSpec(threads=3, turns=1, interrupted=0, crashed=0, seed=5))
    target = StoreTarget("postgres", pg_dsn, "checkpoints_postgres")
    at = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
    first = record(check_health(target, prometheus=None, app_servers=4), target, run_id="r1", evaluated_at=at)
    assert first["decision"] == "on_postgres" and first["changed"] is True and first["history"] == "recorded"
    assert first["inputs"]["threads"] == 3 and first["inputs"]["store_bytes"] > 0
    again = record(check_health(target, prometheus=None, app_servers=4), target, run_id="r1", evaluated_at=at)
    assert again["measured_at"] == first["measured_at"]  # a retry converges on the first evaluation
    assert [h["run_id"] for h in read_history(target)] == ["r1"]
    assert mark_delivered(target, run_id="r1", at=at) is True
    second = record(check_health(target, prometheus=None), target, run_id="r2", evaluated_at=at + timedelta(minutes=15))
    assert second["previous_decision"] == "on_postgres" and second["changed"] is False


def test_a_postgres_database_without_checkpoint_tables_says_so(pg_dsn):
    from include.checkpoint_core.errors import NotACheckpointStore

    with pytest.raises(NotACheckpointStore, match="checkpoint_setup"):
        check_health(StoreTarget("postgres", pg_dsn, "empty"), prometheus=None)


def test_retries_and_clears_converge_and_compare_with_the_last_delivered_run(source):
    path, _ = source
    target = StoreTarget("sqlite", str(path), "s")
    t0 = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)

    def run(run_id, at, **kw):
        return record(check_health(target, prometheus=None, largest_top_n=0, **kw), target, run_id=run_id,
                      evaluated_at=at)

    a = run("a", t0)
    assert a["changed"] is True and a["previous_decision"] is None
    mark_delivered(target, run_id="a", at=t0)
    b = run("b", t0 + timedelta(minutes=15), app_servers=2)
    assert b["previous_decision"] == "sqlite_sufficient" and b["changed"] is True
    # b's alert failed (not delivered): the next run still sees a change, so it alerts again.
    c = run("c", t0 + timedelta(minutes=30), app_servers=2)
    assert c["previous_decision"] == "sqlite_sufficient" and c["changed"] is True
    mark_delivered(target, run_id="c", at=t0)
    # b retried with other settings: it converges on its first evaluation, not a new one.
    b_again = run("b", t0 + timedelta(minutes=15), app_servers=1)
    assert b_again["decision"] == "migrate_now" and b_again["measured_at"] == b["measured_at"]
    # a cleared after everything: it compares with what came before it (nothing).
    assert run("a", t0)["previous_decision"] is None
    d = run("d", t0 + timedelta(minutes=45), app_servers=2)
    assert d["previous_decision"] == "migrate_now" and d["changed"] is False
    assert [h["run_id"] for h in read_history(target)] == ["d", "c", "b", "a"]


def test_a_locked_store_does_not_swallow_the_decision(source):
    """The history write waits for the busy timeout and gives up; the decision stands."""
    import sqlite3

    path, _ = source
    target = StoreTarget("sqlite", str(path), "s")
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer holding the write lock
    try:
        report = record(check_health(target, prometheus=None, app_servers=3, largest_top_n=0), target,
                        run_id="locked", evaluated_at=datetime.now(timezone.utc))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert report["decision"] == "migrate_now"
    assert report["changed"] is None and report["history"].startswith("not recorded")
    assert any(m.startswith("history: not recorded") for m in report["missing"])


def test_a_history_table_from_before_delivery_markers_is_upgraded(source):
    import sqlite3

    path, _ = source
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("CREATE TABLE checkpoint_ops_health_history (run_id TEXT PRIMARY KEY, evaluated_at TEXT NOT NULL, "
                     "decision TEXT NOT NULL, previous_decision TEXT, report TEXT NOT NULL)")
    target = StoreTarget("sqlite", str(path), "s")
    report = record(check_health(target, prometheus=None, largest_top_n=0), target, run_id="r",
                    evaluated_at=datetime.now(timezone.utc))
    assert report["history"] == "recorded" and report["changed"] is True
    assert mark_delivered(target, run_id="r", at=datetime.now(timezone.utc)) is True
