"""The migration DAG's report step: gather every step's summary, store it, fail if a step did."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from checkpoint_ops.hooks import CheckpointStoreHook
from checkpoint_ops.operators.migration import migration_folder
from include.checkpoint_core.errors import CheckpointStoreError

log = logging.getLogger(__name__)
STEPS = ("preflight", "snapshot", "export", "import_batches", "settle_rejects", "verify", "catch_up")


def _pull(ti, task_id: str) -> Any:
    value = ti.xcom_pull(task_ids=task_id)
    if task_id == "import_batches" and value is not None:
        # A mapped task's XComs come back as a sequence, or as the one value when it mapped once.
        value = [value] if isinstance(value, dict) else [v for v in value if v is not None]
    return value


def _advice(step: str) -> str:
    """What to do about the first step that did not finish: a new run, or a clear of that task."""
    if step == "preflight":
        return ("preflight checks the params and connections: if its log names a wrong param, a missing connection "
                "or a source that is not a checkpoint file, trigger a new run with that fixed (clearing would read "
                "the same params); if a store was down, clear preflight once it is back.")
    return (f"Open {step}'s log for the cause; once it is fixed (a server back, space freed), clear {step}: "
            "finished steps and committed batches are not redone.")


def build_and_store_report(ti, dag_run, params: dict) -> dict:
    from include.checkpoint_core.migration.report import render, summarize
    from include.checkpoint_core.migration.rejects import rejected_threads
    from include.checkpoint_core.migration.target import imported_batches, repairs_for, rejects_for
    from include.checkpoint_core.postgres_store import connect_postgres

    migration_id = dag_run.run_id
    results = {step: _pull(ti, step) for step in STEPS}
    dry_run = bool(params.get("dry_run"))
    expected = ("preflight",) if dry_run else STEPS
    unfinished = [s for s in expected if not results.get(s)]
    report: dict[str, Any] = {"migration_id": migration_id, "dry_run": dry_run, "params": dict(params),
                              "finished_steps": [s for s in STEPS if results.get(s)], "unfinished_steps": unfinished,
                              "preflight": results["preflight"], "verify": results["verify"]}
    folder = migration_folder(migration_id)
    target_error = None
    if not dry_run and results["preflight"]:
        try:
            dsn = CheckpointStoreHook(str(params["target"])).get_target().location
            with connect_postgres(dsn) as pg:
                exists = pg.execute("SELECT to_regclass('checkpoint_ops_migration_batches') IS NOT NULL AS ok").fetchone()["ok"]
                batches = imported_batches(pg, migration_id) if exists else {}
                rejects = rejects_for(pg, migration_id) if exists else []
                threads = rejected_threads(pg, migration_id) if exists else []
                repairs = repairs_for(pg, migration_id) if exists else []
        except CheckpointStoreError as exc:
            # The report needs the target only for its per-table counts: say so, and report the rest.
            target_error = str(exc)
            log.warning("The target cannot be read (%s); the per-table counts are left out of this report.", exc)
            batches, rejects, threads, repairs = {}, [], [], []
        report["target_unavailable"] = target_error
        rows = summarize(batches, results["catch_up"])
        seconds = sum((r or {}).get("duration_s", 0.0) for r in (results["import_batches"] or []))
        table = render(rows, seconds)
        log.info("Migration %s\n%s", migration_id, table)
        report.update({"tables": rows, "table_text": table, "import_task_seconds": round(seconds, 2),
                       "rejected_rows": len(rejects), "repaired_rows": len(repairs),
                       "rejected_threads": {"count": len(threads), "checkpoints": sum(t["checkpoints"] for t in threads),
                                            "writes": sum(t["writes"] for t in threads),
                                            "examples": [dict(t) for t in threads[:20]]}})
        if threads:
            log.warning("%s threads rejected whole (%s checkpoints, %s writes): every row is in %s; reasons in "
                        "rejected.jsonl. Repair that file and migrate it as a new run's source.", len(threads),
                        report["rejected_threads"]["checkpoints"], report["rejected_threads"]["writes"],
                        folder / "rejected-threads.sqlite")
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / "rejected.jsonl").open("w") as fh:
            for t in threads:
                fh.write(json.dumps({"thread_id": t["thread_id"], "rejected": "whole thread", "checkpoints": t["checkpoints"],
                                     "writes": t["writes"], "reason": t["reason"]}) + "\n")
            for r in rejects:
                batch = r["batch_no"] if r["batch_no"] >= 0 else "catch-up"
                fh.write(json.dumps({"table": r["table_name"], "batch": batch, "key": json.loads(r["row_key"]),
                                     "reason": r["reason"]}) + "\n")
        report["rejected_file"] = str(folder / "rejected.jsonl")
        if threads:
            report["rejected_threads_file"] = str(folder / "rejected-threads.sqlite")
        if repairs:
            with (folder / "repaired.jsonl").open("w") as fh:
                for r in repairs:
                    fh.write(json.dumps({"table": r["table_name"], "key": json.loads(r["row_key"]),
                                         "repair": r["repair"]}) + "\n")
            report["repaired_file"] = str(folder / "repaired.jsonl")
    catch_up = results["catch_up"] or {}
    if catch_up:
        report["catch_up"] = {k: catch_up.get(k) for k in ("rounds", "converged", "threads_recopied",
                                                          "threads_with_fewer_source_rows")}
        if not catch_up.get("converged"):
            log.warning("Catch-up did not converge: the app was still writing. Run catch_up again after stopping it.")
    verify = results["verify"] or {}
    if verify:
        log.info("Verification: %s (%s mode, %s/%s threads checked)", "passed" if verify.get("ok") else "FAILED",
                 verify.get("mode"), verify.get("threads_checked"), verify.get("threads_total"))
    folder.mkdir(parents=True, exist_ok=True)
    report["generated_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    (folder / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True, default=str))
    report["report_file"] = str(folder / "report.json")
    log.info("Steps finished: %s; not finished: %s", ", ".join(report["finished_steps"]) or "none",
             ", ".join(unfinished) or "none")
    if unfinished:
        raise AirflowFailException(f"migration {migration_id} did not finish: {', '.join(unfinished)} failed or did "
                                   f"not run. {_advice(unfinished[0])} Report: {report['report_file']}")
    summary = {k: report[k] for k in ("migration_id", "dry_run", "report_file") if k in report}
    summary.update({k: report.get(k) for k in ("tables", "rejected_rows", "rejected_file", "catch_up", "repaired_rows")})
    summary["rejected_threads"] = (report.get("rejected_threads") or {}).get("count")
    summary["verified"] = bool(verify.get("ok")) if verify else None
    if dry_run:
        summary["plan"] = results["preflight"]
    return summary
