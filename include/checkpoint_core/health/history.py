"""The decision history, kept in a table of the store it is about.

One row per DAG run, keyed by run id, so retries and clears converge:

* a run's first evaluation is kept: evaluating the same run again (a retry after the push
  failed, a cleared task) returns the stored report instead of measuring anew, so its
  decision, and what was alerted and published for it, stay the same;
* a run's row is marked *delivered* once its Asset event and alerts went out. The "previous
  decision" a run compares with is the newest earlier delivered one (by the run's own time,
  not by insertion), so an alert that failed is sent again by the next run instead of being
  lost behind a row that says "already migrate_now".

The table lives beside the checkpoints (as the pruning's bookkeeping does), so the history needs
no other database; rows older than ``KEEP_DAYS`` are dropped as new ones come.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from include.checkpoint_core.stores import StoreTarget

TABLE = "checkpoint_ops_health_history"
KEEP_DAYS = 30

SQLITE_DDL = f"""CREATE TABLE IF NOT EXISTS {TABLE} (
    run_id TEXT PRIMARY KEY,
    evaluated_at TEXT NOT NULL,
    decision TEXT NOT NULL,
    previous_decision TEXT,
    report TEXT NOT NULL,
    delivered_at TEXT
)"""
PG_DDL = f"""CREATE TABLE IF NOT EXISTS {TABLE} (
    run_id TEXT PRIMARY KEY,
    evaluated_at TIMESTAMPTZ NOT NULL,
    decision TEXT NOT NULL,
    previous_decision TEXT,
    report JSONB NOT NULL,
    delivered_at TIMESTAMPTZ
)"""
# Columns added after the table first shipped: (name, SQLite type, PostgreSQL type).
ADDED_COLUMNS = (("delivered_at", "TEXT", "TIMESTAMPTZ"),)
OWN_SQL = f"SELECT decision, report, delivered_at FROM {TABLE} WHERE run_id = {{p}}"
# The newest earlier run whose outcome was delivered: what "changed" is measured against.
PREVIOUS_SQL = (
    f"SELECT decision, report FROM {TABLE} WHERE run_id <> {{p}} AND evaluated_at < {{p}} "
    "AND delivered_at IS NOT NULL ORDER BY evaluated_at DESC LIMIT 1"
)
INSERT_SQL = (
    f"INSERT INTO {TABLE} (run_id, evaluated_at, decision, previous_decision, report) "
    "VALUES ({p}, {p}, {p}, {p}, {j}) ON CONFLICT (run_id) DO NOTHING"
)
TRIM_SQL = f"DELETE FROM {TABLE} WHERE evaluated_at < {{p}}"
DELIVERED_SQL = f"UPDATE {TABLE} SET delivered_at = {{p}} WHERE run_id = {{p}} AND delivered_at IS NULL"
HISTORY_SQL = (
    f"SELECT run_id, evaluated_at, decision, previous_decision, report, delivered_at FROM {TABLE} "
    "ORDER BY evaluated_at DESC LIMIT {p}"
)


def record_decision(
    target: StoreTarget, *, run_id: str, evaluated_at: datetime, decision: str, report: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Keep this run's decision unless the run has one already.

    Returns ``(own, previous)``: ``own`` is the run's stored row ({decision, report, delivered}),
    which is the given report on the first evaluation and the first report on later ones;
    ``previous`` is the newest earlier delivered row ({decision, report}) or None.
    ``evaluated_at`` is the run's own time (timezone-aware), the same on every retry.
    """
    payload = json.dumps(report, default=str)
    if target.kind == "sqlite":
        return _sqlite_record(Path(target.location), run_id, evaluated_at, decision, payload)
    return _pg_record(target.location, run_id, evaluated_at, decision, payload)


