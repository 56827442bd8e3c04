"""Cutover fixtures: the app's SQLite file (blue), a fresh PostgreSQL database (green), RoutingSaver over both."""

from __future__ import annotations

import sqlite3

import pytest


from tests.tiering.conftest import pool  # noqa: E402,F401 (fixture)


@pytest.fixture
def blue_path(tmp_path):
    return tmp_path / "app.sqlite"


@pytest.fixture
def stores(blue_path, pool):
    """(SqliteSaver, PostgresSaver), both set up, as the app opens them."""
    from langgraph.checkpoint.postgres import PostgresSaver
    from langgraph.checkpoint.sqlite import SqliteSaver

    conn = sqlite3.connect(str(blue_path), check_same_thread=False, timeout=30)
    blue, green = SqliteSaver(conn), PostgresSaver(pool)
    blue.setup()
    green.setup()
    yield blue, green
    conn.close()


@pytest.fixture
def routing(stores, pool):
    from include.checkpoint_core.cutover.saver import RoutingSaver

    blue, green = stores
    return RoutingSaver(blue, green, pool, wait_timeout_s=20)


@pytest.fixture
def mover(pg_dsn, blue_path, stores):
    """(green autocommit connection, blue connection) as the DAG's tasks open them."""
    from include.checkpoint_core.cutover.jobs import connect_blue
    from include.checkpoint_core.postgres_store import connect_postgres

    pg, blue = connect_postgres(pg_dsn), connect_blue(blue_path)
    yield pg, blue
    pg.close()
    blue.close()


@pytest.fixture
def prepared(mover, blue_path):
    """The routing state installed on both sides (weight 0)."""
    from include.checkpoint_core.cutover import jobs

    pg, blue = mover
    jobs.prepare(pg, blue, str(blue_path), "test-cutover", settle_s=0)
    return pg, blue
