"""Backups of stores whose app offloads large values: the blobs are part of the backup's promise."""

from __future__ import annotations

import pytest

from include.checkpoint_core.backup import DrillFailed, restore_drill, take_backup
from include.checkpoint_core.backup.layout import OFFLOAD_REFS, read_json
from include.checkpoint_core.offload import LocalBlobStore, OffloadSerializer, collect_offloaded_garbage
from include.checkpoint_core.stores import StoreTarget, setup_store
from tests.backup.conftest import ADMIN_DSN
from tests.offload.conftest import OffloadStore, build_doc_graph, pdf_like


@pytest.mark.parametrize("kind", ["postgres", "sqlite"])
def test_backups_keep_their_offloaded_blobs_alive_and_drills_check_them(kind, request, tmp_path):
    location = request.getfixturevalue("pg_dsn") if kind == "postgres" else str(tmp_path / "app.sqlite")
    setup_store(StoreTarget(kind, location))
    store = OffloadStore(kind, location)
    blobs = LocalBlobStore(tmp_path / "blobs")
    with store.saver(OffloadSerializer(blobs=blobs)) as saver:
        build_doc_graph(saver).invoke({"pdf": pdf_like(300_000)}, {"configurable": {"thread_id": "doc"}})
    folder = tmp_path / "backups"
    manifest = take_backup(store.target, folder, backup_id="b1", log=lambda _: None)
    refs = read_json(folder / "b1" / OFFLOAD_REFS)["sha256"]
    assert manifest["offload_references"] == len(refs) >= 1

    admin = ADMIN_DSN if kind == "postgres" else None
    with pytest.raises(DrillFailed, match="offloaded blobs"):
        restore_drill(folder, admin_dsn=admin, min_age_hours=0, log=lambda _: None)  # no blob store given
    assert restore_drill(folder, admin_dsn=admin, min_age_hours=0, blobs=blobs, log=lambda _: None)["passed"]

    # The app deletes the thread: its blobs are garbage for the store, but the backup still needs them.
    with store.saver(OffloadSerializer(blobs=blobs)) as saver:
        saver.delete_thread("doc")
    kept = collect_offloaded_garbage(store.target, blobs, grace_hours=0, also_referenced=refs, log=lambda _: None)
    assert kept["deleted"] == 0
    assert restore_drill(folder, admin_dsn=admin, min_age_hours=0, blobs=blobs, log=lambda _: None)["passed"]
    gone = collect_offloaded_garbage(store.target, blobs, grace_hours=0, log=lambda _: None)
    assert gone["deleted"] >= 1
    with pytest.raises(DrillFailed, match="are gone"):
        restore_drill(folder, admin_dsn=admin, min_age_hours=0, blobs=blobs, log=lambda _: None)


def test_a_database_without_checkpoint_tables_is_not_backed_up(pg_dsn, tmp_path):
    from include.checkpoint_core.errors import NotACheckpointStore

    with pytest.raises(NotACheckpointStore):
        take_backup(StoreTarget("postgres", pg_dsn), tmp_path / "backups", backup_id="b1", canary=False, log=lambda _: None)
