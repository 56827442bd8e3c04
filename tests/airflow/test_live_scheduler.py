"""checkpoint_migration under a real scheduler: LocalExecutor, task processes of their own.

Unlike ``dag.test()`` (one process, one task at a time), here a real Airflow (tests/airflow/live.py:
api-server, scheduler with LocalExecutor and parallelism 2, dag-processor, PostgreSQL metadata)
runs the DAG, so these tests show that

- the mapped import and verify task instances really run side by side, in separate processes;
- a task process SIGKILLed half way through its group of batches is retried by Airflow and the
  run converges to the same target, without duplicates;
- with the artifacts root on S3 (moto over HTTP), batches written by the export's process are
  read by the import processes.

Airflow starts once for the module. Timings (LocalExecutor vs ``dag.test()``) are compared by
benchmarks/migration_executor.py, not asserted on here.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from contextlib import closing
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import psycopg
import pytest

from tests.airflow.live import LiveAirflow, alive, descendants, kill_task_process, scaled_source
from tests.conftest import _dsn_for, aws_conn_env, postgres_conn_env, sqlite_conn_env

DAG_ID = "checkpoint_migration"
COPIES = 12  # the session's 24-thread sample-agent source, 12 times over: 288 threads, ~39K rows
TARGETS = ("parallel", "kill", "s3")
RUN_TIMEOUT = 300
PARALLEL_CONF = {"batch_size": 1000, "batches_per_task": 8, "verify_mode": "full", "verify_threads_per_task": 100}

pytestmark = [pytest.mark.live, pytest.mark.timeout(900)]


@dataclass
class Live:
    airflow: LiveAirflow
    source: Path
    source_counts: dict[str, int]
    targets: dict[str, str]  # name -> DSN; the connection id is live_target_<name>
    s3_endpoint: str

    def run(self, target: str, conf: dict, *, while_running=None) -> tuple[str, float]:
        """Trigger the migration into ``target``; wait until it finishes (calling ``while_running``
        every 50 ms meanwhile, if given); the run id and its wall time from trigger to end."""
        started = time.monotonic()
        run_id = self.airflow.trigger(DAG_ID, {**conf, "target": f"live_target_{target}"})
        deadline = started + RUN_TIMEOUT
        while (state := self.airflow.run_state(DAG_ID, run_id)) not in ("success", "failed"):
            self.airflow.check_alive()
            if time.monotonic() > deadline:
                pytest.fail(f"run {run_id} not finished after {RUN_TIMEOUT}s\n{self.airflow.diagnostics(DAG_ID, run_id)}")
            if while_running is not None:
                while_running(run_id)
            time.sleep(0.05 if while_running else 0.5)
        wall = time.monotonic() - started
        if state != "success":
            pytest.fail(f"run {run_id} ended {state}\n{self.airflow.diagnostics(DAG_ID, run_id)}")
        print(f"\n{DAG_ID} {run_id} under LocalExecutor: {wall:.1f}s from trigger to success")
        print(self.airflow.timeline(DAG_ID, run_id))
        return run_id, wall

    def mapped(self, run_id: str, task_id: str) -> list[dict]:
        return [ti for ti in self.airflow.task_instances(DAG_ID, run_id, task_id) if ti["map_index"] >= 0]


def _source_counts(path: Path) -> dict[str, int]:
    with closing(sqlite3.connect(path)) as conn:
        return {table: conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                for table in ("checkpoints", "writes", "store")}


def _target_counts(dsn: str) -> dict[str, int]:
    with closing(psycopg.connect(dsn)) as conn:
        return {table: conn.execute(f"SELECT COUNT(*) FROM {target}").fetchone()[0]
                for table, target in (("checkpoints", "checkpoints"), ("writes", "checkpoint_writes"), ("store", "store"))}


@pytest.fixture(scope="module")
def live(generated_source, tmp_path_factory, pg_admin, moto_s3):
    """One real Airflow for the module, with the source, one fresh target per test and the moto
    endpoint in every process's environment (connections are env vars, as in a deployment)."""
    source = scaled_source(generated_source[0], tmp_path_factory.mktemp("live") / "source.sqlite", COPIES)
    targets = {}
    for name in TARGETS:
        db = f"cpo_live_{name}_{uuid.uuid4().hex[:8]}"
        pg_admin.execute(f'CREATE DATABASE "{db}"')
        targets[name] = _dsn_for(db)
    env = {
        "AIRFLOW_CONN_CHECKPOINTS_SQLITE": sqlite_conn_env(source),
        **{f"AIRFLOW_CONN_LIVE_TARGET_{name.upper()}": postgres_conn_env(dsn) for name, dsn in targets.items()},
        "AIRFLOW_CONN_CHECKPOINT_ARTIFACTS": aws_conn_env(moto_s3),
    }
    try:
        with LiveAirflow(env) as airflow:
            airflow.wait_for_dag(DAG_ID)
            print(f"\nAirflow (api-server, scheduler, dag-processor) up in {airflow.startup_s:.1f}s")
            yield Live(airflow, source, _source_counts(source), targets, moto_s3)
    finally:
        for dsn in targets.values():
            pg_admin.execute(f'DROP DATABASE IF EXISTS "{psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]}" WITH (FORCE)')


