"""checkpoint_migration end to end with dag.test(): real files, real PostgreSQL, real retries."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from tests.airflow.conftest import task_instances, xcom
from tests.conftest import SENTINEL_PASSWORD, postgres_conn_env, sqlite_conn_env
from tests.migration.helpers import sha256, target_fingerprint
from tests.migration.test_retry_and_bad_input import _poison


@pytest.fixture
def migration(fresh_dag, monkeypatch, source, pg_dsn):
    path, result = source
    monkeypatch.setenv("AIRFLOW_CONN_CHECKPOINTS_SQLITE", sqlite_conn_env(path))
    monkeypatch.setenv("AIRFLOW_CONN_CHECKPOINTS_POSTGRES", postgres_conn_env(pg_dsn))

    def run(conf=None, *, fast_retries=False):
        dag = fresh_dag("checkpoint_migration")
        if fast_retries:
            for task in dag.tasks:
                task.retry_delay = timedelta(seconds=0)
        return dag.test(run_conf={"batch_size": 200, "batches_per_task": 4, **(conf or {})})

    return run, path, pg_dsn, result


def _tables(dsn: str) -> set[str]:
    with closing(psycopg.connect(dsn)) as conn:
        return {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}


def test_migrates_verifies_and_reruns_as_a_no_op(migration):
    run, path, dsn, _ = migration
    before = sha256(path)
    dr = run({"verify_mode": "full"})
    assert dr.state == "success"
    tis = task_instances(dr)
    assert len([k for k in tis if k[0] == "import_batches"]) > 1, "the import is mapped over groups of batches"
    summary = xcom(dr, "report")
    assert summary["verified"] is True and summary["rejected_rows"] == 0
    by_table = {r["table"]: r for r in summary["tables"]}
    with closing(psycopg.connect(dsn)) as conn:
        assert by_table["checkpoints"]["imported"] == conn.execute("SELECT COUNT(*) FROM checkpoints").fetchone()[0]
    report_text = Path(summary["report_file"]).read_text()
    assert SENTINEL_PASSWORD not in report_text and SENTINEL_PASSWORD not in json.dumps(summary)
    for step in ("preflight", "snapshot", "export", "verify", "catch_up"):
        assert SENTINEL_PASSWORD not in json.dumps(xcom(dr, step), default=str)
    report = json.loads(report_text)
    assert "checkpoint_writes" in report["table_text"] and report["verify"]["ok"]
    assert report["verify"]["content"]["blobs"]["found"] > 0
    assert sha256(path) == before

    fingerprint = target_fingerprint(dsn)
    again = run()
    assert again.state == "success"
    assert all(r["imported"] == 0 for r in xcom(again, "report")["tables"])
    assert target_fingerprint(dsn) == fingerprint


def test_dry_run_writes_nothing(migration):
    run, path, dsn, _ = migration
    before = sha256(path)
    dr = run({"dry_run": True})
    assert dr.state == "success"
    plan = xcom(dr, "report")["plan"]
    assert plan["source"]["counts"]["threads"] == 24 and plan["estimate_s"]["import"] > 0
    assert plan["target"]["needs_setup"] is True
    assert task_instances(dr)[("snapshot", -1)].state == "skipped"
    assert _tables(dsn) == set(), "a dry run does not even set up the schema"
    assert sha256(path) == before


FAULT_SQL = ["CREATE SEQUENCE cpo_fault_fired", """
CREATE FUNCTION cpo_inject_fault() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF (SELECT count(*) FROM checkpoint_ops_migration_batches WHERE rows_read > 0) >= 3
     AND nextval('cpo_fault_fired') = 1 THEN
    IF TG_ARGV[0] = 'drop' THEN
      PERFORM pg_terminate_backend(pg_backend_pid());
    ELSE
      RAISE EXCEPTION 'injected failure after 3 batches';
    END IF;
  END IF;
  RETURN NEW;
