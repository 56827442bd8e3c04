"""The health check against a real Prometheus scraping a real app (tests/observability/metrics_app.py:
a SqliteSaver behind MeteredSaver, with injected write errors), every second."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from include.checkpoint_core.health.evaluate import check_health, justification
from include.checkpoint_core.health.prometheus import PrometheusAPI
from include.checkpoint_core.stores import StoreTarget
from tests.airflow.conftest import task_instances, xcom
from tests.conftest import ROOT, sqlite_conn_env
from tests.health.conftest import run_health
from tests.observability.servers import free_port

RATE = "sum(rate(checkpoint_writes_total[1m]))"


class App:
    def __init__(self, path: Path, port: int | None = None, **options):
        self.port = port or free_port()
        argv = [sys.executable, "-m", "tests.observability.metrics_app", "--port", str(self.port),
                "--sqlite", str(path)] + [f"--{k.replace('_', '-')}={v}" for k, v in options.items()]
        self.process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.process.stdout.readline()
        assert line.strip() == "ready", f"the test app did not start: {line}{self.process.stderr.read()}"
        self.target = f"127.0.0.1:{self.port}"

    def stop(self):
        self.process.terminate()
        self.process.wait(10)


@pytest.fixture
def app_and_prometheus(tmp_path, prometheus_factory):
    """start(**app options) -> (store path, Prometheus) once Prometheus has a rate for the app."""
    apps: list[App] = []
    path = tmp_path / "app.sqlite"

    def start(wait_for_samples: int = 9, **options):
        app = App(path, **options)
        apps.append(app)
        prom = prometheus_factory({"checkpoint-app": [app.target]}, scrape_interval="1s")
        # A rate is an average over its whole window, so the checks use a 6 s window that these
        # scrapes fill (the DAG's default window is the 15 minutes between its runs).
        prom.wait_for("count_over_time(checkpoint_writes_total{operation=\"put\"}[1m])",
                      lambda r: r and float(r[0]["value"][1]) >= wait_for_samples, timeout=60)
        return path, prom

    yield start
    for app in apps:
        app.stop()


def _check(path, prom, **kw):
    report = check_health(StoreTarget("sqlite", str(path), "checkpoints_sqlite"),
                          prometheus=PrometheusAPI(prom.url) if prom else None, window_minutes=0.1,
                          baseline_minutes=0.1, **kw)
    print(justification(report))
    return report


def test_injected_write_errors_mean_migrate_now(app_and_prometheus):
    path, prom = app_and_prometheus(writes_per_sec=40, error_rate=0.1)
    report = _check(path, prom)
    assert report["decision"] == "migrate_now"
    rate = report["inputs"]["error_rate"]
    assert 0.04 < rate < 0.2  # about the injected 10%
    assert any(r.startswith(f"write error rate {rate * 100:.2f}% > 1% over the last 0.1 min") for r in report["reasons"])
    assert report["inputs"]["writes_source"] == "prometheus"
    assert report["inputs"]["p99_write_seconds"] is not None


def test_clean_low_rate_workload_is_sqlite_sufficient(app_and_prometheus):
    path, prom = app_and_prometheus(writes_per_sec=10, error_rate=0)
    report = _check(path, prom)
    assert report["decision"] == "sqlite_sufficient"
    assert report["inputs"]["error_rate"] == 0
    assert 5 < report["inputs"]["writes_per_second"] < 15
    assert not [m for m in report["missing"] if m.startswith("prometheus: no") or "unreachable" in m]


def test_sustained_throughput_over_the_threshold_means_migrate_now(app_and_prometheus):
    path, prom = app_and_prometheus(writes_per_sec=150, error_rate=0)
    report = _check(path, prom)
    assert report["decision"] == "migrate_now"
    assert report["inputs"]["prometheus_writes_per_second"] > 100
    assert any("writes/s sustained" in r and "> 100/s" in r for r in report["reasons"])


def test_error_spike_against_the_baseline_is_an_anomaly(tmp_path, prometheus_factory):
    path = tmp_path / "app.sqlite"
    clean = App(path, writes_per_sec=20, error_rate=0)
    port = clean.port
    prom = prometheus_factory({"checkpoint-app": [clean.target]}, scrape_interval="1s")
    prom.wait_for("count_over_time(checkpoint_writes_total{operation=\"put\"}[1m])",
                  lambda r: r and float(r[0]["value"][1]) >= 15, timeout=60)
    clean.stop()
    # The same app restarts on the same port, now failing a fifth of its writes.
    flaky = App(path, port=port, writes_per_sec=20, error_rate=0.2)
    try:
        time.sleep(8)
        # window: the last 6 s (failing); baseline: the 30 s before it (mostly the clean run)
        report = check_health(StoreTarget("sqlite", str(path), "checkpoints_sqlite"), prometheus=PrometheusAPI(prom.url),
                              window_minutes=0.1, baseline_minutes=0.5, largest_top_n=0)
        print(justification(report))
        rate, baseline = report["inputs"]["error_rate"], report["inputs"]["baseline_error_rate"]
        assert rate > 0.1 and baseline is not None and baseline < rate / 3
        assert [a["kind"] for a in report["anomalies"]] == ["error_spike"]
        assert report["decision"] == "migrate_now"  # and the error rate itself is over 1%
    finally:
        flaky.stop()


def test_prometheus_with_no_series_is_an_input_missing_not_a_guess(tmp_path, prometheus_factory, source):
    path, _ = source
    prom = prometheus_factory({}, scrape_interval="1s")
    report = _check(path, prom)
    assert report["decision"] == "sqlite_sufficient"
    assert report["inputs"]["writes_source"] == "store: checkpoint ids"
    assert any("no checkpoint_writes_total{backend=\"sqlite\"} series" in m for m in report["missing"])


def test_a_query_prometheus_refuses_is_a_missing_input(tmp_path, prometheus_factory, source):
    path, _ = source
    prom = prometheus_factory({}, scrape_interval="1s")
    # Python's re accepts a lookahead, Prometheus's RE2 does not: HTTP 400 bad_data.
    report = _check(path, prom, selector='job=~"(?=a)"')
    assert report["decision"] == "sqlite_sufficient"
    assert any("refused" in m and "bad_data" in m for m in report["missing"])


@pytest.fixture
def health_env(source, monkeypatch):
    path, _ = source
    monkeypatch.setenv("AIRFLOW_CONN_CHECKPOINTS_SQLITE", sqlite_conn_env(Path(path)))
    for var in ("AIRFLOW_CONN_CHECKPOINT_PUSHGATEWAY", "AIRFLOW_CONN_CHECKPOINT_ALERTS",
                "AIRFLOW_VAR_CHECKPOINT_HEALTH_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_dag_with_prometheus_unreachable_decides_from_the_store_and_says_so(fresh_dag, health_env):
    health_env.setenv("AIRFLOW_CONN_CHECKPOINT_PROMETHEUS",
                      json.dumps({"conn_type": "http", "host": f"http://127.0.0.1:{free_port()}"}))
    dr, _ = run_health(fresh_dag, window_minutes=1)
    assert dr.state == "success"
    report = xcom(dr, "evaluate")
    assert report["decision"] == "sqlite_sufficient"
    assert report["inputs"]["threads"] == 24 and report["inputs"]["store_bytes"] > 0
    assert any("unreachable" in m for m in report["missing"])
    assert report["inputs"]["writes_source"] == "store: checkpoint ids"


def test_dag_reads_error_rate_from_prometheus(fresh_dag, health_env, app_and_prometheus):
    path, prom = app_and_prometheus(writes_per_sec=30, error_rate=0.2)
    health_env.setenv("AIRFLOW_CONN_CHECKPOINTS_SQLITE", sqlite_conn_env(Path(path)))
    health_env.setenv("AIRFLOW_CONN_CHECKPOINT_PROMETHEUS", json.dumps({"conn_type": "http", "host": prom.url}))
    dr, _ = run_health(fresh_dag, window_minutes=1)
    report = xcom(dr, "evaluate")
    assert report["decision"] == "migrate_now"
    assert any("write error rate" in r for r in report["reasons"])
    assert task_instances(dr)[("alert", -1)].state == "success"
