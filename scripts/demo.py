"""`make demo`: the main job on embedded defaults, end to end, with a summary at the end.

1. migrate the local Airflow metadata DB (SQLite under .airflow/);
2. generate a realistic SQLite checkpoint DB with the sample agent (.demo/checkpoints.sqlite);
3. run the lifecycle DAGs with `airflow dags test`, in the order a team meets them (DAG_RUNS):
   setup; the health check (decided from the store alone: the demo has no Prometheus); the
   SQLite -> PostgreSQL migration when a PostgreSQL is at hand (AIRFLOW_CONN_CHECKPOINTS_POSTGRES, or
   a local server on 127.0.0.1:5432 that accepts user postgres, in which case a `checkpoint_ops_demo`
   database is created afresh); the blue-green cutover of the app to it (10 -> 50 -> 100%, no soak;
   the SQLite file is then backed up and left read-only); pruning (30 days, keep_latest) and a backup of
   every store; the
   restore drill of those fresh backups (min age 0); then tiering: a redis-server of the demo's own
   (or AIRFLOW_CONN_CHECKPOINTS_REDIS) as the hot tier, the app continuing 20 threads through
   TieredSaver (which brings them hot), 10 of them backdated as a day idle, and `checkpoint_tiering`
   demoting those and archiving the threads older than 30 days into .demo/archive, with its cost table.
   Without a PostgreSQL, the steps that need one are skipped and the summary says how to add them;
4. print what was generated, what each DAG did (read back from its report), and how long it all took.

Run it through `make demo`, which sets AIRFLOW_HOME, the DAG/plugin folders and the
`checkpoints_sqlite` connection.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO_DIR = Path(os.environ.get("CHECKPOINT_OPS_DEMO_DIR", ROOT / ".demo"))
SQLITE_FILE = DEMO_DIR / "checkpoints.sqlite"
LOCAL_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
DEMO_DB = "checkpoint_ops_demo"


def ensure_postgres() -> str | None:
    """The PostgreSQL the demo migrates into: the configured connection, else a fresh local DB."""
    if os.environ.get("AIRFLOW_CONN_CHECKPOINTS_POSTGRES"):
        return "checkpoints_postgres connection from the environment"
    try:
        import psycopg

        with psycopg.connect(LOCAL_PG, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {DEMO_DB} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {DEMO_DB}")
    except Exception as exc:  # no local server: the demo runs without the migration
        print(f"no PostgreSQL at 127.0.0.1:5432 ({' '.join(str(exc).split())[:120]})")
        return None
    os.environ["AIRFLOW_CONN_CHECKPOINTS_POSTGRES"] = json.dumps(
        {"conn_type": "postgres", "host": "127.0.0.1", "port": 5432, "login": "postgres", "schema": DEMO_DB})
    return f"local database {DEMO_DB} on 127.0.0.1:5432 (created afresh)"
WORKLOAD = ["--threads", "200", "--turns", "4", "--interrupted", "0.1", "--crashed", "0.05",
            "--age-days", "1:90", "--payload-bytes", "300"]


def step(title: str) -> None:
    print(f"\n=== {title}", flush=True)


def run(cmd: list[str], *, capture: bool = False) -> subprocess.CompletedProcess:
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, text=True, capture_output=capture)
    proc.seconds = time.monotonic() - started  # type: ignore[attr-defined]
    if proc.returncode != 0:
        if capture:
            sys.stdout.write(proc.stdout[-4000:])
            sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"demo failed: `{' '.join(cmd[:4])} ...` exited with {proc.returncode}")
    return proc


ARCHIVE_DIR = DEMO_DIR / "archive"


def ensure_redis() -> tuple[str, subprocess.Popen | None]:
    """The hot tier: the configured connection, else a redis-server of the demo's own on a free port."""
    import shutil
    import socket

    if os.environ.get("AIRFLOW_CONN_CHECKPOINTS_REDIS"):
        conn = json.loads(os.environ["AIRFLOW_CONN_CHECKPOINTS_REDIS"])
        return f"redis://{conn.get('host', '127.0.0.1')}:{conn.get('port', 6379)}/{conn.get('extra', {}).get('db', 0)}", None
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("the tiering step needs redis-server (make tools) or AIRFLOW_CONN_CHECKPOINTS_REDIS")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    time.sleep(0.5)
    os.environ["AIRFLOW_CONN_CHECKPOINTS_REDIS"] = json.dumps({"conn_type": "redis", "host": "127.0.0.1", "port": port})
    return f"redis://127.0.0.1:{port}/0", proc


