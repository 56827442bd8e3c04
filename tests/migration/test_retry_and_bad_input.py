"""Interrupted imports converge; bad input gets a clear error and leaves every store as it was."""

from __future__ import annotations

import socket
import sqlite3
import threading
import time
from contextlib import closing

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from include.checkpoint_core import errors
from include.checkpoint_core.migration import load, preflight, rejects
from include.checkpoint_core.migration.transcode import Rejected
from tests.conftest import PG_ADMIN_DSN
from tests.migration.helpers import migrate, sha256, target_fingerprint, verify_full


class Boom(RuntimeError):
    pass


def test_failure_after_k_batches_then_retry_equals_a_clean_run(source, pg_dsn, pg_admin, tmp_path):
    path, _ = source
    # The reference: one clean run into its own database.
    clean_db = f"{conninfo_to_dict(pg_dsn)['dbname']}_clean"
    pg_admin.execute(f'CREATE DATABASE "{clean_db}"')
    clean_dsn = make_conninfo(pg_dsn, dbname=clean_db)
    try:
        migrate(path, clean_dsn, tmp_path / "clean")
        expected = target_fingerprint(clean_dsn)
    finally:
        pg_admin.execute(f'DROP DATABASE IF EXISTS "{clean_db}" WITH (FORCE)')

    folder = tmp_path / "run"
    done = []

    def crash_after_three(result):
        done.append(result)
        if len(done) == 3:
            raise Boom("worker died")

    with pytest.raises(Boom):
        migrate(path, pg_dsn, folder, on_batch=crash_after_three)
    with closing(psycopg.connect(pg_dsn)) as conn:
        assert conn.execute("SELECT COUNT(*) FROM checkpoint_ops_migration_batches").fetchone()[0] == 3

    # Second failure mode: the connection is dropped under the import, in the middle of a group.
    seen = []

    def drop_connection(result):
        seen.append(result)
        if len(seen) == 1:
            pg_admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (conninfo_to_dict(pg_dsn)["dbname"],),
            )

    with pytest.raises(psycopg.OperationalError):
        migrate(path, pg_dsn, folder, on_batch=drop_connection)

    final = migrate(path, pg_dsn, folder)  # the retry
    assert sum(t["skipped"] for t in final["totals"]) >= 4, "committed batches are not imported again"
    assert target_fingerprint(pg_dsn) == expected
    assert verify_full(folder, pg_dsn)["ok"]

    # And the whole thing once more, on a fully migrated target: nothing changes.
    again = migrate(path, pg_dsn, tmp_path / "rerun", migration_id="m2")
    assert sum(t["imported"] for t in again["totals"]) == 0
    assert target_fingerprint(pg_dsn) == expected


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "damage, error, words",
    [
        (lambda p: p.unlink(), errors.StoreNotFound, "not found"),
        (lambda p: p.write_text("id,name\n1,x\n" * 200), errors.NotSqliteFile, "not an SQLite database"),
        (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), errors.CorruptStore, "damaged|integrity"),
        (lambda p: _replace_with_app_db(p), errors.NotACheckpointStore, "without LangGraph checkpoint tables"),
    ],
    ids=["missing", "not-sqlite", "truncated", "no-checkpoint-tables"],
)
def test_bad_sources_are_refused_untouched(source, pg_dsn, damage, error, words):
    path, _ = source
    damage(path)
    before = sha256(path) if path.exists() else None
    with pytest.raises(error, match=words) as info:
        preflight.preflight(str(path), pg_dsn)
    assert info.value.hint in str(info.value)
    assert (sha256(path) if path.exists() else None) == before
    with closing(psycopg.connect(pg_dsn)) as conn:
        assert conn.execute("SELECT to_regclass('checkpoints')").fetchone()[0] is None, "nothing written to the target"


def _replace_with_app_db(path):
    path.unlink()
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
        conn.commit()


