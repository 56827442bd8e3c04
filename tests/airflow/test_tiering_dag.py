"""checkpoint_tiering end to end with dag.test(): real Redis, PostgreSQL and S3 (moto over HTTP)."""

from __future__ import annotations

import json
import time
from urllib.parse import urlsplit

import pytest

from tests.airflow.conftest import task_instances, xcom
from tests.conftest import postgres_conn_env

N_THREADS = 6


def _redis_conn_env(url: str) -> str:
    parts = urlsplit(url)
    return json.dumps({"conn_type": "redis", "host": parts.hostname, "port": parts.port, "extra": {"db": 0}})


@pytest.fixture
def tiers(redis_url, pg_dsn, moto_s3, s3_bucket, monkeypatch):
    """An app on TieredSaver with N_THREADS sample-agent threads, and the DAG's connections."""
    from include.checkpoint_core.postgres_store import open_postgres_pool
    from include.checkpoint_core.tiering.archive import S3Archive
    from include.checkpoint_core.tiering.hot import RedisRowSaver
    from include.checkpoint_core.tiering.saver import TieredSaver
    from include.sample_agent.graph import build_agent_graph, start_turn, thread_config

    monkeypatch.setenv("AIRFLOW_CONN_CHECKPOINTS_REDIS", _redis_conn_env(redis_url))
    monkeypatch.setenv("AIRFLOW_CONN_CHECKPOINTS_POSTGRES", postgres_conn_env(pg_dsn))
    import boto3

    pool = open_postgres_pool(pg_dsn)
    s3 = boto3.client("s3", endpoint_url=moto_s3, region_name="us-east-1", aws_access_key_id="testing",
                      aws_secret_access_key="testing")
    saver = TieredSaver(RedisRowSaver.from_url(redis_url), pool, S3Archive(s3, s3_bucket, "archive"))
    saver.setup()
    graph = build_agent_graph(saver)
    configs = []
    for i in range(N_THREADS):
        config = thread_config(f"tier-{i}", f"user-{i}", "support")
        start_turn(graph, config, f"user-{i}", "my invoice is wrong, please refund")
        configs.append(config)
    yield saver, graph, configs, f"s3://checkpoint_artifacts@{s3_bucket}/archive"
    pool.close()


def _age(saver, thread_ids, hours: float) -> None:
    """Make threads look idle: their last hot write moves back in Redis's idle index."""
    old = int((time.time() - hours * 3600) * 1e6)
    saver.hot.client.zadd(saver.hot.threads_key, {t: old for t in thread_ids})


def _states(graph, configs):
    return [graph.get_state(c).values for c in configs]


def _tier_of(saver, thread_id):
    from include.checkpoint_core.tiering import directory

    if saver.hot.export_thread(thread_id).version is not None:
        return "hot"
    with saver.pool.connection() as conn:
        e = directory.entry(conn, thread_id)
    return e.tier if e else "cold"


def test_tiering_runs_demote_archive_rehydrate_and_prices_the_tiers(tiers, fresh_dag):
    saver, graph, configs, archive = tiers
    before = _states(graph, configs)
    ids = [c["configurable"]["thread_id"] for c in configs]
    _age(saver, ids[:4], hours=30)
    dag = fresh_dag("checkpoint_tiering")
    conf = {"archive": archive, "threads_per_task": 2, "demote_after_hours": 24}

    dry = dag.test(run_conf={**conf, "dry_run": True})
    assert dry.state == "success"
    assert [_tier_of(saver, t) for t in ids] == ["hot"] * N_THREADS

    run1 = fresh_dag("checkpoint_tiering").test(run_conf=conf)
    assert run1.state == "success", task_instances(run1)
    assert [_tier_of(saver, t) for t in ids] == ["cold"] * 4 + ["hot"] * 2
    assert sum(1 for k in task_instances(run1) if k[0] == "demote") == 2  # mapped: 4 threads, 2 per task
    report = xcom(run1, "cost_report")
    assert report["tiers"]["cold"]["threads"] == 4 and report["tiers"]["hot"]["threads"] == 2
    assert report["moves"]["demote"]["outcomes"] == {"moved": 4}
    assert report["all_hot_usd_month"] > 0 and report["artifact"].endswith("tiering.json")
    assert _states(graph, configs) == before

    run2 = fresh_dag("checkpoint_tiering").test(run_conf={**conf, "archive_after_days": 0})
    assert run2.state == "success", task_instances(run2)
    assert [_tier_of(saver, t) for t in ids] == ["archive"] * 4 + ["hot"] * 2
    objects = saver.archive.client.list_objects_v2(Bucket=saver.archive.bucket, Prefix="archive/threads/")
    assert objects["KeyCount"] == 4
    manifests = [xcom(run2, "archive", i)["manifest"] for i in range(2)]
    listed = [t for m in manifests for t in json.loads(saver.archive.get(m))["threads"]]
    assert sorted(t["thread_id"] for t in listed) == sorted(ids[:4])
    assert {t["key"] for t in listed} == {o["Key"].removeprefix("archive/") for o in objects["Contents"]}
    assert xcom(run2, "cost_report")["tiers"]["archive"]["threads"] == 4
    assert _states(graph, configs) == before

    run3 = fresh_dag("checkpoint_tiering").test(run_conf={**conf, "rehydrate": [ids[0], "never-archived"],
                                                          "archive_after_days": 10000})
    assert run3.state == "success", task_instances(run3)
    assert _tier_of(saver, ids[0]) == "cold"
    assert xcom(run3, "plan")["rehydrate_not_archived"] == ["never-archived"]
    assert _states(graph, configs) == before

    # The app writes to an archived thread: it comes back hot, with its history.
    from include.sample_agent.graph import start_turn

    history = len(list(graph.get_state_history(configs[1])))
    start_turn(graph, configs[1], "user-1", "thanks, and one more question")
    assert _tier_of(saver, ids[1]) == "hot"
    assert len(list(graph.get_state_history(configs[1]))) > history


def test_redis_down_at_the_start_fails_in_plan_and_touches_nothing(tiers, fresh_dag, monkeypatch):
    saver, graph, configs, archive = tiers
    ids = [c["configurable"]["thread_id"] for c in configs]
    _age(saver, ids, hours=30)
    monkeypatch.setenv("AIRFLOW_CONN_CHECKPOINTS_REDIS", json.dumps({"conn_type": "redis", "host": "127.0.0.1",
                                                                     "port": 1}))
    dag = fresh_dag("checkpoint_tiering")
    for task in dag.tasks:
        task.retries = 0
    run = dag.test(run_conf={"archive": archive})
    assert run.state == "failed"
    tis = task_instances(run)
    assert tis[("plan", -1)].state == "failed"
    assert [_tier_of(saver, t) for t in ids] == ["hot"] * N_THREADS


def test_a_missing_bucket_is_a_clear_error_before_any_move(tiers, fresh_dag):
    saver, graph, configs, archive = tiers
    ids = [c["configurable"]["thread_id"] for c in configs]
    _age(saver, ids, hours=30)
    run = fresh_dag("checkpoint_tiering").test(run_conf={"archive": "s3://checkpoint_artifacts@no-such-bucket/x"})
    assert run.state == "failed"
    assert task_instances(run)[("plan", -1)].state == "failed"
    assert [_tier_of(saver, t) for t in ids] == ["hot"] * N_THREADS
