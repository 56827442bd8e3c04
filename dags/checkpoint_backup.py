"""checkpoint_backup: a daily, verified-on-write backup of every checkpoint store, with retention."""

from __future__ import annotations

from airflow.sdk import DAG, Param, task

from checkpoint_ops.dag_defaults import lifecycle_dag, resolve_stores, stores_param
from checkpoint_ops.operators.backup import CheckpointBackupOperator, CheckpointBackupRetentionOperator

DOC = """
### Back up checkpoint stores

Daily (02:00 UTC, before pruning) backup of every store into the artifacts root
(`backups/<conn id>/<run id>/`; a local folder by default, S3 when `checkpoint_artifacts_url` is an
`s3://checkpoint_artifacts@bucket/prefix` URL).

* **PostgreSQL**: a canary row is committed (`checkpoint_ops_canary`, checked by the restore drill), then
  `pg_dump -Fc` dumps one exported snapshot while the same snapshot is counted and checksummed, so the
  manifest describes exactly the dump. The password reaches pg_dump through a private passfile.
* **SQLite**: SQLite's online backup API; the app keeps writing meanwhile.
* **Manifest** (written last; a folder without one is an unfinished backup): sha256, size, rows and content
  checksums per table, LangGraph schema versions, the canary, the source (never a password).
* **Retention**: the newest backup of each of the last *keep_daily* days and *keep_weekly* ISO weeks is kept,
  and always the newest complete backup and the newest one a drill proved; unfinished backups go after a day.

The backup id is the run id: a retried or cleared task redoes an unfinished backup and leaves a finished one
as it is. `checkpoint_restore_drill` proves the backups restore.
"""

with DAG(
    dag_id="checkpoint_backup",
    description="Daily backups of LangGraph checkpoint stores (pg_dump / SQLite online backup) with manifests and retention.",
    doc_md=DOC,
    schedule="0 2 * * *",
    **lifecycle_dag("backup"),
    params={
        "stores": stores_param("back up"),
        "keep_daily": Param(7, type="integer", minimum=1, maximum=366, title="Keep daily backups",
                            description="The newest backup of each of this many most recent days is kept."),
        "keep_weekly": Param(4, type="integer", minimum=0, maximum=520, title="Keep weekly backups",
                             description="The newest backup of each of this many most recent ISO weeks is kept."),
        "canary": Param(True, type="boolean", title="Write a canary row (PostgreSQL)",
                        description="Commit a known row before the dump; the restore drill checks it came back."),
    },
) as dag:

    stores = resolve_stores()
    backup = CheckpointBackupOperator.partial(
        task_id="backup", canary="{{ params.canary }}", map_index_template="{{ task.checkpoint_conn_id }}",
    ).expand(checkpoint_conn_id=stores)
    retention = CheckpointBackupRetentionOperator.partial(
        task_id="retention", keep_daily="{{ params.keep_daily }}", keep_weekly="{{ params.keep_weekly }}",
        map_index_template="{{ task.checkpoint_conn_id }}",
    ).expand(checkpoint_conn_id=stores)

    @task(task_id="report")
    def report(backups, retained, dag_run=None) -> dict:
        """One line per store in the log; the summary in XCom and the artifacts."""
        from checkpoint_ops.artifacts import write_report

        backups, retained = list(backups), {r["conn_id"]: r for r in retained}
        for b in backups:
            r = retained.get(b["conn_id"], {})
            print(f"{b['conn_id']:<24} {b['kind']:<8} backup {b['backup_id']}: {b.get('size_bytes', 0):,} bytes, "
                  f"sha256 {b.get('sha256', '')[:12]}…, rows {b.get('rows')}; kept {len(r.get('kept', []))}, "
                  f"deleted {len(r.get('deleted', []))}")
        summary = {"backups": backups, "retention": list(retained.values())}
        summary["artifact"] = write_report(dag_run.dag_id, dag_run.run_id, "backup", summary)
        return summary

    backup >> retention
    report(backup.output, retention.output)