def test_unreachable_target(source):
    path, _ = source
    before = sha256(path)
    with pytest.raises(errors.StoreUnreachable, match="cannot reach PostgreSQL"):
        preflight.preflight(str(path), make_conninfo(PG_ADMIN_DSN, port=str(_free_port())))
    assert sha256(path) == before


def test_conflicting_target_stops_and_names_rows(source, pg_dsn, tmp_path):
    path, _ = source
    migrate(path, pg_dsn, tmp_path / "run")
    with closing(psycopg.connect(pg_dsn, autocommit=True)) as conn:
        conn.execute(
            "UPDATE checkpoints SET metadata = metadata || '{\"tampered\": true}' "
            "WHERE (thread_id, checkpoint_ns, checkpoint_id) = (SELECT thread_id, checkpoint_ns, checkpoint_id "
            "FROM checkpoints WHERE thread_id = 'thread-000003' ORDER BY checkpoint_id LIMIT 1)"
        )
    before = target_fingerprint(pg_dsn)
    with pytest.raises(preflight.TargetConflict, match="thread-000003") as info:
        preflight.preflight(str(path), pg_dsn)
    assert "checkpoints" in str(info.value)
    assert target_fingerprint(pg_dsn) == before


def _poison(path):
    """Rows PostgreSQL cannot hold: NUL in metadata, NaN in metadata, NUL in a write's channel."""
    with closing(sqlite3.connect(path)) as conn:
        ids = conn.execute("SELECT thread_id, checkpoint_ns, checkpoint_id FROM checkpoints ORDER BY rowid LIMIT 2").fetchall()
        conn.execute("UPDATE checkpoints SET metadata = ? WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ?",
                     ('{"source": "loop", "note": "a\\u0000b"}', *ids[0]))
        conn.execute("UPDATE checkpoints SET metadata = ? WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ?",
                     ('{"source": "loop", "score": NaN}', *ids[1]))
        w = conn.execute("SELECT rowid FROM writes ORDER BY rowid LIMIT 1").fetchone()[0]
        conn.execute("UPDATE writes SET channel = ? WHERE rowid = ?", ("bad\x00channel", w))
        conn.commit()
    return ids


def _thread_rows(conn, thread_ids, sql_tables=("checkpoints", "writes")) -> dict[str, int]:
    marks = ", ".join("?" * len(thread_ids))
    return {t: conn.execute(f"SELECT COUNT(*) FROM {t} WHERE thread_id IN ({marks})", thread_ids).fetchone()[0]
            for t in sql_tables}


def _target_rows(dsn, thread_ids) -> dict[str, int]:
    with closing(psycopg.connect(dsn)) as conn:
        return {t: conn.execute(f"SELECT COUNT(*) FROM {t} WHERE thread_id = ANY(%s)", (thread_ids,)).fetchone()[0]
                for t in ("checkpoints", "checkpoint_writes", "checkpoint_blobs")}


