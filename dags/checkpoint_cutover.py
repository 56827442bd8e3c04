"""checkpoint_cutover: move a live app from SQLite to PostgreSQL in steps, with health gates and a rollback."""

from __future__ import annotations

from airflow.sdk import DAG, Param, task

from checkpoint_ops.dag_defaults import lifecycle_dag
from checkpoint_ops.hooks import POSTGRES_CONN_ID, SQLITE_CONN_ID
from checkpoint_ops.operators.cutover import (
    MAX_STEPS,
    CutoverApprovalOperator,
    CutoverDecommissionOperator,
    CutoverPreflightOperator,
    CutoverPrepareOperator,
    CutoverRampOperator,
    CutoverReportOperator,
    CutoverRollbackOperator,
    CutoverSoakOperator,
)

DOC = """
### Blue-green cutover: SQLite (blue) -> PostgreSQL (green), thread by thread

Run it after `checkpoint_migration` has copied and verified the store, with the app already using
`RoutingSaver` (see the README's cutover runbook). Each thread lives in exactly one store at a time;
the routing lives in the target database, so every app process agrees, and both stores refuse a write
for a thread routed elsewhere, whatever an app process has cached.

1. **preflight** changes nothing: the connections, the steps, that a migration ran into the target, that
   the target holds no threads the source lacks, how far the target is behind (*max_delta_pct*), and how
   many threads each step will move.
2. **prepare** installs the routing tables and the guards (a trigger on PostgresSaver's tables, a fence
   table and triggers in the SQLite file) and registers every source thread as blue.
3. **ramp_N** routes *steps[N]*% of threads (by a stable hash of the thread id) to PostgreSQL. Threads
   move in batches of *batch_threads*: claimed, fenced in SQLite, copied whole and compared row by row,
   and routed green in one PostgreSQL transaction. A writer of a moving thread waits for that batch
   only; a move that dies is taken back after *lease_seconds*.
4. **soak_N** waits *soak_minutes* in the triggerer, checking every *check_every_seconds* the app's
   write error rate and P99 on PostgreSQL (Prometheus, `checkpoint_prometheus`) and that PostgreSQL
   answers. A breach fails it at once and **rollback_on_breach** moves every thread back.
5. **approve_N** (when *require_approval*): a person approves the next step in the UI (Reject stops the
   ramp where it is).
6. **decommission** (after 100%): the SQLite file is backed up to the artifacts root with the backup
   DAG's manifest, the guards are dropped, and the file is left read-only and fenced (deleted only with
   *delete_source*).
7. **report**: what each step did and where every thread is, in the log, XCom,
   `reports/checkpoint_cutover/<run_id>/cutover.json` and the `checkpoint_cutover_*` gauges.

**rollback** (a run with *rollback* ticked, or a breach) moves every thread back to SQLite with every
checkpoint it wrote in PostgreSQL, rebuilt byte for byte as SqliteSaver rows. Every task can be retried
or cleared: each reads the routing state and does only what is left. **dry_run** runs preflight only.
"""

