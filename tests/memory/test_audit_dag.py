"""checkpoint_memory_audit end to end with dag.test(): the report in XCom and as an artifact, the alert."""

from __future__ import annotations

import json
from pathlib import Path

from include.checkpoint_core.memory_audit import audit_memory
from include.checkpoint_core.stores import StoreTarget
from tests.airflow.conftest import dagbag, fresh_dag, task_instances, xcom  # noqa: F401 (fixtures)
from tests.conftest import sqlite_conn_env
from tests.memory.conftest import make_app_store


def test_the_dag_reports_and_alerts(fresh_dag, tmp_path, monkeypatch):  # noqa: F811
    target = make_app_store(StoreTarget("sqlite", str(tmp_path / "app.sqlite"), "checkpoints_sqlite"))
    monkeypatch.setenv("AIRFLOW_CONN_CHECKPOINTS_SQLITE", sqlite_conn_env(Path(target.location)))
    monkeypatch.setenv("AIRFLOW_VAR_CHECKPOINT_ARTIFACTS_URL", f"file://{tmp_path}/artifacts")
    run = fresh_dag("checkpoint_memory_audit").test(run_conf={"stores": ["checkpoints_sqlite"], "oversized_kib": 1,
                                                                 "alert_share_pct": 10})
    states = {k: ti.state for k, ti in task_instances(run).items()}
    assert states == {("resolve_stores", -1): "success", ("audit", 0): "success", ("alert", -1): "success"}
    report = xcom(run, "audit", 0)
    direct = audit_memory(target, oversized_bytes=1024)
    assert report["checkpoints"] == direct["checkpoints"] and report["store_items"] == direct["store_items"]
    assert report["alert"] and report["checkpoints"]["oversized"][0]["thread_id"] == "thread-A"
    assert report["pushgateway"] == "skipped: no connection 'checkpoint_pushgateway'"
    assert json.loads(Path(report["artifact"].removeprefix("file://")).read_text())["checkpoints"] == direct["checkpoints"]
    assert xcom(run, "alert") == ["checkpoints_sqlite"]