def test_a_thread_with_a_row_postgres_cannot_hold_is_rejected_whole(source, pg_dsn, tmp_path):
    path, _ = source
    ids = _poison(path)
    with closing(sqlite3.connect(path)) as conn:
        bad_write_thread = conn.execute("SELECT thread_id FROM writes WHERE channel = ?", ("bad\x00channel",)).fetchone()[0]
        poisoned = sorted({ids[0][0], ids[1][0], bad_write_thread})
        in_source = _thread_rows(conn, poisoned)
        total = _thread_rows(conn, [r[0] for r in conn.execute("SELECT DISTINCT thread_id FROM checkpoints")])
    assert in_source["writes"] > 1, "the poisoned threads have pending writes that must not be left behind"
    before = sha256(path)
    plan = preflight.preflight(str(path), pg_dsn)
    assert plan["rejected"]["count"] == 3 and plan["rejected"]["threads"] == len(poisoned)
    reasons = " ".join(r["reason"] for r in plan["rejected"]["examples"])
    assert "NUL" in reasons and "NaN" in reasons
    folder = tmp_path / "run"
    run = migrate(path, pg_dsn, folder)
    assert sum(t["rejected"] for t in run["totals"]) == 3
    assert run["settled"]["threads"] == len(poisoned) and run["settled"]["removed_rows"] > 0
    # Nothing of those threads is left in the target: no orphan writes, no blobs.
    assert _target_rows(pg_dsn, poisoned) == {"checkpoints": 0, "checkpoint_writes": 0, "checkpoint_blobs": 0}
    with closing(psycopg.connect(pg_dsn)) as conn:
        recorded = conn.execute("SELECT thread_id, checkpoints, writes FROM checkpoint_ops_migration_rejected_threads "
                                "ORDER BY 1").fetchall()
        assert conn.execute("SELECT COUNT(*) FROM checkpoints").fetchone()[0] == total["checkpoints"] - in_source["checkpoints"]
    assert [r[0] for r in recorded] == poisoned
    assert sum(r[1] for r in recorded) == in_source["checkpoints"] and sum(r[2] for r in recorded) == in_source["writes"]
    report = verify_full(folder, pg_dsn)
    assert report["ok"], report
    assert report["rejected_threads"]["count"] == len(poisoned)
    assert report["table_counts"]["writes"]["in_rejected_threads"] == in_source["writes"]
    # Settling again changes nothing.
    with closing(psycopg.connect(pg_dsn)) as conn, closing(sqlite3.connect(folder / "snapshot.sqlite")) as src:
        conn.row_factory = psycopg.rows.dict_row
        assert rejects.settle_rejected_threads(conn, src, "m1", log=lambda _: None)["removed_rows"] == 0
    # Verify still fails on a half-copied thread: one write of a rejected thread put back.
    with closing(psycopg.connect(pg_dsn)) as conn:
        conn.execute("INSERT INTO checkpoint_writes (thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, idx, "
                     "channel, type, blob) VALUES (%s, '', 'x', 't', '', 0, 'c', 'msgpack', '')", (poisoned[0],))
        conn.commit()
    broken = verify_full(folder, pg_dsn)
    assert not broken["ok"] and broken["rejected_threads"]["rows_left_in_target"]["writes"] == 1
    assert sha256(path) == before

    # Every row of the rejected threads, bytes as they are, in a file of the source's layout ...
    rejected_file = tmp_path / "rejected-threads.sqlite"
    counts = rejects.write_rejected_file(path, poisoned, rejected_file)
    assert counts == in_source
    with closing(sqlite3.connect(path)) as a, closing(sqlite3.connect(rejected_file)) as b:
        q = "SELECT * FROM checkpoints WHERE thread_id IN ({}) ORDER BY 1, 2, 3".format(", ".join("?" * len(poisoned)))
        assert a.execute(q, poisoned).fetchall() == b.execute(q, poisoned).fetchall()
    # ... which, repaired, migrates as a source of its own into the same target.
    with closing(sqlite3.connect(rejected_file)) as conn:
        conn.execute("UPDATE checkpoints SET metadata = '{\"source\": \"loop\"}' WHERE metadata LIKE '%NaN%' "
                     "OR instr(metadata, '\\u0000') > 0")
        conn.execute("UPDATE writes SET channel = 'repaired' WHERE channel = ?", ("bad\x00channel",))
        conn.commit()
    with closing(psycopg.connect(pg_dsn)) as conn:
        conn.execute("DELETE FROM checkpoint_writes WHERE checkpoint_id = 'x'")
        conn.commit()
    again = migrate(rejected_file, pg_dsn, tmp_path / "rerun", migration_id="m2")
    assert again["settled"]["threads"] == 0
    assert verify_full(tmp_path / "rerun", pg_dsn, migration_id="m2")["ok"]
    assert _target_rows(pg_dsn, poisoned)["checkpoints"] == in_source["checkpoints"]


