"""checkpoint_cutover end to end with dag.test(): three live app processes, a real Prometheus scraping them,
the migration DAG first, then the ramp 10 -> 50 -> 100 with soaks of seconds (or a breach and the rollback)."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from contextlib import closing
from pathlib import Path

import psycopg
import pytest

from include.checkpoint_core.cutover import routes
from tests.airflow.conftest import task_instances, xcom
from tests.conftest import ROOT, _dsn_for, postgres_conn_env, sqlite_conn_env
from include.sample_agent.counter import build_counter
from tests.observability.conftest import prometheus_factory, pushgateway  # noqa: F401 (fixtures)
from tests.observability.servers import free_port

N_THREADS = 150


def _tid_in_bucket(prefix: str, below: int) -> str:
    i = 0
    while routes.bucket(f"{prefix}-{i}") >= below:
        i += 1
    return f"{prefix}-{i}"


class Apps:
    """Three app processes on the same threads, stopped (SIGTERM, then their logs read) by ``stop()``."""

    def __init__(self, tmp: Path, blue: Path, dsn: str, threads: list[str], flag: Path | None = None):
        (tmp / "threads.txt").write_text("\n".join(threads))
        self.logs, self.procs, self.ports = [], [], []
        for i in range(3):
            port, log = free_port(), tmp / f"app-{i}.jsonl"
            argv = [sys.executable, "-m", "tests.cutover.app", "--sqlite", str(blue), "--dsn", dsn, "--port",
                    str(port), "--threads", str(tmp / "threads.txt"), "--log", str(log), "--proc", f"p{i}",
                    "--new-threads", "20"] + (["--fail-green-flag", str(flag)] if flag else [])
            p = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            line = p.stdout.readline()
            assert line.strip() == "ready", f"app {i} did not start: {line}{p.stderr.read()}"
            self.procs.append(p)
            self.logs.append(log)
            self.ports.append(port)

    @property
    def targets(self) -> list[str]:
        return [f"127.0.0.1:{p}" for p in self.ports]

    def stop(self) -> dict:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.wait(60)
        out = {"puts": [], "seen": [], "errors": [], "waits": [], "turns": 0}
        for log in self.logs:
            for line in log.read_text().splitlines():
                item = json.loads(line)
                if "put" in item:
                    out["puts"].append((*item["put"], item["t"]))
                elif "seen" in item:
                    out["seen"].append((*item["seen"], item["t"]))
                elif "error" in item:
                    out["errors"].append(item["error"])
                elif "done" in item:
                    out["waits"] += item["done"]["waits"]
                    out["turns"] += item["done"]["turns"]
        return out


@pytest.fixture(scope="module")
def migrated(tmp_path_factory, pg_admin, dagbag):
    """Once per module: the app's SQLite file with N_THREADS counter threads (plus a paused and a crashed graph
    thread routed below 10%), migrated by checkpoint_migration into a template database."""
    from airflow.dag_processing.dagbag import DagBag
    from langgraph.checkpoint.sqlite import SqliteSaver

    from tests.tiering.fidelity_graphs import Crash, build_fanout, build_nested

    blue = tmp_path_factory.mktemp("cutover") / "app.sqlite"
    conn = sqlite3.connect(str(blue), check_same_thread=False)
    saver = SqliteSaver(conn)
    graph = build_counter(saver)
    threads = [f"t-{i:03d}" for i in range(N_THREADS)]
    for tid in threads:
        graph.invoke({}, {"configurable": {"thread_id": tid}})
    paused, crashed = _tid_in_bucket("paused", 10), _tid_in_bucket("crashed", 10)
    build_nested(saver).invoke({"log": []}, {"configurable": {"thread_id": paused}})
    with pytest.raises(Crash):
        build_fanout(saver, __import__("collections").Counter(), {2}).invoke({"done": []},
                                                                             {"configurable": {"thread_id": crashed}})
    conn.close()
    template = f"cpo_cutover_tmpl_{uuid.uuid4().hex[:8]}"
    pg_admin.execute(f'CREATE DATABASE "{template}"')
    dsn = _dsn_for(template)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRFLOW_CONN_CHECKPOINTS_SQLITE", sqlite_conn_env(blue))
        mp.setenv("AIRFLOW_CONN_CHECKPOINTS_POSTGRES", postgres_conn_env(dsn))
        dag = DagBag(dagbag.get_dag("checkpoint_migration").fileloc).get_dag("checkpoint_migration")
        assert dag.test(run_conf={"verify_mode": "full"}).state == "success"
    yield {"blue": blue, "template": template, "threads": threads, "paused": paused, "crashed": crashed}
    pg_admin.execute(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)')


@pytest.fixture
def live(migrated, tmp_path, pg_admin, monkeypatch, prometheus_factory, pushgateway):  # noqa: F811
    """A private copy of the migrated file and database; the DAGs' connections set."""
    blue = tmp_path / "app.sqlite"
    shutil.copyfile(migrated["blue"], blue)
    name = f"cpo_test_{uuid.uuid4().hex[:12]}"
    pg_admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                     (migrated["template"],))
    pg_admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{migrated["template"]}"')
    pg_dsn = _dsn_for(name)
    monkeypatch.setenv("AIRFLOW_CONN_CHECKPOINTS_SQLITE", sqlite_conn_env(blue))
    monkeypatch.setenv("AIRFLOW_CONN_CHECKPOINTS_POSTGRES", postgres_conn_env(pg_dsn))
    monkeypatch.setenv("AIRFLOW_CONN_CHECKPOINT_PUSHGATEWAY", json.dumps({"conn_type": "http", "host": pushgateway.url}))
    monkeypatch.delenv("AIRFLOW_VAR_CHECKPOINT_HEALTH_CONFIG", raising=False)

    def prometheus(apps: Apps):
        prom = prometheus_factory({"cutover-app": apps.targets}, scrape_interval="1s")
        monkeypatch.setenv("AIRFLOW_CONN_CHECKPOINT_PROMETHEUS", json.dumps({"conn_type": "http", "host": prom.url}))
        prom.wait_for("count(checkpoint_writes_total)", lambda r: bool(r), timeout=30)
        return prom

    yield {**migrated, "blue": blue, "dsn": pg_dsn, "prometheus": prometheus, "tmp": tmp_path}
    pg_admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _cutover(fresh_dag, **conf):
    dag = fresh_dag("checkpoint_cutover")
    for t in dag.tasks:
        t.retries = 0
    dr = dag.test(run_conf={"soak_minutes": 0.05, "check_every_seconds": 1, "max_delta_pct": 100, **conf})
    return dr, {ti_id: ti.state for (ti_id, _), ti in task_instances(dr).items()}


