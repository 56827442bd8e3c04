"""Stores written by the sample agent (12 threads x 2 turns), generated once per backend.

Each test gets its own copy (``CREATE DATABASE ... TEMPLATE``, a file copy), so backups and
drills run on real LangGraph rows in milliseconds. PostgreSQL DSNs carry a sentinel password
(the test server trusts local connections and ignores it) so tests can prove it never leaks.
"""

from __future__ import annotations

import shutil
import uuid

import pytest
from psycopg.conninfo import make_conninfo

from include.checkpoint_core.stores import StoreTarget, setup_store
from tests.conftest import PG_ADMIN_DSN, SENTINEL_PASSWORD, _dsn_for, open_saver  # noqa: F401 (re-exported)

SPEC = dict(threads=12, turns=2, interrupted=0.25, crashed=0.17, seed=3)
ADMIN_DSN = make_conninfo(PG_ADMIN_DSN, password=SENTINEL_PASSWORD)


def with_password(dsn: str) -> str:
    return make_conninfo(dsn, password=SENTINEL_PASSWORD)


@pytest.fixture(scope="session")
def _templates(tmp_path_factory, pg_admin):
    from include.sample_agent.workload import WorkloadSpec, generate

    tpl = f"cpo_bk_tpl_{uuid.uuid4().hex[:12]}"
    pg_admin.execute(f'CREATE DATABASE "{tpl}"')
    sqlite_path = tmp_path_factory.mktemp("backup-tpl") / "app.sqlite"
    made = {}
    try:
        for target in (StoreTarget("postgres", _dsn_for(tpl), "tpl"), StoreTarget("sqlite", str(sqlite_path), "tpl")):
            setup_store(target)
            with open_saver(target) as (saver, store):
                if target.kind == "sqlite":
                    store.setup()
                made[target.kind] = generate(saver, WorkloadSpec(**SPEC), store)
        yield {"postgres": tpl, "sqlite": sqlite_path, "results": made}
    finally:
        pg_admin.execute(f'DROP DATABASE IF EXISTS "{tpl}" WITH (FORCE)')


@pytest.fixture
def pg_source(_templates, pg_admin):
    """A private copy of the generated PostgreSQL store."""
    name = f"cpo_bk_{uuid.uuid4().hex[:12]}"
    pg_admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{_templates["postgres"]}"')
    yield StoreTarget("postgres", with_password(_dsn_for(name)), "checkpoints_postgres")
    pg_admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_source(_templates, tmp_path):
    path = tmp_path / "app.sqlite"
    shutil.copyfile(_templates["sqlite"], path)
    return StoreTarget("sqlite", str(path), "checkpoints_sqlite")


@pytest.fixture(params=["postgres", "sqlite"])
def source(request):
    return request.getfixturevalue(f"{'pg' if request.param == 'postgres' else 'sqlite'}_source")


@pytest.fixture
def folder(tmp_path):
    return tmp_path / "backups"


def drill_databases(pg_admin) -> set[str]:
    return {r[0] for r in pg_admin.execute(
        "SELECT datname FROM pg_database WHERE datname LIKE 'checkpoint\\_ops\\_drill\\_%'").fetchall()}


PG_KEYS = {
    "checkpoints": "thread_id, checkpoint_ns, checkpoint_id",
    "checkpoint_blobs": "thread_id, checkpoint_ns, channel, version",
    "checkpoint_writes": "thread_id, checkpoint_ns, checkpoint_id, task_id, idx",
    "store": "prefix, key",
}
SQLITE_KEYS = {"checkpoints": "thread_id, checkpoint_ns, checkpoint_id",
               "writes": "thread_id, checkpoint_ns, checkpoint_id, task_id, idx", "store": "prefix, key"}


def all_rows(target: StoreTarget) -> dict[str, list[tuple]]:
    """Every row of the checkpoint tables, in key order: what "equal stores" means."""
    if target.kind == "postgres":
        import psycopg

        with psycopg.connect(target.location) as conn:
            return {t: conn.execute(f"SELECT * FROM {t} ORDER BY {k}").fetchall() for t, k in PG_KEYS.items()}
    from include.checkpoint_core.sqlite_store import open_sqlite_readonly

    with open_sqlite_readonly(target.location) as conn:
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY {k}").fetchall() for t, k in SQLITE_KEYS.items()}
