"""checkpoint_setup end to end with dag.test(): real SQLite files, real PostgreSQL databases."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from contextlib import closing
from pathlib import Path

import psycopg
import pytest

from tests.airflow.conftest import task_instances, xcom
from tests.conftest import SENTINEL_PASSWORD, postgres_conn_env, sqlite_conn_env
from tests.core.test_sqlite_store import make_pre_task_path_file


@pytest.fixture
def setup_dag(fresh_dag):
    return fresh_dag("checkpoint_setup")


@pytest.fixture
def stores(monkeypatch, sqlite_path, pg_dsn):
    monkeypatch.setenv("AIRFLOW_CONN_CHECKPOINTS_SQLITE", sqlite_conn_env(sqlite_path))
    monkeypatch.setenv("AIRFLOW_CONN_CHECKPOINTS_POSTGRES", postgres_conn_env(pg_dsn))
    return sqlite_path, pg_dsn


def _run(dag, conf=None):
    dr = dag.test(run_conf=conf or {})
    return dr, xcom(dr, "report")


def test_sets_up_sqlite_and_postgres_then_changes_nothing(setup_dag, stores):
    sqlite_path, pg_dsn = stores
    dr, report = _run(setup_dag, {"stores": ["checkpoints_sqlite", "checkpoints_postgres"]})
    assert dr.state == "success"
    by_id = {s["conn_id"]: s for s in report["stores"]}
    assert by_id["checkpoints_sqlite"]["journal_mode"] == "wal"
    assert "created checkpoint tables (schema 2)" in by_id["checkpoints_sqlite"]["changes"]
    assert any(c.startswith("checkpoints migrations none ->") for c in by_id["checkpoints_postgres"]["changes"])
    assert any(c.startswith("store migrations none ->") for c in by_id["checkpoints_postgres"]["changes"])
    assert report["changed"] == 2
    assert SENTINEL_PASSWORD not in json.dumps(report)
    artifact = Path(report["artifact"].removeprefix("file://"))
    assert json.loads(artifact.read_text())["changed"] == 2

    with closing(sqlite3.connect(sqlite_path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with psycopg.connect(pg_dsn) as conn:
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"checkpoints", "checkpoint_blobs", "checkpoint_writes", "checkpoint_migrations", "store"} <= tables

    digest = hashlib.sha256(sqlite_path.read_bytes()).hexdigest()
    dr2, again = _run(setup_dag, {"stores": ["checkpoints_sqlite", "checkpoints_postgres"]})
    assert dr2.state == "success"
    assert again["changed"] == 0 and all(s["changes"] == [] for s in again["stores"])
    assert hashlib.sha256(sqlite_path.read_bytes()).hexdigest() == digest
    mapped = {k: ti for k, ti in task_instances(dr2).items() if k[0] == "setup_store"}
    assert sorted(ti.rendered_map_index for ti in mapped.values()) == ["checkpoints_postgres", "checkpoints_sqlite"]


def test_empty_stores_means_every_defined_connection(setup_dag, monkeypatch, sqlite_path):
    monkeypatch.setenv("AIRFLOW_CONN_CHECKPOINTS_SQLITE", sqlite_conn_env(sqlite_path))
    monkeypatch.delenv("AIRFLOW_CONN_CHECKPOINTS_POSTGRES", raising=False)
    dr, report = _run(setup_dag)
    assert dr.state == "success"
    assert [s["conn_id"] for s in report["stores"]] == ["checkpoints_sqlite"]


def test_no_store_defined_fails_with_a_clear_message(setup_dag, monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_CHECKPOINTS_SQLITE", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_CHECKPOINTS_POSTGRES", raising=False)
    dr, _ = _run(setup_dag)
    assert dr.state == "failed"
    ti = task_instances(dr)[("resolve_stores", -1)]
    assert ti.state == "failed" and ti.try_number == 1, "a configuration error is not retried"


def test_unknown_connection_is_not_retried(setup_dag, stores):
    dr, _ = _run(setup_dag, {"stores": ["checkpoints_sqlite", "no_such_conn"]})
    assert dr.state == "failed"
    tis = task_instances(dr)
    assert tis[("resolve_stores", -1)].try_number == 1
    assert not Path(stores[0]).exists(), "nothing was set up when the request was wrong"


def test_file_that_is_not_a_checkpoint_db_is_left_alone(setup_dag, monkeypatch, tmp_path):
    app_db = tmp_path / "app.sqlite"
    with closing(sqlite3.connect(app_db)) as conn:
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
        conn.commit()
    digest = hashlib.sha256(app_db.read_bytes()).hexdigest()
    monkeypatch.setenv("AIRFLOW_CONN_CHECKPOINTS_SQLITE", sqlite_conn_env(app_db))
    dr, _ = _run(setup_dag, {"stores": ["checkpoints_sqlite"]})
    assert dr.state == "failed"
    ti = task_instances(dr)[("setup_store", 0)]
    assert ti.state == "failed" and ti.try_number == 1
    assert hashlib.sha256(app_db.read_bytes()).hexdigest() == digest


def test_upgrades_an_old_layout_file(setup_dag, monkeypatch, sqlite_path):
    make_pre_task_path_file(sqlite_path)
    monkeypatch.setenv("AIRFLOW_CONN_CHECKPOINTS_SQLITE", sqlite_conn_env(sqlite_path))
    dr, report = _run(setup_dag, {"stores": ["checkpoints_sqlite"]})
    assert dr.state == "success"
    changes = report["stores"][0]["changes"]
    assert "upgraded schema 1 -> 2 (current (writes.task_path))" in changes
    assert "switched journal_mode delete -> wal" in changes


def test_bad_param_is_rejected(setup_dag, stores):
    from airflow.sdk.definitions.param import ParamValidationError

    with pytest.raises(ParamValidationError):
        setup_dag.test(run_conf={"stores": ["bad id; DROP TABLE x"]})


def test_metadata_index_keys_param_builds_the_indexes_and_refuses_bad_keys(setup_dag, stores, fresh_dag):
    from airflow.sdk.exceptions import ParamValidationError

    sqlite_path, pg_dsn = stores
    dr, report = _run(setup_dag, {"stores": ["checkpoints_sqlite", "checkpoints_postgres"],
                                  "metadata_index_keys": ["tenant", "user_id"]})
    assert dr.state == "success"
    with closing(sqlite3.connect(sqlite_path)) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"checkpoint_ops_meta_tenant_idx", "checkpoint_ops_meta_user_id_idx", "checkpoint_ops_checkpoints_age_idx"} <= names
    with psycopg.connect(pg_dsn) as conn:
        pg_names = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")}
    assert {"checkpoint_ops_checkpoints_metadata_idx", "checkpoint_ops_checkpoints_age_idx"} <= pg_names
    with pytest.raises(ParamValidationError):
        fresh_dag("checkpoint_setup").test(run_conf={"metadata_index_keys": ["user_id; DROP TABLE checkpoints"]})
