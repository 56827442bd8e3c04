"""checkpoint_tiering: hourly moves between hot (Redis), cold (PostgreSQL) and archive (S3) tiers."""

from __future__ import annotations

from airflow.sdk import DAG, Param, task

from checkpoint_ops.dag_defaults import lifecycle_dag
from checkpoint_ops.hooks import POSTGRES_CONN_ID, REDIS_CONN_ID
from checkpoint_ops.operators.tiering import (
    TieringArchiveOperator,
    TieringCostReportOperator,
    TieringDemoteOperator,
    TieringPlanOperator,
    TieringRehydrateOperator,
)

DOC = """
### Tier checkpoint threads: hot Redis, cold PostgreSQL, archive S3

The app uses `TieredSaver` (see the README): it writes to the hot tier, and reads any thread
the same whichever tier holds it; the first write to a cold or archived thread brings it back hot.
This DAG moves the threads the app is not using.

1. **plan** checks Redis, PostgreSQL and the archive (a tier that is down fails here, before anything
   moves), then lists: hot threads idle for *demote_after_hours*, cold threads whose newest checkpoint
   is older than *archive_after_days*, the threads named in *rehydrate*, threads an interrupted move
   left fenced (finished or released now), and threads found in **two tiers** (reported and left alone,
   never merged). At most *max_threads* of each per run; the next run carries on.
2. **demote** (mapped over groups of *threads_per_task*): hot -> cold. The thread's rows are copied as
   bytes into PostgresSaver's tables, compared row by row, and only then fenced and deleted from
   Redis, and only if the app did not write to the thread meanwhile (its write counter is checked in
   the same Lua call that raises the fence). A thread the app touched stays hot; the next run takes it.
3. **archive** (mapped): cold -> archive. One object per thread (every namespace, checkpoint, blob and
   write, `task_path` and `idx` kept), content-addressed by SHA-256, read back and compared before the
   rows are deleted, under the thread's tier lock.
4. **rehydrate**: archive -> cold for the threads named in *rehydrate* (the digest is checked; a missing
   or corrupt object is named and the thread stays archived).
5. **cost_report**: threads and bytes per tier x the prices per GB-month -> monthly cost, beside keeping
   every thread hot. In the log, XCom, `reports/checkpoint_tiering/<run_id>/tiering.json` and the
   Pushgateway (`checkpoint_tier_*` gauges, the dashboard's Tiering row).

Every task can be retried or cleared: a move is either not done or done in a way the next attempt
recognises. **dry_run** plans and measures what would move, and changes nothing.
"""

PRICE_DOC = "US dollars per GB-month; set your provider's price."

