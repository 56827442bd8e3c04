"""checkpoint_autoscale: every 15 minutes (and on a health decision), step the checkpoint PostgreSQL's class."""

from __future__ import annotations

from airflow.sdk import DAG, Asset, Param, task
from airflow.sdk.definitions.timetables.assets import AssetOrTimeSchedule
from airflow.timetables.trigger import CronTriggerTimetable

from checkpoint_ops.dag_defaults import lifecycle_dag
from checkpoint_ops.operators.autoscale import CheckpointAutoscaleOperator

# Emitted by checkpoint_health when a store's decision changes.
HEALTH_DECISION = Asset(name="checkpoint_health_decision", uri="checkpoint-health-decision")
# Updated only when the instance's class was changed (or a change recommended on a self-managed server).
AUTOSCALE_CHANGE = Asset(name="checkpoint_autoscale_change", uri="checkpoint-autoscale-change")

DOC = """
### Scale the checkpoint PostgreSQL up or down its class ladder

Every 15 minutes and whenever `checkpoint_health_decision` is updated:

* **decide**: writes/s to PostgreSQL from Prometheus (http connection `checkpoint_prometheus`, a range query of
  `sum(rate(checkpoint_writes_total{backend="postgres"}[1m]))`, so "sustained" means every sample of the
  window) and the put P99; the instance's class from RDS (`RdsHook`, aws connection *aws_conn_id*).
  Up one step (default ladder `db.t4g.small -> db.t4g.medium -> db.m5.large -> db.m5.xlarge`) when writes/s
  stayed above 500 for *up_minutes*; down one step below *down writes/s* for the longer *down_minutes*;
  **hold** within *cooldown_minutes* of the last change; **defer** while `checkpoint_migration` or
  `checkpoint_cutover` runs. Each decision with its numbers goes into `checkpoint_ops_autoscale_history`
  (in the checkpoint PostgreSQL, created if missing) and the XCom.
* **apply**: `modify_db_instance` (at the next maintenance window unless *apply_immediately*), then waits
  for `available`. A retried task does not step twice (the change is recorded before the wait).
  *dry_run* decides and reports only. Without *rds_instance* (a self-managed server) it recommends and
  alerts, and changes nothing.
* **notify**: an SNS message to *sns_topic_arn* (the amazon provider's `SnsNotifier`) when set, else the
  log, on a change, a recommendation or a deferral; **publish_change** updates the
  `checkpoint_autoscale_change` Asset on a change.
"""


def _number(title: str, description: str, **schema) -> Param:
    schema = schema or {"exclusiveMinimum": 0}
    return Param(None, type=["null", "number"], **schema, title=title, description=description)


