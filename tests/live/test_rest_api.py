"""The live Airflow as a user drives it through the REST API v2 (a JWT from ``/auth/token``).

Every DAG listed with no import errors, a pause and unpause, a triggered migration followed to
success and its ``report`` log read back with the summary table; a param that fails validation
answered with a readable error; and a retry the way a user does one: an import that fails part-way
(its target refuses connections), the connection fixed and the failed task cleared through the
API, and the run converging to the database a clean run gives.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from contextlib import closing

import psycopg
import pytest

from tests.airflow.live import ApiError, free_port
from tests.conftest import ROOT, postgres_conn_env
from tests.live.conftest import DAG_ID, _assert_verified, _committed

pytestmark = [pytest.mark.live, pytest.mark.timeout(600)]

CONF = {"batch_size": 1000, "batches_per_task": 20, "verify_mode": "full", "verify_threads_per_task": 200}
RETRY_CONF = {"batch_size": 500, "batches_per_task": 20, "verify_mode": "full", "verify_threads_per_task": 200}


def _dag_ids_in_files() -> set[str]:
    return {m for path in (ROOT / "dags").glob("*.py")
            for m in re.findall(r'dag_id="([a-z_]+)"', path.read_text())}


def _follow(airflow, run_id: str, timeout: float = 300) -> dict:
    """GET the run until it is finished, as a client polls it."""
    deadline = time.monotonic() + timeout
    while True:
        run = airflow.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")
        if run["state"] in ("success", "failed"):
            return run
        if time.monotonic() > deadline:
            pytest.fail(f"run {run_id} still {run['state']} after {timeout}s\n{airflow.diagnostics(DAG_ID, run_id)}")
        airflow.check_alive()
        time.sleep(0.5)


def _task_states(airflow, run_id: str) -> dict[tuple[str, int], tuple[str, int]]:
    answer = airflow.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances?limit=1000")
    return {(ti["task_id"], ti["map_index"]): (ti["state"], ti["try_number"]) for ti in answer["task_instances"]}


def _log_text(airflow, run_id: str, task_id: str, try_number: int, map_index: int = -1) -> str:
    answer = airflow.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}"
                                f"?full_content=true&map_index={map_index}")
    content = answer["content"]
    if isinstance(content, str):
        return content
    # Structured lines: the message in "event", a failure's exception in "error_detail".
    return "\n".join(f"{line.get('event', '')} {json.dumps(line['error_detail']) if line.get('error_detail') else ''}"
                     if isinstance(line, dict) else str(line) for line in content)


def _digest(dsn: str) -> dict[str, str]:
    """An md5 of every row of each target table, in a fixed order: two databases with the same
    digests hold the same checkpoints, writes, blobs and store items."""
    tables = {"checkpoints": "SELECT (t.*)::text FROM checkpoints t",
              "checkpoint_writes": "SELECT (t.*)::text FROM checkpoint_writes t",
              "checkpoint_blobs": "SELECT (t.*)::text FROM checkpoint_blobs t",
              "store": "SELECT concat_ws('|', prefix, key, value::text) FROM store"}
    with closing(psycopg.connect(dsn)) as conn:
        return {name: conn.execute(f"SELECT count(*) || ':' || coalesce(md5(string_agg(x, '|' ORDER BY x)), '') "
                                   f"FROM ({sql}) AS r(x)").fetchone()[0] for name, sql in tables.items()}


@pytest.fixture(scope="module")
def clean_run(live):
    """A migration into the ``api`` target, triggered and followed through the REST API."""
    airflow = live.airflow
    run_id = f"api__{uuid.uuid4().hex[:10]}"
    started = time.monotonic()
    airflow.api("POST", f"/api/v2/dags/{DAG_ID}/dagRuns",
                {"dag_run_id": run_id, "logical_date": None, "conf": {**CONF, "target": "live_target_api"}})
    run = _follow(airflow, run_id)
    print(f"\nREST-triggered migration {run_id}: {run['state']} in {time.monotonic() - started:.1f}s")
    assert run["state"] == "success", airflow.diagnostics(DAG_ID, run_id)
    return run_id


def test_every_dag_is_listed_without_import_errors_and_unpauses(live):
    airflow = live.airflow
    expected = _dag_ids_in_files()
    assert {"checkpoint_migration", "checkpoint_setup", "checkpoint_pruning", "checkpoint_backup",
            "checkpoint_restore_drill", "checkpoint_health"} <= expected
    deadline = time.monotonic() + 90
    while True:  # the dag-processor parses the folder file by file
        dags = {d["dag_id"]: d for d in airflow.api("GET", "/api/v2/dags?limit=100")["dags"]}
        errors = airflow.api("GET", "/api/v2/importErrors")
        if expected <= set(dags) or errors["total_entries"] or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert errors["total_entries"] == 0, json.dumps(errors["import_errors"], indent=1)[:3000]
    assert expected <= set(dags), f"not listed: {sorted(expected - set(dags))}"
    for dag_id in expected:
        assert dags[dag_id]["description"], f"{dag_id} has no description"
        assert "checkpoint-ops" in {t["name"] for t in dags[dag_id]["tags"]}, dags[dag_id]["tags"]

    assert airflow.api("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": True})["is_paused"] is True
    assert airflow.api("GET", f"/api/v2/dags/{DAG_ID}")["is_paused"] is True
    assert airflow.api("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False})["is_paused"] is False
    with pytest.raises(ApiError) as denied:  # and nothing without a token
        airflow.http("GET", "/api/v2/dags")
    assert denied.value.status in (401, 403)


def test_a_triggered_migration_succeeds_and_its_report_log_has_the_summary_table(live, clean_run):
    airflow = live.airflow
    states = _task_states(airflow, clean_run)
    assert {state for state, _ in states.values()} == {"success"}, states
    assert len([k for k in states if k[0] == "import_batches"]) >= 2, "the import was mapped"
    _assert_verified(live, clean_run, "api")

    log = _log_text(airflow, clean_run, "report", states[("report", -1)][1])
    header = re.search(r"table\s+read\s+imported\s+existing\s+rejected\s+catch-up\s+time \(s\)", log)
    assert header, log[-3000:]
    rows = {m.group(1): int(m.group(2).replace(",", "")) for m in
            re.finditer(r"^\s*(checkpoints|checkpoint_writes|store)\s+([\d,]+)\s+[\d,]+", log, re.M)}
    assert rows == {"checkpoints": live.source_counts["checkpoints"], "checkpoint_writes": live.source_counts["writes"],
                    "store": live.source_counts["store"]}, log[-3000:]
    assert "Verification: passed (full mode" in log


def test_a_param_that_fails_validation_gets_a_readable_error_and_no_run(live):
    airflow = live.airflow
    before = airflow.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns?limit=1")["total_entries"]
    with pytest.raises(ApiError) as refused:
        airflow.api("POST", f"/api/v2/dags/{DAG_ID}/dagRuns",
                    {"logical_date": None, "conf": {"batch_size": 5, "target": "live_target_api"}})
    print(f"\n  trigger with batch_size 5: HTTP {refused.value.status}: {refused.value.body[:400]}")
    assert refused.value.status == 400
    detail = json.loads(refused.value.body)["detail"]
    assert "batch_size" in detail and "5 is less than the minimum of 100" in detail, detail
    assert airflow.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns?limit=1")["total_entries"] == before


def test_an_import_failed_part_way_is_cleared_through_the_api_and_the_run_converges(live, clean_run):
    airflow = live.airflow
    conn_id, dsn = "live_target_retry", live.targets["retry"]
    good = {"connection_id": conn_id, **json.loads(postgres_conn_env(dsn))}
    airflow.api("POST", "/api/v2/connections", good)
    broken: dict = {}

    def refuse_once_an_import_committed(run_id: str) -> None:
        """When the first group has committed a batch, point the connection at a port with nothing on
        it: instances already connected finish their group, the ones that start later are refused."""
        if broken or not (groups := airflow.xcom(DAG_ID, run_id, "plan_import")):
            return
        done = sum(_committed(dsn, run_id, group) for group in groups)
        if done >= 1:
            airflow.api("PATCH", f"/api/v2/connections/{conn_id}", {**good, "port": free_port()})
            broken.update(committed=done, total=sum(len(g) for g in groups), groups=len(groups))

    try:
        run_id, _ = live.run("retry", RETRY_CONF, while_running=refuse_once_an_import_committed, expect="failed")
        assert broken, "the import never started"
        states = _task_states(airflow, run_id)
        imports = {k[1]: v for k, v in states.items() if k[0] == "import_batches"}
        failed = sorted(i for i, (state, _) in imports.items() if state == "failed")
        print(f"  target refused after {broken['committed']} of {broken['total']} batches; import groups "
              f"{ {i: s for i, (s, _) in imports.items()} }")
        assert failed and len(failed) < len(imports), f"part-way: some groups imported, some failed: {imports}"
        assert all(imports[i][1] == 3 for i in failed), "each failed group used its two retries first"
        assert states[("verify", -1)][0] == "upstream_failed"
        committed_before = sum(_committed(dsn, run_id, g) for g in airflow.xcom(DAG_ID, run_id, "plan_import"))
        assert committed_before < broken["total"]
        log = _log_text(airflow, run_id, "import_batches", 3, map_index=failed[0])
        assert "Connection refused" in log, log[-3000:]  # what the user reads in the failed try's log

        # The user fixes the connection, then clears import_batches and everything downstream.
        airflow.api("PATCH", f"/api/v2/connections/{conn_id}", good)
        cleared = airflow.api("POST", f"/api/v2/dags/{DAG_ID}/clearTaskInstances",
                              {"dry_run": False, "dag_run_id": run_id, "task_ids": ["import_batches"],
                               "only_failed": False, "include_downstream": True, "reset_dag_runs": True})
        assert {"import_batches", "verify", "report"} <= {ti["task_id"] for ti in cleared["task_instances"]}
        run = _follow(airflow, run_id)
        assert run["state"] == "success", airflow.diagnostics(DAG_ID, run_id)
    finally:
        airflow.api("DELETE", f"/api/v2/connections/{conn_id}")

    _assert_verified(live, run_id, "retry")
    with closing(psycopg.connect(dsn)) as conn:
        per_table = dict(conn.execute(
            "SELECT table_name, SUM(rows_imported) FROM checkpoint_ops_migration_batches WHERE migration_id = %s "
            "GROUP BY table_name", (run_id,)).fetchall())
    assert per_table == live.source_counts, "every row imported exactly once across the failed and the cleared tries"
    assert _digest(dsn) == _digest(live.targets["api"]), "the same database as the clean run's"
