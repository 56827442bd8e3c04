"""Wrong folders, ids and stores are refused with a message and a next step."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from include.checkpoint_core.backup import (
    BackupCorrupt,
    BackupError,
    BackupExists,
    BackupFailed,
    BackupFolderMissing,
    InvalidBackupId,
    NoBackupFound,
    ToolMissing,
    apply_retention,
    list_backups,
    restore_drill,
    take_backup,
)
from include.checkpoint_core.errors import DatabaseMissing, StoreNotFound
from include.checkpoint_core.stores import StoreTarget
from tests.backup.conftest import ADMIN_DSN
from tests.conftest import SENTINEL_PASSWORD

QUIET = {"log": lambda _: None}


def test_a_missing_folder_is_named(tmp_path):
    missing = tmp_path / "nowhere"
    for call in (lambda: list_backups(missing), lambda: apply_retention(missing, **QUIET),
                 lambda: restore_drill(missing, admin_dsn=ADMIN_DSN, **QUIET)):
        with pytest.raises(BackupFolderMissing, match="nowhere") as caught:
            call()
        assert caught.value.hint and caught.value.retryable is False


def test_an_empty_folder_has_no_backup_to_drill(tmp_path):
    (tmp_path / "half").mkdir()  # a backup that never got its manifest
    (tmp_path / "half" / "dump.pgdump").write_bytes(b"partial")
    assert list_backups(tmp_path) == []
    with pytest.raises(NoBackupFound, match="no complete backup") as caught:
        restore_drill(tmp_path, admin_dsn=ADMIN_DSN, **QUIET)
    assert "Take a backup first" in str(caught.value)
    assert apply_retention(tmp_path, **QUIET)["kept"] == []


def test_backups_too_young_or_unknown_are_refused(sqlite_source, folder):
    take_backup(sqlite_source, folder, backup_id="today", **QUIET)
    with pytest.raises(NoBackupFound, match=r"at least 24h old \(the newest, today, is 0.0h old\)"):
        restore_drill(folder, **QUIET)
    with pytest.raises(NoBackupFound, match="no complete backup 'other'"):
        restore_drill(folder, backup_id="other", **QUIET)
    later = datetime.now(timezone.utc) + timedelta(days=2)
    assert restore_drill(folder, now=later, **QUIET)["backup_id"] == "today"


def test_a_finished_backup_is_never_overwritten(sqlite_source, folder):
    take_backup(sqlite_source, folder, backup_id="b1", **QUIET)
    with pytest.raises(BackupExists):
        take_backup(sqlite_source, folder, backup_id="b1", **QUIET)
    for bad in ("../escape", "a/b", "", ".hidden"):
        with pytest.raises(InvalidBackupId):
            take_backup(sqlite_source, folder, backup_id=bad, **QUIET)


def test_a_postgres_drill_needs_an_admin_dsn(pg_source, folder):
    take_backup(pg_source, folder, backup_id="b1", **QUIET)
    with pytest.raises(BackupError, match="no admin_dsn") as caught:
        restore_drill(folder, min_age_hours=0, **QUIET)
    assert "CREATE DATABASE" in caught.value.hint


def test_unreachable_sources_leave_no_backup(tmp_path, folder):
    with pytest.raises(StoreNotFound):
        take_backup(StoreTarget("sqlite", str(tmp_path / "missing.sqlite")), folder, backup_id="b1", **QUIET)
    dsn = make_conninfo(ADMIN_DSN, dbname="cpo_no_such_db")
    with pytest.raises(DatabaseMissing) as caught:
        take_backup(StoreTarget("postgres", dsn), folder, backup_id="b2", **QUIET)
    assert SENTINEL_PASSWORD not in str(caught.value)
    assert list_backups(folder) == []


def test_missing_client_tools_are_named_before_anything_runs(pg_source, folder, tmp_path):
    with pytest.raises(ToolMissing, match=f"pg_dump was not found in {tmp_path}") as caught:
        take_backup(pg_source, folder, backup_id="b1", pg_bin_dir=tmp_path, **QUIET)
    assert "pg_bin_dir" in caught.value.hint
    assert list_backups(folder) == []


def test_a_locked_table_fails_the_backup_retryably(pg_source, folder):
    """A migration holding a table: the backup gives up after lock_wait_timeout_s instead of queueing."""
    with psycopg.connect(pg_source.location) as holder:
        holder.execute("LOCK TABLE checkpoint_writes IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(BackupFailed) as caught:
            take_backup(pg_source, folder, backup_id="b1", lock_wait_timeout_s=0.5, **QUIET)
        holder.rollback()
    assert caught.value.retryable is True and SENTINEL_PASSWORD not in str(caught.value)
    assert list_backups(folder) == []
    assert take_backup(pg_source, folder, backup_id="b1", **QUIET)["backup_id"] == "b1", "the retry succeeds"


def test_a_missing_data_file_is_a_corrupt_backup(sqlite_source, folder):
    manifest = take_backup(sqlite_source, folder, backup_id="b1", **QUIET)
    (folder / "b1" / manifest["file"]).unlink()
    with pytest.raises(BackupCorrupt, match="is missing") as caught:
        restore_drill(folder, min_age_hours=0, **QUIET)
    assert caught.value.retryable is False
