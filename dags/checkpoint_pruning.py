"""checkpoint_pruning: nightly retention for every checkpoint store, then a size audit."""

from __future__ import annotations

from airflow.sdk import DAG, Param, task

from checkpoint_ops.dag_defaults import lifecycle_dag, resolve_stores, stores_param
from checkpoint_ops.operators.pruning import (
    CheckpointOffloadGcOperator,
    CheckpointPruneOperator,
    CheckpointSizeAuditOperator,
)

DOC = """
### Prune checkpoint stores

Nightly (03:00 UTC) retention for SQLite and PostgreSQL checkpoint stores. Age comes from the
uuid6 checkpoint id (there is no created_at column).

* **keep_latest**: checkpoints older than *retention_days* are deleted, except the latest one of
  each namespace, with its pending writes and the blobs it references: every thread still loads and
  resumes (`get_state` is unchanged). Threads younger than the retention are not touched.
* **delete**: threads idle for longer than the retention are dropped whole (checkpoints, writes,
  blobs); threads still in use lose their old history as under keep_latest.
* Threads **paused on an interrupt** (an `interrupt()` waiting for `Command(resume=...)`, or nodes due
  after `interrupt_before`) are left as they are while *protect_interrupted* is on. Threads using a
  **DeltaChannel** are skipped by keep_latest, as `PostgresSaver.prune` refuses them.
* Orphans: writes of deleted checkpoints, old writes whose checkpoint is gone, blobs no checkpoint
  references (PostgreSQL), and store items past their TTL (`sweep_ttl`).
* Each thread (PostgreSQL, REPEATABLE READ) or batch of *batch_size* threads (SQLite, `BEGIN
  IMMEDIATE`) is one short transaction, so the app keeps writing. At most *max_threads* threads are
  changed per run; the next run carries on. Running again is a no-op.
* Space: SQLite gets a WAL checkpoint, incremental vacuum where enabled, and VACUUM when a quarter
  of the file is free (*vacuum* = `full` forces it, `off` skips it); PostgreSQL gets `VACUUM (ANALYZE)`.
* **dry_run** runs every statement and rolls back: the report says what would go. Triggering from the
  form with its "Unpause" box ticked (the default) also unpauses the DAG, and its nightly runs prune for
  real: untick it for a one-off dry run.

**collect_offloaded_blobs** (when the app offloads large values with `OffloadSerializer` and the
Variable `checkpoint_blob_offload_url` names the bucket, `s3://<aws conn id>@<bucket>/<prefix>`) deletes
offloaded blobs that no store and no kept backup references, once older than *offload_grace_hours*.
It reads every defined store connection whatever *stores* says (stores may share the bucket), and
re-checks each object's age right before deleting it. Without the Variable it is skipped.

Then **audit_sizes** lists the *audit_top_n* largest checkpoints per store and counts those over
*max_checkpoint_mb*. The **report** task logs one line per store and returns the summary (XCom),
also written to `reports/checkpoint_pruning/<run_id>/pruning.json` under the artifacts root.
"""

