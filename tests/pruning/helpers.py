"""What a prune must preserve, read back the way the app and the database see it."""

from __future__ import annotations

import sqlite3
from contextlib import closing

from include.checkpoint_core.stores import StoreTarget
from tests.pruning.conftest import open_saver

TABLES = {"sqlite": ("checkpoints", "writes"), "postgres": ("checkpoints", "checkpoint_blobs", "checkpoint_writes")}


def query(target: StoreTarget, sql: str, params=()) -> list[tuple]:
    if target.kind == "sqlite":
        with closing(sqlite3.connect(target.location)) as conn:
            return conn.execute(sql.replace("%s", "?"), params).fetchall()
    import psycopg

    with psycopg.connect(target.location) as conn:
        return conn.execute(sql, params).fetchall()


def raw_rows(target: StoreTarget, thread_ids: list[str]) -> dict[str, list]:
    """Every stored byte of these threads, in a stable order."""
    out = {}
    for table in TABLES[target.kind]:
        rows = query(target, f"SELECT * FROM {table}")
        out[table] = sorted((r for r in rows if r[0] in set(thread_ids)), key=repr)
    return out


def thread_ids(target: StoreTarget) -> list[str]:
    return [r[0] for r in query(target, "SELECT DISTINCT thread_id FROM checkpoints ORDER BY 1")]


def newest_ids(target: StoreTarget) -> dict[str, str]:
    return dict(query(target, "SELECT thread_id, MAX(checkpoint_id) FROM checkpoints GROUP BY thread_id"))


def states(target: StoreTarget, ids: list[str]) -> dict[str, tuple]:
    """What ``get_state`` shows the app: values, next nodes, interrupts and the checkpoint it loads."""
    from include.sample_agent.graph import build_agent_graph

    out = {}
    with open_saver(target) as (saver, store):
        graph = build_agent_graph(saver, store)
        for tid in ids:
            s = graph.get_state({"configurable": {"thread_id": tid}})
            out[tid] = (
                s.values, s.next, [(i.value, i.id) for i in s.interrupts],
                s.config["configurable"]["checkpoint_id"], s.metadata,
                [(t.name, t.error is not None) for t in s.tasks],
            )
    return out


def old_non_heads(target: StoreTarget, cutoff_id: str) -> list[tuple]:
    """Checkpoints older than the cutoff that are not their namespace's latest."""
    return query(
        target,
        """SELECT c.thread_id, c.checkpoint_ns, c.checkpoint_id FROM checkpoints c
           WHERE c.checkpoint_id < %s AND c.checkpoint_id < (
               SELECT MAX(d.checkpoint_id) FROM checkpoints d
               WHERE d.thread_id = c.thread_id AND d.checkpoint_ns = c.checkpoint_ns)""",
        (cutoff_id,),
    )
