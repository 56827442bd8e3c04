"""The Store during a cutover: what the app still wrote to SqliteStore reaches PostgresStore, newest wins."""

from __future__ import annotations

import sqlite3
import time

from langgraph.store.postgres import PostgresStore
from langgraph.store.sqlite import SqliteStore

from include.checkpoint_core.cutover import jobs
from include.checkpoint_core.cutover.store_sync import sync_store


def test_store_items_newer_in_sqlite_are_copied_and_newer_ones_in_postgres_are_kept(blue_path, mover, pool, stores):
    pg, blue = mover
    lite = SqliteStore(sqlite3.connect(str(blue_path), check_same_thread=False, isolation_level=None))
    lite.setup()
    post = PostgresStore(pool)
    post.setup()
    ns = ("users", "u-1", "facts")
    post.put(ns, "plan", {"v": "pro"})          # the app moved on in PostgreSQL ...
    lite.put(ns, "name", {"v": "Alice"})        # ... an old process wrote these to SQLite
    time.sleep(1.1)                              # SqliteStore's timestamps have one-second resolution
    lite.put(ns, "plan", {"v": "free (stale)"})  # newer in SQLite: copied
    time.sleep(1.1)
    post.put(ns, "plan", {"v": "enterprise"})    # newer again in PostgreSQL: kept
    lite.put(ns, "ticket", {"v": 77}, ttl=60)
    out = jobs.prepare(pg, blue, str(blue_path), "run", settle_s=0)["store"]
    assert out["read"] == 3 and out["copied"] == 2 and out["refused"] == 0, out
    assert post.get(ns, "name").value == {"v": "Alice"}
    assert post.get(ns, "plan").value == {"v": "enterprise"}
    ticket = post.get(ns, "ticket", refresh_ttl=False)
    assert ticket.value == {"v": 77}
    assert sync_store(pg, blue)["copied"] == 0, "a second pass changes nothing"
    lite.put(ns, "pref", {"v": "email"})         # written after prepare by a process not yet redeployed
    jobs.ramp(pg, blue, 100)
    assert jobs.decommission(pg, blue, blue_path)["store"]["copied"] == 1
    assert post.get(ns, "pref").value == {"v": "email"}
