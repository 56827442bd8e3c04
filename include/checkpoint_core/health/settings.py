"""Where the health check's settings come from: built-in defaults, then the Airflow Variable
``checkpoint_health_config`` (a JSON object, for scheduled runs), then the run's own params
(for a manual run from the form; a null param means "as configured").

Kept apart from Airflow so the precedence and validation are tested on plain dicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from include.checkpoint_core.health.decision import Thresholds
from include.checkpoint_core.health.prometheus import validate_selector

VARIABLE = "checkpoint_health_config"


@dataclass(frozen=True)
class HealthSettings:
    thresholds: Thresholds = field(default_factory=Thresholds)
    app_servers: int = 1  # how many app servers write this store (the multi-server row)
    auto_migrate: bool = False  # trigger checkpoint_migration on MIGRATE NOW
    prometheus_selector: str = ""  # extra label matchers for this app's series
    window_minutes: float = 15  # the schedule's interval: every run looks at the time since the last
    baseline_minutes: float = 60  # the error-spike baseline, just before the window
    largest_top_n: int = 5  # largest checkpoints listed (0: skip the size scan)


OTHER_KEYS = {f.name for f in fields(HealthSettings)} - {"thresholds"}
THRESHOLD_KEYS = {f.name for f in fields(Thresholds)}
KEYS = tuple(sorted(OTHER_KEYS | THRESHOLD_KEYS))


def resolve_settings(configured: dict[str, Any] | None, overrides: dict[str, Any] | None = None) -> HealthSettings:
    """Defaults < ``configured`` (the Variable) < non-null ``overrides`` (params); validated."""
    if configured is not None and not isinstance(configured, dict):
        raise ValueError(f"the Variable {VARIABLE} must be a JSON object, e.g. {{\"app_servers\": 3}}")
    merged = {**(configured or {}), **{k: v for k, v in (overrides or {}).items() if v is not None}}
    unknown = set(merged) - set(KEYS)
    if unknown:
        raise ValueError(f"unknown health setting(s) {sorted(unknown)} (in {VARIABLE} or the params); known: {list(KEYS)}")
    thresholds = Thresholds.from_mapping({k: v for k, v in merged.items() if k in THRESHOLD_KEYS})
    other = {k: v for k, v in merged.items() if k in OTHER_KEYS}
    if "app_servers" in other and (not isinstance(other["app_servers"], int) or other["app_servers"] < 1):
        raise ValueError(f"app_servers must be a whole number >= 1, got {other['app_servers']!r}")
    for key in ("window_minutes", "baseline_minutes"):
        if key in other and (not isinstance(other[key], (int, float)) or not 1 <= other[key] <= 7 * 24 * 60):
            raise ValueError(f"{key} must be between 1 and 10080 minutes, got {other[key]!r}")
    if "largest_top_n" in other and (not isinstance(other["largest_top_n"], int) or other["largest_top_n"] < 0):
        raise ValueError(f"largest_top_n must be a whole number >= 0, got {other['largest_top_n']!r}")
    if "auto_migrate" in other and not isinstance(other["auto_migrate"], bool):
        raise ValueError(f"auto_migrate must be true or false, got {other['auto_migrate']!r}")
    if "prometheus_selector" in other:
        other["prometheus_selector"] = validate_selector(str(other["prometheus_selector"]))
    return HealthSettings(thresholds=thresholds, **other)
