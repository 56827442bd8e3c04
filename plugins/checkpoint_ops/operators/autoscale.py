"""Step the checkpoint PostgreSQL up or down its class ladder from the app's sustained write rate.

The decision is ``include.checkpoint_core.provisioning.autoscale.decide``; this operator gathers
its inputs (Prometheus range query, the instance's class from RDS, the last change from the history
table, running migrations/cutovers), applies a change through the amazon provider's ``RdsHook``
and records every decision. Without an RDS instance it only recommends.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowFailException

from checkpoint_ops.hooks import PROMETHEUS_CONN_ID, CheckpointStoreHook, http_service
from checkpoint_ops.operators.base import as_bool

BLOCKING_DAGS = ("checkpoint_migration", "checkpoint_cutover")


class CheckpointAutoscaleOperator(BaseOperator):
    """Decide, record (history table + XCom), and apply unless ``dry_run`` or self-managed.

    Returns the report: action, classes, reasons with their numbers, mode (``rds`` or
    ``self-managed``), whether a change was applied, and ``alert`` when a person should know.
    """

    template_fields: Sequence[str] = (
        "checkpoint_conn_id", "prometheus_conn_id", "aws_conn_id", "rds_instance", "current_class", "config",
        "dry_run", "apply_immediately", "timeout_minutes", "step_seconds", "rate_window",
    )
    ui_color = "#eef6e8"

    def __init__(self, *, checkpoint_conn_id: str = "checkpoints_postgres",
                 prometheus_conn_id: str = PROMETHEUS_CONN_ID, aws_conn_id: str | None = "aws_default",
                 rds_instance: str | None = None, current_class: str | None = None,
                 config: dict[str, Any] | None = None, dry_run: bool = False, apply_immediately: bool = False,
                 timeout_minutes: float = 60, poll_seconds: float = 30, step_seconds: float = 60,
                 rate_window: str = "1m",                 blocking_dags: Sequence[str] = BLOCKING_DAGS, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.checkpoint_conn_id, self.prometheus_conn_id = checkpoint_conn_id, prometheus_conn_id
        self.aws_conn_id, self.rds_instance, self.current_class = aws_conn_id, rds_instance, current_class
        self.config, self.dry_run, self.apply_immediately = config, dry_run, apply_immediately
        self.timeout_minutes, self.poll_seconds, self.step_seconds = timeout_minutes, poll_seconds, step_seconds
        self.rate_window = rate_window
        self.blocking_dags = tuple(blocking_dags)

    def execute(self, context: Context) -> dict[str, Any]:
        from include.checkpoint_core.provisioning.autoscale import AutoscaleConfigError

        blockers = [d for d in self.blocking_dags if context["ti"].get_dr_count(dag_id=d, states=["running"])]
        try:
            return self.evaluate(run_id=context["run_id"], blockers=blockers)
        except AutoscaleConfigError as exc:
            raise AirflowFailException(f"{exc} Nothing was changed.") from None

    def evaluate(self, *, run_id: str, blockers: Sequence[str] = (), now: datetime | None = None) -> dict[str, Any]:
        from include.checkpoint_core.health.prometheus import PrometheusAPI, PrometheusUnavailable
        from include.checkpoint_core.provisioning import autoscale_run as run
        from include.checkpoint_core.provisioning.autoscale import ScaleConfig, decide

        config = ScaleConfig.from_mapping(self.config if isinstance(self.config, dict) else None)
        target = CheckpointStoreHook(self.checkpoint_conn_id).get_target()
        if target.kind != "postgres":
            raise AirflowFailException(f"{self.checkpoint_conn_id!r} is not a PostgreSQL store: autoscaling applies "
                                       "to the checkpoint PostgreSQL (set checkpoint_conn_id to its connection).")
        service = http_service(self.prometheus_conn_id)
        if service is None:
            raise AirflowFailException(f"no connection {self.prometheus_conn_id!r}: the write rate is unknown, so "
                                       "nothing can be decided (define it, type http, host = the Prometheus URL).")
        api = PrometheusAPI(service[0].base_url, session=service[1])
        now = now or datetime.now(timezone.utc)
        rds_mode = bool(self.rds_instance) and bool(self.aws_conn_id)
        instance = self.rds_instance if rds_mode else f"self-managed:{self.checkpoint_conn_id}"
        already = run.applied_in_run(target.location, instance, run_id)
        if already:
            self.log.info("This run already applied %s; not stepping again.", already["report"]["target_class"])
            report = {**already["report"], "replayed": True}
            if rds_mode:
                report["status"] = self._wait_available(self._rds())
            return report
        rds = self._rds() if rds_mode else None
        current = self._current_class(rds) if rds else (self.current_class or config.ladder[0])
        try:
            samples = run.write_samples(api, now=now, minutes=run.window_minutes(config),
                                        step_s=float(self.step_seconds), rate_window=self.rate_window)
        except (PrometheusUnavailable, ValueError) as exc:
            raise AirflowFailException(f"{exc}; nothing was decided or changed.") from None
        previous = run.last_change(target.location, instance, except_run_id=run_id)
        decision = decide(samples, current, now=now, config=config, last_change_at=run.cooldown_start(previous),
                          blockers=blockers)
        report: dict[str, Any] = {
            **decision.as_dict(), "instance": instance, "mode": "rds" if rds_mode else "self-managed",
            "p99_seconds": run.p99_seconds(api), "samples": len(samples), "dry_run": as_bool(self.dry_run),
            "applied": False, "changed": False,
        }
        self.log.info("Decision: %s (%s)", decision.action, "; ".join(decision.reasons))
        if run.is_change(decision):
            if not rds_mode:
                report["alert"] = (f"recommendation for the self-managed server: {current} -> "
                                   f"{decision.target_class}; nothing was changed.")
            elif report["dry_run"]:
                report["alert"] = f"dry_run: would modify {instance} {current} -> {decision.target_class}."
            else:
                self._apply(rds, decision.target_class, report)
        elif decision.action == "defer":
            report["alert"] = f"deferred: {'; '.join(decision.reasons)}"
        # Recorded before waiting: a retry after a timeout waits again instead of stepping twice.
        run.record(target.location, run_id=run_id, instance=instance, decided_at=now, decision=decision,
                   applied=report["applied"], report=report)
        if report["applied"]:
            report["status"] = self._wait_available(rds)
        if report.get("alert"):
            self.log.warning("AUTOSCALE: %s", report["alert"])
        return report

    def _rds(self):
        from airflow.providers.amazon.aws.hooks.rds import RdsHook

        return RdsHook(aws_conn_id=self.aws_conn_id).conn

    def _describe(self, rds) -> dict[str, Any]:
        try:
            return rds.describe_db_instances(DBInstanceIdentifier=self.rds_instance)["DBInstances"][0]
        except rds.exceptions.DBInstanceNotFoundFault:
            raise AirflowFailException(f"RDS instance {self.rds_instance!r} does not exist in this account/region: "
                                       "give the identifier of the checkpoint instance; nothing was changed.") from None

    def _current_class(self, rds) -> str:
        """The class the instance has or will have: a change pending for the maintenance window counts."""
        instance = self._describe(rds)
        return (instance.get("PendingModifiedValues") or {}).get("DBInstanceClass") or instance["DBInstanceClass"]

    def _apply(self, rds, target_class: str, report: dict[str, Any]) -> None:
        immediately = as_bool(self.apply_immediately)
        rds.modify_db_instance(DBInstanceIdentifier=self.rds_instance, DBInstanceClass=target_class,
                               ApplyImmediately=immediately)
        report.update(applied=True, changed=True, apply_immediately=immediately)
        report["alert"] = (f"{self.rds_instance}: {report['current_class']} -> {target_class} "
                           + ("applied now" if immediately else "at the next maintenance window"))

    def _wait_available(self, rds) -> str:
        deadline = time.monotonic() + float(self.timeout_minutes) * 60
        while True:
            status = self._describe(rds)["DBInstanceStatus"]
            if status == "available":
                return status
            if time.monotonic() >= deadline:
                raise AirflowFailException(f"{self.rds_instance} is still {status} after {self.timeout_minutes} min "
                                           "(the change is recorded); clear this task to wait again.")
            self.log.info("%s is %s; waiting for available", self.rds_instance, status)
            time.sleep(float(self.poll_seconds))
