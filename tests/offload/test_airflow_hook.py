"""The Airflow path: the core gets its client from ``S3Hook(aws_conn_id).get_conn()``, endpoint from the connection."""

from __future__ import annotations

from include.checkpoint_core.offload import OffloadSerializer, S3BlobStore, collect_offloaded_garbage
from tests.conftest import aws_conn_env
from tests.offload.conftest import build_doc_graph, fresh_serde, pdf_like


def test_offload_and_gc_through_an_airflow_aws_connection(moto_s3, monkeypatch, store):
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    monkeypatch.setenv("AIRFLOW_CONN_CHECKPOINT_BLOBS", aws_conn_env(moto_s3))
    hook = S3Hook(aws_conn_id="checkpoint_blobs")
    bucket = f"hook-{store.kind}-blobs"
    hook.create_bucket(bucket_name=bucket)
    client = hook.get_conn()
    assert client.meta.endpoint_url == moto_s3  # the connection's extra reached boto3
    blobs = S3BlobStore(client, bucket, prefix="apps/support-agent")
    blobs.check()

    pdf = pdf_like(1024 * 1024)
    config = {"configurable": {"thread_id": "hooked"}}
    with store.saver(fresh_serde(blobs)) as saver:
        build_doc_graph(saver).invoke({"pdf": pdf}, config)
    keys = hook.list_keys(bucket_name=bucket, prefix="apps/support-agent/sha256/")
    assert keys and all(blobs.sha256_of(k) for k in keys)

    # An orphan, then GC the way the Airflow task will run it: with a fresh hook's client.
    OffloadSerializer(blobs=blobs).dumps_typed(pdf_like(100_000, seed=5))
    gc_blobs = S3BlobStore(S3Hook(aws_conn_id="checkpoint_blobs").get_conn(), bucket, prefix="apps/support-agent")
    report = collect_offloaded_garbage(store.target, gc_blobs, grace_hours=0)
    assert report["deleted"] == 1 and report["kept_referenced"] == len(keys)
    assert sorted(hook.list_keys(bucket_name=bucket, prefix="apps/support-agent/")) == sorted(keys)
    with store.saver(fresh_serde(gc_blobs)) as saver:
        assert build_doc_graph(saver).get_state(config).values["pdf"] == pdf
