"""Operators of the checkpoint_cutover DAG: thin shells over ``include.checkpoint_core.cutover.jobs``.

Every task resolves the source (sqlite) and target (postgres) connections itself, opens the mover's
two connections, does its step, and logs and returns a summary (weight, threads per store, moves,
the longest a writer waited). Ramp, rollback and decommission also push the cutover gauges.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from checkpoint_ops.hooks import POSTGRES_CONN_ID, PROMETHEUS_CONN_ID, PUSHGATEWAY_CONN_ID, SQLITE_CONN_ID, http_service
from checkpoint_ops.operators.base import CheckpointOpsOperator, as_bool
from include.checkpoint_core.errors import CheckpointStoreError

MAX_STEPS = 5
PUSH_JOB = "checkpoint_cutover"


class CutoverConfigError(CheckpointStoreError):
    hint = "Fix the param or connection named, then trigger a new run (a retry of this task would fail the same way)."


def parse_steps(steps: Any) -> list[int]:
    """The ramp: increasing whole percentages ending at 100, at most MAX_STEPS of them."""
    if isinstance(steps, str):
        import json

        steps = json.loads(steps)
    if not isinstance(steps, list) or not steps or len(steps) > MAX_STEPS:
        raise CutoverConfigError(f"steps must be a list of 1 to {MAX_STEPS} percentages, got {steps!r}")
    if any(isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= 100 for s in steps):
        raise CutoverConfigError(f"steps must be whole percentages from 1 to 100, got {steps!r}")
    if sorted(set(steps)) != steps or steps[-1] != 100:
        raise CutoverConfigError(f"steps must increase and end at 100 (e.g. [10, 50, 100]), got {steps!r}")
    return steps


class _CutoverOperator(CheckpointOpsOperator):
    template_fields: Sequence[str] = ("source_conn_id", "target_conn_id", "batch_threads", "lease_seconds",
                                      "pushgateway_conn_id")

    def __init__(self, *, source_conn_id: str = SQLITE_CONN_ID, target_conn_id: str = POSTGRES_CONN_ID,
                 batch_threads: int | str = 20, lease_seconds: float | str = 30,
                 pushgateway_conn_id: str = PUSHGATEWAY_CONN_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.source_conn_id, self.target_conn_id = source_conn_id, target_conn_id
        self.batch_threads, self.lease_seconds = batch_threads, lease_seconds
        self.pushgateway_conn_id = pushgateway_conn_id

    def targets(self):
        source, target = self.store_target(self.source_conn_id), self.store_target(self.target_conn_id)
        if source.kind != "sqlite":
            raise CutoverConfigError(f"source {self.source_conn_id!r} is {source.kind}; the cutover moves an app "
                                     "from SQLite (the blue store)")
        if target.kind != "postgres":
            raise CutoverConfigError(f"target {self.target_conn_id!r} is {target.kind}; the cutover moves an app "
                                     "to PostgreSQL (the green store)")
        return source, target

    @contextmanager
    def pair(self):
        from include.checkpoint_core.cutover.jobs import connect_blue
        from include.checkpoint_core.postgres_store import postgres_connection

        source, target = self.targets()
        with postgres_connection(target.location) as pg:
            blue = connect_blue(source.location)
            try:
                yield pg, blue, source
            finally:
                blue.close()

    def guarded(self, fn):
        """Cutover errors (a state that a retry cannot change) fail the task without retries."""
        from include.checkpoint_core.cutover.routes import CutoverError

        try:
            return fn()
        except CutoverError as exc:
            raise AirflowFailException(f"{self.task_id}: {exc}") from exc

    def publish(self, summary: dict[str, Any]) -> str:
        """Push the weight, threads per store and flip times; an outage of the gauges only warns."""
        from include.checkpoint_core.health.prometheus import safe_url
        from include.checkpoint_core.health.publish import push_registry
        from include.checkpoint_core.cutover.jobs import cutover_registry

        service = http_service(self.pushgateway_conn_id)
        if service is None:
            return f"skipped: no connection {self.pushgateway_conn_id!r}"
        hook, session = service
        try:
            push_registry(hook.base_url, PUSH_JOB, cutover_registry(summary, time.time()),
                          {"target": self.target_conn_id}, username=getattr(session.auth, "username", None),
                          password=getattr(session.auth, "password", None))
        except Exception as exc:  # noqa: BLE001 - the gauges are a view of the state, not the state
            self.log.warning("Could not push the cutover gauges to %s: %s", safe_url(hook.base_url), exc)
            return f"failed: {type(exc).__name__}"
        return "pushed"


class CutoverPreflightOperator(_CutoverOperator):
    """Checks everything before anything changes: connections, steps, the migration, foreign data, the delta."""

    template_fields: Sequence[str] = (*_CutoverOperator.template_fields, "steps", "max_delta_pct", "dry_run")

    def __init__(self, *, steps: Any = (10, 50, 100), max_delta_pct: float | str = 10.0, dry_run: bool | str = False,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.steps, self.max_delta_pct, self.dry_run = steps, max_delta_pct, dry_run

    def run(self, context: Context) -> dict[str, Any]:
        from include.checkpoint_core.cutover import jobs

        steps = parse_steps(self.steps)
        with self.pair() as (pg, blue, source):
            out = self.guarded(lambda: jobs.preflight(pg, blue, source.location, max_delta_pct=float(self.max_delta_pct),
                                                      log=self.log.info))
            out["plan"] = self.guarded(lambda: jobs.plan(pg, blue, steps))
        out["steps"], out["dry_run"] = steps, as_bool(self.dry_run)
        for row in out["plan"]:
            self.log.info("step %3d%%: %6d threads move (%d checkpoints)", row["weight"], row["threads"],
                          row["checkpoints"])
        return out


class CutoverPrepareOperator(_CutoverOperator):
    """Installs the routing state and both stores' guards, and registers every source thread as blue."""

    def run(self, context: Context) -> dict[str, Any]:
        from include.checkpoint_core.cutover import jobs

        with self.pair() as (pg, blue, source):
            return self.guarded(lambda: jobs.prepare(pg, blue, source.location, context["run_id"],
                                                     log=self.log.info))


