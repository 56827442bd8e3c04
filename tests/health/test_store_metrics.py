"""What the store itself tells the health check, on real SQLite and PostgreSQL stores."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import datetime, timedelta, timezone

import pytest

from include.checkpoint_core.health.store_metrics import read_store
from include.checkpoint_core.ids import uuid6_floor
from include.checkpoint_core.stores import StoreTarget


def _recent_ids(n: int, span_s: float = 30) -> list[str]:
    """n distinct uuid6 ids minted within the last span_s seconds."""
    now = datetime.now(timezone.utc)
    ids = []
    for i in range(n):
        base = uuid6_floor(now - timedelta(seconds=span_s * i / n))
        ids.append(base[:-12] + f"{i:012x}")
    return ids


def _add_sqlite_checkpoints(path, ids, writes_per_checkpoint=0, thread="hot"):
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.executemany(
            "INSERT INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, type, checkpoint, metadata) "
            "VALUES (?, '', ?, 'msgpack', x'00', '{}')", [(thread, i) for i in ids])
        conn.executemany(
            "INSERT INTO writes (thread_id, checkpoint_ns, checkpoint_id, task_id, idx, channel, type, value) "
            "VALUES (?, '', ?, ?, 0, 'messages', 'msgpack', x'00')",
            [(thread, i, f"task-{k}") for i in ids for k in range(writes_per_checkpoint)])


def test_sqlite_readings(source):
    path, result = source
    readings = read_store(StoreTarget("sqlite", str(path), "s"), window_minutes=15)
    assert readings.threads == result.threads
    assert readings.checkpoints_in_window == 0  # the generated history is 1 to 30 days old
    assert readings.writes_per_second == 0
    assert readings.largest_checkpoint_bytes == readings.largest[0]["bytes"] > 0
    assert readings.store_bytes == sum(readings.bytes_detail.values()) >= path.stat().st_size
    assert readings.missing == []


def test_sqlite_size_counts_the_wal(source):
    path, _ = source
    writer = sqlite3.connect(path)
    writer.execute("PRAGMA journal_mode=wal")
    writer.execute("PRAGMA wal_autocheckpoint=0")  # keep the pages in the WAL, as a busy app does
    _add_sqlite_checkpoints(path, _recent_ids(10), thread="wal")
    writer.execute("CREATE TABLE padding (b BLOB)")
    writer.execute("INSERT INTO padding VALUES (zeroblob(2000000))")
    writer.commit()
    try:
        readings = read_store(StoreTarget("sqlite", str(path), "s"), largest_top_n=0)
        assert readings.bytes_detail["wal"] > 2_000_000
        assert readings.store_bytes == readings.bytes_detail["main"] + readings.bytes_detail["wal"] + readings.bytes_detail.get("shm", 0)
    finally:
        writer.close()


@pytest.mark.parametrize("checkpoints, groups, expected", [(6000, 0, 100.0), (3000, 3060, 101.0)])
def test_writes_per_second_from_checkpoint_ids(source, checkpoints, groups, expected):
    path, _ = source
    ids = _recent_ids(checkpoints)
    _add_sqlite_checkpoints(path, ids)
    if groups:  # put_writes calls: one per (checkpoint, task); two tasks on some checkpoints
        _add_writes_only(path, ids, groups)
    readings = read_store(StoreTarget("sqlite", str(path), "s"), window_minutes=1, largest_top_n=0)
    assert readings.checkpoints_in_window == checkpoints
    assert readings.write_groups_in_window == groups
    assert readings.writes_per_second == pytest.approx(expected)


def _add_writes_only(path, ids, groups):
    rows = [("hot", ids[g % len(ids)], f"task-{g // len(ids)}") for g in range(groups)]
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.executemany(
            "INSERT INTO writes (thread_id, checkpoint_ns, checkpoint_id, task_id, idx, channel, type, value) "
            "VALUES (?, '', ?, ?, 0, 'messages', 'msgpack', x'00')", rows)
        # a second write of the same task is the same put_writes call
        conn.executemany(
            "INSERT INTO writes (thread_id, checkpoint_ns, checkpoint_id, task_id, idx, channel, type, value) "
            "VALUES (?, '', ?, ?, 1, 'messages', 'msgpack', x'00')", rows)


def test_ids_that_are_not_uuid6_are_not_counted_as_recent(source):
    path, _ = source
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.executemany(
            "INSERT INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, type, checkpoint, metadata) "
            "VALUES ('odd', '', ?, 'msgpack', x'00', '{}')",
            [("2024-05-01T10:00:00.000000+00:00",), ("ffffffff-ffff-6fff-8fff-ffffffffffff",), ("zz",)])
    readings = read_store(StoreTarget("sqlite", str(path), "s"), window_minutes=60, largest_top_n=0)
    assert readings.checkpoints_in_window == 0


def test_legacy_sqlite_layout_still_gives_its_size(sqlite_path):
    with closing(sqlite3.connect(sqlite_path)) as conn, conn:
        conn.execute("CREATE TABLE checkpoints (thread_id TEXT NOT NULL, thread_ts TEXT NOT NULL, parent_ts TEXT, "
                     "checkpoint BLOB, metadata BLOB, PRIMARY KEY (thread_id, thread_ts))")
        conn.execute("INSERT INTO checkpoints VALUES ('t', '2024-01-01T00:00:00', NULL, x'00', x'7b7d')")
    readings = read_store(StoreTarget("sqlite", str(sqlite_path), "old"))
    assert readings.store_bytes > 0 and readings.threads == 1
    assert readings.writes_per_second is None
    assert any("checkpoints_in_window" in m for m in readings.missing)
    assert any("largest checkpoints" in m for m in readings.missing)


def test_not_a_checkpoint_file_fails_with_a_hint(tmp_path):
    from include.checkpoint_core.errors import CheckpointStoreError

    path = tmp_path / "app.sqlite"
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE users (id INTEGER)")
    with pytest.raises(CheckpointStoreError) as err:
        read_store(StoreTarget("sqlite", str(path), "s"))
    assert not err.value.retryable


def test_postgres_readings(saver_factory_pg):
    dsn, threads = saver_factory_pg
    readings = read_store(StoreTarget("postgres", dsn, "p"), window_minutes=15)
    assert readings.threads == threads
    assert readings.checkpoints_in_window > 0  # written just now
    assert readings.write_groups_in_window > 0
    assert readings.writes_per_second == pytest.approx(
        (readings.checkpoints_in_window + readings.write_groups_in_window) / 900)
    assert readings.bytes_detail["checkpoints"] > 0 and readings.bytes_detail["checkpoint_blobs"] > 0
    assert readings.largest_checkpoint_bytes > 0


@pytest.fixture
def saver_factory_pg(pg_dsn):
    from langgraph.checkpoint.postgres import PostgresSaver

    from include.checkpoint_core.postgres_store import connect_postgres
    from include.sample_agent.workload import WorkloadSpec, generate

    with closing(connect_postgres(pg_dsn, autocommit=True)) as conn:
        saver = PostgresSaver(conn)
        saver.setup()
        generate(saver, WorkloadSpec(threads=4, turns=2, interrupted=0, crashed=0, seed=3))
    return pg_dsn, 4
