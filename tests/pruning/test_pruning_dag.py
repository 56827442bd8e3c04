"""checkpoint_pruning end to end with dag.test() on both backends."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from include.checkpoint_core.pruning import PrunePolicy
from tests.airflow.conftest import dagbag, fresh_dag, task_instances, xcom  # noqa: F401 (fixtures)
from tests.conftest import SENTINEL_PASSWORD, postgres_conn_env, sqlite_conn_env
from tests.pruning.helpers import old_non_heads, raw_rows, thread_ids

STORES = ["checkpoints_sqlite", "checkpoints_postgres"]


@pytest.fixture
def wired(aged_stores, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_CHECKPOINTS_SQLITE", sqlite_conn_env(Path(aged_stores["sqlite"][0].location)))
    monkeypatch.setenv("AIRFLOW_CONN_CHECKPOINTS_POSTGRES", postgres_conn_env(aged_stores["postgres"][0].location))
    return {k: v[0] for k, v in aged_stores.items()}


def test_dry_run_then_prune_then_nothing_left_to_do(fresh_dag, wired):
    dag = fresh_dag("checkpoint_pruning")
    before = {k: raw_rows(t, thread_ids(t)) for k, t in wired.items()}
    dr = dag.test(run_conf={"stores": STORES, "dry_run": True})
    assert dr.state == "success"
    dry = xcom(dr, "report")
    assert {k: raw_rows(t, thread_ids(t)) for k, t in wired.items()} == before
    assert all(s["dry_run"] and s["checkpoints_deleted"] > 0 for s in dry["stores"])

    dr = fresh_dag("checkpoint_pruning").test(run_conf={"stores": STORES})
    assert dr.state == "success"
    summary = xcom(dr, "report")
    assert SENTINEL_PASSWORD not in json.dumps(summary)
    by_id = {s["conn_id"]: s for s in summary["stores"]}
    for s in dry["stores"]:
        assert by_id[s["conn_id"]]["checkpoints_deleted"] == s["checkpoints_deleted"]
    cutoff = PrunePolicy().cutoff_id
    for target in wired.values():
        left = {t for t, _, _ in old_non_heads(target, cutoff)}
        assert left and by_id[target.name]["threads_protected"] >= len(left)  # only protected threads keep old history
    audit = {a["conn_id"]: a for a in summary["audit"]}
    assert set(audit) == set(STORES) and all(a["over_limit"] == 0 and a["largest"] for a in audit.values())
    assert json.loads(Path(summary["artifact"].removeprefix("file://")).read_text())["checkpoints_deleted"] > 0

    again = xcom(fresh_dag("checkpoint_pruning").test(run_conf={"stores": STORES}), "report")
    assert again["checkpoints_deleted"] == 0


def test_a_bad_param_is_refused_before_any_store_is_touched(fresh_dag, wired):
    from airflow.sdk.exceptions import ParamValidationError

    before = {k: raw_rows(t, thread_ids(t)) for k, t in wired.items()}
    with pytest.raises(ParamValidationError):
        fresh_dag("checkpoint_pruning").test(run_conf={"strategy": "shred"})
    assert {k: raw_rows(t, thread_ids(t)) for k, t in wired.items()} == before


def test_offloaded_blob_collection_runs_when_configured_and_skips_otherwise(fresh_dag, wired, s3_bucket, monkeypatch):
    import hashlib

    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    dr = fresh_dag("checkpoint_pruning").test(run_conf={"stores": STORES})
    assert task_instances(dr)[("collect_offloaded_blobs", -1)].state == "skipped"

    data = b"an attachment nobody references any more"
    digest = hashlib.sha256(data).hexdigest()
    S3Hook(aws_conn_id="checkpoint_artifacts").load_bytes(
        data, key=f"blobs/sha256/{digest[:2]}/{digest}", bucket_name=s3_bucket)
    monkeypatch.setenv("AIRFLOW_VAR_CHECKPOINT_BLOB_OFFLOAD_URL", f"s3://checkpoint_artifacts@{s3_bucket}/blobs")
    dr = fresh_dag("checkpoint_pruning").test(run_conf={"stores": STORES})
    assert dr.state == "success"
    gc = xcom(dr, "collect_offloaded_blobs")
    assert gc["objects_scanned"] == 1 and gc["kept_young"] == 1 and gc["deleted"] == 0  # younger than the grace