class CutoverRampOperator(_CutoverOperator):
    """Step ``index`` of the ramp: route ``steps[index]``% of threads to PostgreSQL (skipped past the last step)."""

    template_fields: Sequence[str] = (*_CutoverOperator.template_fields, "steps")

    def __init__(self, *, index: int, steps: Any = (10, 50, 100), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.index, self.steps = index, steps

    def run(self, context: Context) -> dict[str, Any]:
        from include.checkpoint_core.cutover import jobs

        steps = parse_steps(self.steps)
        if self.index >= len(steps):
            raise AirflowSkipException(f"the ramp has {len(steps)} steps")
        weight = steps[self.index]
        self.log.info("step %d of %d: ramping to %d%%", self.index + 1, len(steps), weight)
        with self.pair() as (pg, blue, _):
            reached = jobs.status(pg).get("weight", 0)
            if self.index and reached < steps[self.index - 1]:
                raise AirflowSkipException(f"the ramp stopped at {reached}% (step {steps[self.index - 1]}% was "
                                           "rejected or did not run)")
            out = self.guarded(lambda: jobs.ramp(pg, blue, weight, batch_threads=int(self.batch_threads),
                                                 lease_s=float(self.lease_seconds), log=self.log.info))
            out["gauges"] = self.publish({**out, **jobs.status(pg)})
        if out["refused"] and weight == 100:
            raise AirflowFailException(
                f"{len(out['refused'])} threads cannot move to PostgreSQL and stay on SQLite, whole (e.g. "
                f"{next(iter(out['refused'].items()))}); repair them (see checkpoint_migration's repair_nul) and "
                "clear this task, or roll back")
        return out


class CutoverSoakOperator(_CutoverOperator):
    """Waits ``soak_minutes`` after a step in the triggerer, checking the health gate every ``every_seconds``;
    fails at once (no retry) on a breach, which starts the rollback."""

    template_fields: Sequence[str] = (*_CutoverOperator.template_fields, "steps", "soak_minutes", "every_seconds",
                                      "error_rate_pct", "p99_ms", "prometheus_conn_id", "configured")

    def __init__(self, *, index: int, steps: Any = (10, 50, 100), soak_minutes: float | str = 60,
                 every_seconds: float | str = 30, error_rate_pct: float | str | None = None,
                 p99_ms: float | str = 500, prometheus_conn_id: str = PROMETHEUS_CONN_ID,
                 configured: str | dict | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.index, self.steps, self.soak_minutes, self.every_seconds = index, steps, soak_minutes, every_seconds
        self.error_rate_pct, self.p99_ms, self.prometheus_conn_id = error_rate_pct, p99_ms, prometheus_conn_id
        self.configured = configured

    def gate(self):
        from include.checkpoint_core.cutover.gate import Gate
        from include.checkpoint_core.health.settings import resolve_settings

        try:
            settings = resolve_settings(self.configured or None)
        except ValueError as exc:
            raise AirflowFailException(str(exc)) from exc
        rate = settings.thresholds.error_rate_pct if self.error_rate_pct in (None, "", "None") else float(self.error_rate_pct)
        every = float(self.every_seconds)
        return Gate(error_rate_pct=rate, p99_ms=float(self.p99_ms), min_errors=settings.thresholds.min_errors,
                    window_s=max(every, 10.0), selector=settings.prometheus_selector)

    def execute(self, context: Context) -> dict[str, Any]:
        from checkpoint_ops.triggers import CutoverSoakTrigger, _gate_inputs
        from include.checkpoint_core.cutover.gate import check

        steps = parse_steps(self.steps)
        if self.index >= len(steps) - 1:
            raise AirflowSkipException("no soak after the last step")
        minutes = float(self.soak_minutes)
        gate = self.gate()
        api, dsn = _gate_inputs(self.prometheus_conn_id, self.target_conn_id)
        first = check(api, dsn, gate)
        self.log.info("soak at %d%% for %g min, checking every %g s against %s; first check: %s %s",
                      steps[self.index], minutes, float(self.every_seconds), gate.as_dict(), first["verdict"],
                      first["numbers"])
        for note in first["missing"]:
            self.log.warning("%s", note)
        if first["verdict"] == "breach":
            raise AirflowFailException(f"health breach at {steps[self.index]}%: {first['reason']}")
        if minutes <= 0:
            return {"weight": steps[self.index], "checks": 1, "numbers": first["numbers"]}
        self.defer(trigger=CutoverSoakTrigger(prometheus_conn_id=self.prometheus_conn_id,
                                              target_conn_id=self.target_conn_id, gate=gate.as_dict(),
                                              until=time.time() + 60 * minutes, every_s=float(self.every_seconds),
                                              weight=steps[self.index]),
                   method_name="soaked", timeout=timedelta(minutes=minutes + 10))

    def soaked(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        for note in event.get("notes", []):
            self.log.warning("%s", note)
        weight = parse_steps(self.steps)[self.index]
        if event["status"] == "breach":
            raise AirflowFailException(f"health breach at {weight}% after {event['checks']} checks: {event['reason']} "
                                       f"({event['numbers']}); the rollback task moves every thread back to SQLite")
        self.log.info("soak at %d%% passed %d checks; last: %s", weight, event["checks"], event["numbers"])
        return {"weight": weight, "checks": event["checks"] + 1, "numbers": event["numbers"]}


class CutoverApprovalOperator(ApprovalOperator):
    """A person approves the next step in the UI (Airflow's human-in-the-loop); passes by itself unless required.
    "Reject" skips the remaining steps: the cutover stays at the weight it reached."""

    template_fields: Sequence[str] = (*ApprovalOperator.template_fields, "required", "steps")

    def __init__(self, *, index: int, required: bool | str = False, steps: Any = (10, 50, 100), **kwargs: Any) -> None:
        kwargs.setdefault("subject", "Cutover: go to the next step?")
        kwargs.setdefault("response_timeout", timedelta(days=7))
        super().__init__(**kwargs)
        self.index, self.required, self.steps = index, required, steps

    def execute(self, context: Context):
        steps = parse_steps(self.steps)
        if self.index >= len(steps) - 1:
            raise AirflowSkipException("no approval after the last step")
        if not as_bool(self.required):
            self.log.info("require_approval is off: going on to %d%%", steps[self.index + 1])
            return {"chosen_options": [self.APPROVE], "auto": True}
        self.body = (f"The cutover is at {steps[self.index]}% and its soak passed. Approve to route "
                     f"{steps[self.index + 1]}% of threads to PostgreSQL; Reject to stay at {steps[self.index]}%.")
        return super().execute(context)


class CutoverRollbackOperator(_CutoverOperator):
    """Every thread back to SQLite with the checkpoints it wrote in PostgreSQL."""

    def run(self, context: Context) -> dict[str, Any]:
        from include.checkpoint_core.cutover import jobs

        with self.pair() as (pg, blue, _):
            out = self.guarded(lambda: jobs.rollback(pg, blue, batch_threads=int(self.batch_threads),
                                                     lease_s=float(self.lease_seconds), log=self.log.info))
            out["gauges"] = self.publish({**out, **jobs.status(pg)})
        return out


class CutoverDecommissionOperator(_CutoverOperator):
    """After 100%: back the SQLite file up (the backup DAG's manifest), drop the guards, leave the file read-only."""

    template_fields: Sequence[str] = (*_CutoverOperator.template_fields, "delete_source")

    def __init__(self, *, delete_source: bool | str = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.delete_source = delete_source

    def run(self, context: Context) -> dict[str, Any]:
        from pathlib import Path

        from checkpoint_ops.artifacts import safe_key
        from checkpoint_ops.locations import backup_folder
        from include.checkpoint_core.backup import BackupExists, take_backup
        from include.checkpoint_core.backup.layout import read_manifest
        from include.checkpoint_core.cutover import jobs

        with self.pair() as (pg, blue, source):
            reached = jobs.status(pg)
            if reached.get("phase") != "complete" and reached.get("weight", 0) < 100:
                raise AirflowSkipException(f"the ramp stopped at {reached.get('weight', 0)}%: SQLite stays in service")
            self.guarded(lambda: jobs.ready_to_decommission(pg))
            folder = backup_folder(self.source_conn_id)
            backup_id = safe_key(f"cutover-{context['run_id']}")
            try:
                manifest = take_backup(source, folder, backup_id=backup_id, canary=False, log=self.log.info)
            except BackupExists:
                manifest = read_manifest(folder / backup_id)
            out = self.guarded(lambda: jobs.decommission(pg, blue, source.location, log=self.log.info))
            out["backup"] = {"id": backup_id, "folder": str(folder / backup_id),
                             "sha256": manifest.get("sha256") if manifest else None}
            if as_bool(self.delete_source):
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{source.location}{suffix}").unlink(missing_ok=True)
                out["source_deleted"] = True
                self.log.info("deleted the SQLite file (delete_source is on); its backup is %s", out["backup"]["folder"])
            out["gauges"] = self.publish({**out, **jobs.status(pg)})
        return out


class CutoverReportOperator(_CutoverOperator):
    """What the run did, step by step, and where every thread is now: log table, XCom, JSON artifact, gauges."""

    def run(self, context: Context) -> dict[str, Any]:
        from checkpoint_ops.artifacts import write_report
        from include.checkpoint_core.cutover import jobs
        from include.checkpoint_core.postgres_store import postgres_connection

        ti = context["ti"]
        tasks = ["preflight", "prepare", *[f"ramp_{i + 1}" for i in range(MAX_STEPS)],
                 *[f"soak_{i + 1}" for i in range(MAX_STEPS - 1)], "rollback_on_breach", "rollback_now",
                 "decommission"]
        steps = {t: ti.xcom_pull(task_ids=t) for t in tasks}
        steps = {t: v for t, v in steps.items() if v}
        _, target = self.targets()
        try:
            with postgres_connection(target.location) as pg:
                status = jobs.status(pg)
        except CheckpointStoreError as exc:
            status = {"unavailable": str(exc)}
        report = {"run_id": context["run_id"], "status": status, "tasks": steps}
        lines = [f"{'task':20} {'weight':>6} {'moved':>8} {'checkpoints':>11} {'seconds':>8}  note"]
        for t, v in steps.items():
            lines.append(f"{t:20} {str(v.get('weight', '')):>6} {str(v.get('moved', '')):>8} "
                         f"{str(v.get('checkpoints', '')):>11} {str(v.get('seconds', v.get('duration_s', ''))):>8}  "
                         f"{'refused: ' + str(len(v['refused'])) if v.get('refused') else ''}")
        lines.append(f"now: {status}")
        self.log.info("cutover report:\n%s", "\n".join(lines))
        report["artifact"] = write_report(context["dag"].dag_id, context["run_id"], "cutover", report)
        return {"status": status, "artifact": report["artifact"], "steps": list(steps)}