def _overlaps(tis: list[dict]) -> list[tuple[int, int]]:
    return [(a["map_index"], b["map_index"]) for a, b in combinations(tis, 2)
            if a["start_date"] < b["end_date"] and b["start_date"] < a["end_date"]]


def _max_concurrency(tis: list[dict]) -> int:
    events = sorted([(ti["start_date"], 1) for ti in tis] + [(ti["end_date"], -1) for ti in tis],
                    key=lambda e: (e[0], e[1]))  # an end at the same instant as a start comes first
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def _assert_verified(live: Live, run_id: str, target: str) -> dict:
    verify = live.airflow.xcom(DAG_ID, run_id, "verify")
    assert verify["ok"] is True and verify["mode"] == "full", verify
    assert verify["counts_ok"] and verify["content_ok"]
    summary = live.airflow.xcom(DAG_ID, run_id, "report")
    assert summary["verified"] is True and summary["rejected_rows"] == 0
    assert _target_counts(live.targets[target]) == live.source_counts
    return summary


def test_a_task_process_killed_mid_import_is_retried_and_the_run_converges(live):
    airflow = live.airflow
    scheduler_tree: set[int] = set()
    killed: dict = {}

    def kill_one_mid_import(run_id: str) -> None:
        if killed:
            return
        groups = airflow.xcom(DAG_ID, run_id, "plan_import")
        if not groups:
            return
        for ti in live.mapped(run_id, "import_batches"):
            if ti["state"] != "running" or not ti["pid"]:
                continue
            group = groups[ti["map_index"]]
            done = _committed(live.targets["kill"], run_id, group)
            if 1 <= done <= len(group) - 3:
                scheduler_tree.update(descendants(airflow.procs["scheduler"].pid))
                try:
                    title = Path(f"/proc/{ti['pid']}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
                except OSError:
                    continue  # it has just finished
                killed.update(map_index=ti["map_index"], pid=ti["pid"], group=group, committed_before=done, title=title,
                              members=kill_task_process(ti["pid"]))
                deadline = time.monotonic() + 5
                while any(alive(pid) for pid in killed["members"]) and time.monotonic() < deadline:
                    time.sleep(0.05)
                killed["dead"] = not any(alive(pid) for pid in killed["members"])
                # Its open transaction rolled back; the retry waits for retry_delay (30 s).
                killed["committed_after_kill"] = _committed(live.targets["kill"], run_id, group)
                return

    # Batches of 100 rows, ~100 per task instance: each import instance runs for a few seconds.
    run_id, wall = live.run("kill", {"batch_size": 100, "batches_per_task": 100, "verify_mode": "full",
                                     "verify_threads_per_task": 100}, while_running=kill_one_mid_import)

    assert killed, "never saw an import task instance half way through its batches"
    assert killed["pid"] in scheduler_tree, "the pid killed is a task process of the scheduler's LocalExecutor"
    assert killed["title"].startswith("airflow worker --"), killed["title"]  # the task runner's process title
    assert killed["dead"], f"pids {killed['members']} still alive 5 s after SIGKILL"
    print(f"  killed import_batches[{killed['map_index']}] ({killed['title']!r}, pids {killed['members']}) with "
          f"{killed['committed_after_kill']} of its {len(killed['group'])} batches committed")
    assert killed["committed_after_kill"] < len(killed["group"]), "killed half way through its group"

    ti = {t["map_index"]: t for t in live.mapped(run_id, "import_batches")}[killed["map_index"]]
    assert ti["state"] == "success" and ti["try_number"] == 2, ti
    assert ti["pid"] != killed["pid"]
    (first,) = [h for h in airflow.task_history(DAG_ID, run_id, "import_batches")
                if h["map_index"] == killed["map_index"] and h["try_number"] == 1]
    assert first["state"] == "failed" and first["pid"] == killed["pid"], first
    assert _committed(live.targets["kill"], run_id, killed["group"]) == len(killed["group"]), \
        "the retry imported the rest of the group"

    _assert_verified(live, run_id, "kill")
    with closing(psycopg.connect(live.targets["kill"])) as conn:
        per_table = dict(conn.execute(
            "SELECT table_name, SUM(rows_imported) FROM checkpoint_ops_migration_batches WHERE migration_id = %s "
            "GROUP BY table_name", (run_id,)).fetchall())
    assert per_table == live.source_counts, "every row imported exactly once across both tries"


def _committed(dsn: str, run_id: str, group: list[dict]) -> int:
    """How many of ``group``'s batches the target has committed for this migration."""
    with closing(psycopg.connect(dsn, connect_timeout=5)) as conn:
        if conn.execute("SELECT to_regclass('checkpoint_ops_migration_batches')").fetchone()[0] is None:
            return 0
        rows = conn.execute("SELECT table_name, batch_no FROM checkpoint_ops_migration_batches WHERE migration_id = %s",
                            (run_id,)).fetchall()
    wanted = {(g["table"], g["number"]) for g in group}
    return len(wanted & set(rows))


def test_mapped_tasks_run_in_parallel_processes_sharing_artifacts_on_s3(live):
    """One run shows both: mapped instances overlap, each in a process of its own, within
    [core] parallelism; and the batches one process wrote to S3 are read by the others."""
    import boto3

    bucket = f"cpo-live-{uuid.uuid4().hex[:10]}"
    s3 = boto3.client("s3", endpoint_url=live.s3_endpoint, region_name="us-east-1", aws_access_key_id="testing",
                      aws_secret_access_key="testing")
    s3.create_bucket(Bucket=bucket)
    # The Variable, in the metadata DB: every task process reads it through the execution API.
    live.airflow.set_variable("checkpoint_artifacts_url", f"s3://checkpoint_artifacts@{bucket}/live")
    try:
        run_id, wall = live.run("s3", PARALLEL_CONF)
    finally:
        live.airflow.delete_variable("checkpoint_artifacts_url")

    (export,) = live.airflow.task_instances(DAG_ID, run_id, "export")
    imports, verifies = live.mapped(run_id, "import_batches"), live.mapped(run_id, "verify_threads")
    assert len(imports) >= 4 and len(verifies) >= 2, (len(imports), len(verifies))
    assert all(ti["state"] == "success" and ti["try_number"] == 1 for ti in imports + verifies)
    overlapping = _overlaps(imports)
    for ti in imports + verifies:
        print(f"  {ti['task_id']}[{ti['map_index']}] pid {ti['pid']}: {ti['start_date']:%H:%M:%S.%f} -> "
              f"{ti['end_date']:%H:%M:%S.%f} ({ti['duration']:.2f}s)")
    print(f"  overlapping import instances: {overlapping}")
    assert overlapping, "no two mapped import task instances ran at the same time"
    assert len({ti["pid"] for ti in imports}) == len(imports), "each task instance runs in a process of its own"
    everything = [ti for ti in live.airflow.task_instances(DAG_ID, run_id) if ti["start_date"] and ti["end_date"]
                  and ti["pid"]]
    assert _max_concurrency(everything) <= 2, "never more task processes at once than [core] parallelism"
    print(f"  export: pid {export['pid']} on {export['hostname']}; import_batches: "
          + ", ".join(f"pid {ti['pid']} on {ti['hostname']}" for ti in imports))
    assert export["pid"] not in {ti["pid"] for ti in imports}, "the batches were read by other processes"

    prefix = f"live/migrations/{run_id}/"
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for o in page.get("Contents", [])]
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=prefix + "manifest.json")["Body"].read())
    assert len(manifest["batches"]) >= len(imports)
    assert {prefix + "batches/" + b["file"] for b in manifest["batches"]} <= set(keys), keys[:20]
    assert {prefix + "snapshot.sqlite", prefix + "report.json"} <= set(keys)
    assert not (live.airflow.home / "checkpoint-artifacts" / "migrations" / run_id).exists(), \
        "nothing of this run went to the local artifacts folder"

    summary = _assert_verified(live, run_id, "s3")
    assert summary["report_file"].startswith(f"s3://checkpoint_artifacts@{bucket}/live/migrations/")
    report = json.loads(s3.get_object(Bucket=bucket, Key=prefix + "report.json")["Body"].read())
    assert report["verify"]["ok"] and report["verify"]["mode"] == "full"

