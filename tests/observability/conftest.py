"""Fixtures running the real Prometheus / Pushgateway binaries (see servers.py)."""

from __future__ import annotations

import pytest

from tests.observability import servers


def _require(binaries) -> str:
    try:
        return servers.find_binary(binaries)
    except servers.ToolMissing as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def promtool_bin() -> str:
    return _require(servers.PROMTOOL_BINARIES)


@pytest.fixture(scope="session")
def pushgateway(tmp_path_factory):
    """One Pushgateway for the session (in memory). Tests push under a grouping key of their own
    (e.g. a job named after the test) and delete it when done, so they do not see each other."""
    _require(servers.PUSHGATEWAY_BINARIES)
    server = servers.start_pushgateway(tmp_path_factory.mktemp("pushgateway"))
    yield server
    server.stop()


@pytest.fixture
def prometheus_factory(tmp_path_factory):
    """``start(targets, scrape_interval="1s", rule_files=()) -> PromServer``; every server started
    through it is stopped at teardown."""
    _require(servers.PROMETHEUS_BINARIES)
    started: list[servers.PromServer] = []

    def start(targets: dict[str, list[str]], scrape_interval: str = "1s", rule_files=()) -> servers.PromServer:
        server = servers.start_prometheus(tmp_path_factory.mktemp("prometheus"), targets,
                                          scrape_interval=scrape_interval, rule_files=rule_files)
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        server.stop()
