"""One live Airflow for every test in this folder (tests/airflow/live.py), started once per session.

Starting it costs about 30 s (metadata DB migration, four processes, the first parse), so the
scheduler, REST API and browser tests share it: one SQLite source, one fresh PostgreSQL target
per test, the moto S3 endpoint. Every process it started is stopped when the session ends.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from tests.airflow.live import LiveAirflow, scaled_source
from tests.conftest import _dsn_for, aws_conn_env, postgres_conn_env, sqlite_conn_env

DAG_ID = "checkpoint_migration"
COPIES = 12  # the session's 24-thread sample-agent source, 12 times over: 288 threads, ~39K rows
TARGETS = ("parallel", "kill", "s3", "api", "retry", "browser")
API_TARGETS = ("retry",)  # connections defined through the REST API, not the environment
RUN_TIMEOUT = 300
# The DAGs retry after 30 s; the live Airflow's cluster policy makes it this, so retries cost seconds.
RETRY_DELAY_S = 2.0


@dataclass
class Live:
    airflow: LiveAirflow
    source: Path
    source_counts: dict[str, int]
    targets: dict[str, str]  # name -> DSN; the connection id is live_target_<name>
    s3_endpoint: str

    def run(self, target: str, conf: dict, *, while_running=None, expect: str = "success") -> tuple[str, float]:
        """Trigger the migration into ``target``; wait until it finishes (calling ``while_running``
        every 50 ms meanwhile, if given) in the state ``expect``; the run id and its wall time."""
        started = time.monotonic()
        run_id = self.airflow.trigger(DAG_ID, {**conf, "target": f"live_target_{target}"})
        deadline = started + RUN_TIMEOUT
        while (state := self.airflow.run_state(DAG_ID, run_id)) not in ("success", "failed"):
            self.airflow.check_alive()
            if time.monotonic() > deadline:
                pytest.fail(f"run {run_id} not finished after {RUN_TIMEOUT}s\n{self.airflow.diagnostics(DAG_ID, run_id)}")
            if while_running is not None:
                while_running(run_id)
            time.sleep(0.05 if while_running else 0.5)
        wall = time.monotonic() - started
        if state != expect:
            pytest.fail(f"run {run_id} ended {state}\n{self.airflow.diagnostics(DAG_ID, run_id)}")
        print(f"\n{DAG_ID} {run_id} under LocalExecutor: {wall:.1f}s from trigger to {state}")
        print(self.airflow.timeline(DAG_ID, run_id))
        return run_id, wall

    def mapped(self, run_id: str, task_id: str) -> list[dict]:
        return [ti for ti in self.airflow.task_instances(DAG_ID, run_id, task_id) if ti["map_index"] >= 0]


def _source_counts(path: Path) -> dict[str, int]:
    with closing(sqlite3.connect(path)) as conn:
        return {table: conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                for table in ("checkpoints", "writes", "store")}


def _target_counts(dsn: str) -> dict[str, int]:
    with closing(psycopg.connect(dsn)) as conn:
        return {table: conn.execute(f"SELECT COUNT(*) FROM {target}").fetchone()[0]
                for table, target in (("checkpoints", "checkpoints"), ("writes", "checkpoint_writes"), ("store", "store"))}


@pytest.fixture(scope="session")
def live(generated_source, tmp_path_factory, pg_admin, moto_s3):
    """One real Airflow for every live test, with the source, one fresh target per test and the moto
    endpoint in every process's environment (connections are env vars, as in a deployment).
    ``retry`` is not among them: its connection is made through the REST API, so a test can change it."""
    source = scaled_source(generated_source[0], tmp_path_factory.mktemp("live") / "source.sqlite", COPIES)
    targets = {}
    for name in TARGETS:
        db = f"cpo_live_{name}_{uuid.uuid4().hex[:8]}"
        pg_admin.execute(f'CREATE DATABASE "{db}"')
        targets[name] = _dsn_for(db)
    env = {
        "AIRFLOW_CONN_CHECKPOINTS_SQLITE": sqlite_conn_env(source),
        **{f"AIRFLOW_CONN_LIVE_TARGET_{name.upper()}": postgres_conn_env(dsn) for name, dsn in targets.items()
           if name not in API_TARGETS},
        "AIRFLOW_CONN_CHECKPOINT_ARTIFACTS": aws_conn_env(moto_s3),
    }
    try:
        with LiveAirflow(env, retry_delay_s=RETRY_DELAY_S) as airflow:
            airflow.wait_for_dag(DAG_ID)
            print(f"\nAirflow (api-server, scheduler, dag-processor, triggerer) up in {airflow.startup_s:.1f}s")
            yield Live(airflow, source, _source_counts(source), targets, moto_s3)
    finally:
        for dsn in targets.values():
            pg_admin.execute(f'DROP DATABASE IF EXISTS "{psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]}" WITH (FORCE)')


def _assert_verified(live: Live, run_id: str, target: str) -> dict:
    verify = live.airflow.xcom(DAG_ID, run_id, "verify")
    assert verify["ok"] is True and verify["mode"] == "full", verify
    assert verify["counts_ok"] and verify["content_ok"]
    summary = live.airflow.xcom(DAG_ID, run_id, "report")
    assert summary["verified"] is True and summary["rejected_rows"] == 0
    assert _target_counts(live.targets[target]) == live.source_counts
    return summary


def _committed(dsn: str, run_id: str, group: list[dict]) -> int:
    """How many of ``group``'s batches the target has committed for this migration."""
    with closing(psycopg.connect(dsn, connect_timeout=5)) as conn:
        if conn.execute("SELECT to_regclass('checkpoint_ops_migration_batches')").fetchone()[0] is None:
            return 0
        rows = conn.execute("SELECT table_name, batch_no FROM checkpoint_ops_migration_batches WHERE migration_id = %s",
                            (run_id,)).fetchall()
    wanted = {(g["table"], g["number"]) for g in group}
    return len(wanted & set(rows))
