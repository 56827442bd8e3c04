"""checkpoint_health: every 15 minutes, measure a checkpoint store and decide whether to migrate."""

from __future__ import annotations

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import DAG, Asset, Param, task

from checkpoint_ops.dag_defaults import lifecycle_dag
from checkpoint_ops.notifiers import CheckpointHealthNotifier
from checkpoint_ops.operators.health import CheckpointHealthOperator

# Updated only when a store's decision changes: schedule other DAGs on it (a capacity review,
# a migration rehearsal) instead of polling the history.
HEALTH_DECISION = Asset(name="checkpoint_health_decision", uri="checkpoint-health-decision")
# Swap in or add any Airflow notifier (SlackNotifier, SmtpNotifier, ...): each is called with the
# task context plus ``checkpoint_health`` (the report) on MIGRATE NOW and on new anomalies.
NOTIFIERS = [CheckpointHealthNotifier()]

DOC = """
### Checkpoint store health and the migrate-now decision

Every 15 minutes, for one store (*store*; by default `checkpoints_sqlite`):

* **Prometheus** (http connection `checkpoint_prometheus`, the server's URL as host): write attempts,
  errors and P99 latency from the app's `MeteredSaver` metrics, over the last *window_minutes*, and the
  error rate over the *baseline_minutes* before that.
* **The store**: SQLite file size with its WAL (PostgreSQL: the checkpoint tables), writes/s from the
  checkpoint ids (the higher of this and Prometheus's figure is used), and, at most every
  *full_scan_every_minutes* (60), the thread count and the largest checkpoints (they read every row).

| condition | decision |
|---|---|
| write error rate > *error_rate_pct* (1%), from at least *min_errors* (3) failed writes | MIGRATE NOW |
| > *writes_per_second* (100) writes/s over the window | MIGRATE NOW |
| *app_servers* > *max_app_servers* (1) | MIGRATE NOW |
| SQLite file > *sqlite_size_gb* (5 GiB) | MIGRATE SOON |
| otherwise | SQLite sufficient |

Anomalies (alerted whatever the decision): a checkpoint over *checkpoint_mb* (5 MiB), an error rate over
*error_spike_factor* × its baseline and over *error_spike_floor_pct*. An input that cannot be measured is
listed under "decided without" and its rows are not evaluated.

Settings come from the defaults, then the Variable `checkpoint_health_config` (a JSON object with the
same keys as the params below, for scheduled runs), then this form (empty = as configured).

The **evaluate** task logs the decision with its numbers, keeps a row per run in
`checkpoint_ops_health_history` (in the store; a retried or cleared run keeps its first evaluation),
returns the report (XCom) and pushes gauges to the Pushgateway of the http connection
`checkpoint_pushgateway` when defined. **publish_change** updates the `checkpoint_health_decision` Asset
when the decision changed. **alert** calls the notifiers (the log, and a webhook when the http connection
`checkpoint_alerts` is defined) when the decision turns to MIGRATE NOW or a new anomaly appears.
**mark_delivered** then marks the run: "changed" is measured against the last delivered run, so an alert
that failed is sent again by the next run. With *auto_migrate* on, **trigger_migration** starts
`checkpoint_migration` from this store into *migration_target*, once per store (run id
`auto__checkpoint_health__<store>`).
"""


def _number(title: str, description: str, **schema) -> Param:
    return Param(None, type=["null", "number"], **{"minimum": 0, **schema}, title=title, description=description)


