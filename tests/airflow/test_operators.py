"""The store hook and the setup operator, run inside real Airflow task instances."""

from __future__ import annotations

import json
from datetime import timedelta

import psycopg
import pytest

from tests.airflow.conftest import register, task_instances, xcom
from tests.conftest import SENTINEL_PASSWORD, postgres_conn_env, sqlite_conn_env


def test_hook_resolves_sqlite_connection(monkeypatch, tmp_path, airflow_db):
    from checkpoint_ops.hooks import CheckpointStoreHook

    monkeypatch.setenv("AIRFLOW_CONN_CP_FILE", sqlite_conn_env(tmp_path / "x.sqlite"))
    target = CheckpointStoreHook("cp_file").get_target()
    assert target.kind == "sqlite" and target.location == str(tmp_path / "x.sqlite") and target.name == "cp_file"


def test_hook_reads_postgres_connection_like_postgres_hook(monkeypatch, airflow_db):
    from psycopg.conninfo import conninfo_to_dict

    from checkpoint_ops.hooks import CheckpointStoreHook

    monkeypatch.setenv(
        "AIRFLOW_CONN_CP_PG",
        json.dumps({"conn_type": "postgres", "host": "db.example", "port": 6432, "login": "app",
                    "password": "p@ss word", "schema": "checkpoints",
                    "extra": {"sslmode": "require", "application_name": "checkpoint-ops", "cursor": "dictcursor"}}),
    )
    target = CheckpointStoreHook("cp_pg").get_target()
    parts = conninfo_to_dict(target.location)
    assert parts == {"host": "db.example", "port": "6432", "user": "app", "password": "p@ss word",
                     "dbname": "checkpoints", "sslmode": "require", "application_name": "checkpoint-ops"}
    assert "p@ss" not in repr(target) and target.display == "app@db.example:6432/checkpoints"


@pytest.mark.parametrize(
    "conn, words",
    [
        (None, "is not defined"),
        ({"conn_type": "http", "host": "example.com"}, "needs type 'sqlite' or 'postgres'"),
        ({"conn_type": "sqlite"}, "has no file path"),
    ],
    ids=["undefined", "wrong-type", "no-path"],
)
def test_hook_rejects_unusable_connections(monkeypatch, airflow_db, conn, words):
    from checkpoint_ops.hooks import CheckpointStoreHook, ConnectionNotUsable

    if conn:
        monkeypatch.setenv("AIRFLOW_CONN_CP_BAD", json.dumps(conn))
    with pytest.raises(ConnectionNotUsable, match=words) as info:
        CheckpointStoreHook("cp_bad").get_target()
    assert "AIRFLOW_CONN_" in str(info.value)


def _operator_dag(dag_id: str, retries: int):
    from airflow.sdk import DAG, Param

    from checkpoint_ops.operators import CheckpointSetupOperator

    with DAG(
        dag_id=dag_id,
        schedule=None,
        render_template_as_native_obj=True,
        params={"conn": Param("cp_target", type="string"), "store": Param(False, type="boolean")},
        default_args={"owner": "checkpoint-ops", "retries": retries, "retry_delay": timedelta(seconds=0)},
    ) as dag:
        CheckpointSetupOperator(
            task_id="setup", checkpoint_conn_id="{{ params.conn }}", include_store="{{ params.store }}"
        )
    register(dag)
    return dag


def test_setup_operator_renders_templates_and_returns_summary(monkeypatch, pg_dsn, airflow_db):
    monkeypatch.setenv("AIRFLOW_CONN_CP_TARGET", postgres_conn_env(pg_dsn))
    dag = _operator_dag("op_setup_ok", retries=0)
    dr = dag.test(run_conf={"conn": "cp_target", "store": False})
    assert dr.state == "success"
    summary = xcom(dr, "setup")
    assert summary["conn_id"] == "cp_target" and summary["store"] == "postgres"
    assert summary["schema_versions"]["store"] is None, "include_store=False rendered as a real boolean"
    assert summary["duration_s"] >= 0
    assert SENTINEL_PASSWORD not in json.dumps(summary)
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT to_regclass('store')").fetchone()[0] is None
        assert conn.execute("SELECT to_regclass('checkpoints')").fetchone()[0] == "checkpoints"


def test_unreachable_server_is_retried_but_bad_path_is_not(monkeypatch, tmp_path, airflow_db):
    dag = _operator_dag("op_setup_retry", retries=1)
    monkeypatch.setenv("AIRFLOW_CONN_CP_DOWN", json.dumps({"conn_type": "postgres", "host": "127.0.0.1", "port": 9, "login": "x", "schema": "x"}))
    dr = dag.test(run_conf={"conn": "cp_down"})
    assert dr.state == "failed"
    assert task_instances(dr)[("setup", -1)].try_number == 2, "a server that is down may come back: retried"

    monkeypatch.setenv("AIRFLOW_CONN_CP_NOTSQLITE", sqlite_conn_env(tmp_path / "notes.txt"))
    (tmp_path / "notes.txt").write_text("not a database, " * 100)
    dr = _operator_dag("op_setup_retry2", retries=1).test(run_conf={"conn": "cp_notsqlite"})
    assert dr.state == "failed"
    assert task_instances(dr)[("setup", -1)].try_number == 1, "a wrong file will not fix itself: not retried"


def test_templated_flags_read_as_booleans():
    from checkpoint_ops.operators.base import as_bool

    assert [as_bool(v) for v in (True, "True", "true", 1, "1")] == [True] * 5
    assert [as_bool(v) for v in (False, "False", "false", 0, "0", "", None, "no")] == [False] * 8


def test_defined_but_unusable_connection_is_reported_not_skipped(monkeypatch, tmp_path, airflow_db):
    from airflow.sdk.exceptions import AirflowFailException

    from checkpoint_ops.hooks import resolve_store_conn_ids

    monkeypatch.setenv("AIRFLOW_CONN_CHECKPOINTS_SQLITE", sqlite_conn_env(tmp_path / "ok.sqlite"))
    monkeypatch.setenv("AIRFLOW_CONN_CHECKPOINTS_POSTGRES", json.dumps(
        {"conn_type": "postgres", "host": "h", "login": "u", "schema": "d", "extra": {"no_such_libpq_option": "1"}}))
    with pytest.raises(AirflowFailException, match="options libpq does not accept"):
        resolve_store_conn_ids([])
    monkeypatch.delenv("AIRFLOW_CONN_CHECKPOINTS_POSTGRES")
    assert resolve_store_conn_ids([]) == ["checkpoints_sqlite"]


def test_sqlalchemy_style_sqlite_uri(monkeypatch, airflow_db):
    from checkpoint_ops.hooks import CheckpointStoreHook

    monkeypatch.setenv("AIRFLOW_CONN_CP_URI", "sqlite:////data/checkpoints.sqlite")
    assert CheckpointStoreHook("cp_uri").get_target().location == "/data/checkpoints.sqlite"