def test_catch_up_leaves_a_rejected_thread_whole_in_the_source(source, pg_dsn, tmp_path):
    """The app keeps writing to a rejected thread, and a new bad row arrives in another thread
    after the snapshot: catch-up copies neither thread, and takes the second one out whole."""
    path, _ = source
    ids = _poison(path)
    run = migrate(path, pg_dsn, tmp_path / "run")
    with closing(sqlite3.connect(path)) as conn:
        first = ids[0][0]
        row = conn.execute("SELECT * FROM writes WHERE thread_id = ? LIMIT 1", (first,)).fetchone()
        cols = [r[1] for r in conn.execute("PRAGMA table_info('writes')")]
        late = dict(zip(cols, row), task_id="late-task")
        conn.execute(f"INSERT INTO writes ({', '.join(late)}) VALUES ({', '.join('?' * len(late))})", list(late.values()))
        other = conn.execute("SELECT thread_id FROM checkpoints WHERE thread_id NOT IN (?, ?) ORDER BY thread_id DESC "
                             "LIMIT 1", (ids[0][0], ids[1][0])).fetchone()[0]
        cp = conn.execute("SELECT * FROM checkpoints WHERE thread_id = ? ORDER BY checkpoint_id DESC LIMIT 1",
                          (other,)).fetchone()
        ccols = [r[1] for r in conn.execute("PRAGMA table_info('checkpoints')")]
        bad = dict(zip(ccols, cp), checkpoint_id=cp[2] + "z", metadata='{"note": "late\\u0000"}')
        conn.execute(f"INSERT INTO checkpoints ({', '.join(bad)}) VALUES ({', '.join('?' * len(bad))})", list(bad.values()))
        conn.commit()
    assert _target_rows(pg_dsn, [other])["checkpoints"] > 0
    result = load.catch_up(str(path), pg_dsn, run["manifest"], include_store=True, fail_on_reject=False, log=lambda _: None)
    assert result["rejected_threads"] == run["settled"]["threads"] + 1
    assert _target_rows(pg_dsn, [first, other]) == {"checkpoints": 0, "checkpoint_writes": 0, "checkpoint_blobs": 0}


def test_repair_nul_replaces_it_row_by_row_and_verifies(source, pg_dsn, tmp_path):
    path, _ = source
    with closing(sqlite3.connect(path)) as conn:
        ids = conn.execute("SELECT thread_id, checkpoint_ns, checkpoint_id FROM checkpoints ORDER BY rowid LIMIT 2").fetchall()
        for key in ids:
            conn.execute("UPDATE checkpoints SET metadata = ? WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ?",
                         ('{"source": "loop", "note": "a\\u0000b", "k\\u0000": 1}', *key))
        conn.commit()
    plan = preflight.preflight(str(path), pg_dsn, repair_nul=True)
    assert plan["rejected"]["count"] == 0 and plan["repaired"]["checkpoints"] == 2
    folder = tmp_path / "run"
    run = migrate(path, pg_dsn, folder, repair_nul=True)
    assert sum(t["rejected"] for t in run["totals"]) == 0 and run["settled"]["threads"] == 0
    with closing(psycopg.connect(pg_dsn)) as conn:
        repairs = conn.execute("SELECT row_key, repair FROM checkpoint_ops_migration_repairs ORDER BY 1").fetchall()
        meta = conn.execute("SELECT metadata FROM checkpoints WHERE thread_id = %s AND checkpoint_ns = %s "
                            "AND checkpoint_id = %s", ids[0]).fetchone()[0]
    assert len(repairs) == 2 and all("2 metadata strings" in r[1] for r in repairs)
    assert meta["note"] == "a\ufffdb" and meta["k\ufffd"] == 1
    assert verify_full(folder, pg_dsn, repair_nul=True)["ok"]
    assert not verify_full(folder, pg_dsn)["ok"], "without the repair rule the repaired rows differ"


def test_on_reject_fail_stops_before_writing(source, pg_dsn, tmp_path):
    path, _ = source
    _poison(path)
    with pytest.raises(preflight.RowsRejected, match="3 source rows"):
        preflight.preflight(str(path), pg_dsn, on_reject="fail")
    with pytest.raises(Rejected):
        migrate(path, pg_dsn, tmp_path / "run", fail_on_reject=True)