with DAG(
    dag_id="checkpoint_health",
    description="Watch a checkpoint store (Prometheus + the store itself) and decide when to migrate to PostgreSQL.",
    doc_md=DOC,
    schedule="*/15 * * * *",
    **lifecycle_dag("health"),
    params={
        "store": Param(
            None, type=["null", "string"], pattern=r"^[A-Za-z0-9_.-]*$", title="Checkpoint store",
            description="Connection id of the store to evaluate. Empty: checkpoints_sqlite, or else the first "
            "defined store connection.",
        ),
        "auto_migrate": Param(
            "as configured", type="string", enum=["as configured", "on", "off"], title="Auto-migrate",
            description="Trigger checkpoint_migration on MIGRATE NOW (once per store). 'as configured': the "
            "checkpoint_health_config Variable's auto_migrate (off unless set there).",
        ),
        "migration_target": Param(
            None, type=["null", "string"], pattern=r"^[A-Za-z0-9_.-]+$", title="Migration target",
            description="The postgres connection auto_migrate migrates into. Empty: as configured (checkpoints_postgres).",
        ),
        "app_servers": Param(
            None, type=["null", "integer"], minimum=1, title="App servers",
            description="How many app servers write this store. More than max_app_servers means MIGRATE NOW. "
            "Empty: as configured (1).",
        ),
        "error_rate_pct": _number("Error rate threshold (%)", "MIGRATE NOW above this write error rate. Default 1."),
        "writes_per_second": _number("Writes/s threshold", "MIGRATE NOW above this many writes/s over the window. "
                                     "Default 100."),
        "max_app_servers": Param(None, type=["null", "integer"], minimum=1, title="Max app servers on SQLite",
                                 description="MIGRATE NOW when more app servers than this write the store. Default 1."),
        "sqlite_size_gb": _number("SQLite size threshold (GiB)", "MIGRATE SOON above this file size (with WAL). Default 5."),
        "checkpoint_mb": _number("Large checkpoint (MiB)", "Anomaly: a checkpoint larger than this. Default 5.",
                                 exclusiveMinimum=0),
        "min_errors": Param(None, type=["null", "integer"], minimum=1, title="Minimum failed writes",
                            description="The error-rate rules need at least this many failed writes in the window. "
                            "Default 3."),
        "error_spike_factor": _number("Error spike factor", "Anomaly: error rate above this many times its baseline. "
                                      "Default 3."),
        "error_spike_floor_pct": _number("Error spike floor (%)", "...and above this error rate. Default 0.1."),
        "window_minutes": _number("Window (minutes)", "How far back rates are measured. Default 15 (the schedule).",
                                  **{"minimum": 1, "maximum": 10080}),
        "baseline_minutes": _number("Baseline (minutes)", "The error-rate baseline before the window. Default 60.",
                                    **{"minimum": 1, "maximum": 10080}),
        "largest_top_n": Param(None, type=["null", "integer"], minimum=0, title="Largest checkpoints listed",
                               description="How many of the largest checkpoints to report (0 skips the scan). Default 5."),
        "prometheus_selector": Param(
            None, type=["null", "string"], title="Prometheus label matchers",
            description='Extra matchers for this app\'s series, e.g. job="agent". Empty: as configured (none).',
        ),
    },
) as dag:

    @task(task_id="resolve_store")
    def resolve_store(params=None) -> str:
        from checkpoint_ops.hooks import KNOWN_STORE_CONN_IDS, SQLITE_CONN_ID, resolve_store_conn_ids

        defined = resolve_store_conn_ids([params["store"]] if params["store"] else [], tuple(KNOWN_STORE_CONN_IDS),
                                         param="store")
        return SQLITE_CONN_ID if SQLITE_CONN_ID in defined else defined[0]

    store = resolve_store()

    evaluate = CheckpointHealthOperator(
        task_id="evaluate",
        checkpoint_conn_id=store,
        # The raw text: a Variable that is not JSON must fail the run, not read as "no settings".
        configured="{{ var.value.get('checkpoint_health_config', '') }}",
        overrides={"auto_migrate": "{{ {'on': True, 'off': False}.get(params.auto_migrate) }}"} | {
            key: "{{ params.%s }}" % key for key in (
            "migration_target", "app_servers", "error_rate_pct", "writes_per_second",
            "max_app_servers", "sqlite_size_gb", "checkpoint_mb", "error_spike_factor", "error_spike_floor_pct",
            "min_errors", "window_minutes", "baseline_minutes", "largest_top_n", "prometheus_selector",
        )},
    )

    @task(task_id="publish_change", outlets=[HEALTH_DECISION])
    def publish_change(report: dict, outlet_events=None) -> dict:
        """An Asset event only when the decision changed (a skipped task emits none)."""
        from airflow.sdk.exceptions import AirflowSkipException

        if report["delivered"]:
            raise AirflowSkipException("this run's change was published already (a cleared task)")
        if report["changed"] is None:
            raise AirflowSkipException(f"no history ({report['history']}): a change cannot be told apart")
        if not report["changed"]:
            raise AirflowSkipException(f"{report['store']}: still {report['title']}")
        change = {"store": report["store"], "decision": report["decision"],
                  "previous_decision": report["previous_decision"], "reasons": report["reasons"]}
        outlet_events[HEALTH_DECISION].extra = change
        return change

    @task(task_id="alert")
    def alert(report: dict, **context) -> list[str]:
        """Notify on a new MIGRATE NOW and on anomalies the previous delivered run did not have.
        Every notifier gets its chance; the task fails (and retries) if any of them failed."""
        import copy

        from airflow.sdk.exceptions import AirflowSkipException

        if report["delivered"]:
            raise AirflowSkipException("this run's alerts went out already (a cleared task)")
        why = [a["kind"] for a in report["new_anomalies"]]
        if report["decision"] == "migrate_now" and report["changed"] is not False:
            why.insert(0, "migrate_now")
        if not why:
            raise AirflowSkipException("nothing new to alert on")
        failed = []
        for notifier in NOTIFIERS:
            try:
                copy.deepcopy(notifier)({**context, "checkpoint_health": report})  # rendering mutates it
            except Exception as exc:  # noqa: BLE001 - the others still get their chance
                failed.append(f"{type(notifier).__name__}: {exc}")
        if failed:
            raise RuntimeError("alert not delivered by " + "; ".join(failed))
        return why

    @task(task_id="mark_delivered", trigger_rule="none_failed")
    def mark_delivered(report: dict, run_id=None) -> bool:
        """Once the Asset event and alerts are out, the next runs compare with this one."""
        from datetime import datetime, timezone

        from checkpoint_ops.hooks import CheckpointStoreHook
        from include.checkpoint_core.health.history import mark_delivered

        if report["history"] != "recorded":
            print(f"nothing to mark: {report['history']}")
            return False
        target = CheckpointStoreHook(report["store"]).get_target()
        return mark_delivered(target, run_id=run_id, at=datetime.now(timezone.utc))

    @task.short_circuit(task_id="should_migrate")
    def should_migrate(report: dict) -> dict | None:
        """The migration's conf when it should run; nothing (skip) otherwise."""
        if report["decision"] != "migrate_now":
            return None
        if not report["auto_migrate"]:
            print("MIGRATE NOW, but auto_migrate is off: trigger checkpoint_migration yourself (dry_run first).")
            return None
        return {"source": report["store"], "target": report["migration_target"]}

    migrate = should_migrate(evaluate.output)
    trigger = TriggerDagRunOperator(
        task_id="trigger_migration",
        trigger_dag_id="checkpoint_migration",
        trigger_run_id="auto__checkpoint_health__{{ ti.xcom_pull(task_ids='evaluate')['store'] }}",
        conf=migrate,
        skip_when_already_exists=True,
        wait_for_completion=False,
    )

    [publish_change(evaluate.output), alert(evaluate.output)] >> mark_delivered(evaluate.output)
    migrate >> trigger
