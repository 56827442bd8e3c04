"""An app store of each backend where thread A has told the agent about its user, plus TTL'd items."""

from __future__ import annotations

import pytest

from include.checkpoint_core.stores import StoreTarget, setup_store
from tests.conftest import open_saver
from tests.memory.helpers import TTL_NS, put_ttl_items, teach


def make_app_store(target: StoreTarget) -> StoreTarget:
    setup_store(target)
    with open_saver(target) as (saver, store):
        store.setup()
        teach(saver, store)
        put_ttl_items(store)
    if target.kind == "postgres":
        # PostgresStore computes expires_at on the server (now() + ttl), so a clock moved in Python
        # cannot age it: move the expiry of the item meant to have run out instead.
        import psycopg

        with psycopg.connect(target.location) as conn:
            conn.execute("UPDATE store SET expires_at = now() - interval '1 day' WHERE prefix = %s AND key = 'expired'",
                         (".".join(TTL_NS),))
    return target


@pytest.fixture(params=["sqlite", "postgres"])
def app_store(request, tmp_path) -> StoreTarget:
    if request.param == "sqlite":
        return make_app_store(StoreTarget("sqlite", str(tmp_path / "app.sqlite"), "checkpoints_sqlite"))
    return make_app_store(StoreTarget("postgres", request.getfixturevalue("pg_dsn"), "checkpoints_postgres"))
