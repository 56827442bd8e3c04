"""checkpoint_restore_drill: prove every week that the backups restore, and how long it takes."""

from __future__ import annotations

from airflow.sdk import DAG, Param, task

from checkpoint_ops.dag_defaults import lifecycle_dag, resolve_stores, stores_param
from checkpoint_ops.operators.backup import CheckpointRestoreDrillOperator

DOC = """
### Restore drill

Weekly (Sunday 04:00 UTC). For every store, takes the newest backup that is at least *min_age_hours* old
(or *backup_id*), and:

1. checks its sha256 while downloading it;
2. restores it into a scratch database with a unique name (`checkpoint_ops_drill_<id>`, created through
   *scratch_conn_id*, which needs CREATEDB; a SQLite backup into a scratch file) and **always** drops it
   afterwards, also when the drill fails;
3. verifies the restore: row counts and content checksums equal the manifest, the canary row written before
   the backup is there, and *sample_threads* threads load through PostgresSaver / SqliteSaver;
4. records the RTO: download + restore + verify seconds, in the log, XCom and `drill.json` next to the backup.

A drill that fails fails the task loudly, without retrying, naming every mismatch.
"""

with DAG(
    dag_id="checkpoint_restore_drill",
    description="Weekly restore drill: restore the newest backup into a scratch database, verify it, report the RTO.",
    doc_md=DOC,
    schedule="0 4 * * 0",
    **lifecycle_dag("backup"),
    params={
        "stores": stores_param("drill"),
        "min_age_hours": Param(24, type="number", minimum=0, title="Minimum backup age (hours)",
                               description="Drill the newest backup at least this old."),
        "backup_id": Param(None, type=["null", "string"], pattern=r"^[A-Za-z0-9._-]*$", title="Backup id",
                           description="Drill this backup instead of the newest old enough one. Empty: choose."),
        "sample_threads": Param(5, type="integer", minimum=0, maximum=1000, title="Threads to load",
                                description="How many threads of the restore to load through the LangGraph saver."),
        "scratch_conn_id": Param(None, type=["null", "string"], pattern=r"^[A-Za-z0-9_.-]*$", title="Scratch connection",
                                 description="PostgreSQL connection allowed to CREATE DATABASE for the scratch copy. "
                                 "Empty: the store's own connection."),
    },
) as dag:

    drill = CheckpointRestoreDrillOperator.partial(
        task_id="drill",
        scratch_conn_id="{{ params.scratch_conn_id }}",
        min_age_hours="{{ params.min_age_hours }}",
        backup_id="{{ params.backup_id }}",
        sample_threads="{{ params.sample_threads }}",
        map_index_template="{{ task.checkpoint_conn_id }}",
    ).expand(checkpoint_conn_id=resolve_stores())

    @task(task_id="report")
    def report(drills, dag_run=None) -> dict:
        """The RTO per store in the log; the summary in XCom and the artifacts."""
        from checkpoint_ops.artifacts import write_report

        drills = list(drills)
        for d in drills:
            print(f"{d['conn_id']:<24} backup {d['backup_id']} ({d['age_hours']} h old): "
                  f"{'PASSED' if d['passed'] else 'FAILED'}; RTO {d['rto_s']}")
        summary = {"drills": drills, "passed": all(d["passed"] for d in drills)}
        summary["artifact"] = write_report(dag_run.dag_id, dag_run.run_id, "drill", summary)
        return summary

    report(drill.output)
