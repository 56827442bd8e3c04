"""checkpoint_migration: move a live SQLite checkpoint DB into PostgreSQL, verified, resumable."""

from __future__ import annotations

from airflow.sdk import DAG, Param, task

from checkpoint_ops.dag_defaults import lifecycle_dag
from checkpoint_ops.hooks import POSTGRES_CONN_ID, SQLITE_CONN_ID
from checkpoint_ops.operators.migration import (
    MigrationCatchUpOperator,
    MigrationExportOperator,
    MigrationImportOperator,
    MigrationPlanVerifyOperator,
    MigrationPreflightOperator,
    MigrationSettleRejectsOperator,
    MigrationSnapshotOperator,
    MigrationVerifyOperator,
    MigrationVerifyThreadsOperator,
)

DOC = """
### Migrate SQLite checkpoints to PostgreSQL

Moves every thread, checkpoint, pending write and store item of a **live** SqliteSaver file into
a PostgresSaver / PostgresStore database, the way PostgresSaver itself would have written them,
then proves it.

1. **preflight**: the source must be a LangGraph SQLite checkpoint DB (older layouts accepted), pass
   an integrity check, and is only ever opened read-only. The target must be reachable; its schema is
   set up. Rows PostgreSQL cannot hold are found, and a target that already holds the same checkpoint
   ids with other content stops the run, naming the rows. Prints counts, sizes and an estimate.
2. **snapshot**: a consistent copy (SQLite online backup) while the app keeps writing, with watermarks.
3. **export**: batch files of *batch_size* rows with a sha256 manifest under the artifacts root
   (`migrations/<run_id>/`; local folder by default, S3 through `checkpoint_artifacts`).
4. **import_batches**: mapped over groups of batches. Serialised bytes are transcoded, never rebuilt
   into application objects; each batch is one transaction recorded in the target, so a retried or
   cleared task skips what committed. Progress (rows, rows/s, ETA) in the log.
5. **settle_rejects**: a thread with a row PostgreSQL cannot hold is rejected **whole**: its rows
   are taken out of the target (only rows the source holds: nothing else is touched) and all of them,
   bytes as they are, go to `rejected-threads.sqlite` (the source's layout) to repair and migrate as a
   new run's source. With *repair_nul*, NUL in metadata strings becomes U+FFFD instead, row by row in
   the report.
6. **plan_verify → verify_threads → verify**: content checksums of every row (*full*, mapped over
   groups of *verify_threads_per_task* threads so workers compare in parallel) or of *sample_threads*
   threads (*sample*); then per-table counts, and CheckpointTuples read through SqliteSaver and
   PostgresSaver compared; rejected threads are counted apart and must be wholly absent. A mismatch
   fails the task and names the rows.
7. **catch_up**: copies what the app wrote after the snapshot, until nothing new is left.
8. **report**: a pgloader-style table, the verification result and `rejected.jsonl`, in the log,
   XCom and `migrations/<run_id>/report.json`.

With **dry_run** only preflight runs and nothing is written anywhere. Re-running the DAG against an
already migrated target changes nothing and verifies again.
"""

