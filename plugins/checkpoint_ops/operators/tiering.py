"""Operators of the checkpoint_tiering DAG: thin shells over ``include.checkpoint_core.tiering.jobs``.

Each resolves its stores from Airflow connections (the redis provider's RedisHook, the
checkpoint store hook for PostgreSQL, the amazon provider's S3Hook for the archive), checks them
before touching anything, and hands the work to the core.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import contextmanager
from typing import Any

from airflow.sdk import Context

from checkpoint_ops.hooks import POSTGRES_CONN_ID, PUSHGATEWAY_CONN_ID, REDIS_CONN_ID, http_service
from checkpoint_ops.locations import ARCHIVE_VARIABLE, archive_store
from checkpoint_ops.operators.base import CheckpointOpsOperator, as_bool
from include.checkpoint_core.errors import CheckpointStoreError, StoreUnreachable


class TieringConfigError(CheckpointStoreError):
    hint = "Fix the param or connection named, then trigger a new run (a retry of this task would fail the same way)."


class _TieringOperator(CheckpointOpsOperator):
    template_fields: Sequence[str] = ("redis_conn_id", "postgres_conn_id", "archive_url", "key_prefix", "dry_run")

    def __init__(self, *, redis_conn_id: str = REDIS_CONN_ID, postgres_conn_id: str = POSTGRES_CONN_ID,
                 archive_url: str = "", key_prefix: str = "checkpoint_ops", dry_run: bool | str = False,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.redis_conn_id, self.postgres_conn_id = redis_conn_id, postgres_conn_id
        self.archive_url, self.key_prefix, self.dry_run = archive_url, key_prefix, dry_run

    def hot(self):
        """The hot tier, checked: a Redis that is down fails here, before anything is touched."""
        import redis
        from airflow.providers.redis.hooks.redis import RedisHook
        from airflow.sdk.exceptions import AirflowNotFoundException

        from include.checkpoint_core.tiering.hot import RedisRowSaver

        try:
            client = RedisHook(redis_conn_id=self.redis_conn_id).get_conn()
        except AirflowNotFoundException:
            raise TieringConfigError(f"connection {self.redis_conn_id!r} is not defined. Define it (type redis) in "
                                     "Admin > Connections or as AIRFLOW_CONN_<ID>.") from None
        if isinstance(client, redis.RedisCluster):
            raise TieringConfigError(f"connection {self.redis_conn_id!r} is a Redis Cluster; the hot tier needs a "
                                     "single primary (or a replicated one behind Sentinel)")
        try:
            client.ping()
        except redis.RedisError as exc:
            raise StoreUnreachable(f"Redis of connection {self.redis_conn_id!r} did not answer: {exc}.",
                                   hint="Nothing was changed. Start Redis or fix the connection; the task retries.")
        self.log.info("Hot tier: Redis %s (prefix %r)", self.redis_conn_id, self.key_prefix)
        return RedisRowSaver(client, prefix=self.key_prefix)

    @contextmanager
    def cold(self):
        from include.checkpoint_core.postgres_store import postgres_connection

        target = self.store_target(self.postgres_conn_id)
        if target.kind != "postgres":
            raise TieringConfigError(f"connection {self.postgres_conn_id!r} is {target.kind}; the cold tier is PostgreSQL")
        with postgres_connection(target.location) as conn:
            yield conn

    def archive(self, required: bool = True):
        store = archive_store(self.archive_url)
        if store is None and required:
            raise TieringConfigError("no archive is configured: set the archive param or the Variable "
                                     f"{ARCHIVE_VARIABLE} (s3://<aws conn id>@<bucket>/<prefix> or file:///path)")
        if store is not None:
            self.log.info("Archive: %s", store.describe())
        return store


class TieringPlanOperator(_TieringOperator):
    """Check every tier, then list what this run moves, in groups for the mapped moves."""

    template_fields: Sequence[str] = (*_TieringOperator.template_fields, "demote_after_hours", "archive_after_days",
                                      "max_threads", "threads_per_task", "rehydrate_threads")

    def __init__(self, *, demote_after_hours: float | str = 24, archive_after_days: float | str = 90,
                 max_threads: int | str = 10000, threads_per_task: int | str = 500,
                 rehydrate_threads: list[str] | str = (), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.demote_after_hours, self.archive_after_days = demote_after_hours, archive_after_days
        self.max_threads, self.threads_per_task = max_threads, threads_per_task
        self.rehydrate_threads = rehydrate_threads

    def run(self, context: Context) -> dict[str, Any]:
        from include.checkpoint_core.tiering.jobs import plan

        hot = self.hot()
        archive = self.archive(required=False)
        with self.cold() as conn:
            result = plan(conn, hot, demote_after_hours=float(self.demote_after_hours),
                          archive_after_days=float(self.archive_after_days), max_threads=int(self.max_threads),
                          threads_per_task=int(self.threads_per_task), rehydrate=list(self.rehydrate_threads or ()),
                          archive_enabled=archive is not None)
        if archive is None:
            result["archive_note"] = f"no archive configured ({ARCHIVE_VARIABLE}): nothing is archived or rehydrated"
            if result["rehydrate"]:
                raise TieringConfigError("threads to rehydrate were named, but no archive is configured")
        if result["rehydrate_not_archived"]:
            self.log.warning("Not archived, so not rehydrated: %s", result["rehydrate_not_archived"])
        if result["conflict_count"]:
            self.log.warning("%s threads are in two tiers (hot rows and a cold/archive entry); they are left "
                             "alone, never merged: %s", result["conflict_count"], result["conflicts"])
        result["dry_run"] = as_bool(self.dry_run)
        self.log.info("Plan: %s", result["counts"])
        return result


class _MoveGroupOperator(_TieringOperator):
    template_fields: Sequence[str] = (*_TieringOperator.template_fields, "thread_ids")
    action = ""

    def __init__(self, *, thread_ids: list[str] | str = (), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.thread_ids = thread_ids

    def run(self, context: Context) -> dict[str, Any]:
        from include.checkpoint_core.tiering import jobs

        ids = list(self.thread_ids or ())
        hot = self.hot()
        archive = self.archive(required=self.action != "demote")
        with self.cold() as conn:
            if as_bool(self.dry_run):
                return jobs.dry_run_sizes(self.action, ids, lambda t: self.size(conn, hot, t))
            summary = jobs.run_moves(self.action, ids, lambda group: self.move(conn, hot, archive, group),
                                     log=self.log.info)
        for result, threads in summary["not_moved"].items():
            self.log.warning("%s: %s threads %s: %s", self.action, len(threads), result, threads[:10])
        if summary.get("objects"):
            summary["manifest"] = self.write_manifest(archive, context, summary.pop("objects"))
        return summary

    def write_manifest(self, archive, context: Context, objects: list[dict]) -> str:
        """The objects this task archived, beside them: the archive can be read without the directory."""
        from checkpoint_ops.artifacts import safe_key
        from include.checkpoint_core.tiering.archive import manifest

        ti = context["ti"]
        key = f"manifests/{safe_key(ti.run_id)}/{ti.task_id}-{max(ti.map_index, 0)}.json"
        archive.put(key, manifest(objects))
        self.log.info("Manifest of %s archived threads: %s/%s", len(objects), archive.describe(), key)
        return key


def _hot_size(hot, tid: str) -> tuple[int, int]:
    rows = hot.export_thread(tid).rows
    return len(rows.checkpoints), rows.nbytes


def _cold_size(conn, tid: str) -> tuple[int, int]:
    from include.checkpoint_core.tiering.rows import read_pg_thread

    rows = read_pg_thread(conn, tid)
    return len(rows.checkpoints), rows.nbytes


class TieringDemoteOperator(_MoveGroupOperator):
    """Hot -> cold for a group of idle threads: copy, verify, and delete from Redis only if unchanged."""

    action = "demote"

    def size(self, conn, hot, tid):
        return _hot_size(hot, tid)

    def move(self, conn, hot, archive, group):
        from include.checkpoint_core.tiering.moves import demote_group

        return demote_group(conn, hot, group)


class TieringArchiveOperator(_MoveGroupOperator):
    """Cold -> archive: one checksummed object per thread, read back and compared before the rows go."""

    action = "archive"

    def size(self, conn, hot, tid):
        return _cold_size(conn, tid)

    def move(self, conn, hot, archive, group):
        from include.checkpoint_core.tiering.moves import archive_thread

        return [archive_thread(conn, hot, archive, t) for t in group]


class TieringRehydrateOperator(_MoveGroupOperator):
    """Archive -> cold for the threads the run names: digest checked, rows compared, object dropped."""

    action = "rehydrate"

    def size(self, conn, hot, tid):
        from include.checkpoint_core.tiering import directory

        e = directory.entry(conn, tid)
        return (e.checkpoints or 0, e.row_bytes or 0) if e else (0, 0)

    def move(self, conn, hot, archive, group):
        from include.checkpoint_core.tiering.moves import rehydrate

        return [rehydrate(conn, hot, archive, t) for t in group]


class TieringCostReportOperator(_TieringOperator):
    """Threads and bytes per tier x the prices -> monthly cost, beside keeping everything hot."""

    template_fields: Sequence[str] = (*_TieringOperator.template_fields, "prices", "pushgateway_conn_id")

    def __init__(self, *, prices: dict[str, float] | str, pushgateway_conn_id: str = PUSHGATEWAY_CONN_ID,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.prices, self.pushgateway_conn_id = prices, pushgateway_conn_id

    def run(self, context: Context) -> dict[str, Any]:
        from checkpoint_ops.artifacts import write_report
        from include.checkpoint_core.tiering import jobs

        hot = self.hot()
        with self.cold() as conn:
            measured = jobs.measure(conn, hot)
        prices = {tier: float(self.prices[tier]) for tier in jobs.TIERS}
        report = {"measured": measured, **jobs.cost(measured, prices), "moves": self._moves(context)}
        self.log.info("Tier costs (per month, at the configured prices)\n%s", jobs.render_cost(report))
        dag_run = context["dag_run"]
        report["artifact"] = write_report(dag_run.dag_id, dag_run.run_id, "tiering", report)
        report["pushgateway"] = self._publish(report)
        return report

    def _moves(self, context: Context) -> dict[str, Any]:
        """What this run's moves did, from their XComs (a skipped or failed group is simply absent)."""
        ti = context["ti"]
        out = {}
        for task_id in ("demote", "archive", "rehydrate"):
            results = ti.xcom_pull(task_ids=task_id, default=None)
            if results is None:
                continue
            results = results if isinstance(results, list) else [results]
            merged: dict[str, Any] = {"threads": 0, "checkpoints": 0, "outcomes": {}}
            for r in results:
                if not r:
                    continue
                merged["threads"] += r.get("threads", 0)
                merged["checkpoints"] += r.get("checkpoints", 0)
                for k, v in r.get("outcomes", {}).items():
                    merged["outcomes"][k] = merged["outcomes"].get(k, 0) + v
            out[task_id] = merged
        return out

    def _publish(self, report: dict[str, Any]) -> str:
        from include.checkpoint_core.health.prometheus import safe_url
        from include.checkpoint_core.health.publish import push_registry
        from include.checkpoint_core.tiering.jobs import PUSH_JOB, cost_registry

        service = http_service(self.pushgateway_conn_id)
        if service is None:
            return f"skipped: no connection {self.pushgateway_conn_id!r}"
        hook, session = service
        auth = session.auth
        try:
            push_registry(hook.base_url, PUSH_JOB, cost_registry(report, time.time()), {"prefix": self.key_prefix},
                          username=getattr(auth, "username", None), password=getattr(auth, "password", None))
        except Exception as exc:  # noqa: BLE001 - the gauges are a view; their outage must not fail the report
            self.log.warning("Could not push the tiering gauges to %s: %s", safe_url(hook.base_url), exc)
            return f"failed: {type(exc).__name__}"
        return "pushed"
