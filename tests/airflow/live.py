"""A real Airflow 3 in subprocesses: api-server, scheduler (LocalExecutor), dag-processor, triggerer.

``dag.test()`` runs every task in the test's own process, one after the other. This harness runs
the project's DAGs the way a deployment does: a throwaway ``AIRFLOW_HOME``, a fresh PostgreSQL
metadata database (LocalExecutor refuses SQLite), ``airflow db migrate``, then the four
components, each in its own process group. Task processes reach the metadata only through the
api-server's execution API, and each task instance runs in a process of its own.

    with LiveAirflow(env={"AIRFLOW_CONN_...": ...}) as live:
        live.wait_for_dag("checkpoint_migration")
        run_id = live.trigger("checkpoint_migration", {"batch_size": 500})
        assert live.wait_for_run("checkpoint_migration", run_id) == "success"

The REST API is called as a user does: the simple auth manager with one ``admin`` user (a random
password per instance, in ``password``), a JWT from ``/auth/token``. The test process also reads
the metadata database directly (psycopg) to watch runs and task instances; ``stop()`` kills every process it started, and their children, and drops the database.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from contextlib import closing
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PG_ADMIN_DSN = os.environ.get("CHECKPOINT_OPS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
TERMINAL_RUN_STATES = ("success", "failed")


class LiveAirflowError(RuntimeError):
    pass


class ApiError(LiveAirflowError):
    """An HTTP error answer of the REST API, with its status and body."""

    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {body[:2000]}")
        self.status, self.body = status, body


def free_port() -> int:
    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children() -> dict[int, list[int]]:
    """ppid -> pids of every process on the machine (from /proc)."""
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def descendants(pid: int) -> list[int]:
    tree, out, todo = _children(), [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _start_time(pid: int) -> int | None:
    """When the process started (clock ticks since boot), to tell it from a later one with its pid."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def kill_task_process(pid: int) -> list[int]:
    """SIGKILL a task runner process: its whole process group when it leads one (the supervisor
    puts each task runner in a group of its own), else the process alone. Returns what was killed."""
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return []
    if pgid == pid:
        members = [pid, *descendants(pid)]
        os.killpg(pgid, signal.SIGKILL)
        return members
    os.kill(pid, signal.SIGKILL)
    return [pid]


