"""Where the health check's settings come from: built-in defaults, then the Airflow Variable
``checkpoint_health_config`` (a JSON object, for scheduled runs), then the run's own params
(for a manual run from the form; a null param means "as configured").

Kept apart from Airflow so the precedence and validation are tested on plain values. The
Variable arrives as its raw text: a typo in it must fail the run, not quietly mean "defaults".
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, fields
from typing import Any

from include.checkpoint_core.health.decision import Thresholds
from include.checkpoint_core.health.prometheus import validate_selector

VARIABLE = "checkpoint_health_config"
CONN_ID = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class HealthSettings:
    thresholds: Thresholds = field(default_factory=Thresholds)
    app_servers: int = 1  # how many app servers write this store (the multi-server row)
    auto_migrate: bool = False  # trigger checkpoint_migration on MIGRATE NOW
    migration_target: str = "checkpoints_postgres"  # the postgres connection auto_migrate migrates into
    prometheus_selector: str = ""  # extra label matchers for this app's series
    window_minutes: float = 15  # the schedule's interval: every run looks at the time since the last
    baseline_minutes: float = 60  # the error-spike baseline, just before the window
    largest_top_n: int = 5  # largest checkpoints listed (0: skip the size scan)
    full_scan_every_minutes: float = 60  # thread count and size audit read every row: not every run


OTHER_KEYS = {f.name for f in fields(HealthSettings)} - {"thresholds"}
THRESHOLD_KEYS = {f.name for f in fields(Thresholds)}
KEYS = tuple(sorted(OTHER_KEYS | THRESHOLD_KEYS))
MAX_MINUTES = 7 * 24 * 60


def _whole(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _minutes(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and 1 <= value <= MAX_MINUTES)


def parse_configured(raw: str | dict | None) -> dict[str, Any]:
    """The Variable's value: empty or unset is {}, anything but a JSON object is an error."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            raise ValueError(f"the Variable {VARIABLE} is not valid JSON ({exc}); "
                             'write a JSON object, e.g. {"app_servers": 3}') from None
    if not isinstance(raw, dict):
        raise ValueError(f'the Variable {VARIABLE} must be a JSON object, e.g. {{"app_servers": 3}}')
    return raw


def resolve_settings(configured: str | dict | None, overrides: dict[str, Any] | None = None) -> HealthSettings:
    """Defaults < ``configured`` (the Variable) < non-null ``overrides`` (params); validated."""
    merged = {**parse_configured(configured), **{k: v for k, v in (overrides or {}).items() if v is not None}}
    unknown = set(merged) - set(KEYS)
    if unknown:
        raise ValueError(f"unknown health setting(s) {sorted(unknown)} (in {VARIABLE} or the params); known: {list(KEYS)}")
    thresholds = Thresholds.from_mapping({k: v for k, v in merged.items() if k in THRESHOLD_KEYS})
    other = {k: v for k, v in merged.items() if k in OTHER_KEYS}
    checks = {
        "app_servers": (lambda v: _whole(v, 1), "a whole number >= 1"),
        "largest_top_n": (lambda v: _whole(v, 0), "a whole number >= 0"),
        "auto_migrate": (lambda v: isinstance(v, bool), "true or false"),
        "window_minutes": (_minutes, f"between 1 and {MAX_MINUTES} minutes"),
        "baseline_minutes": (_minutes, f"between 1 and {MAX_MINUTES} minutes"),
        "full_scan_every_minutes": (lambda v: v == 0 or _minutes(v), f"0 (every run) or 1 to {MAX_MINUTES} minutes"),
        "migration_target": (lambda v: isinstance(v, str) and bool(CONN_ID.match(v)), "a connection id"),
        "prometheus_selector": (lambda v: isinstance(v, str), "a string of label matchers"),
    }
    for key, value in other.items():
        ok, what = checks[key]
        if not ok(value):
            raise ValueError(f"{key} must be {what}, got {value!r}")
    if "prometheus_selector" in other:
        other["prometheus_selector"] = validate_selector(other["prometheus_selector"])
    return HealthSettings(thresholds=thresholds, **other)
