"""Run the real Prometheus and Pushgateway binaries on free localhost ports, for tests.

    prom = start_prometheus(tmp_path, {"pushgateway": [push.address]}, rule_files=[RULES])
    try:
        prom.wait_for('checkpoint_store_threads', lambda result: len(result) == 1)
    finally:
        prom.stop()

Each server keeps its data and its log in ``workdir``; when one does not come up, the error quotes
the tail of its log. ``wait_ready`` returns when the HTTP API answers; Prometheus 2.x applies its
targets on a 5-second tick, so the first scrape comes about 5 s later: wait for data with
``wait_for``, not with sleeps. The binaries come from Debian's ``prometheus`` and ``prometheus-pushgateway``
packages (``make tools`` installs them).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import yaml

PROMETHEUS_BINARIES = ("prometheus",)
PUSHGATEWAY_BINARIES = ("prometheus-pushgateway", "pushgateway")
PROMTOOL_BINARIES = ("promtool",)
START_TIMEOUT = 30.0


class ToolMissing(RuntimeError):
    """A binary the observability tests run is not installed."""


class ServerFailed(RuntimeError):
    """A server did not start (or stopped answering); the message carries its log tail."""


def find_binary(candidates: Iterable[str]) -> str:
    candidates = tuple(candidates)
    for name in candidates:
        for path in (shutil.which(name), f"/usr/bin/{name}", f"/usr/local/bin/{name}"):
            if path and Path(path).is_file():
                return path
    raise ToolMissing(
        f"{' / '.join(candidates)} not found on PATH: run `make tools` "
        "(scripts/install_tools.sh installs Debian's prometheus and prometheus-pushgateway)"
    )


def promtool() -> str:
    return find_binary(PROMTOOL_BINARIES)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:  # 4xx/5xx still carry a body (Prometheus' error JSON)
        return exc.code, exc.read()


@dataclass
class _Server:
    name: str
    process: subprocess.Popen
    port: int
    log_path: Path
    _log_file: Any = field(repr=False, default=None)

    @property
    def address(self) -> str:
        """host:port, the form a scrape target takes."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def log_tail(self, lines: int = 30) -> str:
        return _tail(self.log_path, lines)

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise ServerFailed(
                    f"{self.name} exited with code {self.process.returncode} before it was ready; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            try:
                status, _ = _http_get(f"{self.url}/-/ready", timeout=1.0)
                if status == 200:
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            if time.monotonic() > deadline:
                raise ServerFailed(f"{self.name} not ready at {self.url} after {timeout:.0f}s; "
                                   f"log {self.log_path}:\n{self.log_tail()}")
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        if self._log_file is not None and not self._log_file.closed:
            self._log_file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


class PushServer(_Server):
    """A Pushgateway (metrics kept in memory only)."""


class PromServer(_Server):
    """A Prometheus with a generated prometheus.yml; ``config_path`` is that file."""

    config_path: Path

    def query(self, expr: str, time: float | None = None) -> dict:
        """GET /api/v1/query; the decoded JSON, error responses included (HTTP 400 bad_data on a
        parse error: ``{"status": "error", "errorType": "bad_data", "error": "..."}``)."""
        params = {"query": expr}
        if time is not None:
            params["time"] = repr(float(time))
        status, body = _http_get(f"{self.url}/api/v1/query?{urllib.parse.urlencode(params)}")
        try:
            return json.loads(body)
        except ValueError:
            raise ServerFailed(f"{self.name} answered HTTP {status} with non-JSON {body[:200]!r}; "
                               f"log tail:\n{self.log_tail()}") from None

    def api(self, path: str) -> dict:
        """GET any /api/v1/<path> (e.g. "rules", "alerts", "targets") as decoded JSON."""
        _, body = _http_get(f"{self.url}/api/v1/{path.lstrip('/')}")
        return json.loads(body)

    def wait_for(self, expr: str, predicate: Callable[[list], bool], timeout: float = 30.0,
                 interval: float = 0.25) -> list:
        """Poll ``expr`` until ``predicate(result)`` is true, ``result`` being ``data.result`` of the
        query (a list of ``{"metric": {...}, "value": [ts, "v"]}`` for an instant vector). Returns it.
        A query Prometheus rejects fails at once; a timeout raises AssertionError with the last answer."""
        deadline = time.monotonic() + timeout
        last: dict = {}
        while True:
            last = self.query(expr)
            if last.get("status") != "success":
                raise AssertionError(f"query {expr!r} failed: {last}")
            result = last["data"]["result"]
            if predicate(result):
                return result
            if self.process.poll() is not None:
                raise ServerFailed(f"{self.name} exited ({self.process.returncode}); log:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{expr!r} did not satisfy the predicate within {timeout:.0f}s; "
                                     f"last answer: {last}")
            time.sleep(interval)

    def value(self, expr: str) -> float | None:
        """The single value of an instant query, or None when the result is empty."""
        answer = self.query(expr)
        if answer.get("status") != "success":
            raise AssertionError(f"query {expr!r} failed: {answer}")
        data = answer["data"]
        if data["resultType"] == "scalar":
            return float(data["result"][1])
        result = data["result"]
        if not result:
            return None
        if len(result) > 1:
            raise AssertionError(f"{expr!r} returned {len(result)} series: {result}")
        return float(result[0]["value"][1])


def _spawn(cls, name: str, argv: list[str], workdir: Path, port: int, log_name: str,
           attempts_left: int, restart: Callable[[], _Server]) -> _Server:
    log_path = workdir / log_name
    log_file = open(log_path, "ab")
    process = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               cwd=workdir)
    server = cls(name=name, process=process, port=port, log_path=log_path, _log_file=log_file)
    try:
        server.wait_ready()
    except ServerFailed:
        server.stop()
        # Another process can take the free port between our probe and the bind: try a new one.
        if attempts_left > 0 and "address already in use" in _tail(log_path).lower():
            return restart()
        raise
    return server


