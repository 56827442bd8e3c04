"""One health check of one store: measure, decide (``check_health``), remember (``record``).

Prometheus (when configured) gives what only the app sees: write attempts, errors and their
latency. The store gives what only it knows: its size, threads and largest checkpoints, and
writes/s from the checkpoint ids when there is no Prometheus. Whatever could not be measured
is named in ``missing``, and the decision is made from the rest.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Any

from include.checkpoint_core.health.decision import MB, HealthInputs, Thresholds, decide
from include.checkpoint_core.health.history import read_history, record_decision
from include.checkpoint_core.health.prometheus import PrometheusAPI, PrometheusReadings, read_prometheus
from include.checkpoint_core.health.store_metrics import read_store
from include.checkpoint_core.stores import StoreTarget


def check_health(
    target: StoreTarget,
    *,
    prometheus: PrometheusAPI | None,
    prometheus_absent_reason: str = "no Prometheus configured",
    thresholds: Thresholds = Thresholds(),
    app_servers: int = 1,
    selector: str = "",
    window_minutes: float = 15,
    baseline_minutes: float = 60,
    largest_top_n: int = 5,
    earlier_full_scan: dict[str, Any] | None = None,
    log=print,
) -> dict[str, Any]:
    """Measure and decide; returns the report (JSON-able). Writes nothing.

    ``earlier_full_scan``: a recent report whose thread count and largest checkpoints are reused
    instead of reading every row again (see ``recent_full_scan``).
    """
    if app_servers < 1:
        raise ValueError(f"app_servers must be at least 1, got {app_servers}")
    started = time.monotonic()
    measured_at = datetime.now(timezone.utc)
    if prometheus is not None:
        log(f"asking Prometheus at {prometheus.where} for the last {window_minutes:g} min")
        prom = read_prometheus(prometheus, backend=target.kind, selector=selector,
                               window_minutes=window_minutes, baseline_minutes=baseline_minutes)
    else:
        prom = PrometheusReadings(missing=[f"prometheus: {prometheus_absent_reason}"])
    log(f"{target.name or target.kind}: reading the store ({target.kind})"
        + (f"; thread count and largest checkpoints from {earlier_full_scan['full_scan_at']}" if earlier_full_scan else ""))
    store = read_store(target, window_minutes=window_minutes, largest_top_n=largest_top_n,
                       checkpoint_limit_bytes=int(thresholds.checkpoint_mb * MB), full_scans=earlier_full_scan is None)
    if earlier_full_scan is not None:
        e = earlier_full_scan["inputs"]
        store.threads, store.largest = e["threads"], e["largest"]
        store.largest_checkpoint_bytes, store.over_checkpoint_limit = e["largest_checkpoint_bytes"], e["over_checkpoint_limit"]

    inputs = HealthInputs(
        backend=target.kind, app_servers=app_servers, window_minutes=window_minutes,
        error_rate=prom.error_rate, errors_in_window=prom.errors_in_window,
        baseline_error_rate=prom.baseline_error_rate,
        store_bytes=store.store_bytes, largest_checkpoint_bytes=store.largest_checkpoint_bytes,
        missing=prom.missing + store.missing,
    )
    # The higher of the two: Prometheus may see only the servers that are instrumented (or the
    # selector may miss some), the store sees every write that is still there.
    candidates = [(v, src) for v, src in ((prom.writes_per_second, "prometheus"),
                                          (store.writes_per_second, "store: checkpoint ids")) if v is not None]
    if candidates:
        inputs.writes_per_second, inputs.writes_source = max(candidates, key=lambda c: c[0])
    if prom.error_rate is None:
        inputs.missing.append("error rate: only the app's metrics (Prometheus) know about failed writes")
    decision = decide(inputs, thresholds)

    return {
        "store": target.name or target.kind,
        "backend": target.kind,
        "where": target.display,
        **decision.as_dict(),
        "inputs": {
            "app_servers": app_servers,
            "error_rate": prom.error_rate,
            "errors_in_window": prom.errors_in_window,
            "baseline_error_rate": prom.baseline_error_rate,
            "writes_per_second": inputs.writes_per_second,
            "writes_source": inputs.writes_source,
            "prometheus_writes_per_second": prom.writes_per_second,
            "peak_writes_per_second": prom.peak_writes_per_second,
            "store_writes_per_second": store.writes_per_second,
            "p99_write_seconds": prom.p99_write_seconds,
            "store_bytes": store.store_bytes,
            "store_bytes_detail": store.bytes_detail,
            "threads": store.threads,
            "largest_checkpoint_bytes": store.largest_checkpoint_bytes,
            "over_checkpoint_limit": store.over_checkpoint_limit,
            "largest": store.largest,
        },
        "full_scan_at": earlier_full_scan["full_scan_at"] if earlier_full_scan else measured_at.isoformat(),
        "window_minutes": window_minutes,
        "baseline_minutes": baseline_minutes,
        "thresholds": thresholds.as_dict(),
        "prometheus_queries": prom.queries,
        "measured_at": measured_at.isoformat(),
        "measured_at_unix": measured_at.timestamp(),
        "seconds": round(time.monotonic() - started, 3),
    }


def recent_full_scan(target: StoreTarget, every_minutes: float, log=print) -> dict[str, Any] | None:
    """The newest report whose full scans are younger than ``every_minutes``, or None (scan now)."""
    if every_minutes <= 0:
        return None
    try:
        rows = read_history(target, limit=2 * int(every_minutes // 5) + 2)
    except Exception as exc:  # noqa: BLE001 - no history is a reason to scan, not to fail
        log(f"no earlier full scan to reuse ({type(exc).__name__}: {exc})")
        return None
    now = datetime.now(timezone.utc)
    for row in rows:
        at = row["report"].get("full_scan_at")
        if at and now - datetime.fromisoformat(at) < timedelta(minutes=every_minutes):
            return row["report"]
    return None


def record(report: dict[str, Any], target: StoreTarget, *, run_id: str, evaluated_at: datetime,
           log=print) -> dict[str, Any]:
    """Keep the run's decision in the history and compare it with the previous delivered one.

    Returns the run's report: this one, or the one its first evaluation stored (a retry or a
    clear converges on it), with ``previous_decision``, ``changed``, ``new_anomalies`` and
    ``delivered``. The history is best-effort: a locked or read-only store must not swallow a
    MIGRATE NOW, so a failed write is reported in ``missing`` and ``changed`` becomes unknown (None).
    """
    try:
        own, previous = record_decision(target, run_id=run_id, evaluated_at=evaluated_at,
                                        decision=report["decision"], report=report)
    except Exception as exc:  # noqa: BLE001 - see the docstring
        log(f"the decision could not be recorded in the history: {type(exc).__name__}: {exc}")
        return {**report, "history": f"not recorded: {exc}", "previous_decision": None, "changed": None,
                "new_anomalies": report["anomalies"], "delivered": False,
                "missing": report["missing"] + [f"history: not recorded ({exc}); changes cannot be told apart"]}
    stored = own["report"]
    if stored.get("measured_at") != report["measured_at"]:
        log(f"run {run_id} was evaluated at {stored.get('measured_at')}: using that evaluation")
    previous_anomalies = {a["kind"] for a in (previous or {}).get("report", {}).get("anomalies", [])}
    return {**stored, "history": "recorded",
            "previous_decision": previous and previous["decision"],
            "changed": previous is None or previous["decision"] != stored["decision"],
            "new_anomalies": [a for a in stored["anomalies"] if a["kind"] not in previous_anomalies],
            "delivered": own["delivered"]}


def justification(report: dict[str, Any]) -> str:
    """The decision and the numbers behind it, as the task log shows them."""
    lines = [f"{report['store']}: {report['title']}"
             + (f" (was {report['previous_decision']})" if report.get("changed") and report.get("previous_decision") else "")]
    lines += [f"  because {r}" for r in report["reasons"]]
    lines += [f"  ANOMALY {a['kind']}: {a['message']}" for a in report["anomalies"]]
    if report["missing"]:
        lines.append("  decided without:")
        lines += [f"    - {m}" for m in report["missing"]]
    i = report["inputs"]
    lines.append(
        "  inputs: "
        + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in i.items() if k not in ("largest", "store_bytes_detail") and v is not None)
    )
    return "\n".join(lines)
