"""Nightly retention and the size audit, one store per task instance."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import Context

from checkpoint_ops.locations import OFFLOAD_VARIABLE, backup_folder, offload_blob_store
from checkpoint_ops.operators.base import CheckpointOpsOperator, as_bool


class CheckpointPruneOperator(CheckpointOpsOperator):
    """Apply a retention policy to the store behind ``checkpoint_conn_id``.

    Each thread (PostgreSQL) or batch of threads (SQLite) is its own short transaction, so
    the app keeps writing, and a retried or cleared task simply finds less to do: running
    the same policy again deletes nothing more.
    """

    template_fields: Sequence[str] = (
        "checkpoint_conn_id", "retention_days", "strategy", "protect_interrupted",
        "max_threads", "batch_size", "dry_run", "vacuum",
    )

    def __init__(
        self,
        *,
        checkpoint_conn_id: str,
        retention_days: float | str = 30,
        strategy: str = "keep_latest",
        protect_interrupted: bool | str = True,
        max_threads: int | str = 10_000,
        batch_size: int | str = 100,
        dry_run: bool | str = False,
        vacuum: str = "auto",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.checkpoint_conn_id = checkpoint_conn_id
        self.retention_days = retention_days
        self.strategy = strategy
        self.protect_interrupted = protect_interrupted
        self.max_threads = max_threads
        self.batch_size = batch_size
        self.dry_run = dry_run
        self.vacuum = vacuum

    def run(self, context: Context) -> dict[str, Any]:
        from include.checkpoint_core.pruning import PrunePolicy, prune_store

        policy = PrunePolicy(
            retention_days=float(self.retention_days),
            strategy=str(self.strategy),
            protect_interrupted=as_bool(self.protect_interrupted),
            max_threads=int(self.max_threads),
            batch_size=int(self.batch_size),
            dry_run=as_bool(self.dry_run),
            vacuum=str(self.vacuum),
        )
        try:
            policy.validate()
        except ValueError as exc:
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException(f"{exc} Fix the run's params and trigger it again.") from exc
        report = prune_store(self.store_target(self.checkpoint_conn_id), policy, log=self.log.info)
        report["conn_id"] = self.checkpoint_conn_id
        self.log.info(
            "%s%s: %s threads trimmed, %s deleted, %s protected, %s skipped (DeltaChannel); "
            "%s checkpoints, %s writes, %s blobs deleted; %s orphan writes, %s orphan blobs, %s expired "
            "store items; %s -> %s bytes in %.1fs",
            self.checkpoint_conn_id, " (dry run: nothing was changed)" if policy.dry_run else "",
            report["threads_trimmed"], report["threads_deleted"], report["threads_protected"],
            report["threads_skipped_delta"], report["checkpoints_deleted"], report["writes_deleted"],
            report["blobs_deleted"], report["orphan_writes_deleted"], report["orphan_blobs_deleted"],
            report["store_items_expired"], f"{report['bytes_before']:,}", f"{report['bytes_after']:,}",
            report["seconds"],
        )
        if report["sweep_limit_reached"]:
            self.log.warning("Stopped at the sweep limit of %s threads; the next run carries on.", policy.max_threads)
        return report


class CheckpointSizeAuditOperator(CheckpointOpsOperator):
    """Report the largest checkpoints of a store and how many exceed the size limit."""

    template_fields: Sequence[str] = ("checkpoint_conn_id", "top_n", "max_bytes")

    def __init__(self, *, checkpoint_conn_id: str, top_n: int | str = 10, max_bytes: int | str = 10 * 1024 * 1024,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.checkpoint_conn_id = checkpoint_conn_id
        self.top_n = top_n
        self.max_bytes = max_bytes

    def run(self, context: Context) -> dict[str, Any]:
        from include.checkpoint_core.size_audit import largest_checkpoints

        report = largest_checkpoints(
            self.store_target(self.checkpoint_conn_id), limit=int(self.top_n), max_bytes=int(self.max_bytes)
        )
        for row in report["largest"]:
            self.log.info("%10s  %s  ns=%r  %s", row["size"], row["thread_id"], row["checkpoint_ns"], row["checkpoint_id"])
        if report["over_limit"]:
            self.log.warning(
                "%s checkpoints are over %s: externalise large values (object storage plus a reference in "
                "state) and wrap the app's saver in SizeGuardSaver.", report["over_limit"], report["max_size"]
            )
        return report


class CheckpointOffloadGcOperator(CheckpointOpsOperator):
    """Delete offloaded blobs that no store and no retained backup references, once older than
    the grace period.

    It reads every defined store connection, whatever the run's ``stores`` param says (a blob
    may be referenced by any store sharing the bucket), and the reference lists of every backup
    still kept (a restore must find its blobs). Skipped when the app does not offload (no
    ``checkpoint_blob_offload_url``).
    """

    template_fields: Sequence[str] = ("grace_hours", "dry_run")

    def __init__(self, *, grace_hours: float | str = 24, dry_run: bool | str = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.grace_hours = grace_hours
        self.dry_run = dry_run

    def run(self, context: Context) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowSkipException

        from checkpoint_ops.hooks import KNOWN_STORE_CONN_IDS, resolve_store_conn_ids
        from include.checkpoint_core.offload import collect_offloaded_garbage

        blobs = offload_blob_store()
        if blobs is None:
            raise AirflowSkipException(f"Blob offload is not configured (Variable {OFFLOAD_VARIABLE}); nothing to collect.")
        conn_ids = resolve_store_conn_ids([], KNOWN_STORE_CONN_IDS, log=self.log.info)
        kept_by_backups = backup_references(conn_ids, self.log.info)
        return collect_offloaded_garbage([self.store_target(c) for c in conn_ids], blobs,
                                         grace_hours=float(self.grace_hours), dry_run=as_bool(self.dry_run),
                                         log=self.log.info, also_referenced=kept_by_backups)


def backup_references(conn_ids, log) -> set[str]:
    """Digests of the offloaded blobs referenced by every complete backup of these stores."""
    from include.checkpoint_core.backup import BackupFolderMissing, list_backups
    from include.checkpoint_core.backup.layout import OFFLOAD_REFS, read_json

    digests: set[str] = set()
    for conn_id in conn_ids:
        folder = backup_folder(conn_id)
        try:
            manifests = list_backups(folder)
        except BackupFolderMissing:
            continue
        for m in manifests:
            if m.get("offload_references"):
                refs = read_json(folder / m["backup_id"] / OFFLOAD_REFS)
                if refs is None:
                    raise RuntimeError(f"backup {m['backup_id']} of {conn_id} lists no {OFFLOAD_REFS}; not collecting.")
                digests.update(refs.get("sha256") or [])
        log(f"{conn_id}: {len(manifests)} backups kept; {len(digests):,} offloaded blobs referenced by backups so far")
    return digests
