"""Read the app's checkpoint metrics back from Prometheus's HTTP API.

The app exports counters and histograms through ``MeteredSaver``; Prometheus turns them into
rates. Each input is one instant query (``/api/v1/query``) so a failure costs only that input:
an unreachable server or an empty answer becomes a line in ``missing`` and the health check
carries on with what the store itself can tell.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests

from include.checkpoint_core.observability import names

# Extra label matchers an operator may add to tell this app's series apart (job="agent", ...).
_MATCHER = r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=|!=|=~|!~)\s*"((?:[^"\\]|\\.)*)"\s*'
_SELECTOR = re.compile(rf"^(?:{_MATCHER}(?:,{_MATCHER})*,?)?$")
_ONE_MATCHER = re.compile(_MATCHER)
RESERVED_LABELS = ("__name__", "backend")  # set by the queries themselves


class PrometheusUnavailable(Exception):
    """Prometheus could not be asked (down, refused, timed out, not Prometheus)."""


def validate_selector(selector: str) -> str:
    """Label matchers to put inside ``{...}``: checked, never pasted unverified into PromQL."""
    selector = (selector or "").strip()
    if not _SELECTOR.match(selector):
        raise ValueError(
            f"prometheus_selector {selector!r} is not a list of label matchers; "
            'write it as in PromQL braces, e.g. job="agent",instance=~"app-.*"'
        )
    for label, op, value in _ONE_MATCHER.findall(selector):
        if label in RESERVED_LABELS:
            raise ValueError(f"prometheus_selector must not set {label!r}: the health check sets it itself")
        if op in ("=~", "!~"):
            try:
                re.compile(value.encode().decode("unicode_escape"))
            except re.error as exc:
                raise ValueError(f"prometheus_selector: {label}{op}\"{value}\" is not a valid regex ({exc})") from None
    return selector.rstrip(",").strip()


def safe_url(url: str) -> str:
    """A URL for logs and reports: any user:password@ part removed."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