with DAG(
    dag_id="checkpoint_cutover",
    description="Manual: ramp a live app from SQLite to PostgreSQL (10 -> 50 -> 100%), soak with health gates, "
                "roll back on a breach, decommission SQLite.",
    doc_md=DOC,
    schedule=None,
    **lifecycle_dag("cutover"),
    params={
        "source": Param(SQLITE_CONN_ID, type="string", pattern=r"^[A-Za-z0-9_.-]+$", title="Source (SQLite connection)",
                        description="The sqlite connection of the file the app writes today (the blue store)."),
        "target": Param(POSTGRES_CONN_ID, type="string", pattern=r"^[A-Za-z0-9_.-]+$",
                        title="Target (PostgreSQL connection)",
                        description="The postgres connection checkpoint_migration migrated into (the green store); "
                                    "it also holds the routing state."),
        "steps": Param([10, 50, 100], type="array", items={"type": "integer", "minimum": 1, "maximum": 100},
                       minItems=1, maxItems=MAX_STEPS, title="Steps (% of threads on PostgreSQL)",
                       description=f"Increasing percentages ending at 100, at most {MAX_STEPS}. Each step moves "
                                   "the threads whose hash falls below it."),
        "soak_minutes": Param(60, type="number", minimum=0, title="Soak between steps (minutes)",
                              description="How long each step runs, health-checked, before the next. 0: no wait."),
        "check_every_seconds": Param(30, type="number", minimum=1, title="Health check every (seconds)",
                                     description="The soak checks Prometheus and PostgreSQL this often; each check "
                                                 "judges the window since the last one."),
        "error_rate_pct": Param(None, type=["null", "number"], minimum=0, title="Error rate limit (%)",
                                description="Write errors / writes on PostgreSQL above which a soak fails. Empty: the "
                                            "health check's error_rate_pct (checkpoint_health_config, default 1.0)."),
        "p99_ms": Param(500, type="number", minimum=0, title="P99 write latency limit (ms)",
                        description="The app's P99 write latency on PostgreSQL above which a soak fails (the health "
                                    "check has no latency threshold of its own)."),
        "require_approval": Param(False, type="boolean", title="Require approval between steps",
                                  description="A person approves each next step in the UI (Required actions)."),
        "rollback": Param(False, type="boolean", title="Roll back now",
                          description="Move every thread back to SQLite with what it wrote in PostgreSQL; no ramp."),
        "batch_threads": Param(20, type="integer", minimum=1, maximum=5000, title="Threads per move",
                               description="Threads moved together; a writer of one of them waits for the batch."),
        "lease_seconds": Param(30, type="number", minimum=1, title="Move lease (seconds)",
                               description="A move that has not committed by then (its task died) is taken back."),
        "max_delta_pct": Param(10, type="number", minimum=0, maximum=100, title="Largest catch-up delta (%)",
                               description="Preflight refuses to start when more of the source's threads than this "
                                           "changed since the migration; run its catch-up again first."),
        "delete_source": Param(False, type="boolean", title="Delete the SQLite file at the end",
                               description="Off: the file is kept read-only beside its backup. On: deleted after "
                                           "the backup."),
        "dry_run": Param(False, type="boolean", title="Dry run",
                         description="Preflight and the plan of each step only; nothing changes."),
    },
) as dag:
    common = {
        "source_conn_id": "{{ params.source }}",
        "target_conn_id": "{{ params.target }}",
        "batch_threads": "{{ params.batch_threads }}",
        "lease_seconds": "{{ params.lease_seconds }}",
    }
    preflight = CutoverPreflightOperator(task_id="preflight", steps="{{ params.steps }}",
                                         max_delta_pct="{{ params.max_delta_pct }}", dry_run="{{ params.dry_run }}",
                                         **common)

    @task.branch(task_id="mode")
    def mode(params=None) -> str | None:
        """Dry run: stop here; rollback: straight to it; otherwise the ramp."""
        if params["dry_run"]:
            return "report"
        return "rollback_now" if params["rollback"] else "prepare"

    prepare = CutoverPrepareOperator(task_id="prepare", **common)
    rollback_now = CutoverRollbackOperator(task_id="rollback_now", **common)
    branch = mode()
    preflight >> branch >> [prepare, rollback_now]

    previous, soaks, tail = prepare, [], []
    for i in range(MAX_STEPS):
        ramp = CutoverRampOperator(task_id=f"ramp_{i + 1}", index=i, steps="{{ params.steps }}", **common)
        previous >> ramp
        previous = ramp
        if i < MAX_STEPS - 1:
            soak = CutoverSoakOperator(
                task_id=f"soak_{i + 1}", index=i, steps="{{ params.steps }}", soak_minutes="{{ params.soak_minutes }}",
                every_seconds="{{ params.check_every_seconds }}", error_rate_pct="{{ params.error_rate_pct }}",
                p99_ms="{{ params.p99_ms }}", configured="{{ var.value.get('checkpoint_health_config', '') }}",
                **common)
            approve = CutoverApprovalOperator(task_id=f"approve_{i + 1}", index=i, steps="{{ params.steps }}",
                                              required="{{ params.require_approval }}")
            ramp >> soak >> approve
            previous = approve
            soaks.append(soak)
    # A ramp step past the last is skipped; the next one must still run after it.
    for i in range(1, MAX_STEPS):
        dag.get_task(f"ramp_{i + 1}").trigger_rule = "none_failed"
        if i < MAX_STEPS - 1:
            dag.get_task(f"soak_{i + 1}").trigger_rule = "none_failed"
            dag.get_task(f"approve_{i + 1}").trigger_rule = "none_failed"
    decommission = CutoverDecommissionOperator(task_id="decommission", delete_source="{{ params.delete_source }}",
                                               trigger_rule="none_failed", **common)
    previous >> decommission
    rollback_on_breach = CutoverRollbackOperator(task_id="rollback_on_breach", trigger_rule="one_failed", **common)
    soaks >> rollback_on_breach
    report = CutoverReportOperator(task_id="report", trigger_rule="all_done", **common)
    [decommission, rollback_on_breach, rollback_now, preflight, branch] >> report

    @task(task_id="run_outcome", trigger_rule="one_failed")
    def run_outcome() -> None:
        """Fails the run when any task failed (report runs regardless, so it cannot be the leaf that decides)."""
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException("a cutover task failed: its log names the cause; every thread is readable and "
                                   "writable in exactly one store (the report says which)")

    [preflight, prepare, rollback_now, decommission, rollback_on_breach, *soaks,
     *[dag.get_task(f"ramp_{i + 1}") for i in range(MAX_STEPS)]] >> run_outcome()
