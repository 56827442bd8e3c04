"""The inputs and the record of an autoscale decision: write-rate samples from Prometheus, and a
history table in the checkpoint PostgreSQL (so the cooldown survives restarts and a cleared run
does not scale twice).

The decision itself is ``autoscale.decide``; the operator glues these together.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from include.checkpoint_core.provisioning.autoscale import SCALE_DOWN, SCALE_UP, Sample, ScaleDecision

TABLE = "checkpoint_ops_autoscale_history"
WRITES_QUERY = 'sum(rate(checkpoint_writes_total{{backend="postgres"}}[{rate_window}]))'
_DURATION = re.compile(r"^[1-9][0-9]*[smh]$")
P99_QUERY = ('histogram_quantile(0.99, sum by (le) '
             '(rate(checkpoint_operation_duration_seconds_bucket{backend="postgres",operation="put"}[5m])))')
DDL = f"""CREATE TABLE IF NOT EXISTS {TABLE} (
    id BIGSERIAL PRIMARY KEY,
    run_id TEXT NOT NULL,
    instance TEXT NOT NULL,
    decided_at TIMESTAMPTZ NOT NULL,
    action TEXT NOT NULL,
    current_class TEXT NOT NULL,
    target_class TEXT,
    applied BOOLEAN NOT NULL,
    report JSONB NOT NULL
)"""


def write_samples(api, *, now: datetime, minutes: float, step_s: float = 60.0, rate_window: str = "1m") -> list[Sample]:
    """Writes/s to PostgreSQL over the last ``minutes``, one sample per ``step_s`` (a range query:
    the decision needs the whole window, not one average that a burst can lift). ``rate_window``
    is the rate's own range: at least four scrape intervals."""
    if not _DURATION.match(str(rate_window)):
        raise ValueError(f"rate_window {rate_window!r} is not a Prometheus duration like 1m or 30s.")
    end = now.timestamp()
    result = api.query_range(WRITES_QUERY.format(rate_window=rate_window), end - minutes * 60, end, step_s)
    values = result[0]["values"] if result else []
    return [Sample(datetime.fromtimestamp(float(t), tz=now.tzinfo), float(v)) for t, v in values if v != "NaN"]


def p99_seconds(api) -> float | None:
    """The put P99 (reported with the decision; the ladder is driven by the write rate)."""
    try:
        return api.scalar(P99_QUERY)
    except Exception:  # noqa: BLE001 - a missing histogram leaves the figure out, not the decision
        return None


def last_change(dsn: str, instance: str, *, except_run_id: str | None = None) -> dict[str, Any] | None:
    """The latest applied change of ``instance`` (by another run: a cleared run sees its own)."""
    from include.checkpoint_core.postgres_store import postgres_connection

    with postgres_connection(dsn) as conn:
        conn.execute(DDL)
        return conn.execute(
            f"SELECT run_id, decided_at, action, current_class, target_class FROM {TABLE} "
            "WHERE instance = %s AND applied AND run_id IS DISTINCT FROM %s ORDER BY decided_at DESC LIMIT 1",
            (instance, except_run_id)).fetchone()


def applied_in_run(dsn: str, instance: str, run_id: str) -> dict[str, Any] | None:
    """A change this run already made (a retried task must not step the ladder twice)."""
    from include.checkpoint_core.postgres_store import postgres_connection

    with postgres_connection(dsn) as conn:
        conn.execute(DDL)
        return conn.execute(f"SELECT report FROM {TABLE} WHERE instance = %s AND run_id = %s AND applied "
                            "ORDER BY id DESC LIMIT 1", (instance, run_id)).fetchone()


def record(dsn: str, *, run_id: str, instance: str, decided_at: datetime, decision: ScaleDecision,
           applied: bool, report: dict[str, Any]) -> None:
    from include.checkpoint_core.postgres_store import postgres_connection

    with postgres_connection(dsn) as conn:
        conn.execute(DDL)
        conn.execute(
            f"INSERT INTO {TABLE} (run_id, instance, decided_at, action, current_class, target_class, applied, report)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s::jsonb)",
            (run_id, instance, decided_at, decision.action, decision.current_class, decision.target_class, applied,
             json.dumps(report, default=str)))


def is_change(decision: ScaleDecision) -> bool:
    return decision.action in (SCALE_UP, SCALE_DOWN)


def window_minutes(config) -> float:
    return max(config.up_minutes, config.down_minutes) + config.coverage_slack_minutes


def cooldown_start(row: dict[str, Any] | None) -> datetime | None:
    return row["decided_at"] if row else None

