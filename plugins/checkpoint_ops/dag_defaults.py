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
