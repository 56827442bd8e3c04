"""Recognising, opening and setting up SQLite checkpoint files, including old and odd ones."""

from __future__ import annotations

import hashlib
import sqlite3
from contextlib import closing

import pytest
from langgraph.checkpoint.sqlite import SqliteSaver

from include.checkpoint_core import errors
from include.checkpoint_core.sqlite_store import (
    SCHEMA_CURRENT,
    SCHEMA_LEGACY,
    SCHEMA_NO_TASK_PATH,
    connect_sqlite,
    count_rows,
    inspect_sqlite,
    open_sqlite_readonly,
    setup_sqlite,
)
from include.sample_agent.workload import WorkloadSpec, generate


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def populated(sqlite_path):
    """A real SqliteSaver file written by the sample agent, interrupts and crashes included."""
    setup_sqlite(sqlite_path)
    with closing(connect_sqlite(sqlite_path)) as conn:
        generate(SqliteSaver(conn), WorkloadSpec(threads=6, turns=2, interrupted=0.34, crashed=0.17, with_store=False))
        conn.commit()
    return sqlite_path


def make_pre_task_path_file(path):
    """A file as langgraph-checkpoint-sqlite wrote it before writes.task_path existed:
    real rows from SqliteSaver, then the column dropped (SQLite >= 3.35 can)."""
    setup_sqlite(path)
    with closing(connect_sqlite(path)) as conn:
        generate(SqliteSaver(conn), WorkloadSpec(threads=3, turns=2, crashed=0.34, with_store=False))
        conn.commit()
        conn.execute("ALTER TABLE writes DROP COLUMN task_path")
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.commit()


def test_inspect_current_file(populated):
    before = sha256(populated)
    schema = inspect_sqlite(populated, check_integrity=True)
    assert schema.version == SCHEMA_CURRENT
    assert schema.writes_has_task_path
    assert schema.journal_mode == "wal"
    assert {"checkpoints", "writes"} <= set(schema.tables)
    with open_sqlite_readonly(populated) as conn:
        rows = count_rows(conn)
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            conn.execute("DELETE FROM checkpoints")
    assert rows["threads"] == 6 and rows["checkpoints"] > 6 and rows["writes"] > 0
    assert sha256(populated) == before, "inspecting must not change the database file"


def test_old_layout_is_detected_and_upgraded_without_losing_rows(sqlite_path):
    make_pre_task_path_file(sqlite_path)
    old = inspect_sqlite(sqlite_path)
    assert old.version == SCHEMA_NO_TASK_PATH and not old.writes_has_task_path
    assert old.journal_mode == "delete"
    with open_sqlite_readonly(sqlite_path) as conn:
        rows_before = count_rows(conn)
        writes_before = conn.execute("SELECT thread_id, checkpoint_id, task_id, idx, value FROM writes ORDER BY 1,2,3,4").fetchall()

    report = setup_sqlite(sqlite_path)
    assert report["schema_version"] == SCHEMA_CURRENT
    assert any("upgraded schema 1 -> 2" in c for c in report["changes"])
    assert any("journal_mode delete -> wal" in c for c in report["changes"])
    assert report["rows"] == rows_before
    with open_sqlite_readonly(sqlite_path) as conn:
        writes_after = conn.execute("SELECT thread_id, checkpoint_id, task_id, idx, value FROM writes ORDER BY 1,2,3,4").fetchall()
        assert {r[0] for r in conn.execute("SELECT task_path FROM writes")} == {""}
    assert writes_after == writes_before
    # The upgraded file works with today's SqliteSaver, pending writes included.
    with closing(connect_sqlite(sqlite_path)) as conn:
        saver = SqliteSaver(conn)
        crashed = [t for t in saver.list(None) if t.pending_writes]
        assert crashed, "the crashed thread's pending writes survive the upgrade"


def test_legacy_layout_is_named_and_refused(sqlite_path):
    with sqlite3.connect(sqlite_path) as conn:
        conn.execute("CREATE TABLE checkpoints (thread_id TEXT NOT NULL, thread_ts TEXT NOT NULL, parent_ts TEXT, "
                      "checkpoint BLOB, metadata BLOB, PRIMARY KEY (thread_id, thread_ts))")
        conn.execute("INSERT INTO checkpoints VALUES ('t', '2024-01-01T00:00:00', NULL, x'00', x'7b7d')")
    assert inspect_sqlite(sqlite_path).version == SCHEMA_LEGACY
    before = sha256(sqlite_path)
    with pytest.raises(errors.UnsupportedSchema, match="langgraph < 0.2"):
        setup_sqlite(sqlite_path)
    assert sha256(sqlite_path) == before


def test_app_tables_beside_checkpoints_are_fine(populated):
    with closing(sqlite3.connect(populated)) as conn:
        conn.execute("CREATE TABLE app_users (id INTEGER PRIMARY KEY, name TEXT)")
        conn.commit()
    assert inspect_sqlite(populated).version == SCHEMA_CURRENT
    assert setup_sqlite(populated)["changes"] == []


