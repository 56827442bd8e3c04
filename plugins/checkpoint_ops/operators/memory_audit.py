"""The hybrid-memory audit as an operator, and the notifier its alerts go through."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseNotifier, Context

from checkpoint_ops.hooks import ALERTS_CONN_ID, PUSHGATEWAY_CONN_ID, http_service
from checkpoint_ops.operators.base import CheckpointOpsOperator

PUSH_JOB = "checkpoint_memory_audit"
log = logging.getLogger(__name__)


class CheckpointMemoryAuditOperator(CheckpointOpsOperator):
    """Measure how one store splits state between checkpoints and the Store (read-only).

    Logs the tables, writes the report as an artifact, pushes gauges to the Pushgateway when
    ``checkpoint_pushgateway`` is defined, and returns the report (XCom) with ``alert`` set when
    the share of oversized threads is over ``alert_share_pct``. A retry measures again and
    replaces the artifact and the gauges: nothing accumulates.
    """

    template_fields: Sequence[str] = ("checkpoint_conn_id", "oversized_kib", "alert_share_pct", "namespace_depth",
                                      "list_limit", "pushgateway_conn_id")

    def __init__(self, *, checkpoint_conn_id: str, oversized_kib: float | str = 10, alert_share_pct: float | str = 5,
                 namespace_depth: int | str = 1, list_limit: int | str = 20,
                 pushgateway_conn_id: str = PUSHGATEWAY_CONN_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.checkpoint_conn_id = checkpoint_conn_id
        self.oversized_kib, self.alert_share_pct = oversized_kib, alert_share_pct
        self.namespace_depth, self.list_limit = namespace_depth, list_limit
        self.pushgateway_conn_id = pushgateway_conn_id

    def run(self, context: Context) -> dict[str, Any]:
        from checkpoint_ops.artifacts import write_report
        from include.checkpoint_core.memory_audit import audit_memory, render

        try:
            settings = dict(oversized_bytes=int(float(self.oversized_kib) * 1024),
                            alert_share_pct=float(self.alert_share_pct), namespace_depth=int(self.namespace_depth),
                            list_limit=int(self.list_limit))
        except (TypeError, ValueError) as exc:
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException(f"{exc}: the audit's params must be numbers. Fix them and trigger a new run.") from exc
        try:
            report = audit_memory(self.store_target(self.checkpoint_conn_id), **settings)
        except ValueError as exc:
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException(f"{exc}. Fix the run's params and trigger it again.") from exc
        report["conn_id"] = self.checkpoint_conn_id
        self.log.info("Hybrid-memory audit\n%s", render(report))
        if report["alert"]:
            self.log.warning("%s: %s", self.checkpoint_conn_id, report["alert_message"])
        dag_run = context["dag_run"]
        report["artifact"] = write_report(dag_run.dag_id, dag_run.run_id, f"memory-audit-{self.checkpoint_conn_id}", report)
        report["pushgateway"] = self._publish(report)
        return report

    def _publish(self, report: dict[str, Any]) -> str:
        from include.checkpoint_core.health.prometheus import safe_url
        from include.checkpoint_core.health.publish import push_registry
        from include.checkpoint_core.memory_audit import audit_registry

        service = http_service(self.pushgateway_conn_id)
        if service is None:
            return f"skipped: no connection {self.pushgateway_conn_id!r}"
        hook, session = service
        auth = session.auth
        try:
            push_registry(hook.base_url, PUSH_JOB, audit_registry(report, time.time()), {"store": report["conn_id"]},
                          username=getattr(auth, "username", None), password=getattr(auth, "password", None))
        except Exception as exc:  # noqa: BLE001 - the gauges are a view; their outage must not fail the audit
            self.log.warning("Could not push the memory audit gauges to %s: %s", safe_url(hook.base_url), exc)
            return f"failed: {type(exc).__name__}"
        return "pushed"


def alert_text(report: dict) -> str:
    cp = report["checkpoints"]
    lines = [f"checkpoint_memory_audit {report['conn_id']}: {report['alert_message']}",
             f"- latest checkpoint per thread: p50 {cp['p50_bytes']} B, p95 {cp['p95_bytes']} B, max {cp['max_bytes']} B"]
    lines += [f"- {r}" for r in report["recommendations"]]
    return "\n".join(lines)


class MemoryAuditNotifier(BaseNotifier):
    """Log an oversized-share alert, and POST it (Slack-compatible ``text``) to ``checkpoint_alerts`` when defined."""

    template_fields = ("conn_id",)

    def __init__(self, conn_id: str = ALERTS_CONN_ID, endpoint: str | None = None) -> None:
        super().__init__()
        self.conn_id, self.endpoint = conn_id, endpoint

    def notify(self, context) -> None:
        report = context["memory_audit"]
        text = alert_text(report)
        log.warning("CHECKPOINT MEMORY ALERT\n%s", text)
        service = http_service(self.conn_id)
        if service is None:
            log.info("No connection %r: the alert is only in this log.", self.conn_id)
            return
        hook, _ = service
        hook.method = "POST"
        hook.run(self.endpoint, json={"text": text, "store": report["conn_id"], "checkpoints": report["checkpoints"],
                                      "recommendations": report["recommendations"]}, extra_options={"timeout": 10})