END $$""", """
CREATE TRIGGER cpo_fault BEFORE INSERT ON checkpoint_ops_migration_batches
  FOR EACH ROW EXECUTE FUNCTION cpo_inject_fault('{mode}')"""]


@pytest.mark.parametrize("mode", ["raise", "drop"])
def test_import_failing_after_k_batches_is_retried_to_the_same_result(migration, mode, tmp_path, pg_admin):
    """The import fails once after 3 committed batches (an error, or the connection dropped);
    Airflow retries the task instance and the target ends up exactly like a clean run's."""
    from include.checkpoint_core.migration.target import ensure_bookkeeping
    from include.checkpoint_core.postgres_store import connect_postgres
    from tests.migration.helpers import migrate

    run, path, dsn, _ = migration
    clean_db = f"{psycopg.conninfo.conninfo_to_dict(dsn)['dbname']}_clean"
    pg_admin.execute(f'CREATE DATABASE "{clean_db}"')
    try:
        clean_dsn = psycopg.conninfo.make_conninfo(dsn, dbname=clean_db)
        migrate(path, clean_dsn, tmp_path / "clean", batch_size=200)
        expected = target_fingerprint(clean_dsn)
    finally:
        pg_admin.execute(f'DROP DATABASE IF EXISTS "{clean_db}" WITH (FORCE)')

    with closing(connect_postgres(dsn)) as conn:
        ensure_bookkeeping(conn)
        for statement in FAULT_SQL:
            conn.execute(statement.replace("{mode}", mode))
    dr = run({"batches_per_task": 100}, fast_retries=True)
    assert dr.state == "success"
    ti = task_instances(dr)[("import_batches", 0)]
    assert ti.try_number == 2, "the first attempt failed and was retried"
    with closing(psycopg.connect(dsn)) as conn:
        assert conn.execute("SELECT last_value FROM cpo_fault_fired").fetchone()[0] >= 1, "the fault really fired"
    assert target_fingerprint(dsn) == expected


def test_missing_source_fails_fast_and_touches_nothing(migration, monkeypatch, tmp_path):
    run, _, dsn, _ = migration
    dr = run({"source": str(tmp_path / "nope.sqlite")})
    assert dr.state == "failed"
    tis = task_instances(dr)
    assert tis[("preflight", -1)].state == "failed" and tis[("preflight", -1)].try_number == 1
    assert tis[("report", -1)].state == "failed", "the report still runs, and says the run did not finish"
    assert _tables(dsn) == set()


def test_on_reject_fail_stops_before_writing(migration):
    run, path, dsn, _ = migration
    _poison(path)
    before = sha256(path)
    dr = run({"on_reject": "fail"})
    assert dr.state == "failed"
    assert task_instances(dr)[("preflight", -1)].state == "failed"
    assert _tables(dsn) == set()
    assert sha256(path) == before


def test_rejected_rows_are_reported(migration):
    run, path, dsn, _ = migration
    _poison(path)
    dr = run()
    assert dr.state == "success"
    summary = xcom(dr, "report")
    assert summary["rejected_rows"] == 3 and summary["rejected_threads"] == 1
    entries = [json.loads(line) for line in Path(summary["rejected_file"]).read_text().splitlines()]
    assert len(entries) == 4 and all("reason" in e for e in entries)
    (thread,) = [e for e in entries if e.get("rejected") == "whole thread"]
    # The thread is wholly in rejected-threads.sqlite and wholly absent from the target.
    kept = Path(summary["rejected_file"]).with_name("rejected-threads.sqlite")
    with closing(sqlite3.connect(kept)) as conn:
        assert conn.execute("SELECT COUNT(*) FROM writes WHERE thread_id = ?", (thread["thread_id"],)).fetchone()[0] \
            == thread["writes"] > 0
    with closing(psycopg.connect(dsn)) as conn:
        assert conn.execute("SELECT COUNT(*) FROM checkpoint_writes WHERE thread_id = %s",
                            (thread["thread_id"],)).fetchone()[0] == 0
