"""checkpoint_provision's connection check, with the local PostgreSQL standing in for the RDS endpoint
(moto's endpoint is not a database): SELECT 1, the server version, and the LangGraph schema set up."""

from __future__ import annotations

import psycopg

from include.checkpoint_core.provisioning.connection_check import check_connection
from include.checkpoint_core.stores import StoreTarget
from tests.airflow.conftest import dagbag, fresh_dag, xcom  # noqa: F401 (fixtures)
from tests.conftest import postgres_conn_env


def test_provision_dag_checks_the_recorded_connection(aws, pg_dsn, fresh_dag, monkeypatch):  # noqa: F811
    monkeypatch.setenv("AIRFLOW_CONN_CHECKPOINTS_POSTGRES", postgres_conn_env(pg_dsn))
    dr = fresh_dag("checkpoint_provision").test(run_conf={
        "identifier": aws["identifier"], "subnet_group": aws["subnet_group"],
        "allowed_security_group": aws["app_sg"], "aws_conn_id": "aws_checkpoints", "dry_run": False,
        "timeout_minutes": 1})
    assert dr.state == "success"
    checked = xcom(dr, "check_connection")
    with psycopg.connect(pg_dsn) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert checked["select_1"] == 1 and checked["server_version"] == version
    assert {"checkpoints", "checkpoint_writes", "checkpoint_blobs"} <= tables and checked["setup_changes"]
    # Checked again (a cleared task): the schema is up to date, nothing changes.
    assert check_connection(StoreTarget("postgres", pg_dsn, "checkpoints_postgres"))["setup_changes"] == []