with DAG(
    dag_id="checkpoint_migration",
    description="SQLite -> PostgreSQL checkpoint migration: preflight, snapshot, export, import, verify, catch-up, report.",
    doc_md=DOC,
    schedule=None,
    **lifecycle_dag("migration"),
    params={
        "source": Param(SQLITE_CONN_ID, type="string", minLength=1, title="Source (SQLite)",
                        description="A sqlite connection id, a path to the checkpoint file, or a sqlite:/// URI. "
                                    "It is only ever opened read-only."),
        "target": Param(POSTGRES_CONN_ID, type="string", pattern=r"^[A-Za-z0-9_.-]+$", title="Target connection",
                        description="The postgres connection id of the PostgresSaver database to migrate into."),
        "batch_size": Param(1000, type="integer", minimum=100, maximum=50000, title="Batch size (rows)",
                            description="Rows per batch file and per import transaction."),
        "batches_per_task": Param(20, type="integer", minimum=1, maximum=10000, title="Batches per import task",
                                  description="How many batches one mapped import task instance loads; a failed "
                                              "group is retried on its own."),
        "verify_mode": Param("sample", type="string", enum=["sample", "full"], title="Verify mode",
                             description="'sample': checksums of N sampled threads; 'full': every checkpoint, write "
                                         "and blob. CheckpointTuples of sampled threads are compared in both modes."),
        "sample_threads": Param(10, type="integer", minimum=1, maximum=100000, title="Threads to sample",
                                description="How many threads verify samples."),
        "verify_threads_per_task": Param(500, type="integer", minimum=1, maximum=1000000,
                                         title="Threads per verify task",
                                         description="Full verify is mapped over groups of this many threads, so "
                                                     "workers compare in parallel; a failed group is retried on its own."),
        "include_store": Param(True, type="boolean", title="Include store items",
                               description="Also migrate SqliteStore items into PostgresStore."),
        "dry_run": Param(False, type="boolean", title="Dry run",
                         description="Plan only: counts, sizes, estimated time and problems found. Writes nothing."),
        "on_reject": Param("reject", type="string", enum=["reject", "fail"], title="Rows PostgreSQL cannot hold",
                           description="'reject': reject the threads holding such rows whole (every row kept in "
                                       "rejected-threads.sqlite, reasons in rejected.jsonl) and migrate everything else; "
                                       "'fail': stop before writing anything."),
        "repair_nul": Param(False, type="boolean", title="Repair NUL in metadata",
                            description="Replace NUL (U+0000) inside checkpoint metadata strings, which PostgreSQL's "
                                        "jsonb cannot hold, with U+FFFD, the same way for every row; each repaired row "
                                        "is listed in repaired.jsonl. Off: such threads are rejected whole."),
    },
) as dag:
    common = {
        "source": "{{ params.source }}",
        "target": "{{ params.target }}",
        "include_store": "{{ params.include_store }}",
    }

    preflight = MigrationPreflightOperator(
        task_id="preflight", on_reject="{{ params.on_reject }}", repair_nul="{{ params.repair_nul }}",
        dry_run="{{ params.dry_run }}", **common
    )

    @task.short_circuit(task_id="unless_dry_run", ignore_downstream_trigger_rules=False)
    def unless_dry_run(params=None) -> bool:
        """Stop here on a dry run (the report still runs and shows the plan)."""
        return not params["dry_run"]

    snapshot = MigrationSnapshotOperator(task_id="snapshot", **common)
    export = MigrationExportOperator(task_id="export", batch_size="{{ params.batch_size }}",
                                     repair_nul="{{ params.repair_nul }}", **common)

    @task(task_id="plan_import")
    def plan_import(params=None, dag_run=None) -> list[list[dict]]:
        """Split the exported batches into groups, one mapped import task each."""
        from checkpoint_ops.operators.migration import import_groups

        return import_groups(dag_run.run_id, params["batches_per_task"])

    groups = plan_import()
    import_batches = MigrationImportOperator.partial(
        task_id="import_batches", on_reject="{{ params.on_reject }}", **common
    ).expand(group=groups)
    settle_rejects = MigrationSettleRejectsOperator(task_id="settle_rejects", **common)
    verify_common = {"verify_mode": "{{ params.verify_mode }}", "sample_threads": "{{ params.sample_threads }}", **common}
    plan_verify = MigrationPlanVerifyOperator(task_id="plan_verify", threads_per_task="{{ params.verify_threads_per_task }}",
                                              **verify_common)
    verify_threads = MigrationVerifyThreadsOperator.partial(task_id="verify_threads", **verify_common).expand(
        group=plan_verify.output)
    verify = MigrationVerifyOperator(task_id="verify", **verify_common)
    catch_up = MigrationCatchUpOperator(task_id="catch_up", on_reject="{{ params.on_reject }}", **common)

    @task(task_id="report", trigger_rule="all_done", multiple_outputs=False)
    def report(params=None, ti=None, dag_run=None) -> dict:
        """Summary table, verification and rejects: logged, returned, and stored with the run."""
        from checkpoint_ops.operators.migration_report import build_and_store_report

        return build_and_store_report(ti, dag_run, params)

    gate = unless_dry_run()
    preflight >> gate >> snapshot >> export >> groups
    import_batches >> settle_rejects >> plan_verify
    verify_threads >> verify >> catch_up >> report()