def _pg_checkpoints(dsn: str) -> dict[str, set[str]]:
    out = defaultdict(set)
    with closing(psycopg.connect(dsn)) as conn:
        for tid, cid in conn.execute("SELECT thread_id, checkpoint_id FROM checkpoints WHERE checkpoint_ns = ''"):
            out[tid].add(cid)
    return out


def _sqlite_checkpoints(path: Path) -> dict[str, set[str]]:
    out = defaultdict(set)
    with closing(sqlite3.connect(str(path))) as conn:
        for tid, cid in conn.execute("SELECT thread_id, checkpoint_id FROM checkpoints WHERE checkpoint_ns = ''"):
            out[tid].add(cid)
    return out


def _latest_n(checkpointer, tid: str) -> int:
    t = checkpointer.get_tuple({"configurable": {"thread_id": tid}})
    return t.checkpoint["channel_values"]["n"]


def test_ramp_with_three_live_apps_loses_nothing_and_leaves_sqlite_untouched(live, fresh_dag):
    from langgraph.checkpoint.postgres import PostgresSaver

    apps = Apps(live["tmp"], live["blue"], live["dsn"], live["threads"])
    try:
        live["prometheus"](apps)
        time.sleep(1)
        dr, states = _cutover(fresh_dag, p99_ms=5000)  # on a loaded 2-core CI machine; the data is what counts here
    finally:
        seen = apps.stop()
    assert dr.state == "success", states
    assert states["decommission"] == "success" and states["rollback_on_breach"] == "skipped", states
    for i in (1, 2, 3):
        assert xcom(dr, f"ramp_{i}")["weight"] == (10, 50, 100)[i - 1]
    assert states["ramp_4"] == "skipped" and states["soak_3"] == "skipped"
    assert seen["turns"] > 200 and not seen["errors"], seen["errors"][:3]

    green, blue = _pg_checkpoints(live["dsn"]), _sqlite_checkpoints(live["blue"])
    # every write the app got an acknowledgement for is in PostgreSQL
    missing = [p for p in seen["puts"] if p[1] == "" and p[2] not in green[p[0]]]
    assert not missing, missing[:3]
    # SQLite had no write after a thread moved: everything only PostgreSQL has is newer than all SQLite has
    for tid, ids in green.items():
        only_green = ids - blue.get(tid, set())
        if only_green and blue.get(tid):
            assert max(blue[tid]) < min(only_green), tid
    # every thread's state is what the app last saw
    last = {}
    for tid, n, cid, t in sorted(seen["seen"], key=lambda s: s[3]):
        last[tid] = (n, cid)
    with closing(psycopg.connect(live["dsn"], autocommit=True)) as conn:
        pg_saver = PostgresSaver(conn)
        for tid, (n, cid) in last.items():
            assert _latest_n(pg_saver, tid) == n, tid
        phase, weight = conn.execute("SELECT phase, weight FROM checkpoint_ops_cutover").fetchone()
        guards = conn.execute("SELECT count(*) FROM pg_trigger WHERE tgname = 'checkpoint_ops_route_guard'").fetchone()
    assert (phase, weight) == ("complete", 100) and guards[0] == 0
    # the file is fenced for every writer and read-only
    with closing(sqlite3.connect(str(live["blue"]))) as conn:
        with pytest.raises(sqlite3.IntegrityError, match="checkpoint_ops"):
            conn.execute("DELETE FROM checkpoints WHERE thread_id = ?", (live["threads"][0],))
    assert not (live["blue"].stat().st_mode & 0o222)
    report = xcom(dr, "report")
    artifact = json.loads(Path(report["artifact"].removeprefix("file://")).read_text())
    assert report["status"]["phase"] == "complete" and artifact["tasks"]["ramp_3"]["weight"] == 100
    assert xcom(dr, "decommission")["backup"]["sha256"]
    # the writers' wait while their thread moved: bounded and small
    if seen["waits"]:
        seen["waits"].sort()
        assert seen["waits"][int(0.99 * (len(seen["waits"]) - 1))] < 5.0