def test_writer_during_migration_is_caught_up(source, pg_dsn, tmp_path):
    """The app keeps adding checkpoints while the migration runs; catch-up brings them all over."""
    from langgraph.checkpoint.sqlite import SqliteSaver

    from include.checkpoint_core.sqlite_store import connect_sqlite
    from include.sample_agent.graph import build_agent_graph, start_turn, thread_config

    path, _ = source
    stop = threading.Event()
    written = []

    def app():
        with closing(connect_sqlite(path)) as conn:
            graph = build_agent_graph(SqliteSaver(conn), interrupt_before=[])
            i = 0
            while not stop.is_set() and i < 200:
                tid = f"live-{i:04d}"
                start_turn(graph, thread_config(tid, "u-live", "support"), "u-live", f"Where is my order #{i}?")
                conn.commit()
                written.append(tid)
                i += 1

    writer = threading.Thread(target=app)
    writer.start()
    try:
        while len(written) < 3:
            time.sleep(0.01)
        folder = tmp_path / "run"
        run = migrate(path, pg_dsn, folder)
        assert verify_full(folder, pg_dsn)["ok"], "the snapshot itself is consistent"
        while len(written) < 10:
            time.sleep(0.01)
    finally:
        stop.set()
        writer.join()
    result = load.catch_up(str(path), pg_dsn, run["manifest"], include_store=True, fail_on_reject=False, log=lambda _: None)
    assert result["converged"] and result["tables"]["checkpoints"]["imported"] > 0
    with closing(sqlite3.connect(path)) as conn:
        source_ids = set(conn.execute("SELECT thread_id, checkpoint_ns, checkpoint_id FROM checkpoints"))
        source_writes = conn.execute("SELECT COUNT(*) FROM writes").fetchone()[0]
    with closing(psycopg.connect(pg_dsn)) as conn:
        target_ids = set(conn.execute("SELECT thread_id, checkpoint_ns, checkpoint_id FROM checkpoints"))
        target_writes = conn.execute("SELECT COUNT(*) FROM checkpoint_writes").fetchone()[0]
    assert source_ids == target_ids and source_writes == target_writes
    assert {f"live-{i:04d}" for i in range(len(written))} <= {t for t, _, _ in target_ids}
    # A second catch-up finds nothing new.
    again = load.catch_up(str(path), pg_dsn, run["manifest"], include_store=True, fail_on_reject=False, log=lambda _: None)
    assert sum(t["read"] for t in again["tables"].values()) == 0


def test_catch_up_finds_rows_that_reused_rowids_below_the_watermark(source, pg_dsn, tmp_path):
    """SQLite hands out max(rowid)+1: after the app deletes its newest thread, a new thread's
    rows land at or below the snapshot's watermark, where a rowid scan alone never looks."""
    from langgraph.checkpoint.sqlite import SqliteSaver

    from include.checkpoint_core.sqlite_store import connect_sqlite
    from include.sample_agent.graph import build_agent_graph, start_turn, thread_config

    path, _ = source
    with closing(connect_sqlite(path)) as conn:
        newest = conn.execute("SELECT thread_id FROM checkpoints ORDER BY rowid DESC LIMIT 1").fetchone()[0]
    run = migrate(path, pg_dsn, tmp_path / "run")
    with closing(connect_sqlite(path)) as conn:
        saver = SqliteSaver(conn)
        saver.delete_thread(newest)
        start_turn(build_agent_graph(saver, interrupt_before=[]), thread_config("after-snapshot", "u", "support"),
                   "u", "Where is my order #1?")
        conn.commit()
        top = conn.execute("SELECT MAX(rowid) FROM checkpoints").fetchone()[0]
    assert top <= run["manifest"].watermarks["checkpoints"], "the new thread really reused rowids"
    result = load.catch_up(str(path), pg_dsn, run["manifest"], include_store=True, fail_on_reject=False, log=lambda _: None)
    assert result["threads_recopied"] == 1
    with closing(sqlite3.connect(path)) as conn:
        expected = set(conn.execute("SELECT thread_id, checkpoint_ns, checkpoint_id FROM checkpoints WHERE thread_id = 'after-snapshot'"))
    with closing(psycopg.connect(pg_dsn)) as conn:
        got = set(conn.execute("SELECT thread_id, checkpoint_ns, checkpoint_id FROM checkpoints WHERE thread_id = 'after-snapshot'"))
    assert expected and got == expected


