"""checkpoint_migration under a real scheduler (LocalExecutor) against ``dag.test()``, same conf, same source.

    python benchmarks/migration_executor.py [--copies 12] [--repeat 2] [--parallelism 2]
                                            [--batch-size 1000] [--batches-per-task 8] [--verify-threads-per-task 100]

The source is what tests/airflow/test_live_scheduler.py migrates: the sample agent's 24 threads
(tests' SOURCE_SPEC) cloned ``--copies`` times. Each run migrates into a fresh PostgreSQL database,
with ``verify_mode=full``.

- LocalExecutor: tests/airflow/live.py's Airflow (api-server, scheduler with LocalExecutor and
  ``--parallelism`` worker slots, dag-processor; metadata on PostgreSQL), started once (its start-up
  is printed, not counted); each run is timed from the REST trigger until the run is finished.
- dag.test(): a separate process with an Airflow home and PostgreSQL metadata DB of its own (migrated
  and the DAGs serialised before timing), timing ``dag.test(run_conf=...)`` alone: every task in
  that one process, one after the other.

Timings are printed, never asserted on; on a shared machine run it a few times.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import closing
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from benchmarks.scratch_db import ADMIN_DSN, create_db, drop_db  # noqa: E402

DAG_ID = "checkpoint_migration"
# tests/conftest.py's SOURCE_SPEC: the source the DAG tests migrate.
SOURCE_SPEC = dict(threads=24, turns=3, interrupted=0.25, crashed=0.125, min_age_days=1, max_age_days=30, seed=11)


def build_source(copies: int) -> Path:
    from tests.airflow.live import scaled_source

    base = Path(tempfile.gettempdir()) / "cpo-bench-executor-source-24.sqlite"
    if not base.exists():
        from langgraph.checkpoint.sqlite import SqliteSaver
        from langgraph.store.sqlite import SqliteStore

        from include.checkpoint_core.sqlite_store import connect_sqlite, setup_sqlite
        from include.sample_agent.workload import WorkloadSpec, generate

        tmp = base.with_suffix(".partial")
        for suffix in ("", "-wal", "-shm"):
            Path(f"{tmp}{suffix}").unlink(missing_ok=True)
        setup_sqlite(tmp)
        with closing(connect_sqlite(tmp)) as conn, closing(connect_sqlite(tmp, autocommit=True)) as store_conn:
            store = SqliteStore(store_conn)
            store.setup()
            generate(SqliteSaver(conn), WorkloadSpec(**SOURCE_SPEC), store)
            conn.commit()
        with closing(sqlite3.connect(tmp)) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.execute("PRAGMA journal_mode=DELETE")
        tmp.replace(base)
    out = base.with_name(f"cpo-bench-executor-source-24x{copies}.sqlite")
    if not out.exists():
        scaled_source(base, out.with_suffix(".partial"), copies).replace(out)
    return out


def counts(path: Path) -> dict[str, int]:
    with closing(sqlite3.connect(path)) as conn:
        return {"threads": conn.execute("SELECT COUNT(DISTINCT thread_id) FROM checkpoints").fetchone()[0],
                **{t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("checkpoints", "writes", "store")}}


def conn_env(source: Path, targets: list[str]) -> dict[str, str]:
    from psycopg.conninfo import conninfo_to_dict

    env = {"AIRFLOW_CONN_CHECKPOINTS_SQLITE": json.dumps({"conn_type": "sqlite", "host": str(source)})}
    for i, dsn in enumerate(targets):
        parts = conninfo_to_dict(dsn)
        env[f"AIRFLOW_CONN_BENCH_TARGET_{i}"] = json.dumps({
            "conn_type": "postgres", "host": parts.get("host", "127.0.0.1"), "port": int(parts.get("port", 5432)),
            "login": parts.get("user", "postgres"), "schema": parts["dbname"]})
    return env


def task_seconds(rows) -> float:
    return sum(r["duration"] or 0 for r in rows)


def live_runs(source: Path, targets: list[str], conf: dict, parallelism: int) -> list[dict]:
    from tests.airflow.live import LiveAirflow

    out = []
    with LiveAirflow(conn_env(source, targets), parallelism=parallelism) as live:
        live.wait_for_dag(DAG_ID)
        print(f"LocalExecutor Airflow up in {live.startup_s:.1f}s (not counted)", flush=True)
        for i in range(len(targets)):
            started = time.monotonic()
            run_id = live.trigger(DAG_ID, {**conf, "target": f"bench_target_{i}"})
            while (state := live.run_state(DAG_ID, run_id)) not in ("success", "failed"):
                live.check_alive()
                if time.monotonic() - started > 900:
                    raise SystemExit(f"run {run_id} not finished after 900s\n{live.diagnostics(DAG_ID, run_id)}")
                time.sleep(0.1)
            wall = time.monotonic() - started
            if state != "success":
                raise SystemExit(f"run {run_id} {state}\n{live.diagnostics(DAG_ID, run_id)}")
            tis = live.task_instances(DAG_ID, run_id)
            out.append({"wall": wall, "task_seconds": task_seconds(tis),
                        "import_instances": sum(1 for t in tis if t["task_id"] == "import_batches")})
            print(f"  LocalExecutor run {i + 1}: {wall:.1f}s\n{live.timeline(DAG_ID, run_id)}", flush=True)
    return out


DAGS_TEST_CHILD = r"""
import json, sys, time
from airflow.utils import db
db.initdb()
from airflow.dag_processing.bundles.manager import DagBundlesManager
from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db
from airflow.models.taskinstance import TaskInstance
from airflow.utils.session import create_session