def test_breach_at_50_rolls_back_with_every_green_checkpoint(live, fresh_dag):
    from langgraph.checkpoint.sqlite import SqliteSaver
    from langgraph.types import Command

    from include.checkpoint_core.cutover import routes as r
    from tests.tiering.fidelity_graphs import build_fanout, build_nested

    flag = live["tmp"] / "fail-green"
    apps = Apps(live["tmp"], live["blue"], live["dsn"], live["threads"], flag=flag)
    green_at_breach: dict = {}

    def inject():
        """Once the 50% step is reached, PostgreSQL starts failing the apps' writes."""
        with closing(psycopg.connect(live["dsn"], autocommit=True)) as conn:
            for _ in range(600):
                try:
                    w = conn.execute("SELECT weight FROM checkpoint_ops_cutover").fetchone()
                except psycopg.errors.UndefinedTable:
                    w = None
                if w and w[0] >= 50:
                    break
                time.sleep(0.1)
            time.sleep(1.5)
            green_at_breach.update(_pg_checkpoints(live["dsn"]))
            flag.touch()

    try:
        live["prometheus"](apps)
        injector = threading.Thread(target=inject, daemon=True)
        injector.start()
        dr, states = _cutover(fresh_dag, steps=[50, 100], error_rate_pct=5, soak_minutes=0.2)
        injector.join(5)
    finally:
        seen = apps.stop()
    assert states["soak_1"] == "failed" and states["rollback_on_breach"] == "success", states
    assert states["ramp_2"] == "upstream_failed" and states["decommission"] == "upstream_failed"
    assert dr.state == "failed" and states["report"] == "success"
    assert any("injected" in e[1] for e in seen["errors"]), "the apps saw the breach"
    with closing(psycopg.connect(live["dsn"], autocommit=True)) as conn:
        counts = r.counts(conn)
    assert counts["green"] == 0 and counts["moving"] == 0
    # every checkpoint acknowledged in PostgreSQL during the ramp is in SQLite after the rollback
    blue = _sqlite_checkpoints(live["blue"])
    acked = [p for p in seen["puts"] if p[1] == ""]
    lost = [p for p in acked if p[2] not in blue[p[0]]]
    assert not lost, lost[:3]
    assert sum(len(v) for v in green_at_breach.values()) > 0
    # paused and crashed threads resume on SQLite
    with closing(sqlite3.connect(str(live["blue"]), check_same_thread=False)) as conn:
        saver = SqliteSaver(conn)
        nested = build_nested(saver)
        cfg = {"configurable": {"thread_id": live["paused"]}}
        assert nested.get_state(cfg).next
        nested.invoke(Command(resume="ok"), cfg)
        assert nested.get_state(cfg).next == ()
        calls = __import__("collections").Counter()
        build_fanout(saver, calls, set()).invoke(None, {"configurable": {"thread_id": live["crashed"]}})
        assert calls == __import__("collections").Counter({2: 1})
