"""Connecting to and setting up PostgreSQL checkpoint databases, with errors a user can act on."""

from __future__ import annotations

import socket
import threading

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
    assert set(first["rows"]) == {"checkpoints", "checkpoint_blobs", "checkpoint_writes", "store"}
    second = setup_postgres(pg_dsn)
    assert second["changes"] == []
    assert second["schema_versions"] == first["schema_versions"]


def test_setup_without_store(pg_dsn):
    report = setup_postgres(pg_dsn, include_store=False)
    assert report["schema_versions"]["store"] is None
    assert "store" not in report["rows"]


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
