"""The health gate of a soak: the app's writes to PostgreSQL, as Prometheus sees them, and the database itself.

The numbers are the health check's own (``health.prometheus``: the app's ``MeteredSaver`` series,
``backend="postgres"``), over a window as long as the interval between checks, so each check judges
only what happened since the last. A breach is an error rate over the limit (with at least
``min_errors`` failed writes, as in the health check), a P99 over the limit, or the database not
answering for ``max_unreachable_checks`` checks in a row (a P99 counts once the window holds
``min_writes`` writes): one blip is reported, not acted on.
Prometheus itself being unreachable or having no series is reported and gates nothing: the
database check still runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import psycopg

from include.checkpoint_core.health.prometheus import PrometheusAPI, read_prometheus


@dataclass(frozen=True)
class Gate:
    error_rate_pct: float = 1.0
    p99_ms: float = 500.0
    min_errors: int = 3
    min_writes: int = 20  # a P99 over fewer writes than this is one slow write, not a trend
    window_s: float = 60.0
    max_unreachable_checks: int = 3
    selector: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def ping(dsn: str, timeout_s: int = 3) -> str | None:
    """None when PostgreSQL answers ``SELECT 1``, else why not (no credentials in the text)."""
    try:
        with psycopg.connect(dsn, connect_timeout=timeout_s, autocommit=True) as conn:
            conn.execute("SELECT 1")
        return None
    except psycopg.Error as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:200]


def check(api: PrometheusAPI | None, dsn: str, gate: Gate, unreachable_streak: int = 0) -> dict:
    """One look: {'verdict': ok | breach, 'reason', 'numbers', 'missing', 'unreachable_streak'}."""
    numbers: dict = {}
    missing: list[str] = []
    reason = None
    down = ping(dsn)
    streak = unreachable_streak + 1 if down else 0
    numbers["database"] = down or "ok"
    if down and streak >= gate.max_unreachable_checks:
        reason = f"PostgreSQL did not answer {streak} checks in a row ({down})"
    if api is None:
        missing.append("no Prometheus connection: error rate and P99 are not gated")
    else:
        r = read_prometheus(api, backend="postgres", selector=gate.selector, window_minutes=gate.window_s / 60,
                            baseline_minutes=gate.window_s / 60)
        missing += [m for m in r.missing if "baseline" not in m]
        numbers.update(writes_per_second=r.writes_per_second, error_rate_pct=None if r.error_rate is None
                       else round(100 * r.error_rate, 3), errors_in_window=r.errors_in_window,
                       p99_ms=None if r.p99_write_seconds is None else round(1000 * r.p99_write_seconds, 2))
        if reason is None and r.error_rate is not None and 100 * r.error_rate > gate.error_rate_pct \
                and (r.errors_in_window or 0) >= gate.min_errors:
            reason = (f"write error rate on PostgreSQL {100 * r.error_rate:.2f}% > {gate.error_rate_pct}% "
                      f"({r.errors_in_window:.0f} failed writes in {gate.window_s:.0f} s)")
        writes = (r.writes_per_second or 0.0) * gate.window_s
        numbers["writes_in_window"] = round(writes)
        if reason is None and r.p99_write_seconds is not None and 1000 * r.p99_write_seconds > gate.p99_ms \
                and writes >= gate.min_writes:
            reason = f"write P99 on PostgreSQL {1000 * r.p99_write_seconds:.0f} ms > {gate.p99_ms:g} ms"
    return {"verdict": "breach" if reason else "ok", "reason": reason, "numbers": numbers, "missing": missing,
            "unreachable_streak": streak}
