"""The Store through tiering: TieredSaver moves checkpoints between Redis, PostgreSQL and the archive;
the Store stays in PostgreSQL beside it, untouched by every move, and the hot tier never holds it."""

from __future__ import annotations

from langgraph.store.postgres import PostgresStore

from tests.memory.helpers import assert_recalls, teach
from tests.tiering.conftest import archive_all, archive_store, demote_all, hot, pool, tiered  # noqa: F401 (fixtures)


def _items(store) -> dict:
    return {(tuple(i.namespace), i.key): (i.value, i.updated_at) for i in store.search((), limit=1000)}


def test_facts_outlive_their_thread_being_demoted_and_archived(tiered, pool):  # noqa: F811
    store = PostgresStore(pool)
    store.setup()
    teach(tiered, store)
    before = _items(store)
    keys = [k.decode() if isinstance(k, bytes) else k for k in tiered.hot.client.scan_iter(count=1000)]
    assert keys and not any("facts" in k or "memories" in k for k in keys), "the hot tier holds checkpoints only"
    assert [o.result for o in demote_all(tiered, ["thread-A"])] == ["moved"]
    assert [o.result for o in archive_all(tiered, ["thread-A"])] == ["moved"]
    assert _items(store) == before
    assert_recalls(tiered, store)  # new threads start hot and read the facts from PostgreSQL
    assert tiered.get_tuple({"configurable": {"thread_id": "thread-A"}}) is not None  # still readable from the archive tier
