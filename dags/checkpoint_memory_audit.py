"""checkpoint_memory_audit: daily, how each store splits state between checkpoints and the Store."""

from __future__ import annotations

from airflow.sdk import DAG, Param, task

from checkpoint_ops.dag_defaults import lifecycle_dag, resolve_stores, stores_param
from checkpoint_ops.operators.memory_audit import CheckpointMemoryAuditOperator, MemoryAuditNotifier

# Swap in or add any Airflow notifier: each is called with the task context plus ``memory_audit``
# (one store's report) when its share of oversized threads is over the threshold.
NOTIFIERS = [MemoryAuditNotifier()]

DOC = """
### Hybrid-memory audit: checkpoints vs the Store

Checkpoints are reloaded on every turn and copied by every lifecycle job; facts that outlive a
thread belong in the LangGraph Store (any thread of the user reads them), bulky values in object
storage (`OffloadSerializer`). Daily (05:00 UTC), read-only, for each store in *stores*:

* **Checkpoints**: the size of each thread's latest root checkpoint (as the size audit counts it:
  SQLite row bytes; PostgreSQL row plus the blobs it references) as p50 / p95 / max, the threads
  over *oversized_kib* (10 KiB) and, for those, the bytes per channel (`messages`, tool artifacts, ...).
* **The Store**: items, bytes, vectors and the share with a TTL per namespace prefix (its first
  *namespace_depth* labels), and expired items not swept yet.

**audit** (one mapped instance per store) logs the tables and recommendations with their numbers,
returns the report (XCom), writes it to `reports/checkpoint_memory_audit/<run_id>/` under the
artifacts root and pushes gauges to the Pushgateway of `checkpoint_pushgateway` when defined (the
dashboard's Memory row). **alert** calls the notifiers (the log, and a POST to `checkpoint_alerts`
when defined) for every store whose share of oversized threads is over *alert_share_pct*.
Everything streams (server-side cursors on PostgreSQL); a retry measures again.
"""

with DAG(
    dag_id="checkpoint_memory_audit",
    description="Audit the split of agent state between checkpoints and the LangGraph Store, per store.",
    doc_md=DOC,
    schedule="0 5 * * *",
    **lifecycle_dag("memory"),
    params={
        "stores": stores_param("audit"),
        "oversized_kib": Param(
            10, type="number", exclusiveMinimum=0, title="Oversized checkpoint (KiB)",
            description="A thread whose latest checkpoint is over this size is oversized: its state should move "
            "to the Store or be offloaded.",
        ),
        "alert_share_pct": Param(
            5, type="number", minimum=0, maximum=100, title="Alert: oversized threads (%)",
            description="Alert when more than this share of a store's threads is oversized.",
        ),
        "namespace_depth": Param(
            1, type="integer", minimum=1, maximum=10, title="Store namespace depth",
            description="Store items are grouped by the first this many namespace labels (1: 'users', "
            "2: 'users.<user id>').",
        ),
        "list_limit": Param(
            20, type="integer", minimum=0, maximum=1000, title="Oversized threads listed",
            description="How many of the largest oversized threads to list with their channels (all are counted).",
        ),
    },
) as dag:

    stores = resolve_stores()

    audit = CheckpointMemoryAuditOperator.partial(
        task_id="audit",
        oversized_kib="{{ params.oversized_kib }}",
        alert_share_pct="{{ params.alert_share_pct }}",
        namespace_depth="{{ params.namespace_depth }}",
        list_limit="{{ params.list_limit }}",
        map_index_template="{{ task.checkpoint_conn_id }}",
    ).expand(checkpoint_conn_id=stores)

    @task(task_id="alert")
    def alert(reports, **context) -> list[str]:
        """Every notifier gets its chance for every alerting store; the task fails (and retries) if one failed."""
        import copy

        from airflow.sdk.exceptions import AirflowSkipException

        alerting = [r for r in reports if r["alert"]]
        if not alerting:
            raise AirflowSkipException("no store is over its oversized-thread threshold")
        failed = []
        for report in alerting:
            for notifier in NOTIFIERS:
                try:
                    copy.deepcopy(notifier)({**context, "memory_audit": report})
                except Exception as exc:  # noqa: BLE001 - the others still get their chance
                    failed.append(f"{report['conn_id']} via {type(notifier).__name__}: {exc}")
        if failed:
            raise RuntimeError("alert not delivered: " + "; ".join(failed))
        return [r["conn_id"] for r in alerting]

    alert(audit.output)
