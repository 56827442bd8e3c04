"""Operators of the SQLite -> PostgreSQL migration: thin shells over include.checkpoint_core.migration.

Every step finds the run's state in its artifacts folder (``migrations/<migration_id>/``:
snapshot, manifest, batches) and in the target's bookkeeping tables, never in worker memory,
so any task instance can be retried or cleared on any worker and converge.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowFailException

from checkpoint_ops.artifacts import artifacts_root, safe_key
from checkpoint_ops.hooks import CheckpointStoreHook, resolve_sqlite_source
from checkpoint_ops.operators.base import CheckpointOpsOperator, as_bool

log = logging.getLogger(__name__)
MIGRATION_FIELDS: Sequence[str] = ("source", "target", "migration_id", "include_store")


def migration_folder(migration_id: str) -> Any:
    """The run's artifacts folder: a pathlib.Path when local, an ObjectStoragePath otherwise."""
    root = artifacts_root()
    folder = root / "migrations" / safe_key(migration_id)
    if getattr(root, "protocol", "file") in ("file", "local", ("file", "local")):
        return Path(folder.path)
    return folder


class _MigrationOperator(CheckpointOpsOperator):
    template_fields: Sequence[str] = MIGRATION_FIELDS

    def __init__(self, *, source: str, target: str, migration_id: str = "{{ run_id }}", include_store: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.source = source
        self.target = target
        self.migration_id = migration_id
        self.include_store = include_store

    def source_path(self) -> str:
        src = resolve_sqlite_source(str(self.source))
        self.log.info("Source: %s", src.location)
        return src.location

    def target_dsn(self) -> str:
        target = CheckpointStoreHook(str(self.target)).get_target()
        if target.kind != "postgres":
            raise AirflowFailException(f"target {self.target!r} is a {target.kind} store; the migration target must be PostgreSQL.")
        self.log.info("Target: %s", target.display)
        return target.location

    def folder(self) -> Any:
        return migration_folder(str(self.migration_id))

    def manifest(self):
        from include.checkpoint_core.migration.batches import read_manifest

        manifest = read_manifest(self.folder())
        if manifest is None:
            raise AirflowFailException(f"no export manifest in {self.folder()}: run (or clear) the export task first.")
        return manifest


class MigrationPreflightOperator(_MigrationOperator):
    """Validate source and target, find rows PostgreSQL cannot hold and conflicting rows, estimate time.

    With ``dry_run`` nothing is written anywhere; otherwise the target's schema is set up.
    """

    template_fields: Sequence[str] = (*MIGRATION_FIELDS, "on_reject", "repair_nul", "dry_run")

    def __init__(self, *, on_reject: str = "reject", repair_nul: bool = False, dry_run: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.on_reject = on_reject
        self.repair_nul = repair_nul
        self.dry_run = dry_run

    def run(self, context: Context) -> dict[str, Any]:
        from include.checkpoint_core.migration.preflight import preflight
        from include.checkpoint_core.postgres_store import setup_postgres

        source, dsn = self.source_path(), self.target_dsn()
        plan = preflight(source, dsn, include_store=as_bool(self.include_store), on_reject=str(self.on_reject),
                         repair_nul=as_bool(self.repair_nul))
        counts = plan["source"]["counts"]
        self.log.info("Source holds %s threads, %s checkpoints, %s writes, %s store items (%.1f MB)",
                      counts.get("threads"), counts.get("checkpoints"), counts.get("writes"), counts.get("store", 0),
                      plan["source"]["size_bytes"] / 1e6)
        if plan["repaired"]["checkpoints"]:
            self.log.warning("%s checkpoints have NUL in their metadata and will be repaired (U+FFFD), row by row in "
                             "the report.", plan["repaired"]["checkpoints"])
        if plan["rejected"]["count"]:
            self.log.warning("%s rows cannot be stored in PostgreSQL; their %s threads will be rejected whole (every "
                             "row, kept in rejected-threads.sqlite), e.g.:", plan["rejected"]["count"],
                             plan["rejected"]["threads"])
            for r in plan["rejected"]["examples"][:10]:
                self.log.warning("  %s %s: %s", r["table"], r["key"], r["reason"])
        if plan["version_collisions"]["count"]:
            self.log.warning("%s channel versions are used by one thread for two different values; PostgresSaver keeps "
                             "one blob per version, so the migration keeps the copy of the latest checkpoint holding "
                             "it (the one the thread resumes from) and earlier checkpoints read that copy, e.g. %s",
                             plan["version_collisions"]["count"], plan["version_collisions"]["examples"][:3])
        self.log.info("Estimated time: import %ss, full verify %ss", plan["estimate_s"]["import"], plan["estimate_s"]["verify_full"])
        if as_bool(self.dry_run):
            self.log.info("Dry run: nothing was written.")
        else:
            setup = setup_postgres(dsn, include_store=as_bool(self.include_store))
            plan["target"]["setup_changes"] = setup["changes"]
        plan["dry_run"] = as_bool(self.dry_run)
        return plan


class MigrationSnapshotOperator(_MigrationOperator):
    """A consistent copy of the live source (online backup API) plus its rowid watermarks."""

    def run(self, context: Context) -> dict[str, Any]:
        from include.checkpoint_core.migration.export import snapshot_into

        info = snapshot_into(self.source_path(), self.folder(), str(self.migration_id))
        self.log.info("%s snapshot: %s rows at watermarks %s (sha256 %s)", "Reused" if info["reused"] else "Took",
                      info["counts"], info["watermarks"], info["sha256"][:12])
        return info


class MigrationExportOperator(_MigrationOperator):
    """Stream the snapshot into batch files of ``batch_size`` rows, with a checksummed manifest."""

    template_fields: Sequence[str] = (*MIGRATION_FIELDS, "batch_size", "repair_nul")

    def __init__(self, *, batch_size: int = 1000, repair_nul: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.batch_size = batch_size
        self.repair_nul = repair_nul

    def run(self, context: Context) -> dict[str, Any]:
        from include.checkpoint_core.migration.export import export_batches, local_snapshot

        folder = self.folder()
        info = json.loads((folder / "snapshot.json").read_text())
        total = sum(v for k, v in info["counts"].items() if k in ("checkpoints", "writes") or (k == "store" and as_bool(self.include_store)))
        progress = self.progress(total, "rows", label="export")
        with tempfile.TemporaryDirectory(prefix="cpo-export-") as tmp:
            manifest = export_batches(local_snapshot(folder, Path(tmp)), folder, info, batch_size=int(self.batch_size),
                                      include_store=as_bool(self.include_store), repair_nul=as_bool(self.repair_nul),
                                      progress=progress.advance)
        progress.finish()
        per_table = {}
        for b in manifest.batches:
            per_table.setdefault(b.table, {"batches": 0, "rows": 0, "bytes": 0})
            per_table[b.table]["batches"] += 1
            per_table[b.table]["rows"] += b.rows
            per_table[b.table]["bytes"] += b.size_bytes
        return {"batches": len(manifest.batches), "tables": per_table, "folder": str(folder)}


def import_groups(migration_id: str, batches_per_task: int) -> list[list[dict]]:
    """The export's batches in groups of ``batches_per_task``: one mapped import task instance each."""
    from include.checkpoint_core.migration.batches import read_manifest
    from include.checkpoint_core.migration.load import plan_groups

    from airflow.sdk.configuration import conf

    manifest = read_manifest(migration_folder(migration_id))
    if manifest is None:
        raise AirflowFailException("no export manifest: clear the export task.")
    # Airflow refuses to map more than [core] max_map_length task instances.
    limit = conf.getint("core", "max_map_length", fallback=1024)
    per_task = max(int(batches_per_task), math.ceil(len(manifest.batches) / limit))
    if per_task != int(batches_per_task):
        log.warning("%s batches in groups of %s would exceed [core] max_map_length=%s: using groups of %s.",
                    len(manifest.batches), batches_per_task, limit, per_task)
    return plan_groups(manifest, per_task)


class MigrationImportOperator(_MigrationOperator):
    """Import one group of batches; each batch is one transaction, recorded in the target."""

    template_fields: Sequence[str] = (*MIGRATION_FIELDS, "group", "on_reject")

    def __init__(self, *, group: list[dict], on_reject: str = "reject", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.group = group
        self.on_reject = on_reject

    def run(self, context: Context) -> dict[str, Any]:
        from include.checkpoint_core.migration.load import import_group
        from include.checkpoint_core.migration.transcode import Rejected

        manifest = self.manifest()
        by_ref = {(b.table, b.number): b.rows for b in manifest.batches}
        group = list(self.group or [])
        progress = self.progress(sum(by_ref[(g["table"], g["number"])] for g in group), "rows", label="import")

        def on_batch(result) -> None:
            progress.advance(result.read)
            for key, reason in result.rejects[:5]:
                self.log.warning("rejected %s %s: %s (its thread will be rejected whole)", result.table, key, reason)
            for key, repair in result.repairs:
                self.log.warning("repaired %s %s: %s", result.table, key, repair)

        try:
            totals = import_group(self.target_dsn(), self.folder(), manifest, group,
                                  fail_on_reject=self.on_reject == "fail", on_batch=on_batch)
        except Rejected as exc:
            raise AirflowFailException(f"{exc.reason} (on_reject=fail: nothing of this batch was written)") from exc
        progress.finish()
        if totals["skipped"]:
            self.log.info("%s of %s batches were already imported by an earlier attempt and were skipped.",
                          totals["skipped"], totals["batches"])
        return totals


class _VerifyOperator(_MigrationOperator):
    """What every verify step checks first, and the run's state they share."""

    template_fields: Sequence[str] = (*MIGRATION_FIELDS, "verify_mode", "sample_threads")

    def __init__(self, *, verify_mode: str = "sample", sample_threads: int = 10, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.verify_mode = verify_mode
        self.sample_threads = sample_threads

    def state(self) -> tuple[Any, str, set[str], bool]:
        """(manifest, target dsn, threads rejected whole, whether catch-up ran); fails on an unfinished import."""
        from include.checkpoint_core.migration.rejects import rejected_threads, unsettled_threads
        from include.checkpoint_core.migration.target import imported_batches
        from include.checkpoint_core.postgres_store import connect_postgres

        manifest = self.manifest()
        dsn = self.target_dsn()
        with connect_postgres(dsn) as pg:
            done = imported_batches(pg, manifest.migration_id)
            unsettled = unsettled_threads(pg, manifest.migration_id)
            rejected = {r["thread_id"] for r in rejected_threads(pg, manifest.migration_id)}
            # Once catch-up ran, the target also holds what the app wrote after the snapshot.
            caught_up = pg.execute("SELECT EXISTS (SELECT 1 FROM checkpoint_ops_migration_catchup WHERE migration_id = %s) AS yes",
                                   (manifest.migration_id,)).fetchone()["yes"]
        missing = [f"{b.table}#{b.number}" for b in manifest.batches if (b.table, b.number) not in done]
        if missing:
            raise AirflowFailException(f"{len(missing)} batches were never imported ({', '.join(missing[:10])}); clear the import tasks.")
        if unsettled:
            raise AirflowFailException(f"{len(unsettled)} threads with rejected rows were not taken out of the target yet "
                                       f"(e.g. {unsettled[0]!r}): clear the settle_rejects task.")
        return manifest, dsn, rejected, caught_up


class MigrationPlanVerifyOperator(_VerifyOperator):
    """Split verify into thread groups, one mapped ``verify_threads`` task each (ranges of thread ids)."""

    template_fields: Sequence[str] = (*_VerifyOperator.template_fields, "threads_per_task")

    def __init__(self, *, threads_per_task: int = 500, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.threads_per_task = threads_per_task

    def execute(self, context: Context) -> list[dict]:  # the XCom is the list the next task maps over
        from airflow.sdk.configuration import conf

        from include.checkpoint_core.migration.export import local_snapshot
        from include.checkpoint_core.migration.verify import thread_groups

        _, _, rejected, _ = self.state()
        with tempfile.TemporaryDirectory(prefix="cpo-verify-") as tmp:
            snapshot = local_snapshot(self.folder(), Path(tmp))
            groups = thread_groups(snapshot, mode=str(self.verify_mode), sample_threads=int(self.sample_threads),
                                   seed=str(self.migration_id), rejected_threads=rejected,
                                   threads_per_group=int(self.threads_per_task))
            limit = conf.getint("core", "max_map_length", fallback=1024)
            if len(groups) > limit:
                total = sum(g.get("count", 0) for g in groups)
                groups = thread_groups(snapshot, mode=str(self.verify_mode), sample_threads=int(self.sample_threads),
                                       seed=str(self.migration_id), rejected_threads=rejected,
                                       threads_per_group=math.ceil(total / limit))
        self.log.info("Verify in %s mapped groups (%s mode).", len(groups), self.verify_mode)
        return groups


class MigrationVerifyThreadsOperator(_VerifyOperator):
    """Compare every row of one group of threads (checkpoints, writes, blobs) with the target."""

    template_fields: Sequence[str] = (*_VerifyOperator.template_fields, "group")

    def __init__(self, *, group: dict, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.group = group

    def run(self, context: Context) -> dict[str, Any]:
        from include.checkpoint_core.migration.export import local_snapshot
        from include.checkpoint_core.migration.verify import verify_group

        manifest, dsn, rejected, _ = self.state()
        group = dict(self.group or {})
        with tempfile.TemporaryDirectory(prefix="cpo-verify-") as tmp:
            progress = self.progress(group.get("count"), "threads", label="verify")
            result = verify_group(local_snapshot(self.folder(), Path(tmp)), dsn, group, rejected_threads=rejected,
                                  repair_nul=manifest.repair_nul, chunk_threads=200)
            progress.advance(result["threads_checked"])
            progress.finish()
        for table, res in result["content"].items():
            self.log.info("%-12s expected %8d found %8d missing %d different %d extra %d", table, res["expected"],
                          res["found"], res["missing"], res["different"], res["extra"])
        return result


class MigrationVerifyOperator(_VerifyOperator):
    """Counts, the groups' content checksums and CheckpointTuple equality; a mismatch fails and names the rows."""

    def run(self, context: Context) -> dict[str, Any]:
        from include.checkpoint_core.migration.export import local_snapshot
        from include.checkpoint_core.migration.verify import merge_groups, verify_totals

        manifest, dsn, rejected, caught_up = self.state()
        pulled = context["ti"].xcom_pull(task_ids="verify_threads")
        groups = [pulled] if isinstance(pulled, dict) else [g for g in (pulled or []) if g is not None]
        if not groups:
            raise AirflowFailException("no verify_threads results: clear the verify_threads tasks.")
        with tempfile.TemporaryDirectory(prefix="cpo-verify-") as tmp:
            result = verify_totals(local_snapshot(self.folder(), Path(tmp)), dsn, merge_groups(groups),
                                   mode=str(self.verify_mode), sample_threads=int(self.sample_threads),
                                   seed=str(self.migration_id), rejected_threads=rejected,
                                   repair_nul=manifest.repair_nul, allow_extra=caught_up,
                                   include_store=as_bool(self.include_store))
        if result["threads_checked"] < (result["threads_total"] if result["mode"] == "full" else 0):
            raise AirflowFailException(f"the verify_threads groups checked {result['threads_checked']} of "
                                       f"{result['threads_total']} threads: clear plan_verify and its groups.")
        for table, res in result["content"].items():
            self.log.info("%-12s expected %8d found %8d missing %d different %d extra %d", table, res["expected"],
                          res["found"], res["missing"], res["different"], res["extra"])
        if result["store"]:
            st = result["store"]
            self.log.info("%-12s expected %8d found %8d missing %d different %d", "store", st["expected"], st["found"],
                          st["missing"], st["different"])
        if rejected:
            self.log.warning("%s threads were rejected whole and are expected absent (rejected-threads.sqlite); %s of "
                             "their rows were found in the target.", len(rejected),
                             sum(result["rejected_threads"]["rows_left_in_target"].values()))
        if not result["ok"]:
            details = [f"rejected thread rows left in the target: {result['rejected_threads']['rows_left_in_target']}"] \
                if any(result["rejected_threads"]["rows_left_in_target"].values()) else []
            for table, res in result["content"].items():
                for kind in ("missing", "different"):
                    for key in res["examples"][kind][:5]:
                        details.append(f"{table} {kind}: {key}")
            details += [f"thread {m['thread_id']} {m['table']}: source {m['source']} target {m['target']}"
                        for m in result["per_thread_mismatches"][:5]]
            details += [f"{p['thread_id']}/{p['checkpoint_id']}: {p['problem']}" for p in result["semantic"]["problems"][:5]]
            for kind in ("missing", "different"):
                details += [f"store {kind}: {key}" for key in ((result["store"] or {}).get("examples", {}).get(kind) or [])[:5]]
            for line in details:
                self.log.error("mismatch: %s", line)
            raise AirflowFailException(f"verification failed ({result['mode']} mode): " + "; ".join(details[:5]))
        self.log.info("Verified %s of %s threads (%s mode): every row matches.", result["threads_checked"],
                      result["threads_total"], result["mode"])
        return result


class MigrationSettleRejectsOperator(_MigrationOperator):
    """Take each thread with a rejected row out of the target whole, and keep all its rows in
    ``rejected-threads.sqlite`` (the source's layout) beside the report for repair and re-run."""

    def run(self, context: Context) -> dict[str, Any]:
        from include.checkpoint_core.migration.export import local_snapshot
        from include.checkpoint_core.migration.rejects import rejected_threads, settle_rejected_threads
        from include.checkpoint_core.postgres_store import connect_postgres
        from include.checkpoint_core.sqlite_store import open_sqlite_readonly

        manifest, folder = self.manifest(), self.folder()
        with tempfile.TemporaryDirectory(prefix="cpo-settle-") as tmp:
            snapshot = local_snapshot(folder, Path(tmp))
            with connect_postgres(self.target_dsn()) as pg, open_sqlite_readonly(snapshot) as src:
                settled = settle_rejected_threads(pg, src, manifest.migration_id, log=self.log.warning)
                threads = [r["thread_id"] for r in rejected_threads(pg, manifest.migration_id)]
            if threads:
                settled["file"] = store_rejected_file(snapshot, threads, folder, Path(tmp))
                self.log.warning("%s threads rejected whole: every row of them is in %s. Repair it (or the source) "
                                 "and migrate it as a new run's source.", len(threads), settled["file"])
            else:
                self.log.info("No thread has a rejected row.")
        return settled


def store_rejected_file(source: Path, threads: list[str], folder: Any, workdir: Path) -> str:
    """``rejected-threads.sqlite`` in the run's folder (written locally, then uploaded)."""
    from include.checkpoint_core.migration.rejects import write_rejected_file

    local = workdir / "rejected-threads.sqlite"
    write_rejected_file(source, threads, local)
    dest = folder / "rejected-threads.sqlite"
    if isinstance(dest, Path):
        dest.parent.mkdir(parents=True, exist_ok=True)
    with open(local, "rb") as src, dest.open("wb") as out:
        shutil.copyfileobj(src, out, length=1 << 20)
    return str(dest)


class MigrationCatchUpOperator(_MigrationOperator):
    """Copy what the app wrote to the source after the snapshot, until nothing new remains."""

    template_fields: Sequence[str] = (*MIGRATION_FIELDS, "on_reject")

    def __init__(self, *, on_reject: str = "reject", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.on_reject = on_reject

    def run(self, context: Context) -> dict[str, Any]:
        from include.checkpoint_core.migration.load import catch_up
        from include.checkpoint_core.migration.transcode import Rejected

        from include.checkpoint_core.migration.rejects import rejected_threads
        from include.checkpoint_core.postgres_store import connect_postgres

        source, dsn, manifest = self.source_path(), self.target_dsn(), self.manifest()
        try:
            result = catch_up(source, dsn, manifest, include_store=as_bool(self.include_store),
                              fail_on_reject=self.on_reject == "fail", log=self.log.info)
        except Rejected as exc:
            raise AirflowFailException(exc.reason) from exc
        if result["rejected_threads"]:
            with connect_postgres(dsn) as pg:
                threads = [r["thread_id"] for r in rejected_threads(pg, manifest.migration_id)]
            with tempfile.TemporaryDirectory(prefix="cpo-catchup-") as tmp:
                # From the live source: it also holds what the app wrote to those threads since the snapshot.
                result["rejected_file"] = store_rejected_file(Path(source), threads, self.folder(), Path(tmp))
        return result
