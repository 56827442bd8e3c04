"""The offload serializer under the real savers (SqliteSaver, PostgresSaver) and LangGraph graphs."""

from __future__ import annotations

import pytest

from include.checkpoint_core.offload import OffloadedBlobMissing, collect_offloaded_garbage
from tests import witnesses
from tests.offload.conftest import build_doc_graph, fresh_serde, pdf_like

FIVE_MB = 5 * 1024 * 1024


def test_a_5mb_pdf_in_state_leaves_checkpoints_under_5kb(store, s3_blobs, client, bucket):
    pdf = pdf_like(FIVE_MB)
    config = {"configurable": {"thread_id": f"doc-{store.kind}"}}
    with store.saver(fresh_serde(s3_blobs)) as saver:
        result = build_doc_graph(saver).invoke({"pdf": pdf}, config)
    assert result["pages"] == 12 and result["summary"] == f"12 pages, {FIVE_MB} bytes"

    per_checkpoint = store.checkpoint_bytes("doc-" + store.kind)
    assert len(per_checkpoint) >= 3
    assert max(per_checkpoint.values()) < 5 * 1024, per_checkpoint
    assert store.thread_bytes("doc-" + store.kind) < 5 * 1024 * len(per_checkpoint)
    sizes = [o.size for o in s3_blobs.list()]
    assert sizes and max(sizes) > FIVE_MB  # the value itself went to S3

    # A new process (empty cache) reads every checkpoint back from S3, equal to what was written.
    with store.saver(fresh_serde(s3_blobs)) as saver:
        graph = build_doc_graph(saver)
        state = graph.get_state(config)
        assert state.values["pdf"] == pdf and state.values["pages"] == 12
        history = list(graph.get_state_history(config))
        assert all(s.values.get("pdf") == pdf for s in history if "pdf" in s.values)
        assert sum("pdf" in s.values for s in history) >= 3


@pytest.mark.parametrize("store", ["postgres"], indirect=True)
def test_postgres_offloads_only_the_big_channel(store, s3_blobs):
    """PostgresSaver serializes per channel: the PDF moves out, the small channels stay in their rows."""
    with store.saver(fresh_serde(s3_blobs)) as saver:
        build_doc_graph(saver).invoke({"pdf": pdf_like(200_000)}, {"configurable": {"thread_id": "t"}})
    from include.checkpoint_core.postgres_store import postgres_connection

    with postgres_connection(store.location) as conn:
        rows = {(r["channel"], r["type"]) for r in conn.execute("SELECT channel, type FROM checkpoint_blobs")}
        writes = {(r["channel"], r["type"]) for r in conn.execute("SELECT channel, type FROM checkpoint_writes")}
    assert {c for c, t in rows if t == "offload"} == {"pdf", "__start__"}  # the PDF, and the input holding it
    assert {c for c, t in writes if t == "offload"} == {"pdf"}
    assert {("pages", "msgpack"), ("summary", "msgpack")} <= writes
    # Two objects: the input dict, and the PDF (the "pdf" write and channel value share one address).
    assert len(list(s3_blobs.list())) == 2


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
def test_sqlite_offloads_whole_checkpoints(store, s3_blobs):
    """SqliteSaver hands the serializer whole checkpoints: those holding the PDF move out entire."""
    import sqlite3
    from contextlib import closing

    with store.saver(fresh_serde(s3_blobs)) as saver:
        build_doc_graph(saver).invoke({"pdf": pdf_like(200_000)}, {"configurable": {"thread_id": "t"}})
    with closing(sqlite3.connect(store.location)) as conn:
        types = [t for (t,) in conn.execute("SELECT type FROM checkpoints ORDER BY checkpoint_id")]
    assert types == ["offload"] * 4  # the input checkpoint holds the PDF too (in __start__)
    with closing(sqlite3.connect(store.location)) as conn:
        writes = dict(conn.execute("SELECT channel, type FROM writes WHERE type = 'offload'").fetchall())
    assert writes == {"pdf": "offload"}
    assert len(list(s3_blobs.list())) == 5  # one object per checkpoint, one for the "pdf" write


@pytest.mark.parametrize("witness", [
    witnesses.witness_session_memory,
    witnesses.witness_time_travel,
    witnesses.witness_human_in_the_loop,
    witnesses.witness_fault_tolerance,
], ids=lambda w: w.__name__.removeprefix("witness_"))
def test_phase1_witnesses_hold_with_everything_offloaded(store, s3_blobs, witness):
    # threshold=0 offloads every non-empty value, so the witnesses run entirely through S3.
    with store.saver(fresh_serde(s3_blobs, threshold=0, cache_bytes=0)) as saver:
        witness(saver)
    assert store.offload_rows() > 0
    assert len(list(s3_blobs.list())) > 0


def test_a_missing_object_surfaces_through_the_graph(store, s3_blobs, client, bucket):
    config = {"configurable": {"thread_id": "lost"}}
    with store.saver(fresh_serde(s3_blobs)) as saver:
        build_doc_graph(saver).invoke({"pdf": pdf_like(300_000)}, config)
    keys = [o.key for o in s3_blobs.list()]
    client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys]})
    with store.saver(fresh_serde(s3_blobs)) as saver, pytest.raises(OffloadedBlobMissing) as caught:
        build_doc_graph(saver).get_state(config)
    assert caught.value.key in keys and caught.value.key in str(caught.value)
    assert caught.value.sha256 in str(caught.value) and caught.value.key.endswith(caught.value.sha256)


def test_deleted_threads_leave_garbage_that_gc_collects(store, s3_blobs):
    keep, drop = {"configurable": {"thread_id": "keep"}}, {"configurable": {"thread_id": "drop"}}
    with store.saver(fresh_serde(s3_blobs)) as saver:
        graph = build_doc_graph(saver)
        graph.invoke({"pdf": pdf_like(400_000, seed=1)}, keep)
        keep_keys = {o.key for o in s3_blobs.list()}
        graph.invoke({"pdf": pdf_like(400_000, seed=2)}, drop)
    drop_keys = {o.key for o in s3_blobs.list()} - keep_keys
    assert keep_keys and drop_keys

    report = collect_offloaded_garbage(store.target, s3_blobs, grace_hours=0)
    assert report["deleted"] == 0 and report["kept_referenced"] == len(keep_keys | drop_keys)

    with store.saver(fresh_serde(s3_blobs)) as saver:
        saver.delete_thread("drop")
    report = collect_offloaded_garbage(store.target, s3_blobs, grace_hours=0)
    assert {o.key for o in s3_blobs.list()} == keep_keys
    assert report["deleted"] == len(drop_keys) and report["bytes_freed"] >= 400_000
    assert report["kept_referenced"] == len(keep_keys) and report["referenced_missing"] == 0
    with store.saver(fresh_serde(s3_blobs)) as saver:
        assert build_doc_graph(saver).get_state(keep).values["pdf"] == pdf_like(400_000, seed=1)
