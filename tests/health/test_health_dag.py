"""checkpoint_health end to end under dag.test(): decision, history, Asset event, alert,
Pushgateway gauges and the auto-migration trigger, on a real SQLite store."""

from __future__ import annotations

import json
import urllib.request

import pytest

from tests.airflow.conftest import xcom
from tests.health.conftest import run_health as _run


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

    dr, states = _run(fresh_dag, app_servers=2, auto_migrate="on")
    assert states["trigger_migration"] == "success"
    with create_session() as session:
        runs = session.query(DagRun).filter_by(dag_id="checkpoint_migration",
                                               run_id="auto__checkpoint_health__checkpoints_sqlite").all()
        assert len(runs) == 1
        assert runs[0].conf == {"source": "checkpoints_sqlite", "target": "checkpoints_postgres"}
    dr, states = _run(fresh_dag, app_servers=2, auto_migrate="on")
    assert states["trigger_migration"] == "skipped"  # that run exists already: never a second migration


@pytest.mark.parametrize("variable", [json.dumps({"app_server": 2}), "not json", '{"app_servers": true}'])
def test_bad_settings_fail_without_retry(fresh_dag, wired, monkeypatch, variable):
    monkeypatch.setenv("AIRFLOW_VAR_CHECKPOINT_HEALTH_CONFIG", variable)
    dr, states = _run(fresh_dag)
    assert dr.state == "failed" and states["evaluate"] == "failed"


def test_an_alert_that_failed_is_sent_again_by_the_next_run(fresh_dag, wired):
    wired["fail_next"].append(500)  # the webhook answers 500 once
    dr, states = _run(fresh_dag, app_servers=2)
    assert states["alert"] == "failed" and states["mark_delivered"] == "upstream_failed"
    assert wired["posts"] == []
    dr, states = _run(fresh_dag, app_servers=2)
    report = xcom(dr, "evaluate")
    assert report["changed"] is True and report["previous_decision"] is None  # nothing delivered before
    assert states["alert"] == "success" and len(wired["posts"]) == 1
    assert states["mark_delivered"] == "success"
    dr, states = _run(fresh_dag, app_servers=2)
    assert states["alert"] == "skipped" and len(wired["posts"]) == 1


def test_no_store_connection_fails_at_once_and_names_the_param(fresh_dag, monkeypatch):
    from airflow.sdk.exceptions import AirflowFailException

    from checkpoint_ops.hooks import KNOWN_STORE_CONN_IDS, resolve_store_conn_ids

    for conn_id in KNOWN_STORE_CONN_IDS:
        monkeypatch.delenv(f"AIRFLOW_CONN_{conn_id.upper()}", raising=False)
    with pytest.raises(AirflowFailException, match="'store' param"):
        resolve_store_conn_ids([], tuple(KNOWN_STORE_CONN_IDS), param="store")
    dr, states = _run(fresh_dag)
    assert dr.state == "failed" and states["resolve_store"] == "failed" and states["evaluate"] == "upstream_failed"
