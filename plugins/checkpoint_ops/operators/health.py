"""Evaluate one checkpoint store's health and decide whether it must leave SQLite."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowFailException

from checkpoint_ops.hooks import PROMETHEUS_CONN_ID, PUSHGATEWAY_CONN_ID, http_service
from checkpoint_ops.operators.base import CheckpointOpsOperator


class CheckpointHealthOperator(CheckpointOpsOperator):
    """Measure (Prometheus + the store), decide, record the history row, publish the gauges.

    Returns the report (XCom): decision, reasons with their numbers, anomalies, the inputs that
    were missing, and whether the decision changed since the previous run.
    """

    template_fields = ("checkpoint_conn_id", "prometheus_conn_id", "pushgateway_conn_id", "configured", "overrides")
    ui_color = "#fdf1e0"

    def __init__(
        self,
        *,
        checkpoint_conn_id: str,
        prometheus_conn_id: str = PROMETHEUS_CONN_ID,
        pushgateway_conn_id: str = PUSHGATEWAY_CONN_ID,
        configured: dict[str, Any] | str | None = None,
        overrides: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.checkpoint_conn_id = checkpoint_conn_id
        self.prometheus_conn_id = prometheus_conn_id
        self.pushgateway_conn_id = pushgateway_conn_id
        self.configured = configured
        self.overrides = overrides

    def run(self, context: Context) -> dict[str, Any]:
        from include.checkpoint_core.health.evaluate import check_health, justification, recent_full_scan, record
        from include.checkpoint_core.health.settings import resolve_settings

        try:
            settings = resolve_settings(self.configured, self.overrides)
        except ValueError as exc:
            raise AirflowFailException(str(exc)) from exc
        target = self.store_target(self.checkpoint_conn_id)
        prometheus, absent = self._prometheus()
        report = check_health(
            target, prometheus=prometheus, prometheus_absent_reason=absent, thresholds=settings.thresholds,
            app_servers=settings.app_servers, selector=settings.prometheus_selector,
            window_minutes=settings.window_minutes, baseline_minutes=settings.baseline_minutes,
            largest_top_n=settings.largest_top_n, log=self.log.info,
            earlier_full_scan=recent_full_scan(target, settings.full_scan_every_minutes, log=self.log.info),
        )
        # The decision is made; the history only tells whether it changed (and is best-effort).
        report = record(report, target, run_id=context["run_id"], evaluated_at=context["dag_run"].run_after,
                        log=self.log.warning)
        report["auto_migrate"], report["migration_target"] = settings.auto_migrate, settings.migration_target
        (self.log.warning if report["decision"] == "migrate_now" or report["anomalies"] else self.log.info)(
            "Decision\n%s", justification(report)
        )
        report["pushgateway"] = self._publish(report)
        return report

    def _prometheus(self):
        from include.checkpoint_core.health.prometheus import PrometheusAPI

        service = http_service(self.prometheus_conn_id)
        if service is None:
            return None, (f"no connection {self.prometheus_conn_id!r}: error rate, latency and the app's "
                          "writes/s are unknown (define it, type http, host = the Prometheus URL)")
        hook, session = service
        return PrometheusAPI(hook.base_url, session=session), ""

    def _publish(self, report: dict[str, Any]) -> str:
        """Push the gauges; a Pushgateway outage is reported, it does not undo the decision."""
        from include.checkpoint_core.health.prometheus import safe_url
        from include.checkpoint_core.health.publish import push_health

        service = http_service(self.pushgateway_conn_id)
        if service is None:
            return f"skipped: no connection {self.pushgateway_conn_id!r}"
        hook, session = service
        auth, where = session.auth, safe_url(hook.base_url)  # HTTPBasicAuth when the connection has a login
        try:
            push_health(hook.base_url, report, username=getattr(auth, "username", None),
                        password=getattr(auth, "password", None))
        except Exception as exc:  # noqa: BLE001 - an outage of the gauges must not undo the decision
            self.log.warning("Could not push the health gauges to %s: %s: %s", where, type(exc).__name__, exc)
            return f"failed: {type(exc).__name__}"
        self.log.info("Health gauges pushed to %s", where)
        return "pushed"
