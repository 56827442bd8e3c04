"""Connecting to and setting up PostgreSQL checkpoint databases, with errors a user can act on."""

from __future__ import annotations

import socket
import threading
import uuid

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from include.checkpoint_core import errors
from include.checkpoint_core.postgres_store import (
    connect_postgres,
    describe_dsn,
    open_postgres_pool,
    schema_versions,
    setup_postgres,
)
from include.checkpoint_core.stores import StoreTarget


def _with(dsn: str, **changes) -> str:
    return make_conninfo(**{**conninfo_to_dict(dsn), **changes})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_setup_creates_saver_and_store_schemas_once(pg_dsn):
    from langgraph.checkpoint.postgres import PostgresSaver
    from langgraph.store.postgres import PostgresStore

    first = setup_postgres(pg_dsn)
    latest_saver, latest_store = len(PostgresSaver.MIGRATIONS) - 1, len(PostgresStore.MIGRATIONS) - 1
    assert first["changes"] == [
        f"checkpoints migrations none -> {latest_saver}",
        f"store migrations none -> {latest_store}",
    ]
    assert first["schema_versions"] == {"checkpoints": latest_saver, "store": latest_store}
    assert set(first["rows_estimate"]) == {"checkpoints", "checkpoint_blobs", "checkpoint_writes", "store"}
    second = setup_postgres(pg_dsn)
    assert second["changes"] == []
    assert second["schema_versions"] == first["schema_versions"]


def test_setup_without_store(pg_dsn):
    report = setup_postgres(pg_dsn, include_store=False)
    assert report["schema_versions"]["store"] is None
    assert "store" not in report["rows_estimate"]


def test_concurrent_setups_do_not_race(pg_dsn):
    results, failures = [], []

    def run():
        try:
            results.append(setup_postgres(pg_dsn))
        except Exception as exc:  # collected and asserted below
            failures.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
    assert sum(1 for r in results if r["changes"]) == 1, "exactly one run applies the migrations"


def test_pool_serves_postgres_saver(pg_dsn):
    from langgraph.checkpoint.postgres import PostgresSaver

    setup_postgres(pg_dsn)
    pool = open_postgres_pool(pg_dsn, max_size=2)
    try:
        saver = PostgresSaver(pool)
        assert list(saver.list(None, limit=1)) == []
        with pool.connection() as conn:
            assert conn.autocommit
            assert schema_versions(conn)["checkpoints"] >= 9
    finally:
        pool.close()


def test_unreachable_server(pg_dsn):
    bad = _with(pg_dsn, port=str(_free_port()))
    with pytest.raises(errors.StoreUnreachable, match="cannot reach PostgreSQL") as info:
        connect_postgres(bad, timeout_s=3)
    assert info.value.retryable
    with pytest.raises(errors.StoreUnreachable):
        open_postgres_pool(bad, timeout_s=3)


def test_wrong_credentials(pg_dsn):
    bad = _with(pg_dsn, user="no_such_role_cpo", password="s3cret-pw")
    with pytest.raises(errors.AuthenticationFailed) as info:
        connect_postgres(bad)
    assert "s3cret-pw" not in str(info.value)
    assert not info.value.retryable


def test_missing_database(pg_dsn):
    with pytest.raises(errors.DatabaseMissing, match="does not exist"):
        connect_postgres(_with(pg_dsn, dbname="cpo_no_such_db"))


def test_messages_and_reprs_never_show_passwords():
    dsn = "postgresql://app:hunter2@db.internal:6543/checkpoints"
    assert describe_dsn(dsn) == "app@db.internal:6543/checkpoints"
    target = StoreTarget("postgres", dsn, "checkpoints_postgres")
    assert "hunter2" not in repr(target) and "hunter2" not in target.display


def test_invalid_index_left_by_an_interrupted_run_is_rebuilt(pg_dsn):
    import psycopg

    setup_postgres(pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'checkpoints_thread_id_idx'::regclass")
    report = setup_postgres(pg_dsn)
    assert report["changes"] == ["rebuilt invalid index checkpoints_thread_id_idx"]
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = 'checkpoints_thread_id_idx'::regclass").fetchone()[0]
    assert setup_postgres(pg_dsn)["changes"] == []


def test_setup_gives_way_to_the_apps_locks(pg_dsn):
    """A pending migration that must lock a table the app is using waits lock_timeout, then
    fails with a retryable error instead of stalling every app query behind it."""
    import psycopg

    setup_postgres(pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        last = conn.execute("SELECT max(v) FROM checkpoint_migrations").fetchone()[0]
        conn.execute("DELETE FROM checkpoint_migrations WHERE v = %s", (last,))  # ALTER TABLE checkpoint_writes ...
    with psycopg.connect(pg_dsn) as app:
        app.execute("SELECT * FROM checkpoint_writes")  # the app's open transaction holds a lock
        with pytest.raises(errors.StoreBusy) as info:
            setup_postgres(pg_dsn, lock_timeout_s=0.5)
        assert info.value.retryable
    assert setup_postgres(pg_dsn)["changes"] == [f"checkpoints migrations {last - 1} -> {last}"]


def test_no_connect_privilege_is_an_access_error(pg_dsn, pg_admin):
    dbname = conninfo_to_dict(pg_dsn)["dbname"]
    pg_admin.execute("CREATE ROLE cpo_no_connect LOGIN")
    try:
        pg_admin.execute(f'REVOKE CONNECT ON DATABASE "{dbname}" FROM PUBLIC')
        with pytest.raises(errors.AuthenticationFailed, match="permission denied") as info:
            connect_postgres(_with(pg_dsn, user="cpo_no_connect"))
        assert not info.value.retryable
    finally:
        pg_admin.execute(f'GRANT CONNECT ON DATABASE "{dbname}" TO PUBLIC')
        pg_admin.execute("DROP ROLE IF EXISTS cpo_no_connect")


def test_unparseable_connection_string_does_not_echo_it():
    with pytest.raises(errors.ConnectionSettingsWrong) as info:
        connect_postgres("postgresql://app:pa%zzword@db/x")
    assert "pa%zz" not in str(info.value)


def test_a_database_refusing_connections_is_not_called_unreachable(pg_admin):
    """The server answered: the hint names the refusal, not "check that the server is running"."""
    name = f"cpo_noconn_{uuid.uuid4().hex[:8]}"
    pg_admin.execute(f'CREATE DATABASE "{name}" ALLOW_CONNECTIONS false')
    try:
        dsn = make_conninfo(**{**conninfo_to_dict(pg_admin.info.dsn), "dbname": name})
        with pytest.raises(errors.StoreUnreachable) as caught:
            connect_postgres(dsn)
        assert "answered but refused" in str(caught.value) and "not currently accepting" in str(caught.value)
        assert "server is running" not in str(caught.value) and caught.value.retryable
    finally:
        pg_admin.execute(f'DROP DATABASE "{name}"')
