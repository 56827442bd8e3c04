"""Health alerts as an Airflow notifier.

``CheckpointHealthNotifier`` is a ``BaseNotifier``, so it can be swapped for (or combined with)
any provider's notifier (Slack, email, PagerDuty...) in the DAG file. It always logs the alert;
when the http connection ``checkpoint_alerts`` is defined it also POSTs a JSON message to it
(a Slack-compatible ``text`` plus the structured report): put the whole webhook URL in the
connection's host, e.g. ``https://hooks.slack.com/services/...``.
"""

from __future__ import annotations

import logging

from airflow.sdk import BaseNotifier

from checkpoint_ops.hooks import ALERTS_CONN_ID

log = logging.getLogger(__name__)


def alert_text(report: dict) -> str:
    """One message a person can act on: what, why (the numbers), and what to do."""
    lines = [f"checkpoint_health {report['store']}: {report['title']}"]
    lines += [f"- {r}" for r in report["reasons"]] if report["decision"] == "migrate_now" else []
    lines += [f"- anomaly: {a['message']}" for a in report.get("new_anomalies", report["anomalies"])]
    if report["decision"] == "migrate_now":
        lines.append("Next: run the checkpoint_migration DAG (dry_run first) to move this store to PostgreSQL.")
    if report["missing"]:
        lines.append("Decided without: " + "; ".join(report["missing"]))
    return "\n".join(lines)


class CheckpointHealthNotifier(BaseNotifier):
    """Send a checkpoint_health alert; the report comes from the ``evaluate`` task's XCom."""

    template_fields = ("conn_id",)

    def __init__(self, conn_id: str = ALERTS_CONN_ID, endpoint: str | None = None) -> None:
        super().__init__()
        self.conn_id = conn_id
        self.endpoint = endpoint

    def notify(self, context) -> None:
        report = context["checkpoint_health"]
        text = alert_text(report)
        log.warning("CHECKPOINT HEALTH ALERT\n%s", text)
        from checkpoint_ops.hooks import http_service

        service = http_service(self.conn_id)
        if service is None:
            log.info("No connection %r: the alert is only in this log. Define it (http) to post alerts.", self.conn_id)
            return
        hook, _ = service
        hook.method = "POST"
        payload = {"text": text, "store": report["store"], "decision": report["decision"],
                   "reasons": report["reasons"], "anomalies": report["anomalies"], "missing": report["missing"]}
        hook.run(self.endpoint, json=payload, extra_options={"timeout": 10})
        log.info("Alert posted to connection %r", self.conn_id)