def test_snapshot_finishes_while_the_app_writes(source, tmp_path):
    """A stepwise backup restarts on every write and never ends on a busy app; one step does."""
    from langgraph.checkpoint.sqlite import SqliteSaver

    from include.checkpoint_core.migration.source import take_snapshot
    from include.checkpoint_core.sqlite_store import connect_sqlite
    from include.sample_agent.graph import build_agent_graph, start_turn, thread_config

    path, _ = source
    stop = threading.Event()

    def app():
        with closing(connect_sqlite(path)) as conn:
            graph = build_agent_graph(SqliteSaver(conn), interrupt_before=[])
            i = 0
            while not stop.is_set():
                start_turn(graph, thread_config(f"busy-{i}", "u", "support"), "u", "Where is my order #2?")
                conn.commit()
                i += 1

    writer = threading.Thread(target=app)
    writer.start()
    try:
        time.sleep(0.2)
        snap = take_snapshot(path, tmp_path / "snap.sqlite")
    finally:
        stop.set()
        writer.join()
    assert snap.counts["checkpoints"] > 0 and snap.watermarks["checkpoints"] > 0


def test_batches_are_capped_by_bytes_as_well_as_rows(source):
    from include.checkpoint_core.migration.source import iter_batches

    path, _ = source
    with closing(sqlite3.connect(path)) as conn:
        all_rows = [r for batch in iter_batches(conn, "checkpoints", 1000) for r in batch]
        capped = list(iter_batches(conn, "checkpoints", 1000, max_bytes=20_000))
    assert len(capped) > 1 and all(sum(len(v) for v in r if isinstance(v, (bytes, str))) for r in capped[0])
    assert [r for batch in capped for r in batch] == all_rows, "no row skipped or repeated at the cut"


def test_preflight_finds_one_version_used_for_two_values(tmp_path, pg_dsn):
    """Forks written with counter-style versions can reuse a version for another value;
    PostgresSaver keys blobs by version, so preflight says so before anything is written."""
    from langgraph.checkpoint.sqlite import SqliteSaver

    from include.checkpoint_core.sqlite_store import connect_sqlite, setup_sqlite

    path = tmp_path / "fork.sqlite"
    setup_sqlite(path)
    with closing(connect_sqlite(path)) as conn:
        saver = SqliteSaver(conn)
        base = {"v": 4, "ts": "2025-01-01T00:00:00+00:00", "versions_seen": {}, "updated_channels": ["x"]}
        for cid, value in (("1f0-a", [1, 2]), ("1f0-b", [1, 99])):
            saver.put({"configurable": {"thread_id": "t", "checkpoint_ns": ""}},
                      {**base, "id": cid, "channel_values": {"x": value}, "channel_versions": {"x": 2}}, {}, {"x": 2})
        conn.commit()
    plan = preflight.preflight(str(path), pg_dsn)
    assert plan["version_collisions"] == {"count": 1, "examples": [["t", "", "x", "2"]]}

    # The migration keeps the latest checkpoint's copy (the one the thread resumes from), and
    # verify accepts it: either copy is a row PostgresSaver could hold, and preflight said so.
    from langgraph.checkpoint.postgres import PostgresSaver

    from tests.migration.helpers import migrate, verify_full

    migrate(path, pg_dsn, tmp_path / "art")
    result = verify_full(tmp_path / "art", pg_dsn)
    assert result["ok"], str(result)
    with PostgresSaver.from_conn_string(pg_dsn) as pg:
        latest = pg.get_tuple({"configurable": {"thread_id": "t", "checkpoint_ns": ""}})
    assert latest.checkpoint["channel_values"]["x"] == [1, 99]
