"""Create or upgrade the LangGraph schema of one checkpoint store."""

from __future__ import annotations

import ast
from collections.abc import Sequence
from typing import Any

from airflow.sdk import Context

from checkpoint_ops.operators.base import CheckpointOpsOperator, as_bool
from include.checkpoint_core.indexes import DEFAULT_TAG_KEYS, InvalidIndexKey


def as_keys(value: Any) -> list[str]:
    """A templated key list: a list stays; a rendered string (a DAG without native rendering) may be
    a list literal or "user_id, session_type". The keys themselves are checked by the core."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                return list(ast.literal_eval(text))
            except (ValueError, SyntaxError):
                raise InvalidIndexKey(f"metadata_index_keys {text!r} is not a list of keys.") from None
        return [part.strip() for part in text.split(",") if part.strip()]
    return list(value or [])


class CheckpointSetupOperator(CheckpointOpsOperator):
    """Run SqliteSaver / PostgresSaver (+ PostgresStore) setup on the store behind a connection.

    SQLite: creates the tables (upgrading files whose ``writes`` lacks ``task_path``),
    switches to WAL and checks it through ``PRAGMA journal_mode``. PostgreSQL: applies
    LangGraph's numbered migrations under an advisory lock. Then the checkpoint-ops indexes for
    metadata-filtered lists (``metadata_index_keys``) and pruning. Running it again changes
    nothing and says so (``changes: []``).
    """

    template_fields: Sequence[str] = ("checkpoint_conn_id", "include_store", "busy_timeout_ms", "metadata_index_keys")

    def __init__(
        self,
        *,
        checkpoint_conn_id: str,
        include_store: bool = True,
        busy_timeout_ms: int = 5000,
        metadata_index_keys: Sequence[str] | str = DEFAULT_TAG_KEYS,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.checkpoint_conn_id = checkpoint_conn_id
        self.include_store = include_store
        self.busy_timeout_ms = busy_timeout_ms
        self.metadata_index_keys = metadata_index_keys

    def run(self, context: Context) -> dict[str, Any]:
        from include.checkpoint_core.stores import setup_store

        target = self.store_target(self.checkpoint_conn_id)
        report = setup_store(
            target,
            include_store=as_bool(self.include_store),
            busy_timeout_ms=int(self.busy_timeout_ms),
            metadata_index_keys=as_keys(self.metadata_index_keys),
        )
        if report["changes"]:
            for change in report["changes"]:
                self.log.info("changed: %s", change)
        else:
            self.log.info("%s is already up to date; nothing was changed.", self.checkpoint_conn_id)
        return report
