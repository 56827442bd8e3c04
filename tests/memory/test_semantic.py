"""Semantic recall through SqliteStore's sqlite-vec index, and what a migration does with the vectors.

This Python's sqlite3 cannot load extensions, so the indexed store runs on pysqlite3 (the same
SQLite file format). Its connection is the only one open on the file while the agent runs: two
SQLite libraries in one process must not share a file (their POSIX locks do not see each other).
The agent's checkpoints go to an in-memory saver here; the Store is what this is about.
"""

from __future__ import annotations

from contextlib import closing

import psycopg
import pysqlite3.dbapi2 as pysqlite3
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.store.sqlite import SqliteStore

from include.checkpoint_core.memory_audit import audit_memory
from include.checkpoint_core.stores import StoreTarget, setup_store
from include.sample_agent import memory
from tests.conftest import open_saver
from tests.memory.helpers import TELL, USER, reply
from tests.migration.helpers import migrate, verify_full

BILLING = "I prefer morning calls for billing."


def test_semantic_recall_then_a_migration_keeps_items_and_reports_the_vectors(tmp_path, pg_dsn):
    path = tmp_path / "app.sqlite"
    setup_store(StoreTarget("sqlite", str(path)))
    saver = InMemorySaver()
    with closing(pysqlite3.connect(str(path), check_same_thread=False, isolation_level=None)) as conn:
        store = SqliteStore(conn, index=memory.index_config())
        store.setup()
        reply(saver, store, USER, TELL + " " + BILLING, "thread-A")
        # New threads: the preference the Store's vector index ranks closest to the question.
        assert "you prefer morning calls for billing" in reply(saver, store, USER, "Can you ring me about billing in the morning?")
        assert "you prefer email over phone calls" in reply(saver, store, USER, "Should we email you about it?")
        ranked = store.search(memory.facts_namespace(USER), query="billing in the morning", limit=2)
        assert ranked[0].value["text"] == "I prefer morning calls for billing" and ranked[0].score > ranked[1].score
        items = {(tuple(i.namespace), i.key): i.value for i in store.search((), limit=1000)}

    source = audit_memory(StoreTarget("sqlite", str(path)))["store_items"]
    users = next(ns for ns in source["namespaces"] if ns["namespace"] == "users")
    assert users["vectors"] == users["items"] == 6  # name, plan, two tickets, two preferences: one 'text' each

    migrate(path, pg_dsn, tmp_path / "m")
    assert verify_full(tmp_path / "m", pg_dsn)["ok"]
    target = StoreTarget("postgres", pg_dsn)
    after = audit_memory(target)["store_items"]
    # Every item arrives; the vectors do not: this PostgreSQL has no pgvector, so a PostgresStore with an
    # index cannot even be set up here, and PostgresStore embeds only what is put through it.
    assert (after["items"], after["vectors"]) == (source["items"], 0)
    with psycopg.connect(pg_dsn) as pg:
        assert pg.execute("SELECT to_regclass('store_vectors') IS NULL").fetchone()[0]
    with open_saver(target) as (_, pg_store):
        assert {(tuple(i.namespace), i.key): i.value for i in pg_store.search((), limit=1000)} == items
        known = memory.recall(pg_store, USER, query="billing in the morning")  # no index: filters only
        assert (known["name"], known["plan"], known["open_tickets"]) == ("Alice", "pro", ["77", "4521"])
        assert known["preference"] in {"morning calls for billing", "email over phone calls"}
