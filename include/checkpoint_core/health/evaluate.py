"""One health check of one store: measure, decide, remember.

Prometheus (when configured) gives what only the app sees: write attempts, errors and their
latency. The store gives what only it knows: its size, threads and largest checkpoints, and
writes/s from the checkpoint ids when there is no Prometheus. Whatever could not be measured
is named in ``missing``, and the decision is made from the rest.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

from include.checkpoint_core.health.decision import MB, HealthInputs, Thresholds, decide
from include.checkpoint_core.health.history import record_decision
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
    run_id: str | None = None,
    evaluated_at: datetime | None = None,
    log=print,
) -> dict[str, Any]:
    """Measure, decide, and (with a ``run_id``) record; returns the report (JSON-able)."""
    if app_servers < 1:
        raise ValueError(f"app_servers must be at least 1, got {app_servers}")
    started = time.monotonic()
    log(f"{target.name or target.kind}: reading the store ({target.kind})")
    store = read_store(target, window_minutes=window_minutes, largest_top_n=largest_top_n,
                       checkpoint_limit_bytes=int(thresholds.checkpoint_mb * MB))
    if prometheus is not None:
        log(f"asking Prometheus at {prometheus.base_url} for the last {window_minutes:g} min")
        prom = read_prometheus(prometheus, backend=target.kind, selector=selector,
                               window_minutes=window_minutes, baseline_minutes=baseline_minutes)
    else:
        prom = PrometheusReadings(missing=[f"prometheus: {prometheus_absent_reason}"])

    inputs = HealthInputs(
        backend=target.kind, app_servers=app_servers, window_minutes=window_minutes,
        error_rate=prom.error_rate, baseline_error_rate=prom.baseline_error_rate,
        p99_write_seconds=prom.p99_write_seconds, store_bytes=store.store_bytes,
        largest_checkpoint_bytes=store.largest_checkpoint_bytes, threads=store.threads,
        missing=prom.missing + store.missing,
    )
    if prom.writes_per_second is not None:
        inputs.writes_per_second, inputs.writes_source = prom.writes_per_second, "prometheus"
    elif store.writes_per_second is not None:
        inputs.writes_per_second, inputs.writes_source = store.writes_per_second, "store: checkpoint ids"
    if prom.error_rate is None:
        inputs.missing.append("error rate: only the app's metrics (Prometheus) know about failed writes")
    decision = decide(inputs, thresholds)

    measured_at = datetime.now(timezone.utc)
    report: dict[str, Any] = {
        "store": target.name or target.kind,
        "backend": target.kind,
        "where": target.display,
        **decision.as_dict(),
        "inputs": {
            "app_servers": app_servers,
            "error_rate": prom.error_rate,
            "baseline_error_rate": prom.baseline_error_rate,
            "writes_per_second": inputs.writes_per_second,
            "writes_source": inputs.writes_source,
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
        "window_minutes": window_minutes,
        "baseline_minutes": baseline_minutes,
        "thresholds": thresholds.as_dict(),
        "prometheus_queries": prom.queries,
        "measured_at": measured_at.isoformat(),
        "measured_at_unix": measured_at.timestamp(),
        "previous_decision": None,
        "changed": None,
    }
    if run_id is not None:
        at = (evaluated_at or measured_at).astimezone(timezone.utc).isoformat()
        previous = record_decision(target, run_id=run_id, evaluated_at=at, decision=decision.decision, report=report)
        report["previous_decision"] = previous and previous["decision"]
        report["changed"] = previous is None or previous["decision"] != decision.decision
        previous_anomalies = {a["kind"] for a in (previous or {}).get("report", {}).get("anomalies", [])}
        report["new_anomalies"] = [a for a in decision.anomalies if a["kind"] not in previous_anomalies]
    report["seconds"] = round(time.monotonic() - started, 3)
    return report


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
        + ", ".join(f"{k}={v}" for k, v in i.items() if k not in ("largest", "store_bytes_detail") and v is not None)
    )
    return "\n".join(lines)
