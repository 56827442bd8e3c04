"""Verify fails on a wrong target (and names the rows), and passes on a right one."""

from __future__ import annotations

from contextlib import closing

import psycopg
import pytest

from include.checkpoint_core.migration import export, verify
from tests.migration.helpers import migrate


def _verify(folder, dsn, **kw):
    return verify.verify(folder / export.SNAPSHOT_FILE, dsn, mode="full", seed="t", include_store=True, **kw)


@pytest.fixture
def migrated(source, pg_dsn, tmp_path):
    path, _ = source
    folder = tmp_path / "run"
    run = migrate(path, pg_dsn, folder)
    assert _verify(folder, pg_dsn)["ok"]
    return folder, pg_dsn, run


TAMPERING = {
    "metadata-type": ("UPDATE checkpoints SET metadata = jsonb_set(metadata, '{step}', 'true') "
                      "WHERE (thread_id, checkpoint_ns, checkpoint_id) IN (SELECT thread_id, checkpoint_ns, checkpoint_id "
                      "FROM checkpoints WHERE metadata->>'step' = '1' LIMIT 1)", "checkpoints"),
    "blob-bytes": ("UPDATE checkpoint_blobs SET blob = blob || '\\x00'::bytea WHERE ctid IN (SELECT ctid FROM checkpoint_blobs LIMIT 1)", "blobs"),
    "write-dropped": ("DELETE FROM checkpoint_writes WHERE ctid IN (SELECT ctid FROM checkpoint_writes WHERE idx >= 0 LIMIT 1)", "writes"),
    "store-value": ("UPDATE store SET value = value || '{\"x\": 1}' WHERE ctid IN (SELECT ctid FROM store LIMIT 1)", "store"),
    "store-dropped": ("DELETE FROM store WHERE ctid IN (SELECT ctid FROM store LIMIT 1)", "store"),
}


@pytest.mark.parametrize("case", TAMPERING, ids=list(TAMPERING))
def test_a_wrong_target_fails_and_names_the_row(migrated, case):
    folder, dsn, _ = migrated
    sql, table = TAMPERING[case]
    with closing(psycopg.connect(dsn, autocommit=True)) as conn:
        assert conn.execute(sql).rowcount == 1
    result = _verify(folder, dsn)
    assert not result["ok"]
    section = result["store"] if table == "store" else result["content"][table]
    assert section["missing"] + section["different"] == 1
    assert section["examples"]["missing"] or section["examples"]["different"]


def test_rows_written_after_the_snapshot_are_allowed_once_caught_up(migrated, source):
    from langgraph.checkpoint.sqlite import SqliteSaver

    from include.checkpoint_core.migration import load
    from include.checkpoint_core.sqlite_store import connect_sqlite
    from include.sample_agent.graph import build_agent_graph, start_turn, thread_config

    folder, dsn, run = migrated
    path, result = source
    tid = next(f"thread-{i:06d}" for i in range(24) if f"thread-{i:06d}" not in
               result.interrupted_before + result.interrupted_dynamic + result.crashed)
    with closing(connect_sqlite(path)) as conn:
        graph = build_agent_graph(SqliteSaver(conn), interrupt_before=[])
        start_turn(graph, thread_config(tid, "u", "support"), "u", "Where is my order #3?")
        conn.commit()
    load.catch_up(str(path), dsn, run["manifest"], include_store=True, fail_on_reject=False, log=lambda _: None)
    assert not _verify(folder, dsn)["ok"], "strictly, the target now holds more than the snapshot"
    assert _verify(folder, dsn, allow_extra=True)["ok"]


def test_one_version_of_a_set_in_two_byte_orders_verifies(tmp_path, pg_dsn):
    """msgpack writes a set in iteration order, so two checkpoints can hold one channel version
    with different bytes. PostgresSaver keeps one copy per version: either is faithful."""
    import json as _json
    import sqlite3 as _sqlite3

    import ormsgpack
    from langgraph.checkpoint.sqlite import SqliteSaver

    def set_bytes(items):
        return ormsgpack.packb(ormsgpack.Ext(0, ormsgpack.packb(["builtins", "set", items])))

    path = tmp_path / "sets.sqlite"
    with closing(_sqlite3.connect(path)) as conn:
        SqliteSaver(conn).setup()
        for cid, order in (("1f000000-0000-6000-8000-000000000001", ["x", "y"]),
                           ("1f000000-0000-6000-8000-000000000002", ["y", "x"])):
            doc = {"v": 4, "id": cid, "ts": "2026-01-01T00:00:00+00:00", "versions_seen": {},
                   "channel_versions": {"labels": "1"}}
            # The map with one more entry, channel_values = {"labels": <the set's bytes>}, spliced in raw.
            raw = ormsgpack.packb(doc)
            raw = bytes([0x80 | (len(doc) + 1)]) + raw[1:] + ormsgpack.packb("channel_values") + b"\x81" + \
                ormsgpack.packb("labels") + set_bytes(order)
            conn.execute("INSERT INTO checkpoints VALUES ('t', '', ?, NULL, 'msgpack', ?, ?)",
                         (cid, raw, _json.dumps({"source": "loop", "step": 1})))
        conn.commit()
    folder = tmp_path / "run"
    migrate(path, pg_dsn, folder)
    assert _verify(folder, pg_dsn)["ok"]
    # A real difference in one version is still named.
    with closing(_sqlite3.connect(folder / "snapshot.sqlite")) as conn:
        blob = conn.execute("SELECT checkpoint FROM checkpoints WHERE checkpoint_id LIKE '%2'").fetchone()[0]
        conn.execute("UPDATE checkpoints SET checkpoint = ? WHERE checkpoint_id LIKE '%2'",
                     (blob.replace(set_bytes(["y", "x"]), set_bytes(["y", "z"])),))
        conn.commit()
    assert not _verify(folder, pg_dsn)["ok"]
