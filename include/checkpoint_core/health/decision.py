"""The migrate-now decision: numbers in, a decision and the reasons behind it out.

A pure function, so the matrix is tested at its boundaries without a store or a Prometheus:

| condition                                   | decision          |
|---------------------------------------------|-------------------|
| write error rate > 1%                        | MIGRATE NOW       |
| > 100 writes/s sustained over the window     | MIGRATE NOW       |
| more than one app server (configuration)     | MIGRATE NOW       |
| SQLite file (with its WAL) > 5 GiB           | MIGRATE SOON      |
| otherwise                                    | SQLite sufficient |

Every comparison is strict: exactly at a threshold is still fine. The error-rate rows need at
least ``min_errors`` failed writes in the window (3, as the alert rules), so one failure at a
trickle of traffic is not a migration. A store already on
PostgreSQL gets ``on_postgres``; anomalies (a checkpoint over 5 MiB, an error-rate spike
against the baseline) are reported for every backend. An input nobody could measure is
listed in ``missing`` and its rows of the matrix are not evaluated: the decision says what
it was made without, instead of treating "unknown" as "fine".
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

MIGRATE_NOW, MIGRATE_SOON, SQLITE_SUFFICIENT, ON_POSTGRES = "migrate_now", "migrate_soon", "sqlite_sufficient", "on_postgres"
DECISION_TITLES = {
    MIGRATE_NOW: "MIGRATE NOW",
    MIGRATE_SOON: "MIGRATE SOON",
    SQLITE_SUFFICIENT: "SQLite sufficient",
    ON_POSTGRES: "already on PostgreSQL",
}
# Binary units, as human_bytes and the size histogram's 5 MiB bucket use.
MB = 1024**2
GB = 1024**3


@dataclass(frozen=True)
class Thresholds:
    """Every number the matrix compares against (all configurable from the DAG)."""

    error_rate_pct: float = 1.0  # write errors / write attempts, over the window
    writes_per_second: float = 100.0  # SQLite's practical ceiling for one writer
    max_app_servers: int = 1  # more app servers than this cannot share one SQLite file
    sqlite_size_gb: float = 5.0  # file + WAL, GiB
    checkpoint_mb: float = 5.0  # anomaly: one checkpoint over this many MiB
    error_spike_factor: float = 3.0  # anomaly: error rate over this many times the baseline...
    error_spike_floor_pct: float = 0.1  # ...and over this floor, so one error after a clean hour does not page
    min_errors: int = 3  # failed writes in the window before an error rate counts at all

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
                raise ValueError(f"threshold {f.name} must be a finite number >= 0, got {value!r}")
        for name in ("max_app_servers", "min_errors"):
            if int(getattr(self, name)) != getattr(self, name) or getattr(self, name) < 1:
                raise ValueError(f"threshold {name} must be a whole number >= 1, got {getattr(self, name)!r}")
        if self.checkpoint_mb <= 0:
            raise ValueError(f"threshold checkpoint_mb must be above 0, got {self.checkpoint_mb!r}")

    @classmethod
    def from_mapping(cls, values: dict[str, Any] | None) -> Thresholds:
        """Thresholds from a mapping (a Variable, params); None values keep the default."""
        values = {k: v for k, v in (values or {}).items() if v is not None}
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(
                f"unknown health threshold(s) {sorted(unknown)}; known: {[f.name for f in fields(cls)]}"
            )
        return cls(**values)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass
class HealthInputs:
    """What the matrix reads (the report carries every other reading). None means "could not be
    measured"; ``missing`` says why."""

    backend: str  # "sqlite" or "postgres"
    app_servers: int = 1  # from configuration
    error_rate: float | None = None  # fraction, over the window
    errors_in_window: float | None = None  # failed writes in the window (None: unknown, no floor applied)
    baseline_error_rate: float | None = None  # fraction, over the baseline window before it
    writes_per_second: float | None = None  # average over the window
    writes_source: str | None = None  # "prometheus" or "store"
    store_bytes: int | None = None  # SQLite: file + WAL + shm; PostgreSQL: the checkpoint tables
    largest_checkpoint_bytes: int | None = None
    window_minutes: float = 15
    missing: list[str] = field(default_factory=list)


@dataclass
class Decision:
    decision: str
    reasons: list[str]  # why this decision, with the numbers
    anomalies: list[dict[str, Any]]  # {"kind": ..., "message": ...}
    missing: list[str]  # inputs the decision was made without

    @property
    def title(self) -> str:
        return DECISION_TITLES[self.decision]

    def as_dict(self) -> dict[str, Any]:
        return {"decision": self.decision, "title": self.title, "reasons": self.reasons,
                "anomalies": self.anomalies, "missing": self.missing}