def test_setup_is_idempotent_and_leaves_bytes_alone(sqlite_path):
    first = setup_sqlite(sqlite_path)
    assert "created the database file" in first["changes"]
    assert first["journal_mode"] == "wal" and first["busy_timeout_ms"] == 5000
    before = sha256(sqlite_path)
    second = setup_sqlite(sqlite_path)
    assert second["changes"] == []
    assert sha256(sqlite_path) == before


@pytest.mark.parametrize(
    "make, error, words",
    [
        (lambda p: None, errors.StoreNotFound, "not found"),
        (lambda p: p.write_text("thread_id,checkpoint\n1,abc\n" * 100), errors.NotSqliteFile, "not an SQLite database"),
        (lambda p: p.write_bytes(b"PK\x03\x04" + b"\0" * 2000), errors.NotSqliteFile, "first bytes"),
        (lambda p: p.write_bytes(b""), errors.NotACheckpointStore, "empty"),
        (lambda p: p.mkdir(), errors.NotSqliteFile, "directory"),
    ],
    ids=["missing", "csv", "zip", "empty", "directory"],
)
def test_bad_files_get_actionable_errors(sqlite_path, make, error, words):
    make(sqlite_path)
    with pytest.raises(error, match=words) as info:
        inspect_sqlite(sqlite_path)
    assert info.value.hint and info.value.hint in str(info.value)


def test_sqlite_without_checkpoint_tables(sqlite_path):
    with closing(sqlite3.connect(sqlite_path)) as conn:
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, total REAL)")
        conn.commit()
    before = sha256(sqlite_path)
    with pytest.raises(errors.NotACheckpointStore, match="tables found: orders"):
        inspect_sqlite(sqlite_path)
    with pytest.raises(errors.NotACheckpointStore):
        setup_sqlite(sqlite_path)
    assert sha256(sqlite_path) == before, "setup must not add tables to someone else's database"


def test_lookalike_checkpoints_table_is_not_accepted(sqlite_path):
    with closing(sqlite3.connect(sqlite_path)) as conn:
        conn.execute("CREATE TABLE checkpoints (id INTEGER PRIMARY KEY, data TEXT)")
        conn.commit()
    with pytest.raises(errors.NotACheckpointStore, match="lacks LangGraph columns"):
        inspect_sqlite(sqlite_path)


def test_truncated_file_is_reported_as_damaged(populated, tmp_path):
    with closing(sqlite3.connect(populated)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode=DELETE")
    data = populated.read_bytes()
    broken = tmp_path / "broken.sqlite"
    broken.write_bytes(data[: len(data) // 3])
    with pytest.raises(errors.CorruptStore, match="damaged|integrity"):
        inspect_sqlite(broken, check_integrity=True)


def test_missing_directory_for_new_file(tmp_path):
    with pytest.raises(errors.StoreNotFound, match="directory"):
        setup_sqlite(tmp_path / "nope" / "checkpoints.sqlite")


def test_locked_file_is_a_retryable_busy_error(sqlite_path):
    make_pre_task_path_file(sqlite_path)  # rollback-journal mode, needs an upgrade
    with closing(sqlite3.connect(sqlite_path, isolation_level=None)) as app:
        app.execute("BEGIN EXCLUSIVE")
        with pytest.raises(errors.StoreBusy, match="locked") as info:
            setup_sqlite(sqlite_path, busy_timeout_ms=100)
        assert info.value.retryable
        app.execute("ROLLBACK")
    assert setup_sqlite(sqlite_path)["schema_version"] == SCHEMA_CURRENT


def test_zero_busy_timeout_is_honoured(sqlite_path):
    from include.checkpoint_core.stores import StoreTarget, setup_store

    assert setup_store(StoreTarget("sqlite", str(sqlite_path)), busy_timeout_ms=0)["busy_timeout_ms"] == 0


def test_hot_journal_left_by_a_crashed_writer(sqlite_path, tmp_path):
    """A copy taken mid-transaction carries a hot journal: read-only access cannot replay it."""
    import shutil

    make_pre_task_path_file(sqlite_path)
    with closing(sqlite3.connect(sqlite_path, isolation_level=None)) as app:
        app.execute("PRAGMA cache_size = 1")  # spill to the file, so the journal is needed
        app.execute("BEGIN")
        app.execute("UPDATE checkpoints SET checkpoint = checkpoint || x'00'")
        crashed = tmp_path / "crashed.sqlite"
        shutil.copyfile(sqlite_path, crashed)
        shutil.copyfile(f"{sqlite_path}-journal", f"{crashed}-journal")
        app.execute("ROLLBACK")
    with pytest.raises(errors.StoreNeedsRecovery) as info:
        inspect_sqlite(crashed)
    assert not info.value.retryable and "checkpoint_setup" in str(info.value)
    assert setup_sqlite(crashed)["schema_version"] == SCHEMA_CURRENT, "a read-write open replays the journal"
