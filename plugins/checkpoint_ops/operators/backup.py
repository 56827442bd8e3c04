"""Backups of checkpoint stores into the artifacts root, their retention, and restore drills."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import Context

from checkpoint_ops.locations import backup_folder
from checkpoint_ops.operators.base import CheckpointOpsOperator, as_bool


class CheckpointBackupOperator(CheckpointOpsOperator):
    """Back one store up (``pg_dump -Fc`` on one snapshot / SQLite online backup) with a manifest.

    The backup id is the run id, so a retried or cleared task redoes an unfinished backup and
    returns the manifest of a finished one instead of taking a second.
    """

    template_fields: Sequence[str] = ("checkpoint_conn_id", "backup_id", "canary")

    def __init__(self, *, checkpoint_conn_id: str, backup_id: str = "{{ run_id }}", canary: bool | str = True,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.checkpoint_conn_id = checkpoint_conn_id
        self.backup_id = backup_id
        self.canary = canary

    def run(self, context: Context) -> dict[str, Any]:
        from checkpoint_ops.artifacts import safe_key
        from include.checkpoint_core.backup import BackupExists, take_backup
        from include.checkpoint_core.backup.layout import read_manifest

        folder = backup_folder(self.checkpoint_conn_id)
        backup_id = safe_key(str(self.backup_id))
        try:
            manifest = take_backup(self.store_target(self.checkpoint_conn_id), folder, backup_id=backup_id,
                                   canary=as_bool(self.canary), log=self.log.info)
        except BackupExists:
            self.log.info("Backup %s is already complete; returning its manifest.", backup_id)
            manifest = read_manifest(folder / backup_id)
        return {"conn_id": self.checkpoint_conn_id, "folder": str(folder), **manifest}


class CheckpointBackupRetentionOperator(CheckpointOpsOperator):
    """Keep N daily and M weekly backups of one store; never the last good one."""

    template_fields: Sequence[str] = ("checkpoint_conn_id", "keep_daily", "keep_weekly", "dry_run")

    def __init__(self, *, checkpoint_conn_id: str, keep_daily: int | str = 7, keep_weekly: int | str = 4,
                 dry_run: bool | str = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.checkpoint_conn_id = checkpoint_conn_id
        self.keep_daily = keep_daily
        self.keep_weekly = keep_weekly
        self.dry_run = dry_run

    def run(self, context: Context) -> dict[str, Any]:
        from include.checkpoint_core.backup import apply_retention

        result = apply_retention(backup_folder(self.checkpoint_conn_id), keep_daily=int(self.keep_daily),
                                 keep_weekly=int(self.keep_weekly), dry_run=as_bool(self.dry_run), log=self.log.info)
        return {"conn_id": self.checkpoint_conn_id, **result}


class CheckpointRestoreDrillOperator(CheckpointOpsOperator):
    """Restore a store's backup into a scratch database, prove it, drop it, and report the RTO.

    PostgreSQL scratch databases are created through ``scratch_conn_id`` (default: the store's
    own connection), which needs CREATEDB. A failed drill fails the task without retrying.
    """

    template_fields: Sequence[str] = ("checkpoint_conn_id", "scratch_conn_id", "min_age_hours", "backup_id",
                                      "sample_threads")

    def __init__(self, *, checkpoint_conn_id: str, scratch_conn_id: str = "", min_age_hours: float | str = 24,
                 backup_id: str = "", sample_threads: int | str = 5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.checkpoint_conn_id = checkpoint_conn_id
        self.scratch_conn_id = scratch_conn_id
        self.min_age_hours = min_age_hours
        self.backup_id = backup_id
        self.sample_threads = sample_threads

    def run(self, context: Context) -> dict[str, Any]:
        from checkpoint_ops.hooks import CheckpointStoreHook
        from checkpoint_ops.locations import offload_blob_store
        from include.checkpoint_core.backup import restore_drill

        admin = CheckpointStoreHook(self.scratch_conn_id or self.checkpoint_conn_id).get_target()
        report = restore_drill(
            backup_folder(self.checkpoint_conn_id),
            admin_dsn=admin.location if admin.kind == "postgres" else None,
            min_age_hours=float(self.min_age_hours),
            backup_id=str(self.backup_id) if self.backup_id else None,
            sample_threads=int(self.sample_threads),
            log=self.log.info,
            blobs=offload_blob_store(),  # a backup of offloaded values is only whole with its blobs
        )
        rto = report.get("rto_s", {})
        self.log.info("Drill of %s passed: backup %s restored and verified; RTO %ss (%s)", self.checkpoint_conn_id,
                      report["backup_id"], rto.get("total"), ", ".join(f"{k} {v}s" for k, v in rto.items() if k != "total"))
        return {"conn_id": self.checkpoint_conn_id, **report}