DagBundlesManager().sync_bundles_to_db()
sync_bag_to_db(DagBag(sys.argv[1]), "dags-folder", None)
conf, runs = json.loads(sys.argv[2]), int(sys.argv[3])
for i in range(runs):
    dag = DagBag(sys.argv[1] + "/checkpoint_migration.py").get_dag("checkpoint_migration")  # fresh params each run
    started = time.monotonic()
    dr = dag.test(run_conf={**conf, "target": f"bench_target_{i}"})
    wall = time.monotonic() - started
    with create_session() as session:
        tis = session.query(TaskInstance).filter_by(dag_id=dr.dag_id, run_id=dr.run_id).all()
        seconds = sum(ti.duration or 0 for ti in tis)
        n_imports = sum(1 for ti in tis if ti.task_id == "import_batches")
    print("RESULT " + json.dumps({"wall": wall, "state": str(dr.state), "task_seconds": seconds,
                                  "import_instances": n_imports}), flush=True)
"""


def dags_test_runs(source: Path, targets: list[str], conf: dict) -> list[dict]:
    """``dag.test()`` in a fresh process with its own Airflow home and metadata database."""
    from tests.airflow.live import _sqlalchemy_scheme

    meta = create_db("dagtest_meta")
    home = tempfile.mkdtemp(prefix="cpo-bench-dagtest-")
    try:
        from psycopg.conninfo import conninfo_to_dict

        parts = conninfo_to_dict(meta)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env.update(conn_env(source, targets))
        env.update({
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins")]),
            "AIRFLOW_HOME": home,
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"{_sqlalchemy_scheme()}://{parts.get('user', 'postgres')}@"
                                                   f"{parts.get('host', '127.0.0.1')}:{parts.get('port', 5432)}/{parts['dbname']}",
        })
        proc = subprocess.run([sys.executable, "-c", DAGS_TEST_CHILD, str(ROOT / "dags"), json.dumps(conf),
                               str(len(targets))], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
        results = [json.loads(line[len("RESULT "):]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode != 0 or len(results) != len(targets) or any(r["state"] != "success" for r in results):
            raise SystemExit(f"dag.test() child failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
        for i, r in enumerate(results):
            print(f"  dag.test() run {i + 1}: {r['wall']:.1f}s", flush=True)
        return results
    finally:
        drop_db(meta)
        subprocess.run(["rm", "-rf", home], check=False)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--copies", type=int, default=12, help="copies of the 24-thread sample source (default 12: 288 threads)")
    ap.add_argument("--repeat", type=int, default=2, help="runs of each (default 2)")
    ap.add_argument("--parallelism", type=int, default=2, help="LocalExecutor's [core] parallelism (default 2)")
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--batches-per-task", type=int, default=8)
    ap.add_argument("--verify-threads-per-task", type=int, default=100)
    args = ap.parse_args()

    source = build_source(args.copies)
    conf = {"batch_size": args.batch_size, "batches_per_task": args.batches_per_task, "verify_mode": "full",
            "verify_threads_per_task": args.verify_threads_per_task}
    print(f"{DAG_ID} on {counts(source)}\nconf {json.dumps(conf)}; CPUs: {os.cpu_count()}; "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    targets = [create_db(f"exec_{uuid.uuid4().hex[:4]}") for _ in range(2 * args.repeat)]
    try:
        live = live_runs(source, targets[: args.repeat], conf, args.parallelism)
        local = dags_test_runs(source, targets[args.repeat:], conf)
    finally:
        for dsn in targets:
            drop_db(dsn)

    def row(name: str, runs: list[dict]) -> str:
        walls = "  ".join(f"{r['wall']:6.1f}s" for r in runs)
        return (f"{name:<28} {walls}   best {min(r['wall'] for r in runs):6.1f}s   "
                f"task time summed {statistics.median(r['task_seconds'] for r in runs):6.1f}s   "
                f"import instances {runs[0]['import_instances']}")

    print()
    print(row(f"LocalExecutor (parallelism {args.parallelism})", live))
    print(row("dag.test()", local))
    best_live, best_local = min(r["wall"] for r in live), min(r["wall"] for r in local)
    print(f"ratio LocalExecutor / dag.test(), best of each: {best_live / best_local:.2f}x "
          f"(median {statistics.median(r['wall'] for r in live) / statistics.median(r['wall'] for r in local):.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