class LiveAirflow:
    """Airflow's api-server, scheduler, dag-processor and triggerer on a temporary home and metadata DB."""

    def __init__(self, env: dict[str, str] | None = None, *, parallelism: int = 2, executor: str = "LocalExecutor",
                 dags_folder: Path = ROOT / "dags", plugins_folder: Path = ROOT / "plugins",
                 admin_dsn: str = PG_ADMIN_DSN, keep_home: bool = False, retry_delay_s: float | None = None) -> None:
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        self.home = Path(tempfile.mkdtemp(prefix="cpo-live-airflow-"))
        self.db_name = f"cpo_live_meta_{uuid.uuid4().hex[:10]}"
        self.admin_dsn = admin_dsn
        self.meta_dsn = make_conninfo(admin_dsn, dbname=self.db_name)
        parts = conninfo_to_dict(self.meta_dsn)
        user = parts.get("user", "postgres")
        host, port = parts.get("host", "127.0.0.1"), parts.get("port", "5432")
        self.sql_alchemy_conn = f"{_sqlalchemy_scheme()}://{user}@{host}:{port}/{self.db_name}"
        self.api_port = free_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.keep_home = keep_home
        self.procs: dict[str, subprocess.Popen] = {}
        self.user, self.password = "admin", uuid.uuid4().hex
        self._token: str | None = None
        (self.home / "simple_auth_manager_passwords.json.generated").write_text(json.dumps({self.user: self.password}))
        if retry_delay_s is not None:
            # A cluster policy, as a deployment sets one: the DAGs' retry delay (30 s) made short,
            # so a test waits seconds, not minutes, for a task to use up its retries.
            (self.home / "config").mkdir()
            (self.home / "config" / "airflow_local_settings.py").write_text(
                "from datetime import timedelta\n\n\ndef task_policy(task):\n"
                f"    task.retry_delay = timedelta(seconds={retry_delay_s!r})\n")
        self._logs: dict[str, Any] = {}
        base = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        self.env = {
            **base,
            "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [base.get("PYTHONPATH")])]),
            "PYTHONUNBUFFERED": "1",
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(plugins_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__EXECUTOR": executor,
            "AIRFLOW__CORE__PARALLELISM": str(parallelism),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.sql_alchemy_conn,
            # Every process signs and checks the execution API's task tokens with the same secret.
            "AIRFLOW__API_AUTH__JWT_SECRET": uuid.uuid4().hex,
            "AIRFLOW__API__SECRET_KEY": uuid.uuid4().hex,
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.api_port),
            "AIRFLOW__API__BASE_URL": self.api_url,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__CORE__AUTH_MANAGER":
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{self.user}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            # Look for schedulable tasks every 0.25 s when idle rather than every second.
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.25",
            # The task supervisor waits up to this long between checks of its task process; when the
            # process exits just after closing its sockets, nothing wakes the supervisor, and the
            # executor slot stays taken for up to these many seconds (5 by default) after the task ended.
            "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            **(env or {}),
        }

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> LiveAirflow:
        try:
            self.start()
        except BaseException:
            with _quiet():  # the start-up error is the one to see
                self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self, timeout: float = 180) -> None:
        import psycopg

        started = time.monotonic()
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.db_name}"')
        self.cli("db", "migrate", timeout=timeout)
        self._spawn("api-server", "api-server", "--host", "127.0.0.1", "--port", str(self.api_port))
        self._spawn("scheduler", "scheduler")
        self._spawn("dag-processor", "dag-processor")
        self._spawn("triggerer", "triggerer")
        self._wait(lambda: self._http_ok("/api/v2/monitor/health"), timeout, "the api-server to answer")
        self.startup_s = time.monotonic() - started

    def stop(self) -> None:
        """SIGTERM, then SIGKILL, every process started and every descendant (task runners lead
        process groups of their own, so killing our groups alone could leave them behind)."""
        # (pid, start time): a pid that died meanwhile may be reused by someone else's process.
        victims = {(pid, _start_time(pid)) for proc in self.procs.values()
                   for pid in (proc.pid, *descendants(proc.pid))}
        for proc in self.procs.values():
            with _quiet():
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(alive(pid) for pid, _ in victims):
            time.sleep(0.2)
        for proc in self.procs.values():  # not reaped yet, so these pids are still ours
            victims |= {(pid, _start_time(pid)) for pid in descendants(proc.pid)}
        for pid, started in victims:
            if started is not None and _start_time(pid) == started:
                with _quiet():
                    os.kill(pid, signal.SIGKILL)
        for proc in self.procs.values():
            with _quiet():
                os.killpg(proc.pid, signal.SIGKILL)
            with _quiet():
                proc.wait(timeout=10)
        self.procs.clear()
        for log in self._logs.values():
            log.close()
        self._logs.clear()
        try:
            import psycopg

            with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
        finally:
            if not self.keep_home:
                shutil.rmtree(self.home, ignore_errors=True)

    def _spawn(self, name: str, *args: str) -> None:
        log = open(self.home / f"{name}.log", "ab")  # noqa: SIM115 (closed in stop())
        self._logs[name] = log
        self.procs[name] = subprocess.Popen([_airflow_bin(), *args], cwd=ROOT, env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise LiveAirflowError(f"airflow {name} exited with {proc.returncode}:\n{self.log_tail(name)}")

    def _wait(self, predicate, timeout: float, what: str, interval: float = 0.5):
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise LiveAirflowError(f"timed out after {timeout:.0f}s waiting for {what}\n{self.diagnostics()}")
            time.sleep(interval)

    def _http_ok(self, path: str) -> bool:
        try:
            with urllib.request.urlopen(self.api_url + path, timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    # -- the CLI and the metadata DB --------------------------------------------------------

    def cli(self, *args: str, timeout: float = 120) -> str:
        """Run ``airflow <args>`` against this instance; its stdout, or an error with its output."""
        proc = subprocess.run([_airflow_bin(), *args], cwd=ROOT, env=self.env, capture_output=True, text=True,
                              timeout=timeout)
        if proc.returncode != 0:
            raise LiveAirflowError(f"airflow {' '.join(args)} exited with {proc.returncode}:\n"
                                   f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
        return proc.stdout

    def query(self, sql: str, params: tuple | dict = ()) -> list[dict[str, Any]]:
        import psycopg
        from psycopg.rows import dict_row

        with psycopg.connect(self.meta_dsn, autocommit=True, row_factory=dict_row) as conn:
            return conn.execute(sql, params).fetchall()

    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> None:
        """Until the dag-processor has serialised ``dag_id`` and it is active and unpaused."""
        def ready() -> bool:
            rows = self.query("SELECT d.is_paused, d.is_stale, (SELECT COUNT(*) FROM serialized_dag s "
                              "WHERE s.dag_id = d.dag_id) AS serialized FROM dag d WHERE d.dag_id = %s", (dag_id,))
            return bool(rows) and not rows[0]["is_paused"] and not rows[0]["is_stale"] and rows[0]["serialized"] > 0

        self._wait(ready, timeout, f"the dag-processor to parse {dag_id}")

    def token(self) -> str:
        """A JWT for the admin user, from ``POST /auth/token`` (cached: it lasts a day)."""
        if self._token is None:
            answer = self.http("POST", "/auth/token", {"username": self.user, "password": self.password})
            self._token = answer["access_token"]
        return self._token

    def api(self, method: str, path: str, body: Any = None) -> Any:
        """A call to the REST API (``/api/v2/...``) with the admin's JWT; the decoded JSON answer, if any."""
        return self.http(method, path, body, token=self.token())

    def http(self, method: str, path: str, body: Any = None, *, token: str | None = None,
             accept: str = "application/json") -> Any:
        headers = {"Content-Type": "application/json", "Accept": accept}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.api_url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                text = resp.read()
        except urllib.error.HTTPError as exc:
            raise ApiError(method, path, exc.code, exc.read()[:4000].decode(errors="replace")) from None
        return json.loads(text) if text else None

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None, run_id: str | None = None) -> str:
        """Trigger a run (REST, as the UI does; ``airflow dags trigger`` works too but costs a CLI start)."""
        run_id = run_id or f"live__{uuid.uuid4().hex[:12]}"
        self.api("POST", f"/api/v2/dags/{dag_id}/dagRuns",
                 {"dag_run_id": run_id, "logical_date": None, "conf": conf or {}})
        return run_id

    def set_variable(self, key: str, value: str) -> None:
        self.api("POST", "/api/v2/variables", {"key": key, "value": value})

    def delete_variable(self, key: str) -> None:
        self.api("DELETE", f"/api/v2/variables/{key}")

    def run_state(self, dag_id: str, run_id: str) -> str | None:
        rows = self.query("SELECT state FROM dag_run WHERE dag_id = %s AND run_id = %s", (dag_id, run_id))
        return rows[0]["state"] if rows else None

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 300) -> str:
        """Until the run is finished; its final state."""
        return self._wait(lambda: (s := self.run_state(dag_id, run_id)) in TERMINAL_RUN_STATES and s, timeout,
                          f"run {run_id} of {dag_id} to finish")

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self.query("SELECT * FROM dag_run WHERE dag_id = %s AND run_id = %s", (dag_id, run_id))[0]

    def task_instances(self, dag_id: str, run_id: str, task_id: str | None = None) -> list[dict[str, Any]]:
        sql = ("SELECT task_id, map_index, state, try_number, max_tries, start_date, end_date, duration, pid, "
               "hostname, queued_dttm FROM task_instance WHERE dag_id = %s AND run_id = %s")
        params: tuple = (dag_id, run_id)
        if task_id is not None:
            sql += " AND task_id = %s"
            params += (task_id,)
        return self.query(sql + " ORDER BY task_id, map_index", params)

    def task_history(self, dag_id: str, run_id: str, task_id: str) -> list[dict[str, Any]]:
        """Earlier tries of the run's task instances (Airflow moves a try there when it is retried)."""
        return self.query("SELECT task_id, map_index, state, try_number, start_date, end_date, pid, hostname "
                          "FROM task_instance_history WHERE dag_id = %s AND run_id = %s AND task_id = %s "
                          "ORDER BY map_index, try_number", (dag_id, run_id, task_id))

    def xcom(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1, key: str = "return_value") -> Any:
        rows = self.query("SELECT value FROM xcom WHERE dag_id = %s AND run_id = %s AND task_id = %s "
                          "AND map_index = %s AND key = %s", (dag_id, run_id, task_id, map_index, key))
        if not rows:
            return None
        value = rows[0]["value"]
        return json.loads(value) if isinstance(value, (str, bytes)) else value

    def timeline(self, dag_id: str, run_id: str) -> str:
        """Every task instance of the run: queued, started and ended, in seconds from the run's start."""
        run = self.dag_run(dag_id, run_id)
        t0 = run["start_date"] or run["queued_at"]
        rows = [ti for ti in self.task_instances(dag_id, run_id) if ti["start_date"] and ti["pid"]]
        rel = lambda t: f"{(t - t0).total_seconds():6.1f}" if t else "     -"  # noqa: E731
        lines = [f"{'task':<22} {'map':>3} {'queued':>6} {'start':>6} {'end':>6} {'secs':>5}  pid"]
        for ti in sorted(rows, key=lambda ti: ti["start_date"]):
            lines.append(f"{ti['task_id']:<22} {ti['map_index']:>3} {rel(ti['queued_dttm'])} {rel(ti['start_date'])} "
                         f"{rel(ti['end_date'])} {ti['duration'] or 0:5.2f}  {ti['pid']}")
        end = run["end_date"]
        lines.append(f"run {run['state']}: {(end - t0).total_seconds():.1f}s from start to end" if end else "")
        return "\n".join(lines)

    # -- when something goes wrong ----------------------------------------------------------

    def log_tail(self, name: str, chars: int = 4000) -> str:
        path = self.home / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def task_logs(self, dag_id: str, run_id: str, task_id: str, chars: int = 4000) -> str:
        folder = self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
        return "\n".join(f"--- {p.relative_to(self.home)}\n{p.read_text(errors='replace')[-chars:]}"
                         for p in sorted(folder.rglob("*.log")))

    def diagnostics(self, dag_id: str | None = None, run_id: str | None = None) -> str:
        out = [f"== {name}.log (tail)\n{self.log_tail(name, 2500)}" for name in self.procs]
        if dag_id and run_id:
            with _quiet():
                for ti in self.task_instances(dag_id, run_id):
                    out.append(f"ti {ti['task_id']}[{ti['map_index']}] {ti['state']} try {ti['try_number']}")
                    if ti["state"] in ("failed", "up_for_retry", "upstream_failed"):
                        out.append(self.task_logs(dag_id, run_id, ti["task_id"]))
        return "\n".join(out)


def _airflow_bin() -> str:
    candidate = Path(sys.executable).with_name("airflow")
    return str(candidate) if candidate.exists() else shutil.which("airflow") or "airflow"


def _sqlalchemy_scheme() -> str:
    """psycopg2 when installed (Airflow's usual driver), else psycopg 3."""
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return "postgresql+psycopg"
    return "postgresql+psycopg2"


class _quiet:
    """Ignore a vanished process or a failing best-effort step during teardown."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        return exc_type is not None and issubclass(exc_type, Exception)


def scaled_source(original: Path, dest: Path, copies: int) -> Path:
    """``dest``: a copy of the checkpoint file ``original`` whose every thread is there ``copies``
    times (under ``<thread>~<k>``): the sample agent's real rows, many more threads, in a second."""
    import sqlite3

    with closing(sqlite3.connect(original)) as src, closing(sqlite3.connect(dest)) as out:
        src.backup(out)
    with closing(sqlite3.connect(dest)) as conn:
        for table in ("checkpoints", "writes"):
            cols = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
            select = ", ".join("c.thread_id || '~' || n.k" if c == "thread_id" else f"c.{c}" for c in cols)
            conn.execute(f"WITH RECURSIVE n(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM n WHERE k < ?) "
                         f"INSERT INTO {table} ({', '.join(cols)}) SELECT {select} FROM {table} c, n", (copies - 1,))
        conn.commit()
    return dest
