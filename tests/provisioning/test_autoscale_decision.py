"""The autoscale decision, table-tested: hysteresis, sustained windows, cooldown, deferral."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from include.checkpoint_core.provisioning.autoscale import (
    DEFER, HOLD, SCALE_DOWN, SCALE_UP, AutoscaleConfigError, Sample, ScaleConfig, decide,
)

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)
CONFIG = ScaleConfig(up_minutes=10, down_minutes=60, cooldown_minutes=30)


def series(minutes: int, rate, *, end_offset: int = 0) -> list[Sample]:
    """One sample a minute for ``minutes`` minutes up to NOW (rate: a number or f(minute ago))."""
    value = rate if callable(rate) else (lambda _m: rate)
    return [Sample(NOW - timedelta(minutes=m + end_offset), float(value(m))) for m in range(minutes, -1, -1)]


@pytest.mark.parametrize("samples, current, last_change, blockers, action, target, reason", [
    # sustained above 500 for the whole 10 minutes: one step up
    (series(60, 800), "db.t4g.small", None, (), SCALE_UP, "db.t4g.medium", "stayed above 500 for 10 min"),
    # a short burst (3 minutes) over a calm hour: nothing
    (series(60, lambda m: 900 if m < 3 else 300), "db.t4g.small", None, (), HOLD, None, "between 150 and 500"),
    # one dip to 450 within the up window breaks "sustained"
    (series(60, lambda m: 450 if m == 4 else 800), "db.t4g.medium", None, (), HOLD, None, "between"),
    # low for the whole hour: one step down
    (series(60, 40), "db.m5.large", None, (), SCALE_DOWN, "db.t4g.medium", "stayed below 150 for 60 min"),
    # low for only 30 minutes: no scale-down yet (the longer window)
    (series(60, lambda m: 40 if m < 30 else 300), "db.m5.large", None, (), HOLD, None, "between"),
    # low, but only 20 minutes of samples exist: the down window is not covered
    (series(20, 40), "db.m5.large", None, (), HOLD, None, "between"),
    # no samples at all
    ([], "db.t4g.small", None, (), HOLD, None, "do not cover the last 10 min"),
    # samples that stopped 5 minutes ago do not cover the window up to now
    (series(30, 800, end_offset=5), "db.t4g.small", None, (), HOLD, None, "do not cover the last 10 min"),
    # at the top / bottom of the ladder
    (series(60, 800), "db.m5.xlarge", None, (), HOLD, None, "top of the ladder"),
    (series(60, 40), "db.t4g.small", None, (), HOLD, None, "already the smallest"),
    # cooldown after a change 10 minutes ago; over once 30 minutes have passed
    (series(60, 800), "db.t4g.medium", NOW - timedelta(minutes=10), (), HOLD, None, "cooldown"),
    (series(60, 800), "db.t4g.medium", NOW - timedelta(minutes=31), (), SCALE_UP, "db.m5.large", "-> db.m5.large"),
    # a running migration defers the change and says why
    (series(60, 800), "db.t4g.small", None, ("checkpoint_migration",), DEFER, "db.t4g.medium",
     "deferred: checkpoint_migration running"),
])
def test_decision_table(samples, current, last_change, blockers, action, target, reason):
    d = decide(samples, current, now=NOW, config=CONFIG, last_change_at=last_change, blockers=blockers)
    assert (d.action, d.target_class) == (action, target), d.reasons
    assert reason in d.reasons[0]
    assert d.numbers["up_writes_per_second"] == 500


def test_stale_samples_do_not_count_as_sustained():
    samples = [s for s in series(60, 800) if s.at <= NOW - timedelta(minutes=12)]
    d = decide(samples, "db.t4g.small", now=NOW, config=CONFIG)
    assert d.action == HOLD and "do not cover" in d.reasons[0]


def test_numbers_are_recorded():
    d = decide(series(60, lambda m: 600 + m), "db.t4g.small", now=NOW, config=CONFIG)
    assert d.numbers["up_window_min_writes_per_second"] == 600
    assert d.numbers["latest_writes_per_second"] == 600
    assert d.as_dict()["action"] == SCALE_UP


def test_custom_ladder_and_thresholds():
    config = ScaleConfig.from_mapping({"ladder": ["db.r6g.large", "db.r6g.xlarge"], "up_writes_per_second": 100,
                                       "down_writes_per_second": 10, "up_minutes": 5, "down_minutes": 5})
    d = decide(series(10, 120), "db.r6g.large", now=NOW, config=config)
    assert (d.action, d.target_class) == (SCALE_UP, "db.r6g.xlarge")


@pytest.mark.parametrize("settings, message", [
    ({"down_writes_per_second": 600}, "flap"),
    ({"down_minutes": 5}, "waits longer"),
    ({"ladder": []}, "distinct"),
    ({"ladder": ["db.m5.large", "db.m5.large"]}, "distinct"),
    ({"up_minutes": 0}, "more than 0"),
    ({"up_writes_per_sec": 1}, "unknown autoscale setting"),
])
def test_bad_settings_say_what_to_fix(settings, message):
    with pytest.raises(AutoscaleConfigError, match=message):
        ScaleConfig.from_mapping(settings)


def test_class_off_the_ladder_is_refused():
    with pytest.raises(AutoscaleConfigError, match="not on the ladder"):
        decide(series(60, 800), "db.r5.large", now=NOW, config=CONFIG)
