"""Bad backups fail the drill with a message naming every mismatch, and leave no scratch database."""

from __future__ import annotations

import hashlib
import json

import pytest

from include.checkpoint_core.backup import BackupCorrupt, DrillFailed, list_backups, restore_drill, take_backup
from tests.backup.conftest import ADMIN_DSN, drill_databases


def _flip(path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    for i in range(offset, offset + 8):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _edit_manifest(folder, bid: str, change) -> None:
    """Simulate damage done before the upload: the manifest agrees with the bad file's bytes."""
    path = folder / bid / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def _rehash(folder, bid: str):
    data = (folder / bid / json.loads((folder / bid / "manifest.json").read_text())["file"]).read_bytes()

    def change(m):
        m["sha256"], m["size_bytes"] = hashlib.sha256(data).hexdigest(), len(data)
    return change


def test_flipped_bytes_fail_the_checksum(source, folder, pg_admin):
    manifest = take_backup(source, folder, backup_id="b1", log=lambda _: None)
    dump = folder / "b1" / manifest["file"]
    _flip(dump, dump.stat().st_size // 2)
    actual = hashlib.sha256(dump.read_bytes()).hexdigest()
    before = drill_databases(pg_admin)
    with pytest.raises(BackupCorrupt) as caught:
        restore_drill(folder, admin_dsn=ADMIN_DSN, min_age_hours=0, log=lambda _: None)
    err = caught.value
    assert manifest["sha256"] in str(err) and actual in str(err) and err.hint and err.retryable is False
    assert drill_databases(pg_admin) == before
    assert list_backups(folder)[0]["drill"]["passed"] is False, "the verdict is recorded beside the backup"


def test_manifest_mismatches_are_all_listed_and_scratch_is_dropped(source, folder, pg_admin):
    take_backup(source, folder, backup_id="b1", log=lambda _: None)
    writes = "checkpoint_writes" if source.kind == "postgres" else "writes"

    def change(m):
        m["rows"]["checkpoints"] += 1
        m["checksums"][writes] = "0" * 64
        (m["canary"].update(token="not-the-token") if source.kind == "postgres"
         else m["canary"].update(checkpoint_id="1f000000-0000-6000-8000-000000000000"))
    _edit_manifest(folder, "b1", change)
    before = drill_databases(pg_admin)
    with pytest.raises(DrillFailed) as caught:
        restore_drill(folder, admin_dsn=ADMIN_DSN, min_age_hours=0, log=lambda _: None)
    message = str(caught.value)
    assert "checkpoints:" in message and "rows restored, manifest says" in message
    assert f"{writes}: content checksum" in message and "canary" in message
    assert "3 problem(s)" in message
    assert caught.value.report["passed"] is False and len(caught.value.report["problems"]) == 3
    assert drill_databases(pg_admin) == before


def test_a_dump_that_does_not_restore_fails_the_drill(pg_source, folder, pg_admin):
    """A truncated dump whose manifest was written after the damage: pg_restore itself refuses it."""
    manifest = take_backup(pg_source, folder, backup_id="b1", log=lambda _: None)
    dump = folder / "b1" / manifest["file"]
    dump.write_bytes(dump.read_bytes()[: manifest["size_bytes"] * 2 // 3])
    _edit_manifest(folder, "b1", _rehash(folder, "b1"))
    before = drill_databases(pg_admin)
    with pytest.raises(DrillFailed) as caught:
        restore_drill(folder, admin_dsn=ADMIN_DSN, min_age_hours=0, log=lambda _: None)
    assert "pg_restore of backup b1 failed" in str(caught.value)
    assert drill_databases(pg_admin) == before


def test_a_damaged_sqlite_copy_fails_its_integrity_check(sqlite_source, folder):
    manifest = take_backup(sqlite_source, folder, backup_id="b1", log=lambda _: None)
    data = folder / "b1" / manifest["file"]
    _flip(data, data.stat().st_size - 4096 * 3)  # inside a table page, past the header
    _edit_manifest(folder, "b1", _rehash(folder, "b1"))
    with pytest.raises(DrillFailed) as caught:
        restore_drill(folder, min_age_hours=0, log=lambda _: None)
    # Where the flipped byte lands decides which check sees it first; each names the damage.
    message = str(caught.value)
    assert any(m in message for m in ("integrity_check", "malformed", "does not open", "cannot be read")), message


def test_scratch_database_is_dropped_when_a_check_raises(pg_source, folder, pg_admin):
    take_backup(pg_source, folder, backup_id="b1", log=lambda _: None)
    before = drill_databases(pg_admin)

    def broken_check(target):
        raise RuntimeError("extra check failed")

    with pytest.raises(RuntimeError, match="extra check failed"):
        restore_drill(folder, admin_dsn=ADMIN_DSN, min_age_hours=0, on_restored=broken_check, log=lambda _: None)
    assert drill_databases(pg_admin) == before


def test_a_scratch_database_a_killed_drill_left_is_dropped_by_the_next(pg_source, folder, pg_admin):
    stale, fresh = "checkpoint_ops_drill_202601010000_deadbeef", "checkpoint_ops_drill_209901010000_cafebabe"
    for name in (stale, fresh):
        pg_admin.execute(f'CREATE DATABASE "{name}"')
    try:
        take_backup(pg_source, folder, backup_id="b1", log=lambda _: None)
        assert restore_drill(folder, admin_dsn=ADMIN_DSN, min_age_hours=0, log=lambda _: None)["passed"]
        assert drill_databases(pg_admin) == {fresh}  # a drill might be running on one that young
    finally:
        for name in (stale, fresh):
            pg_admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
