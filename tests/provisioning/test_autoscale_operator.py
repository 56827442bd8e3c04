"""checkpoint_autoscale against a real Prometheus scraping a test exporter at 600 writes/s, RDS on moto
over HTTP and the history table in a real PostgreSQL: scale up once, cooldown, defer, self-managed,
dry_run, and the DAG end to end with an SNS notification."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timezone

import psycopg
import pytest

from tests.airflow.conftest import dagbag, fresh_dag, xcom  # noqa: F401 (fixtures)
from tests.conftest import postgres_conn_env
from tests.observability import servers

RATE = 600.0  # writes/s, above the default 500 threshold
FAST = {"up_minutes": 0.1, "down_minutes": 0.15, "coverage_slack_minutes": 0.05, "cooldown_minutes": 30}


EXPORTER = """
import sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
rate, started = float(sys.argv[1]), time.time()

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        # With its own timestamp, so a late answer on a busy machine does not bend the rate.
        now = time.time()
        body = ('checkpoint_writes_total{backend="postgres",operation="put"} %.3f %d\\n'
                % (rate * (now - started), now * 1000)).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


class WritesExporter:
    """``checkpoint_writes_total{backend="postgres"}`` growing at exactly RATE per second, in its own
    process (the test process is busy running Airflow tasks and must not delay the scrapes)."""

    def __init__(self):
        self.process = subprocess.Popen([sys.executable, "-c", EXPORTER, str(RATE)], stdout=subprocess.PIPE, text=True)
        self.target = f"127.0.0.1:{int(self.process.stdout.readline())}"

    def stop(self):
        self.process.terminate()
        self.process.wait(10)


@pytest.fixture(scope="module")
def loaded_prometheus(tmp_path_factory):
    """A Prometheus that has seen 600 writes/s for longer than the FAST windows."""
    try:
        servers.find_binary(servers.PROMETHEUS_BINARIES)
    except servers.ToolMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    exporter = WritesExporter()
    prom = servers.start_prometheus(tmp_path_factory.mktemp("prometheus"), {"app": [exporter.target]},
                                    scrape_interval="1s")
    # rate()'s own 10 s, then the 6 s of the up window must fill.
    prom.wait_for('count_over_time(checkpoint_writes_total{backend="postgres"}[1m])',
                  lambda r: r and float(r[0]["value"][1]) >= 17, timeout=60)
    yield prom
    prom.stop()
    exporter.stop()