def app_on_tiered_saver(redis_url: str, threads: int = 20, idle: int = 10) -> dict:
    """The app moves to TieredSaver and continues some migrated threads (which brings them hot);
    half of those are then backdated a day in the hot tier's idle index, as if the app had left them."""
    from psycopg.conninfo import make_conninfo

    from include.checkpoint_core.postgres_store import open_postgres_pool
    from include.checkpoint_core.tiering.hot import RedisRowSaver
    from include.checkpoint_core.tiering.saver import TieredSaver
    from include.sample_agent.graph import build_agent_graph, start_turn, thread_config

    conn = json.loads(os.environ["AIRFLOW_CONN_CHECKPOINTS_POSTGRES"])
    dsn = make_conninfo(host=conn["host"], port=conn["port"], user=conn["login"], dbname=conn["schema"],
                        **({"password": conn["password"]} if conn.get("password") else {}))
    pool = open_postgres_pool(dsn)
    saver = TieredSaver(RedisRowSaver.from_url(redis_url), pool)
    saver.setup()
    graph = build_agent_graph(saver)
    with pool.connection() as c:
        ids = [r["thread_id"] for r in c.execute("SELECT DISTINCT thread_id FROM checkpoints ORDER BY 1 LIMIT %s",
                                                 (threads * 2,))]
    for tid in ids:
        state = graph.get_state({"configurable": {"thread_id": tid}})
        if state.next or len(saver.hot.hot_threads()) >= threads:  # paused or crashed threads stay as they are
            continue
        user = state.values.get("user_id", "demo")
        start_turn(graph, thread_config(tid, user, "support"), user, "one more question, please")
    hot = saver.hot.hot_threads()
    backdated = int((time.time() - 2 * 86400) * 1e6)
    saver.hot.client.zadd(saver.hot.threads_key, {t: backdated for t in hot[:idle]})
    pool.close()
    return {"continued": len(hot), "backdated": min(idle, len(hot))}


def latest_report(pattern: str) -> Callable[[], tuple[Path | None, dict]]:
    """A reader of the newest JSON report matching `pattern` under the local artifacts root."""
    def read() -> tuple[Path | None, dict]:
        root = Path(os.environ["AIRFLOW_HOME"]) / "checkpoint-artifacts"
        reports = sorted(root.glob(pattern), key=lambda p: p.stat().st_mtime)
        return (reports[-1], json.loads(reports[-1].read_text())) if reports else (None, {})
    return read


def health_report() -> tuple[Path | None, dict]:
    """The decision checkpoint_health just recorded in the store's history table."""
    from include.checkpoint_core.health.evaluate import justification
    from include.checkpoint_core.health.history import read_history
    from include.checkpoint_core.stores import StoreTarget

    latest = read_history(StoreTarget("sqlite", str(SQLITE_FILE), "checkpoints_sqlite"), limit=1)
    return None, {"justification": justification(latest[0]["report"])} if latest else {}


# What each DAG's report says, as indented summary lines.

def setup_lines(report: dict) -> list[str]:
    lines = []
    for store in report.get("stores", []):
        where = (f"schema {store['schema_version']}, journal_mode={store['journal_mode']}" if store["store"] == "sqlite"
                 else f"migrations {store['schema_versions']}")
        lines.append(f"{store['conn_id']:<20} {store['store']}: {where}, changes: {', '.join(store['changes']) or 'none'}")
    return lines


def health_lines(report: dict) -> list[str]:
    return report["justification"].splitlines() if report.get("justification") else []


def migration_lines(report: dict) -> list[str]:
    v = report.get("verify") or {}
    return [*report.get("table_text", "").splitlines(),
            f"verify             {'passed' if v.get('ok') else 'FAILED'}: {v.get('mode')} mode, "
            f"{v.get('threads_checked')} threads, CheckpointTuples of {v.get('semantic', {}).get('threads')} threads compared"]


