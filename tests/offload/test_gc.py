"""Garbage collection: only unreferenced objects past the grace period go, across every store given."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone

import pytest
from langgraph.checkpoint.serde.encrypted import EncryptedSerializer

from include.checkpoint_core.errors import NotACheckpointStore
from include.checkpoint_core.offload import (
    LocalBlobStore,
    OffloadReferencesUnreadable,
    OffloadSerializer,
    collect_offloaded_garbage,
    referenced_digests,
)
from include.checkpoint_core.stores import StoreTarget
from tests.offload.conftest import OffloadStore, build_doc_graph, fresh_serde, pdf_like
from tests.offload.test_serializer import XorCipher


def _digest(ref: tuple[str, bytes]) -> str:
    return json.loads(ref[1])["sha256"]


def _sqlite_store(tmp_path, name="gc.sqlite") -> OffloadStore:
    from include.checkpoint_core.sqlite_store import setup_sqlite

    setup_sqlite(tmp_path / name)
    return OffloadStore("sqlite", str(tmp_path / name))


def _listed(blobs) -> set[str]:
    return {o.key for o in blobs.list()}


def test_gc_keeps_referenced_and_young_objects_and_deletes_old_orphans(tmp_path, s3_blobs, client, bucket):
    store = _sqlite_store(tmp_path)
    with store.saver(fresh_serde(s3_blobs)) as saver:
        build_doc_graph(saver).invoke({"pdf": pdf_like(150_000)}, {"configurable": {"thread_id": "t"}})
    referenced = _listed(s3_blobs)
    # An upload whose checkpoint never committed (a crashed app): an orphan.
    orphan = s3_blobs.key_for(_digest(OffloadSerializer(blobs=s3_blobs).dumps_typed(pdf_like(150_000, seed=3))))
    # Objects the layout did not make, inside and outside the prefix: never touched.
    foreign = ["checkpoint-blobs/README.txt", "checkpoint-blobs/sha256/00/not-a-digest", "elsewhere/file"]
    for key in foreign:
        client.put_object(Bucket=bucket, Key=key, Body=b"keep me")

    now = datetime.now(timezone.utc)
    young = collect_offloaded_garbage(store.target, s3_blobs, grace_hours=24, now=now)
    assert young["kept_young"] == 1 and young["deleted"] == 0 and young["deletable"] == 0
    assert young["kept_referenced"] == len(referenced) and young["referenced"] == len(referenced)
    assert young["foreign_objects"] == 2 and young["objects_scanned"] == len(referenced) + 3

    later = now + timedelta(hours=25)
    dry = collect_offloaded_garbage(store.target, s3_blobs, grace_hours=24, now=later, dry_run=True)
    assert dry["dry_run"] and dry["deletable"] == 1 and dry["deletable_bytes"] == 150_000
    assert dry["deleted"] == 0 and dry["bytes_freed"] == 0 and orphan in _listed(s3_blobs)

    real = collect_offloaded_garbage(store.target, s3_blobs, grace_hours=24, now=later)
    assert real["deleted"] == 1 and real["bytes_freed"] == dry["deletable_bytes"] and real["kept_young"] == 0
    assert _listed(s3_blobs) == referenced | set(foreign[:2])
    assert client.head_object(Bucket=bucket, Key="elsewhere/file")["ContentLength"] == 7
    assert set(real) >= {"objects_scanned", "referenced", "deleted", "bytes_freed", "kept_young"}
    json.dumps(real)  # XCom-safe

    with store.saver(fresh_serde(s3_blobs)) as saver:  # and the thread still reads
        assert build_doc_graph(saver).get_state({"configurable": {"thread_id": "t"}}).values["pages"] == 12


def test_young_and_old_orphans_in_one_run(tmp_path):
    store = _sqlite_store(tmp_path)
    blobs = LocalBlobStore(tmp_path / "blobs")
    serde = OffloadSerializer(blobs=blobs)
    old, young = (blobs.key_for(_digest(serde.dumps_typed(pdf_like(100_000, seed=s)))) for s in (1, 2))
    stamp = (datetime.now(timezone.utc) - timedelta(hours=30)).timestamp()
    os.utime(tmp_path / "blobs" / old, (stamp, stamp))

    report = collect_offloaded_garbage(store.target, blobs)
    assert (report["deleted"], report["kept_young"], report["kept_referenced"]) == (1, 1, 0)
    assert _listed(blobs) == {young}


def test_stores_sharing_a_bucket_are_collected_together(tmp_path, pg_dsn, s3_blobs):
    from include.checkpoint_core.postgres_store import setup_postgres

    setup_postgres(pg_dsn)
    lite, pg = _sqlite_store(tmp_path), OffloadStore("postgres", pg_dsn)
    owned = {}
    for store, seed in ((lite, 1), (pg, 2)):
        before = _listed(s3_blobs)
        with store.saver(fresh_serde(s3_blobs)) as saver:
            build_doc_graph(saver).invoke({"pdf": pdf_like(120_000, seed=seed)}, {"configurable": {"thread_id": "t"}})
        owned[store.kind] = _listed(s3_blobs) - before
        assert referenced_digests(store.target)[1] > 0

    # Given only the SQLite store, PostgreSQL's objects look unreferenced: why all sharers go in one call.
    partial = collect_offloaded_garbage(lite.target, s3_blobs, grace_hours=0, dry_run=True)
    assert partial["deletable"] == len(owned["postgres"])

    both = collect_offloaded_garbage([lite.target, pg.target], s3_blobs, grace_hours=0)
    assert both["deleted"] == 0 and both["kept_referenced"] == len(owned["sqlite"] | owned["postgres"])
    assert both["stores"] == ["sqlite-offload", "postgres-offload"]
    assert _listed(s3_blobs) == owned["sqlite"] | owned["postgres"]


def test_references_the_gc_cannot_read_stop_it_before_any_delete(tmp_path):
    """An EncryptedSerializer wrapped around ours hides the digests: refuse rather than guess."""
    store = _sqlite_store(tmp_path)
    blobs = LocalBlobStore(tmp_path / "blobs")
    outer = EncryptedSerializer(XorCipher(), OffloadSerializer(blobs=blobs))
    with store.saver(outer) as saver:
        build_doc_graph(saver).invoke({"pdf": pdf_like(100_000)}, {"configurable": {"thread_id": "t"}})
    before = _listed(blobs)
    assert before
    with pytest.raises(OffloadReferencesUnreadable) as caught:
        collect_offloaded_garbage(store.target, blobs, grace_hours=0)
    assert "offload+xor" in str(caught.value) and "inner=EncryptedSerializer" in caught.value.hint
    assert _listed(blobs) == before


def test_a_store_that_is_not_a_checkpoint_store_stops_the_gc(tmp_path, pg_dsn):
    import sqlite3

    blobs = LocalBlobStore(tmp_path / "blobs")
    OffloadSerializer(blobs=blobs, threshold=0).dumps_typed(b"orphan")
    before = _listed(blobs)
    sqlite3.connect(tmp_path / "other.sqlite").execute("CREATE TABLE t (x)").connection.close()
    for target in (StoreTarget("sqlite", str(tmp_path / "other.sqlite")), StoreTarget("postgres", pg_dsn)):
        with pytest.raises(NotACheckpointStore):
            collect_offloaded_garbage(target, blobs, grace_hours=0)
    assert _listed(blobs) == before


@pytest.mark.parametrize("kwargs", [{"grace_hours": -1}, {"grace_hours": "24"}, {"grace_hours": True},
                                    {"now": datetime(2026, 1, 1)}])
def test_bad_arguments_are_refused(tmp_path, kwargs):
    with pytest.raises(ValueError):
        collect_offloaded_garbage(_sqlite_store(tmp_path).target, LocalBlobStore(tmp_path), **kwargs)
    with pytest.raises(ValueError):
        collect_offloaded_garbage([], LocalBlobStore(tmp_path))