@pytest.fixture
def env(aws, pg_dsn, loaded_prometheus, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_CHECKPOINTS_POSTGRES", postgres_conn_env(pg_dsn))
    monkeypatch.setenv("AIRFLOW_CONN_CHECKPOINT_PROMETHEUS", json.dumps({"conn_type": "http", "host": loaded_prometheus.url}))
    aws["rds"].create_db_instance(
        DBInstanceIdentifier=aws["identifier"], DBInstanceClass="db.t4g.small", Engine="postgres",
        AllocatedStorage=20, MasterUsername="checkpoints", ManageMasterUserPassword=True,
        DBSubnetGroupName=aws["subnet_group"], StorageEncrypted=True)
    return {**aws, "dsn": pg_dsn}


@contextmanager
def running_migration():
    """A running checkpoint_migration run in Airflow's metadata database, for get_dr_count to find."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    run_id = f"manual__blocker_{time.time_ns()}"
    with create_session() as session:
        session.add(DagRun(dag_id="checkpoint_migration", run_id=run_id, run_type="manual", state="running",
                           run_after=datetime.now(timezone.utc)))
    try:
        yield
    finally:
        with create_session() as session:
            session.query(DagRun).filter_by(dag_id="checkpoint_migration", run_id=run_id).delete()


def operator(**kwargs):
    from checkpoint_ops.operators.autoscale import CheckpointAutoscaleOperator

    return CheckpointAutoscaleOperator(task_id="decide", aws_conn_id="aws_checkpoints", config=dict(FAST),
                                       step_seconds=1, rate_window="10s", poll_seconds=0.2, timeout_minutes=1, **kwargs)


def instance_class(env) -> str:
    return env["rds"].describe_db_instances(DBInstanceIdentifier=env["identifier"])["DBInstances"][0]["DBInstanceClass"]


def history(dsn):
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT run_id, action, current_class, target_class, applied "
                            "FROM checkpoint_ops_autoscale_history ORDER BY id").fetchall()


def test_sustained_load_scales_up_once_then_holds_in_cooldown(env):
    first = operator(rds_instance=env["identifier"]).evaluate(run_id="r1")
    assert (first["action"], first["current_class"], first["target_class"]) == ("scale_up", "db.t4g.small",
                                                                                 "db.t4g.medium")
    assert first["applied"] and first["status"] == "available" and first["mode"] == "rds"
    assert first["numbers"]["up_window_min_writes_per_second"] > 500 and first["samples"] >= 6
    assert instance_class(env) == "db.t4g.medium"
    assert operator(rds_instance=env["identifier"]).evaluate(run_id="r1")["replayed"]  # a retry: no second step
    second = operator(rds_instance=env["identifier"]).evaluate(run_id="r2")
    assert second["action"] == "hold" and "cooldown" in second["reasons"][0] and not second["applied"]
    assert instance_class(env) == "db.t4g.medium"
    assert history(env["dsn"]) == [("r1", "scale_up", "db.t4g.small", "db.t4g.medium", True),
                                   ("r2", "hold", "db.t4g.medium", None, False)]


def test_running_migration_defers_and_dry_run_changes_nothing(env):
    deferred = operator(rds_instance=env["identifier"]).evaluate(run_id="r1", blockers=["checkpoint_migration"])
    assert deferred["action"] == "defer" and "checkpoint_migration running" in deferred["reasons"][0]
    assert "deferred" in deferred["alert"]
    dry = operator(rds_instance=env["identifier"], dry_run=True).evaluate(run_id="r2")
    assert dry["action"] == "scale_up" and not dry["applied"] and "dry_run" in dry["alert"]
    assert instance_class(env) == "db.t4g.small"
    assert [row[-1] for row in history(env["dsn"])] == [False, False]


def test_self_managed_server_gets_a_recommendation_only(env):
    report = operator(rds_instance=None, current_class="db.t4g.medium").evaluate(run_id="r1")
    assert (report["mode"], report["action"], report["target_class"]) == ("self-managed", "scale_up", "db.m5.large")
    assert not report["applied"] and "recommendation" in report["alert"]
    assert instance_class(env) == "db.t4g.small"
    assert history(env["dsn"])[0][-1] is False


def test_autoscale_dag_scales_up_notifies_sns_and_publishes_the_change(env, fresh_dag):  # noqa: F811
    import boto3

    kw = dict(endpoint_url=env["endpoint"], region_name="us-east-1", aws_access_key_id="testing",
              aws_secret_access_key="testing")
    sns, sqs = boto3.client("sns", **kw), boto3.client("sqs", **kw)
    topic = sns.create_topic(Name=f"autoscale-{env['identifier']}")["TopicArn"]
    queue = sqs.create_queue(QueueName=f"autoscale-{env['identifier']}")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    conf = {"rds_instance": env["identifier"], "aws_conn_id": "aws_checkpoints", "sns_topic_arn": topic,
            "apply_immediately": True, "timeout_minutes": 1, "up_minutes": 0.1, "down_minutes": 0.15,
            "rate_window": "10s", "step_seconds": 1}
    with running_migration():
        deferred = fresh_dag("checkpoint_autoscale").test(run_conf=conf)
    assert deferred.state == "success" and xcom(deferred, "decide")["action"] == "defer"
    assert instance_class(env) == "db.t4g.small"
    dr = fresh_dag("checkpoint_autoscale").test(run_conf=conf)
    assert dr.state == "success"
    report = xcom(dr, "decide")
    assert report["action"] == "scale_up" and report["applied"] and instance_class(env) == "db.t4g.medium"
    assert xcom(dr, "notify") == "sns" and xcom(dr, "publish_change")["target_class"] == "db.t4g.medium"
    messages = [json.loads(m["Body"])["Message"] for m in sqs.receive_message(
        QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=2).get("Messages", [])]
    assert len(messages) == 2
    assert any("deferred" in m and "checkpoint_migration running" in m for m in messages)
    assert sum("db.t4g.small -> db.t4g.medium" in m for m in messages) == 1