with DAG(
    dag_id="checkpoint_tiering",
    description="Hourly: idle threads hot -> cold, long-dead threads cold -> archive, named threads back; costs.",
    doc_md=DOC,
    schedule="@hourly",
    **lifecycle_dag("tiering"),
    params={
        "redis": Param(REDIS_CONN_ID, type="string", pattern=r"^[A-Za-z0-9_.-]+$", title="Hot tier (Redis connection)",
                       description="The redis connection id of the hot tier the app's TieredSaver writes to."),
        "postgres": Param(POSTGRES_CONN_ID, type="string", pattern=r"^[A-Za-z0-9_.-]+$",
                          title="Cold tier (PostgreSQL connection)",
                          description="The postgres connection id of the PostgresSaver database; it also holds "
                                      "the tier directory (checkpoint_ops_tiers)."),
        "archive": Param(None, type=["null", "string"], title="Archive (S3 or folder)",
                         description="s3://<aws conn id>@<bucket>/<prefix> or file:///path. Empty: the Variable "
                                     "checkpoint_archive_url; if that is unset too, nothing is archived."),
        "key_prefix": Param("checkpoint_ops", type="string", pattern=r"^[A-Za-z0-9_.:-]+$", title="Redis key prefix",
                            description="The prefix the app's RedisRowSaver uses (its prefix= argument)."),
        "demote_after_hours": Param(24, type="number", minimum=0, title="Demote after (hours idle)",
                                    description="Hot threads not written for this long move to PostgreSQL."),
        "archive_after_days": Param(90, type="number", minimum=0, title="Archive after (days idle)",
                                    description="Cold threads whose newest checkpoint is this old move to the archive."),
        "max_threads": Param(10000, type="integer", minimum=1, title="Threads per run (each move)",
                             description="At most this many threads are demoted, and this many archived, per run."),
        "threads_per_task": Param(500, type="integer", minimum=1, maximum=100000, title="Threads per task",
                                  description="Demote and archive are mapped over groups of this many threads; a "
                                              "failed group is retried on its own."),
        "rehydrate": Param([], type="array", items={"type": "string"}, title="Rehydrate threads",
                           description="Thread ids to bring back from the archive to PostgreSQL in this run."),
        "dry_run": Param(False, type="boolean", title="Dry run",
                         description="Plan and measure what would move; change nothing. Untick the form's "
                                     "\"Unpause\" box for a one-off dry run: unpaused, the hourly schedule moves for real."),
        "price_hot": Param(12.0, type="number", minimum=0, title="Hot tier price ($/GB-month)",
                           description=f"Redis memory. Default: a managed cache node's memory. {PRICE_DOC}"),
        "price_cold": Param(0.25, type="number", minimum=0, title="Cold tier price ($/GB-month)",
                            description=f"PostgreSQL storage incl. backups. {PRICE_DOC}"),
        "price_archive": Param(0.023, type="number", minimum=0, title="Archive price ($/GB-month)",
                               description=f"Object storage (S3 Standard). {PRICE_DOC}"),
    },
) as dag:
    stores = {
        "redis_conn_id": "{{ params.redis }}",
        "postgres_conn_id": "{{ params.postgres }}",
        "archive_url": "{{ params.archive }}",
        "key_prefix": "{{ params.key_prefix }}",
        "dry_run": "{{ params.dry_run }}",
    }
    plan = TieringPlanOperator(
        task_id="plan",
        demote_after_hours="{{ params.demote_after_hours }}",
        archive_after_days="{{ params.archive_after_days }}",
        max_threads="{{ params.max_threads }}",
        threads_per_task="{{ params.threads_per_task }}",
        rehydrate_threads="{{ params.rehydrate }}",
        **stores,
    )

    @task
    def groups(planned: dict, key: str) -> list:
        """One part of the plan, as the list a mapped move expands over (Airflow maps only whole XComs)."""
        return planned[key]

    demote_groups = groups.override(task_id="demote_groups")(plan.output, "demote_groups")
    archive_groups = groups.override(task_id="archive_groups")(plan.output, "archive_groups")
    demote = TieringDemoteOperator.partial(task_id="demote", **stores).expand(thread_ids=demote_groups)
    archive = TieringArchiveOperator.partial(task_id="archive", trigger_rule="none_failed", **stores).expand(
        thread_ids=archive_groups)
    rehydrate = TieringRehydrateOperator(task_id="rehydrate", trigger_rule="none_failed",
                                         thread_ids=groups.override(task_id="rehydrate_threads")(plan.output,
                                                                                                 "rehydrate"),
                                         **stores)
    report = TieringCostReportOperator(
        task_id="cost_report",
        trigger_rule="all_done",
        prices={"hot": "{{ params.price_hot }}", "cold": "{{ params.price_cold }}",
                "archive": "{{ params.price_archive }}"},
        **stores,
    )
    demote >> archive >> rehydrate >> report

    @task(task_id="run_outcome", trigger_rule="one_failed")
    def run_outcome() -> None:
        """Fails the run when any task failed (cost_report runs regardless, so it cannot be the leaf that
        decides). AirflowFailException: no retry of this task."""
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException("a tiering task failed: its log names the cause; threads it did not move "
                                   "stay where they are and the next run takes them")

    [plan, demote_groups, archive_groups, demote, archive, rehydrate, report] >> run_outcome()
