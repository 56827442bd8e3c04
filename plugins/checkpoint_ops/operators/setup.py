"""Create or upgrade the LangGraph schema of one checkpoint store."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import Context

from checkpoint_ops.operators.base import CheckpointOpsOperator, as_bool


class CheckpointSetupOperator(CheckpointOpsOperator):
    """Run SqliteSaver / PostgresSaver (+ PostgresStore) setup on the store behind a connection.

    SQLite: creates the tables (upgrading files whose ``writes`` lacks ``task_path``),
    switches to WAL and checks it through ``PRAGMA journal_mode``. PostgreSQL: applies
    LangGraph's numbered migrations under an advisory lock. Running it again changes
    nothing and says so (``changes: []``).
    """

    template_fields: Sequence[str] = ("checkpoint_conn_id", "include_store", "busy_timeout_ms")

    def __init__(
        self,
        *,
        checkpoint_conn_id: str,
        include_store: bool = True,
        busy_timeout_ms: int = 5000,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.checkpoint_conn_id = checkpoint_conn_id
        self.include_store = include_store
        self.busy_timeout_ms = busy_timeout_ms

    def run(self, context: Context) -> dict[str, Any]:
        from include.checkpoint_core.stores import setup_store

        target = self.store_target(self.checkpoint_conn_id)
        report = setup_store(
            target, include_store=as_bool(self.include_store), busy_timeout_ms=int(self.busy_timeout_ms)
        )
        if report["changes"]:
            for change in report["changes"]:
                self.log.info("changed: %s", change)
        else:
            self.log.info("%s is already up to date; nothing was changed.", self.checkpoint_conn_id)
        return report
