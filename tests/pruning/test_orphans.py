"""Orphans: writes whose checkpoint is gone, blobs nothing references, store items past their TTL."""

from __future__ import annotations

import sqlite3
from contextlib import closing

import psycopg

from include.checkpoint_core.pruning import PrunePolicy, prune_store
from tests.pruning.helpers import query


def _execute(target, sql: str, params=()) -> None:
    if target.kind == "sqlite":
        with closing(sqlite3.connect(target.location)) as conn:
            conn.execute(sql.replace("%s", "?"), params)
            conn.commit()
    else:
        with psycopg.connect(target.location) as conn:
            conn.execute(sql, params)


def test_old_orphan_writes_go_and_young_ones_stay(aged_store):
    """A run may save writes just before their checkpoint: only old orphans are garbage."""
    target, _ = aged_store
    writes = "writes" if target.kind == "sqlite" else "checkpoint_writes"
    cols = "thread_id, checkpoint_ns, checkpoint_id, task_id, idx, channel, type"
    blob = "value" if target.kind == "sqlite" else "blob"
    old_id, young_id = "1e000000-0000-6000-8000-000000000000", "1fff0000-0000-6000-8000-000000000000"
    for cid in (old_id, young_id):
        _execute(target, f"INSERT INTO {writes} ({cols}, {blob}) VALUES (%s, '', %s, 't', 0, 'c', 'msgpack', %s)",
                 ("orphan-thread", cid, b"\x01"))
    report = prune_store(target, PrunePolicy(), log=lambda _: None)
    assert report["orphan_writes_deleted"] == 1
    assert query(target, f"SELECT checkpoint_id FROM {writes} WHERE thread_id = %s", ("orphan-thread",)) == [(young_id,)]


def test_unreferenced_blobs_below_the_newest_version_go(aged_store):
    target, _ = aged_store
    if target.kind == "sqlite":
        return  # SqliteSaver keeps values inside the checkpoint: there are no blobs to orphan
    # Take one idle thread's blob and plant unreferenced versions below and above it.
    thread, ns, channel, version = query(
        target,
        """SELECT b.thread_id, b.checkpoint_ns, b.channel, b.version FROM checkpoint_blobs b
           JOIN checkpoints c ON c.thread_id = b.thread_id AND c.checkpoint_ns = b.checkpoint_ns
           AND c.checkpoint -> 'channel_versions' ->> b.channel = b.version
           WHERE b.channel = 'messages' ORDER BY c.checkpoint_id LIMIT 1""",
    )[0]
    below, above = "0" * 32 + ".0.1", "9" * 32 + ".0.1"
    for v in (below, above):
        _execute(target, "INSERT INTO checkpoint_blobs VALUES (%s, %s, %s, %s, 'msgpack', %s)", (thread, ns, channel, v, b"\x90"))
    report = prune_store(target, PrunePolicy(retention_days=0, protect_interrupted=False), log=lambda _: None)
    assert report["orphan_blobs_deleted"] >= 1
    left = {r[0] for r in query(target, "SELECT version FROM checkpoint_blobs WHERE thread_id = %s AND channel = %s", (thread, channel))}
    assert below not in left and above in left  # "above" may be a checkpoint being saved right now


def test_store_items_past_their_ttl_are_swept(aged_store):
    target, _ = aged_store
    items = query(target, "SELECT count(*) FROM store")[0][0]
    assert items > 2
    past = "datetime('now', '-1 day')" if target.kind == "sqlite" else "now() - interval '1 day'"
    future = "datetime('now', '+1 day')" if target.kind == "sqlite" else "now() + interval '1 day'"
    keys = query(target, "SELECT prefix, key FROM store ORDER BY prefix, key LIMIT 2")
    _execute(target, f"UPDATE store SET expires_at = {past} WHERE prefix = %s AND key = %s", keys[0])
    _execute(target, f"UPDATE store SET expires_at = {future} WHERE prefix = %s AND key = %s", keys[1])
    dry = prune_store(target, PrunePolicy(dry_run=True), log=lambda _: None)
    assert dry["store_items_expired"] == 1 and query(target, "SELECT count(*) FROM store")[0][0] == items
    report = prune_store(target, PrunePolicy(), log=lambda _: None)
    assert report["store_items_expired"] == 1
    assert query(target, "SELECT count(*) FROM store")[0][0] == items - 1