def _size(n: int) -> str:
    return f"{n / GB:,.2f} GiB" if n >= GB / 100 else f"{n / MB:,.1f} MiB"


def _enough_errors(inputs: HealthInputs, t: Thresholds) -> bool:
    return inputs.errors_in_window is None or inputs.errors_in_window >= t.min_errors


def _errors_note(inputs: HealthInputs) -> str:
    return f" ({inputs.errors_in_window:g} failed writes)" if inputs.errors_in_window is not None else ""


def _pct(fraction: float) -> str:
    return f"{fraction * 100:.2f}%"


def decide(inputs: HealthInputs, thresholds: Thresholds = Thresholds()) -> Decision:
    """Apply the matrix; the first matching row wins, and every matching reason is listed."""
    t = thresholds
    window = f"the last {inputs.window_minutes:g} min"
    now: list[str] = []
    soon: list[str] = []
    fine: list[str] = []

    if inputs.error_rate is not None:
        if inputs.error_rate * 100 > t.error_rate_pct and _enough_errors(inputs, t):
            now.append(f"write error rate {_pct(inputs.error_rate)} > {t.error_rate_pct:g}% over {window}"
                       + _errors_note(inputs))
        elif inputs.error_rate * 100 > t.error_rate_pct:
            fine.append(f"write error rate {_pct(inputs.error_rate)} from only {inputs.errors_in_window:g} failed "
                        f"writes (< {t.min_errors} needed)")
        else:
            fine.append(f"write error rate {_pct(inputs.error_rate)} <= {t.error_rate_pct:g}%")
    if inputs.writes_per_second is not None:
        source = f" ({inputs.writes_source})" if inputs.writes_source else ""
        if inputs.writes_per_second > t.writes_per_second:
            now.append(
                f"{inputs.writes_per_second:,.1f} writes/s sustained over {window}{source} "
                f"> {t.writes_per_second:g}/s"
            )
        else:
            fine.append(f"{inputs.writes_per_second:,.1f} writes/s{source} <= {t.writes_per_second:g}/s")
    if inputs.app_servers > t.max_app_servers:
        now.append(
            f"{inputs.app_servers} app servers configured > {t.max_app_servers}: "
            "they cannot share one SQLite file"
        )
    if inputs.store_bytes is not None and inputs.backend == "sqlite":
        size = f"SQLite file {_size(inputs.store_bytes)} with its WAL ({inputs.store_bytes:,} bytes)"
        if inputs.store_bytes > t.sqlite_size_gb * GB:
            soon.append(f"{size} > {t.sqlite_size_gb:g} GiB")
        else:
            fine.append(f"{size} <= {t.sqlite_size_gb:g} GiB")

    if inputs.backend != "sqlite":
        decision, reasons = ON_POSTGRES, ["the store is PostgreSQL: the migration matrix does not apply"]
    elif now:
        decision, reasons = MIGRATE_NOW, now + soon
    elif soon:
        decision, reasons = MIGRATE_SOON, soon
    else:
        decision, reasons = SQLITE_SUFFICIENT, fine or ["no input exceeded a threshold"]
    return Decision(decision, reasons, anomalies(inputs, t), list(inputs.missing))


def anomalies(inputs: HealthInputs, t: Thresholds) -> list[dict[str, Any]]:
    """Conditions worth an alert whatever the decision: oversized checkpoints, error spikes."""
    found = []
    if inputs.largest_checkpoint_bytes is not None and inputs.largest_checkpoint_bytes > t.checkpoint_mb * MB:
        found.append({
            "kind": "large_checkpoint",
            "message": f"a checkpoint of {inputs.largest_checkpoint_bytes / MB:,.1f} MiB > {t.checkpoint_mb:g} MiB: "
            "offload large values (OffloadSerializer) or cap them (SizeGuardSaver)",
        })
    rate, base = inputs.error_rate, inputs.baseline_error_rate
    if rate is not None and base is not None:
        if rate * 100 > t.error_spike_floor_pct and rate > t.error_spike_factor * base and _enough_errors(inputs, t):
            found.append({
                "kind": "error_spike",
                "message": f"write error rate {_pct(rate)} is over {t.error_spike_factor:g}x its baseline "
                f"{_pct(base)} (and over the {t.error_spike_floor_pct:g}% floor)",
            })
    return found