@dataclass
class PrometheusAPI:
    """A minimal client: instant queries, a timeout, a session that may carry auth."""

    base_url: str
    session: requests.Session | None = None
    timeout_s: float = 10.0

    @property
    def where(self) -> str:
        return safe_url(self.base_url)

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The vector an instant query returns; raises PrometheusUnavailable or ValueError."""
        session = self.session or requests.Session()
        url = self.base_url.rstrip("/") + "/api/v1/query"
        try:
            resp = session.get(url, params={"query": expr}, timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise PrometheusUnavailable(f"Prometheus at {self.where} is unreachable: {type(exc).__name__}") from None
        try:
            body = resp.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise PrometheusUnavailable(f"{self.where} answered HTTP {resp.status_code} without a Prometheus "
                                        "API answer: is it Prometheus (the server's base URL)?")
        if body.get("status") != "success":
            # bad_data (400): the query was refused, e.g. a selector regex Prometheus does not
            # accept, or a query limit of a Prometheus-compatible server; the input is unknown.
            raise PrometheusUnavailable(f"Prometheus at {self.where} refused {expr!r}: "
                                        f"{body.get('errorType')}: {body.get('error')}")
        data = body.get("data", {})
        if data.get("resultType") == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return data.get("result", [])

    def query_range(self, expr: str, start: float, end: float, step_s: float) -> list[dict[str, Any]]:
        """The matrix of a range query (``/api/v1/query_range``): ``[{"metric", "values": [[t, v]...]}]``."""
        session = self.session or requests.Session()
        url = self.base_url.rstrip("/") + "/api/v1/query_range"
        try:
            resp = session.get(url, params={"query": expr, "start": start, "end": end, "step": step_s},
                               timeout=self.timeout_s)
            body = resp.json()
        except requests.RequestException as exc:
            raise PrometheusUnavailable(f"Prometheus at {self.where} is unreachable: {type(exc).__name__}") from None
        except ValueError:
            body = None
        if not isinstance(body, dict) or body.get("status") != "success":
            raise PrometheusUnavailable(f"Prometheus at {self.where} did not answer the range query {expr!r}: "
                                        f"{(body or {}).get('error') or 'not a Prometheus API answer'}")
        return body.get("data", {}).get("result", [])

    def scalar(self, expr: str) -> float | None:
        """The value of a query that yields one number; None when it yields nothing (or NaN)."""
        result = self.query(expr)
        if not result:
            return None
        value = float(result[0]["value"][1])
        return None if math.isnan(value) else value


@dataclass
class PrometheusReadings:
    writes_per_second: float | None = None
    peak_writes_per_second: float | None = None
    error_rate: float | None = None
    errors_in_window: float | None = None
    baseline_error_rate: float | None = None
    p99_write_seconds: float | None = None
    missing: list[str] = field(default_factory=list)
    queries: dict[str, str] = field(default_factory=dict)


def _matchers(backend: str, selector: str) -> str:
    parts = [f'backend="{backend}"'] + ([selector] if selector else [])
    return "{" + ",".join(parts) + "}"


def queries(backend: str, selector: str, window_minutes: float, baseline_minutes: float) -> dict[str, str]:
    """The PromQL behind each input (kept in the report, so a number can be re-checked by hand)."""
    m, w, b = _matchers(backend, validate_selector(selector)), f"{int(window_minutes * 60)}s", f"{int(baseline_minutes * 60)}s"
    writes, errors = f"{names.WRITES}_total{m}", f"{names.WRITE_ERRORS}_total{m}"
    return {
        "series": f"count({writes})",
        "writes_per_second": f"sum(rate({writes}[{w}]))",
        "peak_writes_per_second": f"max_over_time(sum(rate({writes}[1m]))[{w}:15s])",
        "errors_per_second": f"sum(rate({errors}[{w}]))",
        "errors_in_window": f"sum(increase({errors}[{w}]))",
        "baseline_writes_per_second": f"sum(rate({writes}[{b}] offset {w}))",
        "baseline_errors_per_second": f"sum(rate({errors}[{b}] offset {w}))",
        "p99_write_seconds": (
            f"histogram_quantile(0.99, sum by (le) (rate({names.WRITE_DURATION}_bucket{m}[{w}])))"
        ),
    }


def read_prometheus(
    api: PrometheusAPI, *, backend: str, selector: str = "", window_minutes: float = 15, baseline_minutes: float = 60
) -> PrometheusReadings:
    """Writes/s, error rate (and its baseline) and P99 latency for one backend's series."""
    q = queries(backend, selector, window_minutes, baseline_minutes)
    out = PrometheusReadings(queries=q)
    where = f"{names.WRITES}_total{_matchers(backend, validate_selector(selector))}"
    try:
        _read(api, q, out, where, baseline_minutes)
    except PrometheusUnavailable as exc:
        out.missing.append(f"prometheus: {exc}")
    return out


def _read(api: PrometheusAPI, q: dict[str, str], out: PrometheusReadings, where: str, baseline_minutes: float) -> None:
    if not api.scalar(q["series"]):
        out.missing.append(f"prometheus: no {where} series (is the app wrapped in MeteredSaver and scraped?)")
        return
    out.writes_per_second = api.scalar(q["writes_per_second"])
    out.peak_writes_per_second = api.scalar(q["peak_writes_per_second"])
    errors = api.scalar(q["errors_per_second"])
    out.errors_in_window = api.scalar(q["errors_in_window"])
    if out.writes_per_second is None:
        out.missing.append(f"prometheus: {where} has fewer than two samples in the window; rates unknown")
    else:
        out.error_rate = (errors or 0.0) / out.writes_per_second if out.writes_per_second > 0 else 0.0
    base_writes = api.scalar(q["baseline_writes_per_second"])
    base_errors = api.scalar(q["baseline_errors_per_second"])
    if base_writes:
        out.baseline_error_rate = (base_errors or 0.0) / base_writes
    else:
        out.missing.append(f"prometheus: no writes in the {baseline_minutes:g} min baseline window; no spike check")
    out.p99_write_seconds = api.scalar(q["p99_write_seconds"])
