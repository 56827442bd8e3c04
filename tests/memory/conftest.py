"""An app store of each backend where thread A has told the agent about its user, plus TTL'd items."""

from __future__ import annotations

import pytest

from include.checkpoint_core.stores import StoreTarget, setup_store
from tests.conftest import open_saver
from tests.memory.helpers import age_expired_item, put_ttl_items, teach


def make_app_store(target: StoreTarget) -> StoreTarget:
    setup_store(target)
    with open_saver(target) as (saver, store):
        store.setup()
        teach(saver, store)
        put_ttl_items(store)
    age_expired_item(target)
    return target


@pytest.fixture(params=["sqlite", "postgres"])
def app_store(request, tmp_path) -> StoreTarget:
    if request.param == "sqlite":
        return make_app_store(StoreTarget("sqlite", str(tmp_path / "app.sqlite"), "checkpoints_sqlite"))
    return make_app_store(StoreTarget("postgres", request.getfixturevalue("pg_dsn"), "checkpoints_postgres"))
