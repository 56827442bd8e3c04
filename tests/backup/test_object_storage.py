"""The API on Airflow's ObjectStoragePath (what the DAGs pass), not just pathlib.Path."""

from __future__ import annotations

from include.checkpoint_core.backup import apply_retention, list_backups, restore_drill, take_backup


def test_backup_drill_and_retention_through_object_storage_path(sqlite_source, tmp_path):
    from airflow.sdk import ObjectStoragePath

    folder = ObjectStoragePath(f"file://{tmp_path}/bucket/checkpoints")
    quiet = {"log": lambda _: None}
    take_backup(sqlite_source, folder, backup_id="b1", **quiet)
    take_backup(sqlite_source, folder, backup_id="b2", **quiet)
    assert [m["backup_id"] for m in list_backups(folder)] == ["b2", "b1"]  # same second: the id decides
    assert restore_drill(folder, backup_id="b1", min_age_hours=0, **quiet)["passed"]
    report = apply_retention(folder, keep_daily=0, keep_weekly=0, **quiet)
    assert set(report["kept"]) == {"b1", "b2"}, "newest complete and newest drilled"
    (folder / "b1" / "drill.json").unlink()
    report = apply_retention(folder, keep_daily=0, keep_weekly=0, **quiet)
    assert report["kept"] == ["b2"] and report["deleted"] == ["b1"]
    assert sorted(p.name for p in folder.iterdir()) == ["b2"]
