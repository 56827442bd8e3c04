"""checkpoint_backup and checkpoint_restore_drill end to end, with the artifacts on S3 (moto over HTTP)."""

from __future__ import annotations

import json

import pytest

from tests.airflow.conftest import dagbag, fresh_dag, task_instances, xcom  # noqa: F401 (fixtures)
from tests.backup.conftest import all_rows, drill_databases
from tests.conftest import SENTINEL_PASSWORD, aws_conn_env, postgres_conn_env, sqlite_conn_env
from tests.offload.conftest import moto_auth

STORES = ["checkpoints_sqlite", "checkpoints_postgres"]


@pytest.fixture
def wired(pg_source, sqlite_source, s3_bucket, monkeypatch):
    from pathlib import Path

    monkeypatch.setenv("AIRFLOW_CONN_CHECKPOINTS_SQLITE", sqlite_conn_env(Path(sqlite_source.location)))
    monkeypatch.setenv("AIRFLOW_CONN_CHECKPOINTS_POSTGRES", postgres_conn_env(pg_source.location))
    monkeypatch.setenv("AIRFLOW_VAR_CHECKPOINT_ARTIFACTS_URL", f"s3://checkpoint_artifacts@{s3_bucket}/ops")
    return {"sqlite": sqlite_source, "postgres": pg_source, "bucket": s3_bucket}


def _no_retries(dag):
    for t in dag.tasks:
        t.retries = 0
    return dag


def _keys(bucket: str, prefix: str) -> list[str]:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    return S3Hook(aws_conn_id="checkpoint_artifacts").list_keys(bucket_name=bucket, prefix=prefix) or []


def test_backup_then_drill_through_s3(fresh_dag, wired, pg_admin):
    before = {k: all_rows(wired[k]) for k in ("sqlite", "postgres")}
    dr = _no_retries(fresh_dag("checkpoint_backup")).test(run_conf={"stores": STORES})
    assert dr.state == "success"
    summary = xcom(dr, "report")
    assert SENTINEL_PASSWORD not in json.dumps(summary)
    kinds = {b["conn_id"]: b for b in summary["backups"]}
    assert kinds["checkpoints_postgres"]["kind"] == "postgres" and kinds["checkpoints_sqlite"]["kind"] == "sqlite"
    keys = _keys(wired["bucket"], "ops/backups/")
    assert any(k.endswith("/manifest.json") and "checkpoints_postgres" in k for k in keys)
    assert any(k.endswith("/manifest.json") and "checkpoints_sqlite" in k for k in keys)

    # A second run the same day: retention keeps the newest backup of the day and deletes the other.
    again = _no_retries(fresh_dag("checkpoint_backup")).test(run_conf={"stores": STORES})
    assert again.state == "success"
    retained = {r["conn_id"]: r for r in xcom(again, "report")["retention"]}
    assert all(len(r["deleted"]) == 1 for r in retained.values())
    manifests = [k for k in _keys(wired["bucket"], "ops/backups/") if k.endswith("/manifest.json")]
    assert len(manifests) == 2

    dr = _no_retries(fresh_dag("checkpoint_restore_drill")).test(run_conf={"stores": STORES, "min_age_hours": 0})
    assert dr.state == "success"
    report = xcom(dr, "report")
    assert report["passed"] and len(report["drills"]) == 2
    assert all(d["rto_s"]["total"] > 0 and d["passed"] for d in report["drills"])
    assert drill_databases(pg_admin) == set()
    assert {k: all_rows(wired[k]) for k in ("sqlite", "postgres")} == before  # backups never touch the app's rows


def test_a_corrupted_backup_fails_the_drill_loudly(fresh_dag, wired, pg_admin):
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    assert _no_retries(fresh_dag("checkpoint_backup")).test(run_conf={"stores": ["checkpoints_postgres"]}).state == "success"
    dump = next(k for k in _keys(wired["bucket"], "ops/backups/checkpoints_postgres/") if k.endswith(".pgdump"))
    hook = S3Hook(aws_conn_id="checkpoint_artifacts")
    data = bytearray(hook.get_key(dump, bucket_name=wired["bucket"]).get()["Body"].read())
    data[len(data) // 2] ^= 0xFF
    hook.load_bytes(bytes(data), key=dump, bucket_name=wired["bucket"], replace=True)

    dr = fresh_dag("checkpoint_restore_drill").test(run_conf={"stores": ["checkpoints_postgres"], "min_age_hours": 0})
    assert dr.state == "failed"
    ti = task_instances(dr)[("drill", 0)]
    assert ti.state == "failed" and ti.try_number == 1  # not retried: a corrupt file stays corrupt
    assert drill_databases(pg_admin) == set()


def test_a_missing_bucket_or_credentials_fail_with_a_clear_error(fresh_dag, wired, monkeypatch, moto_s3):
    from checkpoint_ops.artifacts import ArtifactsUnavailable, checked_artifacts_root

    monkeypatch.setenv("AIRFLOW_VAR_CHECKPOINT_ARTIFACTS_URL", "s3://checkpoint_artifacts@no-such-bucket/ops")
    with pytest.raises(ArtifactsUnavailable, match="no-such-bucket"):
        checked_artifacts_root()
    dr = fresh_dag("checkpoint_backup").test(run_conf={"stores": ["checkpoints_sqlite"]})
    assert dr.state == "failed" and task_instances(dr)[("backup", 0)].try_number == 1

    monkeypatch.setenv("AIRFLOW_VAR_CHECKPOINT_ARTIFACTS_URL", f"s3://checkpoint_artifacts@{wired['bucket']}/ops")
    conn = json.loads(aws_conn_env(moto_s3))
    conn["login"], conn["password"] = "AKIAWRONGKEY", "wrong-secret"
    monkeypatch.setenv("AIRFLOW_CONN_CHECKPOINT_ARTIFACTS", json.dumps(conn))
    with moto_auth(moto_s3), pytest.raises(ArtifactsUnavailable, match="checkpoint_artifacts"):
        checked_artifacts_root()
