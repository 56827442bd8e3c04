"""What every checkpoint-ops DAG shares, so each DAG file states only what is its own."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

OWNER = "checkpoint-ops"
DEFAULT_ARGS = {"owner": OWNER, "retries": 2, "retry_delay": timedelta(seconds=30)}


def lifecycle_dag(tag: str, **kwargs: Any) -> dict[str, Any]:
    """Keyword arguments for ``DAG(...)``: one run at a time, no catch-up, retries, our tags,
    and templates rendered as native objects (so an integer param stays an integer)."""
    return {
        "catchup": False,
        "max_active_runs": 1,
        "tags": [OWNER, tag],
        "default_args": dict(DEFAULT_ARGS),
        "render_template_as_native_obj": True,
        **kwargs,
    }


def stores_param(action: str):
    """The ``stores`` param every lifecycle DAG takes: connection ids, empty for all defined ones."""
    from airflow.sdk import Param

    from checkpoint_ops.hooks import KNOWN_STORE_CONN_IDS

    return Param(
        [], type="array", items={"type": "string", "pattern": r"^[A-Za-z0-9_.-]+$"},
        title="Checkpoint stores",
        description=f"Connection ids of the stores to {action}. Empty: every defined one of "
        + ", ".join(KNOWN_STORE_CONN_IDS) + ".",
    )


def resolve_stores():
    """The first task of a lifecycle DAG (call inside the DAG): check the requested connections
    up front, reporting every problem at once, and expand an empty list to the defined ones."""
    from airflow.sdk import task

    @task(task_id="resolve_stores")
    def resolve_stores(params=None) -> list[str]:
        from checkpoint_ops.hooks import KNOWN_STORE_CONN_IDS, resolve_store_conn_ids

        return resolve_store_conn_ids(params["stores"], tuple(KNOWN_STORE_CONN_IDS))

    return resolve_stores()
