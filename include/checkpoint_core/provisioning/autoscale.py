"""When to move the checkpoint PostgreSQL one step up or down its class ladder.

Up only when the write rate stayed above the upper threshold for the whole up window, down only
when it stayed below a lower threshold for a longer window (hysteresis, so a load hovering near one
threshold does not flap), never within the cooldown after a change nor while a migration or
cutover runs. A window the samples do not cover is not "sustained": the decision holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

DEFAULT_LADDER = ("db.t4g.small", "db.t4g.medium", "db.m5.large", "db.m5.xlarge")

SCALE_UP, SCALE_DOWN, HOLD, DEFER = "scale_up", "scale_down", "hold", "defer"


class AutoscaleConfigError(ValueError):
    """A setting that cannot work; the message says which and what to use instead."""


@dataclass(frozen=True)
class ScaleConfig:
    ladder: tuple[str, ...] = DEFAULT_LADDER
    up_writes_per_second: float = 500.0
    up_minutes: float = 10.0
    down_writes_per_second: float = 150.0
    down_minutes: float = 60.0
    cooldown_minutes: float = 30.0
    # How far the first sample may start after a window's beginning and still cover it
    # (Prometheus samples at its step, so a window is never covered to the second).
    coverage_slack_minutes: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "ladder", tuple(self.ladder))
        if not self.ladder or len(set(self.ladder)) != len(self.ladder):
            raise AutoscaleConfigError(f"ladder {list(self.ladder)} must list distinct instance classes, smallest first.")
        if not 0 <= self.down_writes_per_second < self.up_writes_per_second:
            raise AutoscaleConfigError(
                f"down_writes_per_second ({self.down_writes_per_second}) must be at least 0 and below "
                f"up_writes_per_second ({self.up_writes_per_second}), or the instance would flap between classes.")
        for name in ("up_minutes", "down_minutes"):
            if getattr(self, name) <= 0:
                raise AutoscaleConfigError(f"{name} must be more than 0 minutes.")
        if self.down_minutes < self.up_minutes:
            raise AutoscaleConfigError(
                f"down_minutes ({self.down_minutes}) must be at least up_minutes ({self.up_minutes}): scaling down "
                "waits longer than scaling up.")
        if self.cooldown_minutes < 0 or self.coverage_slack_minutes < 0:
            raise AutoscaleConfigError("cooldown_minutes and coverage_slack_minutes cannot be negative.")

    @classmethod
    def from_mapping(cls, values: dict[str, Any] | None) -> ScaleConfig:
        """Settings from a Variable or a form; unknown keys are refused instead of ignored."""
        values = {k: v for k, v in (values or {}).items() if v is not None}
        unknown = sorted(set(values) - set(cls.__dataclass_fields__))
        if unknown:
            raise AutoscaleConfigError(f"unknown autoscale setting(s) {unknown}; known: {sorted(cls.__dataclass_fields__)}.")
        return cls(**values)


@dataclass(frozen=True)
class Sample:
    at: datetime
    writes_per_second: float


@dataclass(frozen=True)
class ScaleDecision:
    action: str
    current_class: str
    target_class: str | None
    reasons: list[str]
    numbers: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _window(samples: Sequence[Sample], now: datetime, minutes: float, slack: float) -> list[Sample] | None:
    """The samples of the last ``minutes``, or None when they do not cover the window (from its start
    up to now, within the slack: samples that stopped coming are not a sustained rate)."""
    start = now - timedelta(minutes=minutes)
    inside = [s for s in samples if start <= s.at <= now]
    margin = timedelta(minutes=slack)
    if not inside or min(s.at for s in inside) > start + margin or max(s.at for s in inside) < now - margin:
        return None
    return inside


def decide(
    samples: Sequence[Sample],
    current_class: str,
    *,
    now: datetime,
    config: ScaleConfig = ScaleConfig(),
    last_change_at: datetime | None = None,
    blockers: Sequence[str] = (),
) -> ScaleDecision:
    """The action for ``current_class`` given the write-rate samples up to ``now``."""
    if current_class not in config.ladder:
        raise AutoscaleConfigError(
            f"the instance's class {current_class} is not on the ladder {list(config.ladder)}: add it there "
            "(smallest first) or scale it by hand onto one of those classes.")
    step = config.ladder.index(current_class)
    up_window = _window(samples, now, config.up_minutes, config.coverage_slack_minutes)
    down_window = _window(samples, now, config.down_minutes, config.coverage_slack_minutes)
    numbers: dict[str, Any] = {
        "now": now.isoformat(),
        "up_window_min_writes_per_second": None if up_window is None else min(s.writes_per_second for s in up_window),
        "down_window_max_writes_per_second": None if down_window is None else max(s.writes_per_second for s in down_window),
        "latest_writes_per_second": max(samples, key=lambda s: s.at).writes_per_second if samples else None,
        "up_writes_per_second": config.up_writes_per_second, "up_minutes": config.up_minutes,
        "down_writes_per_second": config.down_writes_per_second, "down_minutes": config.down_minutes,
        "last_change_at": last_change_at.isoformat() if last_change_at else None,
    }

    def hold(reason: str, action: str = HOLD, target: str | None = None) -> ScaleDecision:
        return ScaleDecision(action, current_class, target, [reason], numbers)

    wanted, target = None, None
    low, high = numbers["up_window_min_writes_per_second"], numbers["down_window_max_writes_per_second"]
    if low is not None and low > config.up_writes_per_second:
        wanted = SCALE_UP
        why = (f"writes/s stayed above {config.up_writes_per_second:g} for {config.up_minutes:g} min "
               f"(lowest {low:.1f})")
        if step + 1 == len(config.ladder):
            return hold(f"{why}, but {current_class} is the top of the ladder: extend the ladder or shard the store")
        target = config.ladder[step + 1]
    elif high is not None and high < config.down_writes_per_second:
        wanted = SCALE_DOWN
        why = (f"writes/s stayed below {config.down_writes_per_second:g} for {config.down_minutes:g} min "
               f"(highest {high:.1f})")
        if step == 0:
            return hold(f"{why}; {current_class} is already the smallest class")
        target = config.ladder[step - 1]
    else:
        if up_window is None:
            return hold(f"the samples do not cover the last {config.up_minutes:g} min: nothing is sustained yet")
        return hold(f"writes/s between {config.down_writes_per_second:g} and {config.up_writes_per_second:g} "
                    "(or not sustained over a whole window)")
    if blockers:
        return hold(f"{why}; deferred: {', '.join(blockers)} running", DEFER, target)
    if last_change_at is not None and config.cooldown_minutes:
        until = last_change_at + timedelta(minutes=config.cooldown_minutes)
        if now < until:
            return hold(f"{why}; cooldown after the change at {last_change_at.isoformat()} until {until.isoformat()}")
    return ScaleDecision(wanted, current_class, target, [f"{why}: {current_class} -> {target}"], numbers)