def prometheus_config(targets: dict[str, list[str]], scrape_interval: str = "1s",
                      rule_files: Iterable[Path | str] = ()) -> dict:
    """The prometheus.yml start_prometheus writes: one static job per ``targets`` entry; the job
    named ``pushgateway`` keeps the pushed job/instance labels (honor_labels)."""
    scrape_configs = []
    for job, addresses in targets.items():
        scrape = {"job_name": job, "static_configs": [{"targets": list(addresses)}]}
        if job == "pushgateway":
            scrape["honor_labels"] = True
        scrape_configs.append(scrape)
    return {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval,
                   "scrape_timeout": scrape_interval},
        "rule_files": [str(Path(p).resolve()) for p in rule_files],
        "scrape_configs": scrape_configs,
    }


def start_prometheus(workdir: Path, targets: dict[str, list[str]], scrape_interval: str = "1s",
                     rule_files: Iterable[Path | str] = (), _attempts: int = 3) -> PromServer:
    """Start a Prometheus scraping ``targets`` (job name -> ["127.0.0.1:PORT", ...]) every
    ``scrape_interval`` and evaluating ``rule_files`` as often; returns once it is ready."""
    binary = find_binary(PROMETHEUS_BINARIES)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    rule_files = tuple(rule_files)
    port = free_port()
    home = workdir / f"prometheus-{port}"
    home.mkdir(parents=True, exist_ok=True)
    config_path = home / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(prometheus_config(targets, scrape_interval, rule_files),
                                          sort_keys=False))
    argv = [
        binary,
        f"--config.file={config_path}",
        f"--storage.tsdb.path={home / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--web.enable-lifecycle",
        "--log.level=info",
    ]
    server = _spawn(PromServer, "prometheus", argv, home, port, "prometheus.log", _attempts - 1,
                    lambda: start_prometheus(workdir, targets, scrape_interval, rule_files, _attempts - 1))
    server.config_path = config_path
    return server


def start_pushgateway(workdir: Path, _attempts: int = 3) -> PushServer:
    """Start a Pushgateway that keeps pushed metrics in memory only; returns once it is ready."""
    binary = find_binary(PUSHGATEWAY_BINARIES)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    home = workdir / f"pushgateway-{port}"
    home.mkdir(parents=True, exist_ok=True)
    argv = [binary, f"--web.listen-address=127.0.0.1:{port}", "--persistence.file=", "--log.level=info"]
    return _spawn(PushServer, "pushgateway", argv, home, port, "pushgateway.log", _attempts - 1,
                  lambda: start_pushgateway(workdir, _attempts - 1))
