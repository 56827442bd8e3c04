"""checkpoint_health end to end under dag.test(): decision, history, Asset event, alert,
Pushgateway gauges and the auto-migration trigger, on a real SQLite store."""

from __future__ import annotations

import json
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.airflow.conftest import dagbag, fresh_dag, task_instances, xcom  # noqa: F401 (fixtures)
from tests.conftest import sqlite_conn_env
from tests.observability.conftest import pushgateway  # noqa: F401 (fixture)


@pytest.fixture
def webhook():
    """A local HTTP endpoint that records what the alert notifier posts."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks/checkpoints", received
    server.shutdown()


@pytest.fixture
def wired(source, webhook, pushgateway, monkeypatch):
    path, _ = source
    monkeypatch.setenv("AIRFLOW_CONN_CHECKPOINTS_SQLITE", sqlite_conn_env(Path(path)))
    monkeypatch.setenv("AIRFLOW_CONN_CHECKPOINT_ALERTS", json.dumps({"conn_type": "http", "host": webhook[0]}))
    monkeypatch.setenv("AIRFLOW_CONN_CHECKPOINT_PUSHGATEWAY", json.dumps({"conn_type": "http", "host": pushgateway.url}))
    monkeypatch.delenv("AIRFLOW_CONN_CHECKPOINT_PROMETHEUS", raising=False)
    monkeypatch.delenv("AIRFLOW_VAR_CHECKPOINT_HEALTH_CONFIG", raising=False)
    return {"path": path, "posts": webhook[1], "pushgateway": pushgateway}


def _run(fresh_dag, **conf):
    dag = fresh_dag("checkpoint_health")
    for t in dag.tasks:
        t.retries = 0
    dr = dag.test(run_conf=conf)
    return dr, {ti_id: ti.state for (ti_id, _), ti in task_instances(dr).items()}


def _asset_events() -> list[dict]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = (session.query(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
                .filter(AssetModel.name == "checkpoint_health_decision").all())
        return [dict(r.extra) for r in rows]


def test_store_only_run_is_sufficient_and_says_what_was_missing(fresh_dag, wired):
    dr, states = _run(fresh_dag)
    assert dr.state == "success"
    report = xcom(dr, "evaluate")
    assert report["decision"] == "sqlite_sufficient"
    assert report["inputs"]["writes_source"] == "store: checkpoint ids"
    assert any("checkpoint_prometheus" in m for m in report["missing"])
    assert any("error rate" in m for m in report["missing"])
    assert states["alert"] == "skipped" and states["trigger_migration"] == "skipped"
    # The gauges reached the Pushgateway, one group for this store.
    body = urllib.request.urlopen(wired["pushgateway"].url + "/metrics", timeout=5).read().decode()
    assert 'checkpoint_health_decision{backend="sqlite",decision="sqlite_sufficient",instance="",job="checkpoint_health",store="checkpoints_sqlite"} 1' in body
    assert 'checkpoint_store_threads{backend="sqlite",instance="",job="checkpoint_health",store="checkpoints_sqlite"} 24' in body


def test_multi_server_config_means_migrate_now_alerts_once_and_publishes_the_change(fresh_dag, wired):
    events_before = len(_asset_events())
    dr, states = _run(fresh_dag, app_servers=3)
    assert dr.state == "success"
    report = xcom(dr, "evaluate")
    assert report["decision"] == "migrate_now"
    assert any("3 app servers configured > 1" in r for r in report["reasons"])
    assert states["publish_change"] == "success" and states["alert"] == "success"
    assert states["trigger_migration"] == "skipped"  # auto_migrate is off
    assert len(wired["posts"]) == 1
    post = wired["posts"][0]
    assert post["decision"] == "migrate_now" and "MIGRATE NOW" in post["text"] and "checkpoint_migration" in post["text"]
    events = _asset_events()
    assert len(events) == events_before + 1 and events[-1]["decision"] == "migrate_now"

    # The same again: nothing changed, so no Asset event and no second alert.
    dr, states = _run(fresh_dag, app_servers=3)
    assert xcom(dr, "evaluate")["changed"] is False
    assert states["publish_change"] == "skipped" and states["alert"] == "skipped"
    assert len(wired["posts"]) == 1 and len(_asset_events()) == events_before + 1

    # Back to one server: the decision changes back, an event but no alert.
    dr, states = _run(fresh_dag, app_servers=1)
    assert xcom(dr, "evaluate")["previous_decision"] == "migrate_now"
    assert states["publish_change"] == "success" and states["alert"] == "skipped"
    from include.checkpoint_core.health.history import read_history
    from include.checkpoint_core.stores import StoreTarget

    history = read_history(StoreTarget("sqlite", str(wired["path"])))
    assert [h["decision"] for h in history][:3] == ["sqlite_sufficient", "migrate_now", "migrate_now"]


def test_variable_configures_scheduled_runs_and_params_override_it(fresh_dag, wired, monkeypatch):
    monkeypatch.setenv("AIRFLOW_VAR_CHECKPOINT_HEALTH_CONFIG", json.dumps({"app_servers": 2}))
    dr, _ = _run(fresh_dag)
    assert xcom(dr, "evaluate")["decision"] == "migrate_now"
    dr, _ = _run(fresh_dag, app_servers=1)
    assert xcom(dr, "evaluate")["decision"] == "sqlite_sufficient"


def test_auto_migrate_triggers_the_migration_once(fresh_dag, wired):
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    dr, states = _run(fresh_dag, app_servers=2, auto_migrate=True)
    assert states["trigger_migration"] == "success"
    with create_session() as session:
        runs = session.query(DagRun).filter_by(dag_id="checkpoint_migration",
                                               run_id="auto__checkpoint_health__checkpoints_sqlite").all()
        assert len(runs) == 1
        assert runs[0].conf == {"source": "checkpoints_sqlite", "target": "checkpoints_postgres"}
    dr, states = _run(fresh_dag, app_servers=2, auto_migrate=True)
    assert states["trigger_migration"] == "skipped"  # that run exists already: never a second migration


def test_bad_settings_fail_without_retry(fresh_dag, wired, monkeypatch):
    monkeypatch.setenv("AIRFLOW_VAR_CHECKPOINT_HEALTH_CONFIG", json.dumps({"app_server": 2}))
    dr, states = _run(fresh_dag)
    assert dr.state == "failed" and states["evaluate"] == "failed"
