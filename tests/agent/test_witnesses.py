"""Phase 1 witnesses on SqliteSaver and PostgresSaver, and async concurrency on AsyncSqliteSaver."""

from __future__ import annotations

import asyncio

import pytest

from tests import witnesses


@pytest.mark.parametrize(
    "witness",
    [
        witnesses.witness_session_memory,
        witnesses.witness_time_travel,
        witnesses.witness_human_in_the_loop,
        witnesses.witness_fault_tolerance,
    ],
    ids=lambda f: f.__name__.removeprefix("witness_"),
)
def test_phase1_witness(saver, witness):
    witness(saver)


def test_concurrent_async_invocations_do_not_lock(sqlite_path):
    """12 concurrent ainvoke calls on one AsyncSqliteSaver plus 6 on a second connection to
    the same file: every run completes and none hits "database is locked"."""
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    from include.checkpoint_core.sqlite_store import setup_sqlite
    from include.sample_agent.graph import build_agent_graph, thread_config

    setup_sqlite(sqlite_path)

    async def run_all():
        async with AsyncSqliteSaver.from_conn_string(str(sqlite_path)) as one, \
                AsyncSqliteSaver.from_conn_string(str(sqlite_path)) as two:
            await one.setup()
            await two.setup()
            jobs = []
            for i in range(18):
                saver = one if i < 12 else two
                graph = build_agent_graph(saver, interrupt_before=[])
                config = thread_config(f"async-{i}", f"user-{i}", "support")
                jobs.append(graph.ainvoke({"messages": [("user", f"Where is my order #{i}?")], "user_id": f"user-{i}"}, config))
            return await asyncio.gather(*jobs, return_exceptions=True)

    results = asyncio.run(run_all())
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors
    assert all(r["outcome"] == "answered" for r in results)

    import sqlite3

    with sqlite3.connect(sqlite_path) as conn:
        threads = conn.execute("SELECT COUNT(DISTINCT thread_id) FROM checkpoints").fetchone()[0]
    assert threads == 18
