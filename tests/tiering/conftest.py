"""Tiering fixtures: a TieredSaver over the tests' own Redis, a fresh PostgreSQL database and an archive."""

from __future__ import annotations

import pytest


@pytest.fixture
def pool(pg_dsn):
    from include.checkpoint_core.postgres_store import open_postgres_pool

    p = open_postgres_pool(pg_dsn, max_size=6)
    yield p
    p.close()


@pytest.fixture
def hot(redis_url):
    from include.checkpoint_core.tiering.hot import RedisRowSaver

    saver = RedisRowSaver.from_url(redis_url)
    yield saver
    saver.client.close()


@pytest.fixture
def archive_store(tmp_path):
    from include.checkpoint_core.tiering.archive import LocalArchive

    return LocalArchive(tmp_path / "archive")


@pytest.fixture
def tiered(hot, pool, archive_store):
    from include.checkpoint_core.tiering.saver import TieredSaver

    saver = TieredSaver(hot, pool, archive_store)
    saver.setup()
    return saver


def demote_all(saver, thread_ids=None):
    from include.checkpoint_core.tiering import moves

    ids = thread_ids if thread_ids is not None else saver.hot.hot_threads()
    with saver.pool.connection() as conn:
        return moves.demote_group(conn, saver.hot, ids)


def archive_all(saver, thread_ids):
    from include.checkpoint_core.tiering import moves

    with saver.pool.connection() as conn:
        return [moves.archive_thread(conn, saver.hot, saver.archive, t) for t in thread_ids]