def mark_delivered(target: StoreTarget, *, run_id: str, at: datetime) -> bool:
    """Note that the run's Asset event and alerts went out; False when the run has no row."""
    if target.kind == "sqlite":
        from include.checkpoint_core.sqlite_store import classify_sqlite_error, connect_sqlite

        path = Path(target.location)
        conn = connect_sqlite(path, autocommit=True)
        try:
            conn.execute(DELIVERED_SQL.format(p="?"), (_iso(at), run_id))
            return conn.execute(OWN_SQL.format(p="?"), (run_id,)).fetchone() is not None
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return False
            raise classify_sqlite_error(exc, path, "marking the health decision delivered in") from exc
        finally:
            conn.close()
    from include.checkpoint_core.postgres_store import postgres_connection

    with postgres_connection(target.location) as conn:
        if conn.execute("SELECT to_regclass(%s) AS t", (TABLE,)).fetchone()["t"] is None:
            return False
        conn.execute(DELIVERED_SQL.format(p="%s"), (at, run_id))
        return conn.execute(OWN_SQL.format(p="%s"), (run_id,)).fetchone() is not None


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
        return [_row(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5]) for r in rows]
    from include.checkpoint_core.postgres_store import postgres_connection

    with postgres_connection(target.location) as conn:
        if conn.execute("SELECT to_regclass(%s) AS t", (TABLE,)).fetchone()["t"] is None:
            return []
        rows = conn.execute(HISTORY_SQL.format(p="%s"), (limit,)).fetchall()
    return [_row(r["run_id"], r["evaluated_at"].isoformat(), r["decision"], r["previous_decision"], r["report"],
                 r["delivered_at"] and r["delivered_at"].isoformat()) for r in rows]


def _row(run_id, evaluated_at, decision, previous_decision, report, delivered_at) -> dict[str, Any]:
    return {"run_id": run_id, "evaluated_at": evaluated_at, "decision": decision,
            "previous_decision": previous_decision, "report": report, "delivered_at": delivered_at}


def _iso(moment: datetime) -> str:
    """UTC ISO 8601 with microseconds always present, so the text sorts as the time does."""
    from datetime import timezone

    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


def _sqlite_record(path: Path, run_id: str, at: datetime, decision: str, payload: str):
    from include.checkpoint_core.sqlite_store import classify_sqlite_error, connect_sqlite

    conn = connect_sqlite(path, autocommit=True)
    try:
        conn.execute(SQLITE_DDL)
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({TABLE})")}
        for name, sqlite_type, _ in ADDED_COLUMNS:
            if name not in have:
                conn.execute(f"ALTER TABLE {TABLE} ADD COLUMN {name} {sqlite_type}")
        conn.execute("BEGIN IMMEDIATE")  # one short write: read the previous row, add ours, trim
        previous = conn.execute(PREVIOUS_SQL.format(p="?"), (run_id, _iso(at))).fetchone()
        conn.execute(INSERT_SQL.format(p="?", j="?"), (run_id, _iso(at), decision, previous and previous[0], payload))
        conn.execute(TRIM_SQL.format(p="?"), (_iso(at - timedelta(days=KEEP_DAYS)),))
        own = conn.execute(OWN_SQL.format(p="?"), (run_id,)).fetchone()
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise classify_sqlite_error(exc, path, "recording the health decision in") from exc
    finally:
        conn.close()
    return ({"decision": own[0], "report": json.loads(own[1]), "delivered": own[2] is not None},
            previous and {"decision": previous[0], "report": json.loads(previous[1])})


def _pg_record(dsn: str, run_id: str, at: datetime, decision: str, payload: str):
    from include.checkpoint_core.postgres_store import postgres_connection

    with postgres_connection(dsn) as conn:
        conn.execute(PG_DDL)
        for name, _, pg_type in ADDED_COLUMNS:
            conn.execute(f"ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS {name} {pg_type}")
        with conn.transaction():
            # A manual run and a scheduled one must not both read the same "previous".
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (TABLE,))
            previous = conn.execute(PREVIOUS_SQL.format(p="%s"), (run_id, at)).fetchone()
            conn.execute(INSERT_SQL.format(p="%s", j="%s::jsonb"),
                         (run_id, at, decision, previous and previous["decision"], payload))
            conn.execute(TRIM_SQL.format(p="%s"), (at - timedelta(days=KEEP_DAYS),))
            own = conn.execute(OWN_SQL.format(p="%s"), (run_id,)).fetchone()
    return ({"decision": own["decision"], "report": own["report"], "delivered": own["delivered_at"] is not None},
            previous and {"decision": previous["decision"], "report": previous["report"]})
