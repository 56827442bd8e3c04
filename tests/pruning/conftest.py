"""Stores filled by the sample agent with threads 1 to 90 days old, on both backends."""

from __future__ import annotations

from contextlib import closing, contextmanager

import pytest

from include.checkpoint_core.stores import StoreTarget
from tests.conftest import open_saver  # noqa: F401 (the helpers and tests import it from here)

AGED = dict(threads=30, turns=2, interrupted=0.2, crashed=0.1, min_age_days=1, max_age_days=90, seed=5)


def new_store(kind: str, request, tmp_path) -> StoreTarget:
    from include.checkpoint_core.stores import setup_store

    if kind == "sqlite":
        target = StoreTarget("sqlite", str(tmp_path / "app.sqlite"), "checkpoints_sqlite")
    else:
        target = StoreTarget("postgres", request.getfixturevalue("pg_dsn"), "checkpoints_postgres")
    setup_store(target)
    if kind == "sqlite":
        from langgraph.store.sqlite import SqliteStore

        from include.checkpoint_core.sqlite_store import connect_sqlite

        with closing(connect_sqlite(target.location, autocommit=True)) as sc:
            SqliteStore(sc).setup()
    return target


@pytest.fixture(scope="session")
def _aged_templates(tmp_path_factory, pg_admin):
    """Generate the aged workload once per backend; tests get copies (a file copy, a
    ``CREATE DATABASE ... TEMPLATE``), so each starts from the same real data in milliseconds."""
    import uuid

    from include.sample_agent.workload import WorkloadSpec, generate
    from tests.conftest import _dsn_for

    made, names = {}, []

    class _Req:  # new_store's view of a request, for a session-scoped database
        def getfixturevalue(self, _):
            name = f"cpo_tpl_{uuid.uuid4().hex[:12]}"
            pg_admin.execute(f'CREATE DATABASE "{name}"')
            names.append(name)
            return _dsn_for(name)

    for kind in ("sqlite", "postgres"):
        target = new_store(kind, _Req(), tmp_path_factory.mktemp("aged"))
        with open_saver(target) as (saver, store):
            result = generate(saver, WorkloadSpec(**AGED), store)
        made[kind] = (target, result)
    yield made
    for name in names:
        pg_admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def aged_copy(kind: str, tmp_path, templates, pg_admin):
    """A private copy of the aged template of one backend."""
    import shutil
    import uuid

    from psycopg.conninfo import conninfo_to_dict

    from tests.conftest import _dsn_for

    template, result = templates[kind]
    if kind == "sqlite":
        path = tmp_path / "app.sqlite"
        shutil.copyfile(template.location, path)
        yield StoreTarget("sqlite", str(path), template.name), result
        return
    name = f"cpo_test_{uuid.uuid4().hex[:12]}"
    pg_admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{conninfo_to_dict(template.location)["dbname"]}"')
    try:
        yield StoreTarget("postgres", _dsn_for(name), template.name), result
    finally:
        pg_admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def empty_store(request, tmp_path):
    """A set-up store with no threads yet, of each backend."""
    return new_store(request.param, request, tmp_path)


@pytest.fixture(params=["sqlite", "postgres"])
def aged_store(request, tmp_path, _aged_templates, pg_admin):
    """A private copy of a store with the sample agent's threads aged 1-90 days, and what the
    generator left open (interrupted, crashed threads)."""
    with aged_copy(request.param, tmp_path, _aged_templates, pg_admin) as made:
        yield made


@pytest.fixture
def aged_stores(tmp_path, _aged_templates, pg_admin):
    """Both backends at once, for the DAG: {kind: (target, result)}."""
    with aged_copy("sqlite", tmp_path, _aged_templates, pg_admin) as s, \
            aged_copy("postgres", tmp_path, _aged_templates, pg_admin) as p:
        yield {"sqlite": s, "postgres": p}
