"""checkpoint_migration under a real scheduler: LocalExecutor, task processes of their own.

Unlike ``dag.test()`` (one process, one task at a time), here a real Airflow (tests/airflow/live.py:
api-server, scheduler with LocalExecutor and parallelism 2, dag-processor, triggerer, PostgreSQL metadata)
runs the DAG, so these tests show that

- the mapped import and verify task instances really run side by side, in separate processes;
- a task process SIGKILLed half way through its group of batches is retried by Airflow and the
  run converges to the same target, without duplicates;
- with the artifacts root on S3 (moto over HTTP), batches written by the export's process are
  read by the import processes.

Airflow starts once for the session (tests/live/conftest.py). Timings (LocalExecutor vs ``dag.test()``) are compared by
benchmarks/migration_executor.py, not asserted on here.
"""

from __future__ import annotations

import json
import time
import uuid
from contextlib import closing
from itertools import combinations
from pathlib import Path

import psycopg
import pytest

from tests.airflow.live import alive, descendants, kill_task_process
from tests.live.conftest import DAG_ID, _assert_verified, _committed

PARALLEL_CONF = {"batch_size": 1000, "batches_per_task": 8, "verify_mode": "full", "verify_threads_per_task": 100}

pytestmark = [pytest.mark.live, pytest.mark.timeout(900)]


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
                # Its open transaction rolled back; the retry waits for retry_delay (RETRY_DELAY_S here).
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