with DAG(
    dag_id="checkpoint_pruning",
    description="Nightly retention for LangGraph checkpoint stores: old history, idle threads, orphans, space.",
    doc_md=DOC,
    schedule="0 3 * * *",
    **lifecycle_dag("pruning"),
    params={
        "stores": stores_param("prune"),
        "retention_days": Param(
            30, type="number", minimum=0, maximum=36500, title="Retention (days)",
            description="Checkpoints older than this many days are pruned (by their uuid6 checkpoint id).",
        ),
        "strategy": Param(
            "keep_latest", type="string", enum=["keep_latest", "delete"], title="Strategy",
            description="keep_latest: keep each namespace's latest checkpoint so threads still resume. "
            "delete: drop threads idle for longer than the retention.",
        ),
        "protect_interrupted": Param(
            True, type="boolean", title="Protect threads paused on an interrupt",
            description="Leave threads waiting on a human (interrupt / interrupt_before) untouched.",
        ),
        "max_threads": Param(
            10000, type="integer", minimum=1, title="Sweep limit (threads per run)",
            description="At most this many threads are changed per run; the next run carries on.",
        ),
        "batch_size": Param(
            100, type="integer", minimum=1, maximum=10000, title="Batch size (threads)",
            description="Threads per SQLite transaction: the app's writes wait at most one batch. "
            "PostgreSQL prunes one thread per transaction and ignores it.",
        ),
        "dry_run": Param(
            False, type="boolean", title="Dry run",
            description="Count what would be deleted, change nothing. Untick the form's \"Unpause\" box for a "
            "one-off dry run: a DAG unpaused from the form also runs its nightly schedule, which prunes for real.",
        ),
        "vacuum": Param(
            "auto", type="string", enum=["auto", "full", "off"], title="Space reclaim",
            description="SQLite: auto runs VACUUM only when a quarter of the file is free; full always; off never. "
            "PostgreSQL: VACUUM (ANALYZE) unless off.",
        ),
        "offload_grace_hours": Param(
            24, type="number", minimum=2, title="Offloaded blobs: grace (hours)",
            description="Offloaded blobs no checkpoint references are deleted once older than this "
            "(an app may upload a blob shortly before its checkpoint commits).",
        ),
        "audit_top_n": Param(
            10, type="integer", minimum=0, maximum=1000, title="Size audit: largest N",
            description="How many of the largest checkpoints to list per store.",
        ),
        "max_checkpoint_mb": Param(
            10, type="number", exclusiveMinimum=0, title="Size audit: limit (MB)",
            description="Checkpoints over this size are counted as over the limit (the size guard's default is 10 MB).",
        ),
    },
) as dag:

    stores = resolve_stores()

    prune = CheckpointPruneOperator.partial(
        task_id="prune",
        retention_days="{{ params.retention_days }}",
        strategy="{{ params.strategy }}",
        protect_interrupted="{{ params.protect_interrupted }}",
        max_threads="{{ params.max_threads }}",
        batch_size="{{ params.batch_size }}",
        dry_run="{{ params.dry_run }}",
        vacuum="{{ params.vacuum }}",
        map_index_template="{{ task.checkpoint_conn_id }}",
    ).expand(checkpoint_conn_id=stores)

    audit = CheckpointSizeAuditOperator.partial(
        task_id="audit_sizes",
        top_n="{{ params.audit_top_n }}",
        max_bytes="{{ (params.max_checkpoint_mb * 1048576) | int }}",
        map_index_template="{{ task.checkpoint_conn_id }}",
    ).expand(checkpoint_conn_id=stores)

    @task(task_id="report")
    def report(pruned, audited, dag_run=None) -> dict:
        """One line per store in the log; the whole summary in XCom and the artifacts."""
        from checkpoint_ops.artifacts import write_report

        pruned, audited = list(pruned), {a["conn_id"]: a for a in audited}
        for r in pruned:
            a = audited.get(r["conn_id"], {})
            space = "reclaims nothing (dry run)" if r["dry_run"] else f"reclaimed {r['bytes_reclaimed']:,} bytes"
            print(
                f"{r['conn_id']:<24} {'DRY RUN ' if r['dry_run'] else ''}threads trimmed {r['threads_trimmed']:,} "
                f"deleted {r['threads_deleted']:,} protected {r['threads_protected']:,}; checkpoints "
                f"{r['checkpoints_deleted']:,} writes {r['writes_deleted']:,} blobs {r['blobs_deleted']:,}; "
                f"{space} in {r['seconds']}s; "
                f"over {a.get('max_size', '?')}: {a.get('over_limit', '?')}"
            )
        summary = {"stores": pruned, "audit": list(audited.values()),
                   "checkpoints_deleted": sum(r["checkpoints_deleted"] for r in pruned)}
        summary["artifact"] = write_report(dag_run.dag_id, dag_run.run_id, "pruning", summary)
        return summary

    offload_gc = CheckpointOffloadGcOperator(
        task_id="collect_offloaded_blobs",
        grace_hours="{{ params.offload_grace_hours }}",
        dry_run="{{ params.dry_run }}",
    )

    prune >> [audit, offload_gc]
    report(prune.output, audit.output)
