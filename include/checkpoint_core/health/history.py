"""The decision history, kept in a table of the store it is about.

One row per DAG run, keyed by run id, so a retried or cleared task replaces its own row
instead of adding one, and the "previous decision" it compares with is always the one
before this run: the change detection (Asset event, alert, auto-migration) converges.
The table lives beside the checkpoints (as the pruning's bookkeeping does) so the history
moves with the store and needs no other database.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from include.checkpoint_core.stores import StoreTarget

TABLE = "checkpoint_ops_health_history"

SQLITE_DDL = f"""CREATE TABLE IF NOT EXISTS {TABLE} (
    run_id TEXT PRIMARY KEY,
    evaluated_at TEXT NOT NULL,
    decision TEXT NOT NULL,
    previous_decision TEXT,
    report TEXT NOT NULL
)"""
PG_DDL = f"""CREATE TABLE IF NOT EXISTS {TABLE} (
    run_id TEXT PRIMARY KEY,
    evaluated_at TIMESTAMPTZ NOT NULL,
    decision TEXT NOT NULL,
    previous_decision TEXT,
    report JSONB NOT NULL
)"""
# "Previous" is by the run's own time, not by insertion: clearing last week's run compares it
# with the run before it, not with today's.
PREVIOUS_SQL = (
    f"SELECT decision, report FROM {TABLE} WHERE run_id <> {{p}} AND evaluated_at < {{p}} "
    "ORDER BY evaluated_at DESC LIMIT 1"
)
UPSERT_SQL = (
    f"INSERT INTO {TABLE} (run_id, evaluated_at, decision, previous_decision, report) "
    "VALUES ({p}, {p}, {p}, {p}, {p}) ON CONFLICT (run_id) DO UPDATE SET evaluated_at = excluded.evaluated_at, "
    "decision = excluded.decision, previous_decision = excluded.previous_decision, report = excluded.report"
)
HISTORY_SQL = f"SELECT run_id, evaluated_at, decision, previous_decision, report FROM {TABLE} ORDER BY evaluated_at DESC LIMIT {{p}}"


def record_decision(
    target: StoreTarget, *, run_id: str, evaluated_at: str, decision: str, report: dict[str, Any]
) -> dict[str, Any] | None:
    """Store this run's decision; return the previous run's row ({decision, report}) or None.

    ``evaluated_at`` is the run's own time (ISO 8601, UTC), the same on every retry.
    """
    if target.kind == "sqlite":
        return _sqlite_record(Path(target.location), run_id, evaluated_at, decision, report)
    return _pg_record(target.location, run_id, evaluated_at, decision, report)


def read_history(target: StoreTarget, limit: int = 100) -> list[dict[str, Any]]:
    """The newest ``limit`` decisions, newest first."""
    if target.kind == "sqlite":
        from include.checkpoint_core.sqlite_store import open_sqlite_readonly

        with open_sqlite_readonly(target.location) as conn:
            try:
                rows = conn.execute(HISTORY_SQL.format(p="?"), (limit,)).fetchall()
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):
                    return []
                raise
        return [_row(*r[:4], json.loads(r[4])) for r in rows]
    from include.checkpoint_core.postgres_store import postgres_connection

    with postgres_connection(target.location) as conn:
        if conn.execute("SELECT to_regclass(%s) AS t", (TABLE,)).fetchone()["t"] is None:
            return []
        rows = conn.execute(HISTORY_SQL.format(p="%s"), (limit,)).fetchall()
    return [_row(r["run_id"], r["evaluated_at"].isoformat(), r["decision"], r["previous_decision"], r["report"])
            for r in rows]


def _row(run_id, evaluated_at, decision, previous_decision, report) -> dict[str, Any]:
    return {"run_id": run_id, "evaluated_at": evaluated_at, "decision": decision,
            "previous_decision": previous_decision, "report": report}


def _sqlite_record(path: Path, run_id: str, evaluated_at: str, decision: str, report: dict) -> dict | None:
    from include.checkpoint_core.sqlite_store import classify_sqlite_error, connect_sqlite

    conn = connect_sqlite(path, autocommit=True)
    try:
        conn.execute(SQLITE_DDL)
        conn.execute("BEGIN IMMEDIATE")  # one short write: read the previous row and replace ours
        row = conn.execute(PREVIOUS_SQL.format(p="?"), (run_id, evaluated_at)).fetchone()
        previous = {"decision": row[0], "report": json.loads(row[1])} if row else None
        conn.execute(UPSERT_SQL.format(p="?"), (run_id, evaluated_at, decision,
                                                 previous and previous["decision"], json.dumps(report, default=str)))
        conn.execute("COMMIT")
        return previous
    except sqlite3.Error as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise classify_sqlite_error(exc, path, "recording the health decision in") from exc
    finally:
        conn.close()


def _pg_record(dsn: str, run_id: str, evaluated_at: str, decision: str, report: dict) -> dict | None:
    from psycopg.types.json import Jsonb

    from include.checkpoint_core.postgres_store import postgres_connection

    with postgres_connection(dsn) as conn:
        conn.execute(PG_DDL)
        with conn.transaction():
            # Two health runs of one store never overlap (max_active_runs=1); the lock only
            # keeps a manual run and a scheduled one from reading the same "previous".
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (TABLE,))
            row = conn.execute(PREVIOUS_SQL.format(p="%s"), (run_id, evaluated_at)).fetchone()
            previous = {"decision": row["decision"], "report": row["report"]} if row else None
            conn.execute(UPSERT_SQL.format(p="%s"), (run_id, evaluated_at, decision,
                                                      previous and previous["decision"],
                                                      Jsonb(json.loads(json.dumps(report, default=str)))))
    return previous