with DAG(
    dag_id="checkpoint_autoscale",
    description="Step the checkpoint PostgreSQL (RDS) up or down its class ladder from the sustained write rate.",
    doc_md=DOC,
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable("*/15 * * * *", timezone="UTC"),
                                 assets=[HEALTH_DECISION]),
    **lifecycle_dag("autoscale"),
    params={
        "rds_instance": Param(None, type=["null", "string"], pattern=r"^[a-zA-Z][a-zA-Z0-9-]{0,62}$",
                              title="RDS instance", description="The checkpoint instance's identifier. Empty: a "
                              "self-managed server, which gets a recommendation and an alert, never a change."),
        "current_class": Param(None, type=["null", "string"], pattern=r"^db\.[a-z0-9]+\.[a-z0-9]+$",
                               title="Class of a self-managed server", description="The ladder step the self-managed "
                               "server stands for. Empty: the smallest class of the ladder. Ignored on RDS."),
        "checkpoint_conn_id": Param("checkpoints_postgres", type="string", pattern=r"^[A-Za-z0-9_.-]+$",
                                    title="Checkpoint PostgreSQL", description="Its connection: holds the history table."),
        "aws_conn_id": Param("aws_default", type="string", pattern=r"^[A-Za-z0-9_.-]+$", title="AWS connection",
                             description="The aws connection (role or keys; region in its extra)."),
        "dry_run": Param(False, type="boolean", title="Dry run", description="Decide and report only; change nothing."),
        "apply_immediately": Param(False, type="boolean", title="Apply immediately",
                                   description="Change the class now (a short outage) instead of in the next "
                                   "maintenance window."),
        "ladder": Param(None, type=["null", "array"], items={"type": "string", "pattern": r"^db\.[a-z0-9]+\.[a-z0-9]+$"},
                        title="Class ladder", description="Instance classes, smallest first. Empty: db.t4g.small, "
                        "db.t4g.medium, db.m5.large, db.m5.xlarge."),
        "up_writes_per_second": _number("Scale-up writes/s", "Up one step above this, sustained. Default 500."),
        "up_minutes": _number("Scale-up window (minutes)", "How long the rate must stay above. Default 10."),
        "down_writes_per_second": _number("Scale-down writes/s", "Down one step below this, sustained. Default 150.",
                                          minimum=0),
        "down_minutes": _number("Scale-down window (minutes)", "How long the rate must stay below. Default 60."),
        "cooldown_minutes": _number("Cooldown (minutes)", "No change within this long after the last. Default 30.",
                                    minimum=0),
        "rate_window": Param("1m", type="string", pattern=r"^[1-9][0-9]*[smh]$", title="Rate window",
                             description="The range of rate() over the write counter: at least four scrape intervals."),
        "step_seconds": Param(60, type="number", minimum=1, maximum=3600, title="Sample step (seconds)",
                              description="One write-rate sample per this many seconds over the windows."),
        "sns_topic_arn": Param(None, type=["null", "string"], pattern=r"^arn:aws[a-z-]*:sns:", title="SNS topic",
                               description="Notify this topic (SnsNotifier). Empty: the alert is only in the log."),
        "timeout_minutes": Param(60, type="number", minimum=1, maximum=600, title="Timeout (minutes)",
                                 description="How long to wait for the instance to become available again."),
    },
) as dag:

    decide = CheckpointAutoscaleOperator(
        task_id="decide",
        checkpoint_conn_id="{{ params.checkpoint_conn_id }}",
        aws_conn_id="{{ params.aws_conn_id }}",
        rds_instance="{{ params.rds_instance }}",
        current_class="{{ params.current_class }}",
        dry_run="{{ params.dry_run }}",
        apply_immediately="{{ params.apply_immediately }}",
        timeout_minutes="{{ params.timeout_minutes }}",
        rate_window="{{ params.rate_window }}",
        step_seconds="{{ params.step_seconds }}",
        config={key: "{{ params.%s }}" % key for key in (
            "ladder", "up_writes_per_second", "up_minutes", "down_writes_per_second", "down_minutes",
            "cooldown_minutes")},
    )

    @task(task_id="notify")
    def notify(report: dict, params=None, **context) -> str:
        """The alert (a change, a recommendation, a deferral) to SNS when a topic is set, else the log."""
        from airflow.sdk.exceptions import AirflowSkipException

        if not report.get("alert") or report.get("replayed"):
            raise AirflowSkipException("nothing to notify")
        message = f"checkpoint_autoscale {report['instance']}: {report['alert']}\n" + "\n".join(
            f"- {r}" for r in report["reasons"])
        print(message)
        if not params["sns_topic_arn"]:
            return "log"
        from airflow.providers.amazon.aws.notifications.sns import SnsNotifier

        SnsNotifier(aws_conn_id=params["aws_conn_id"], target_arn=params["sns_topic_arn"], message=message,
                    subject=f"checkpoint_autoscale: {report['action']}").notify(context)
        return "sns"

    @task(task_id="publish_change", outlets=[AUTOSCALE_CHANGE])
    def publish_change(report: dict, outlet_events=None) -> dict:
        """An Asset event only on a change or a recommendation (a skipped task emits none)."""
        from airflow.sdk.exceptions import AirflowSkipException

        if report["action"] not in ("scale_up", "scale_down") or report.get("replayed") or report["dry_run"]:
            raise AirflowSkipException(f"{report['action']}: no change")
        change = {k: report[k] for k in ("instance", "mode", "action", "current_class", "target_class", "applied")}
        outlet_events[AUTOSCALE_CHANGE].extra = change
        return change

    notify(decide.output)
    publish_change(decide.output)
