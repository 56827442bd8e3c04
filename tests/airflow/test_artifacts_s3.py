"""Artifacts on S3: ObjectStoragePath through the checkpoint_artifacts connection, against moto over HTTP."""

from __future__ import annotations

import json


def test_reports_go_to_s3_when_the_variable_points_there(s3_bucket, monkeypatch):
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    from checkpoint_ops.artifacts import write_report

    monkeypatch.setenv("AIRFLOW_VAR_CHECKPOINT_ARTIFACTS_URL", f"s3://checkpoint_artifacts@{s3_bucket}/ops")
    url = write_report("checkpoint_pruning", "manual__2026-11-30T03:00:00+00:00", "pruning", {"checkpoints_deleted": 7})
    assert url.startswith(f"s3://checkpoint_artifacts@{s3_bucket}/ops/reports/checkpoint_pruning/")
    key = url.split(f"{s3_bucket}/", 1)[1]
    body = S3Hook(aws_conn_id="checkpoint_artifacts").read_key(key, bucket_name=s3_bucket)
    assert json.loads(body) == {"checkpoints_deleted": 7}
