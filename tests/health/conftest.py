"""Fixtures of the health tests: a webhook that records alerts, the store and service connections."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.airflow.conftest import dagbag, fresh_dag, task_instances  # noqa: F401 (fixtures)
from tests.conftest import sqlite_conn_env
from tests.observability.conftest import prometheus_factory, pushgateway  # noqa: F401 (fixtures)


@pytest.fixture
def webhook():
    """A local HTTP endpoint that records what the alert notifier posts."""
    received: list[dict] = []
    fail_next: list[int] = []  # status codes to answer (once each) before accepting posts

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if fail_next:
                self.send_response(fail_next.pop(0))
                self.end_headers()
                return
            received.append(body)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks/checkpoints", received, fail_next
    server.shutdown()


@pytest.fixture
def wired(source, webhook, pushgateway, monkeypatch):
    path, _ = source
    monkeypatch.setenv("AIRFLOW_CONN_CHECKPOINTS_SQLITE", sqlite_conn_env(Path(path)))
    monkeypatch.setenv("AIRFLOW_CONN_CHECKPOINT_ALERTS", json.dumps({"conn_type": "http", "host": webhook[0]}))
    monkeypatch.setenv("AIRFLOW_CONN_CHECKPOINT_PUSHGATEWAY", json.dumps({"conn_type": "http", "host": pushgateway.url}))
    monkeypatch.delenv("AIRFLOW_CONN_CHECKPOINT_PROMETHEUS", raising=False)
    monkeypatch.delenv("AIRFLOW_VAR_CHECKPOINT_HEALTH_CONFIG", raising=False)
    return {"path": path, "posts": webhook[1], "fail_next": webhook[2], "pushgateway": pushgateway}


def run_health(fresh_dag, **conf):
    """dag.test() of checkpoint_health with retries off; (dag run, {task_id: state})."""
    dag = fresh_dag("checkpoint_health")
    for t in dag.tasks:
        t.retries = 0
    dr = dag.test(run_conf=conf)
    return dr, {ti_id: ti.state for (ti_id, _), ti in task_instances(dr).items()}


