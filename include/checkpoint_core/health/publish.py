"""Publish the health check's numbers to a Prometheus Pushgateway.

The health DAG is a batch job, so its gauges go through the Pushgateway (Prometheus's way for
batch jobs) and end up beside the app's own metrics: the dashboard's DB size, threads and
decision panels, and the alerts on a migrate-now decision or a stale check, read them there.
One group per store (``job="checkpoint_health", store=<conn id>``), replaced by each push, so a
retried task leaves the same state as a single run.
"""

from __future__ import annotations

from typing import Any

from include.checkpoint_core.observability import names

JOB = "checkpoint_health"


def health_registry(report: dict[str, Any]):
    """The gauges of one health report, in a registry of their own."""
    from prometheus_client import CollectorRegistry, Gauge

    registry = CollectorRegistry()
    labels = {"store": report["store"], "backend": report["backend"]}
    decision = Gauge(names.HEALTH_DECISION, "Current checkpoint_health decision (1) among all (0)",
                     [*names.HEALTH_LABELS, "decision"], registry=registry)
    for value in names.DECISIONS:
        decision.labels(**labels, decision=value).set(1 if value == report["decision"] else 0)
    Gauge(names.HEALTH_LAST_RUN, "When checkpoint_health last evaluated this store (unix time)",
          names.HEALTH_LABELS, registry=registry).labels(**labels).set(report["measured_at_unix"])
    store = report["inputs"]
    for name, key, doc in (
        (names.STORE_SIZE, "store_bytes", "Checkpoint store size on disk (SQLite: file + WAL)"),
        (names.STORE_THREADS, "threads", "Threads in the checkpoint store"),
        (names.STORE_LARGEST_CHECKPOINT, "largest_checkpoint_bytes", "Largest checkpoint in the store"),
        (names.STORE_WRITES_PER_SECOND, "writes_per_second", "Write transactions per second over the window"),
    ):
        if store.get(key) is not None:  # an unmeasured number is left out, not published as 0
            Gauge(name, doc, names.HEALTH_LABELS, registry=registry).labels(**labels).set(store[key])
    return registry


def push_registry(url: str, job: str, registry, grouping_key: dict[str, str], *, username: str | None = None,
                  password: str | None = None, timeout_s: float = 10) -> None:
    """PUT a registry's gauges to the Pushgateway at ``url``, replacing that group (a retry converges)."""
    from prometheus_client import push_to_gateway
    from prometheus_client.exposition import basic_auth_handler, default_handler

    def handler(url, method, timeout, headers, data):
        if username:
            return basic_auth_handler(url, method, timeout, headers, data, username, password)
        return default_handler(url, method, timeout, headers, data)

    push_to_gateway(url, job=job, registry=registry, grouping_key=grouping_key, timeout=timeout_s, handler=handler)


def push_health(url: str, report: dict[str, Any], *, username: str | None = None,
                password: str | None = None, timeout_s: float = 10) -> None:
    """PUT the report's gauges to the Pushgateway at ``url`` (replacing this store's group)."""
    push_registry(url, JOB, health_registry(report), {"store": report["store"]}, username=username,
                  password=password, timeout_s=timeout_s)