def pruning_lines(report: dict) -> list[str]:
    audit = {a["conn_id"]: a for a in report.get("audit", [])}
    return [f"{r['conn_id']:<20} threads trimmed {r['threads_trimmed']:,}, deleted {r['threads_deleted']:,}, "
            f"protected {r['threads_protected']:,}; deleted {r['checkpoints_deleted']:,} checkpoints, "
            f"{r['writes_deleted']:,} writes, {r['blobs_deleted']:,} blobs; reclaimed {r['bytes_reclaimed']:,} bytes "
            f"in {r['seconds']}s; over {audit.get(r['conn_id'], {}).get('max_size', '?')}: "
            f"{audit.get(r['conn_id'], {}).get('over_limit', '?')}"
            for r in report.get("stores", [])]


def backup_lines(report: dict) -> list[str]:
    kept = {r["conn_id"]: r for r in report.get("retention", [])}
    return [f"{b['conn_id']:<20} {b['kind']} backup {b['backup_id']}: {b.get('size_bytes', 0):,} bytes, "
            f"sha256 {b.get('sha256', '')[:12]}..., {b.get('rows', {}).get('checkpoints', 0):,} checkpoints, "
            f"{len(kept.get(b['conn_id'], {}).get('kept', []))} kept"
            for b in report.get("backups", [])]


def drill_lines(report: dict) -> list[str]:
    return [f"{d['conn_id']:<20} backup {d['backup_id']}: {'passed' if d['passed'] else 'FAILED'}, "
            f"{d.get('rows', {}).get('checkpoints', 0):,} checkpoints restored, {len(d.get('sampled_threads', []))} "
            f"threads loaded; RTO " + ", ".join(f"{k} {v}s" for k, v in d.get("rto_s", {}).items())
            for d in report.get("drills", [])]


def cutover_lines(report: dict) -> list[str]:
    tasks, status = report.get("tasks", {}), report.get("status", {})
    steps = [f"{v['weight']}%: {v['moved']} threads ({v['checkpoints']:,} checkpoints, batch p99 "
             f"{v.get('batch_seconds_p99', 0) * 1000:.0f} ms)" for k, v in sorted(tasks.items())
             if k.startswith("ramp_") and "weight" in v]
    done = tasks.get("decommission", {})
    return [f"now {status.get('phase')} at {status.get('weight')}%: {status.get('green', 0)} threads on PostgreSQL, "
            f"{status.get('blue', 0)} on SQLite", "ramp " + "; ".join(steps),
            f"SQLite file backed up as {done.get('backup', {}).get('id')} and left {done.get('mode', 'as it was')}"]


def tiering_lines(report: dict) -> list[str]:
    from include.checkpoint_core.tiering.jobs import render_cost

    moved = {k: v.get("outcomes", {}) for k, v in report.get("moves", {}).items()}
    return [f"moves {moved}", *render_cost(report).splitlines()]


_cleanups: list[Callable[[], None]] = []


def tiered_app() -> str:
    """Before checkpoint_tiering: a hot tier, and the app continuing threads on TieredSaver."""
    redis_url, redis_proc = ensure_redis()
    if redis_proc is not None:
        _cleanups.append(redis_proc.terminate)
    app = app_on_tiered_saver(redis_url)
    return f"app on TieredSaver: {app['continued']} threads continued (now hot), {app['backdated']} backdated a day"


@dataclass
class DemoRun:
    """One `airflow dags test` of the demo: its conf, where its report is read from, what the summary shows."""

    dag_id: str
    read: Callable[[], tuple[Path | None, dict]]
    lines: Callable[[dict], list[str]]
    conf: dict | Callable[[dict], dict] = field(default_factory=dict)  # or from the results so far
    needs_postgres: bool = False
    before: Callable[[], str] | None = None  # work in the app before the DAG runs; returns a line for the log


def reports(dag_id: str, name: str) -> Callable[[], tuple[Path | None, dict]]:
    return latest_report(f"reports/{dag_id}/*/{name}.json")


