"""The pattern every checkpoint-ops operator follows.

An operator is a thin shell: templated fields in, one call into ``include.checkpoint_core``,
a summary out. The summary is small and JSON-able (it becomes the task's XCom), is logged
as one readable block, and never holds a credential.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowFailException

from checkpoint_ops.hooks import CheckpointStoreHook
from include.checkpoint_core.errors import CheckpointStoreError
from include.checkpoint_core.progress import Progress
from include.checkpoint_core.stores import StoreTarget


def as_bool(value: Any) -> bool:
    """A templated flag: real booleans stay, and "False"/"0"/"no" (a rendered string) mean False."""
    if isinstance(value, str):
        return value.strip().lower() not in ("", "false", "0", "no", "off", "none")
    return bool(value)


class CheckpointOpsOperator(BaseOperator):
    """Base class: subclasses implement ``run(context) -> dict``."""

    ui_color = "#e8f1fb"

    def execute(self, context: Context) -> dict[str, Any]:
        started = time.monotonic()
        try:
            summary = self.run(context)
        except CheckpointStoreError as exc:
            if exc.retryable:
                raise
            # A wrong path or password will not fix itself: fail now instead of retrying.
            raise AirflowFailException(str(exc)) from exc
        except sqlite3.OperationalError as exc:
            if not str(exc).startswith(("no such column", "no such table")):
                raise
            # A layout this reader does not handle is not transient: retrying reads the same file.
            raise AirflowFailException(
                f"{self.task_id} cannot read this checkpoint file's layout ({exc}); a retry would fail the same "
                "way. Report it with the file's `sqlite3 FILE .schema`."
            ) from exc
        summary = {**summary, "duration_s": round(time.monotonic() - started, 3)}
        self.log.info("%s summary:\n%s", self.task_id, json.dumps(summary, indent=2, default=str))
        return summary

    def run(self, context: Context) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def store_target(self, conn_id: str) -> StoreTarget:
        target = CheckpointStoreHook(conn_id).get_target()
        self.log.info("Checkpoint store %s: %s at %s", conn_id, target.kind, target.display)
        return target

    def progress(self, total: int | None, unit: str, label: str = "") -> Progress:
        """Progress lines (done/total, rate, ETA) in this task's log."""
        return Progress(total, unit, self.log.info, label=label)
