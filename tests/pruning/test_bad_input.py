"""A store the prune cannot work on is refused with a next step, and left exactly as it was."""

from __future__ import annotations

import hashlib
import sqlite3
from contextlib import closing

import psycopg
import pytest

from include.checkpoint_core.errors import CheckpointStoreError, NotACheckpointStore, StoreBusy, StoreNotFound
from include.checkpoint_core.pruning import PrunePolicy, prune_store
from include.checkpoint_core.stores import StoreTarget


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_missing_file(tmp_path):
    with pytest.raises(StoreNotFound) as info:
        prune_store(StoreTarget("sqlite", str(tmp_path / "nope.sqlite")), PrunePolicy(), log=lambda _: None)
    assert info.value.hint and not (tmp_path / "nope.sqlite").exists()


@pytest.mark.parametrize("content", [b"not a database at all" * 50, None])
def test_not_a_checkpoint_file(tmp_path, content):
    path = tmp_path / "other.sqlite"
    if content is None:
        with closing(sqlite3.connect(path)) as conn:
            conn.execute("CREATE TABLE invoices (id INTEGER)")
            conn.commit()
    else:
        path.write_bytes(content)
    digest = _sha(path)
    with pytest.raises(CheckpointStoreError) as info:
        prune_store(StoreTarget("sqlite", str(path)), PrunePolicy(), log=lambda _: None)
    assert not info.value.retryable and info.value.hint
    assert _sha(path) == digest


def test_postgres_database_without_checkpoint_tables(pg_dsn):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE invoices (id int)")
    with pytest.raises(NotACheckpointStore) as info:
        prune_store(StoreTarget("postgres", pg_dsn), PrunePolicy(), log=lambda _: None)
    assert "checkpoint_setup" in str(info.value)
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0] == 1


def test_a_file_locked_by_the_app_is_busy_and_retryable(aged_store):
    target, _ = aged_store
    if target.kind != "sqlite":
        return
    with closing(sqlite3.connect(target.location, isolation_level=None)) as app:
        app.execute("BEGIN IMMEDIATE")  # the app holds the write lock for longer than the busy timeout
        before = app.execute("SELECT count(*) FROM checkpoints").fetchone()
        with pytest.raises(StoreBusy) as info:
            prune_store(target, PrunePolicy(busy_timeout_ms=200), log=lambda _: None)
        assert info.value.retryable
        assert app.execute("SELECT count(*) FROM checkpoints").fetchone() == before
        app.execute("ROLLBACK")