# The lifecycle DAGs the demo runs, in the order a team meets them.
DAG_RUNS: list[DemoRun] = [
    DemoRun("checkpoint_setup", reports("checkpoint_setup", "setup"), setup_lines),
    DemoRun("checkpoint_health", health_report, health_lines),
    DemoRun("checkpoint_migration", latest_report("migrations/*/report.json"), migration_lines,
            {"verify_mode": "full"}, needs_postgres=True),
    DemoRun("checkpoint_cutover", reports("checkpoint_cutover", "cutover"), cutover_lines,
            {"steps": [10, 50, 100], "soak_minutes": 0, "max_delta_pct": 100}, needs_postgres=True),
    # After the cutover the SQLite file is decommissioned (read-only, fenced): prune PostgreSQL only.
    DemoRun("checkpoint_pruning", reports("checkpoint_pruning", "pruning"), pruning_lines,
            lambda done: {"retention_days": 30, "strategy": "keep_latest",
                          **({"stores": ["checkpoints_postgres"]} if "checkpoint_cutover" in done else {})}),
    DemoRun("checkpoint_backup", reports("checkpoint_backup", "backup"), backup_lines),
    DemoRun("checkpoint_restore_drill", reports("checkpoint_restore_drill", "drill"), drill_lines,
            {"min_age_hours": 0}),  # the backup just taken qualifies
    DemoRun("checkpoint_tiering", reports("checkpoint_tiering", "tiering"), tiering_lines,
            {"archive": f"file://{ARCHIVE_DIR}", "demote_after_hours": 24, "archive_after_days": 30},
            needs_postgres=True, before=tiered_app),
]


def main() -> int:
    if "AIRFLOW_HOME" not in os.environ:
        raise SystemExit("run this through `make demo` (it sets AIRFLOW_HOME and the connections)")
    python = sys.executable
    airflow = str(Path(python).with_name("airflow"))
    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    step("Airflow metadata DB (SQLite)")
    timings["airflow db migrate"] = run([airflow, "db", "migrate"], capture=True).seconds

    step(f"Sample agent workload -> {SQLITE_FILE}")
    for suffix in ("", "-wal", "-shm"):  # the demo owns this file: start from a clean one
        Path(f"{SQLITE_FILE}{suffix}").unlink(missing_ok=True)
    gen = run([python, "-m", "include.sample_agent", "--sqlite", str(SQLITE_FILE), *WORKLOAD], capture=True)
    timings["generate workload"] = gen.seconds
    workload = json.loads(gen.stdout)

    step("PostgreSQL for the migration")
    postgres = ensure_postgres()
    skipped = [r.dag_id for r in DAG_RUNS if r.needs_postgres and not postgres]
    print(postgres or f"skipping {', '.join(skipped)}: set AIRFLOW_CONN_CHECKPOINTS_POSTGRES to include them")

    results: dict[str, tuple[Path | None, dict]] = {}
    try:
        for demo in DAG_RUNS:
            if demo.dag_id in skipped:
                continue
            step(f"airflow dags test {demo.dag_id}")
            if demo.before:
                print(demo.before(), flush=True)
            cmd = [airflow, "dags", "test", demo.dag_id]
            conf = demo.conf(results) if callable(demo.conf) else demo.conf
            if conf:
                cmd += ["--conf", json.dumps(conf)]
            proc = run(cmd, capture=True)
            timings[demo.dag_id] = proc.seconds
            results[demo.dag_id] = demo.read()
            print(f"{demo.dag_id}: success in {proc.seconds:.1f}s")
    finally:
        for cleanup in _cleanups:
            cleanup()

    step("Summary")
    rows = workload["rows"]
    print(f"checkpoint file      {SQLITE_FILE} ({SQLITE_FILE.stat().st_size / 1e6:.1f} MB)")
    print(f"generated            {workload['threads']} threads, {workload['turns']} turns in {workload['seconds']:.1f}s: "
          f"{rows['checkpoints']:,} checkpoints, {rows['writes']:,} writes")
    print(f"left open            {workload['interrupted_before']} paused before execute_action, "
          f"{workload['interrupted_dynamic']} waiting on interrupt(), {workload['crashed']} crashed with pending writes")
    print(f"checkpoint ages      {workload['oldest'][:10]} .. {workload['newest'][:10]}")
    for demo in DAG_RUNS:
        if demo.dag_id not in results:
            print(f"{demo.dag_id:<20} skipped (no PostgreSQL)")
            continue
        path, report = results[demo.dag_id]
        print(f"{demo.dag_id:<20} success")
        for line in demo.lines(report):
            print(f"  {line}")
        if path:
            print(f"  report             {path}")
    print("timings              " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
