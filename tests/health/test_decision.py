"""The decision matrix at its boundaries, and where its settings come from."""

from __future__ import annotations

import pytest

from include.checkpoint_core.health.decision import (
    GB,
    MB,
    MIGRATE_NOW,
    MIGRATE_SOON,
    ON_POSTGRES,
    SQLITE_SUFFICIENT,
    HealthInputs,
    Thresholds,
    decide,
)
from include.checkpoint_core.health.settings import resolve_settings

CALM = dict(error_rate=0.0, writes_per_second=1.0, store_bytes=10 * MB)


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({}, SQLITE_SUFFICIENT),
        # error rate > 1%: exactly 1% is still fine
        ({"error_rate": 0.01}, SQLITE_SUFFICIENT),
        ({"error_rate": 0.0101}, MIGRATE_NOW),
        # ...from at least min_errors (3) failed writes: one failure at a trickle is not a migration
        ({"error_rate": 0.02, "errors_in_window": 2}, SQLITE_SUFFICIENT),
        ({"error_rate": 0.02, "errors_in_window": 3}, MIGRATE_NOW),
        # > 100 writes/s sustained
        ({"writes_per_second": 100.0}, SQLITE_SUFFICIENT),
        ({"writes_per_second": 100.01}, MIGRATE_NOW),
        # multi-server deployment
        ({"app_servers": 1}, SQLITE_SUFFICIENT),
        ({"app_servers": 2}, MIGRATE_NOW),
        # SQLite file > 5 GB
        ({"store_bytes": 5 * GB}, SQLITE_SUFFICIENT),
        ({"store_bytes": 5 * GB + 1}, MIGRATE_SOON),
        # NOW beats SOON, and both reasons are given
        ({"store_bytes": 6 * GB, "writes_per_second": 150.0}, MIGRATE_NOW),
        # unknown inputs are not "fine": they are skipped, and the rest still decides
        ({"error_rate": None, "writes_per_second": None, "store_bytes": None}, SQLITE_SUFFICIENT),
        ({"error_rate": None, "writes_per_second": None, "store_bytes": 6 * GB}, MIGRATE_SOON),
    ],
)
def test_matrix_boundaries(changes, expected):
    decision = decide(HealthInputs(backend="sqlite", **{**CALM, **changes}))
    assert decision.decision == expected


def test_reasons_carry_the_numbers():
    d = decide(HealthInputs(backend="sqlite", error_rate=0.0235, writes_per_second=150.0, store_bytes=6 * GB,
                            writes_source="prometheus", window_minutes=15))
    assert d.decision == MIGRATE_NOW
    text = "\n".join(d.reasons)
    assert "2.35% > 1%" in text and "150.0 writes/s" in text and "prometheus" in text
    assert f"SQLite file 6.00 GiB with its WAL ({6 * GB:,} bytes) > 5 GiB" in text  # the SOON reason rides along


def test_every_threshold_is_configurable():
    t = Thresholds(error_rate_pct=5, writes_per_second=500, max_app_servers=3, sqlite_size_gb=50)
    assert decide(HealthInputs(backend="sqlite", error_rate=0.04, writes_per_second=400, app_servers=3,
                               store_bytes=40 * GB), t).decision == SQLITE_SUFFICIENT
    assert decide(HealthInputs(backend="sqlite", app_servers=4), t).decision == MIGRATE_NOW
    assert decide(HealthInputs(backend="sqlite", store_bytes=51 * GB), t).decision == MIGRATE_SOON


def test_postgres_store_is_not_told_to_migrate_but_gets_anomalies():
    d = decide(HealthInputs(backend="postgres", error_rate=0.5, largest_checkpoint_bytes=6 * MB, app_servers=4))
    assert d.decision == ON_POSTGRES
    assert [a["kind"] for a in d.anomalies] == ["large_checkpoint"]


@pytest.mark.parametrize(
    "largest, flagged",
    [(5 * MB, False), (5 * MB + 1, True), (None, False)],
)
def test_large_checkpoint_anomaly_boundary(largest, flagged):
    d = decide(HealthInputs(backend="sqlite", largest_checkpoint_bytes=largest))
    assert ("large_checkpoint" in [a["kind"] for a in d.anomalies]) is flagged


@pytest.mark.parametrize(
    "rate, baseline, flagged",
    [
        (0.009, 0.003, False),  # exactly 3x the baseline
        (0.0091, 0.003, True),  # over 3x and over the 0.1% floor
        (0.001, 0.0, False),  # a zero baseline, but at the floor
        (0.0011, 0.0, True),  # a zero baseline, just over the floor
        (0.5, None, False),  # no baseline: no spike check
    ],
)
def test_error_spike_boundary(rate, baseline, flagged):
    d = decide(HealthInputs(backend="sqlite", error_rate=rate, baseline_error_rate=baseline))
    assert ("error_spike" in [a["kind"] for a in d.anomalies]) is flagged


def test_urls_in_messages_lose_their_credentials():
    from include.checkpoint_core.health.prometheus import PrometheusAPI, safe_url

    assert safe_url("https://svc:s3cr3t@prom.example:9090/api") == "https://prom.example:9090/api"
    assert safe_url("http://prom:9090") == "http://prom:9090"
    assert "s3cr3t" not in PrometheusAPI("https://svc:s3cr3t@127.0.0.1:1").where


def test_missing_inputs_are_carried_into_the_decision():
    d = decide(HealthInputs(backend="sqlite", missing=["prometheus: unreachable"]))
    assert d.missing == ["prometheus: unreachable"]


def test_settings_precedence_defaults_variable_params():
    assert resolve_settings("", None) == resolve_settings(None, None)
    assert resolve_settings('{"app_servers": 2}').app_servers == 2  # the Variable's raw text
    s = resolve_settings(None, None)
    assert s.thresholds == Thresholds() and s.app_servers == 1 and s.auto_migrate is False
    s = resolve_settings({"app_servers": 3, "error_rate_pct": 2.5, "auto_migrate": True}, {"error_rate_pct": None})
    assert (s.app_servers, s.thresholds.error_rate_pct, s.auto_migrate) == (3, 2.5, True)
    s = resolve_settings({"app_servers": 3}, {"app_servers": 1, "writes_per_second": 50})
    assert (s.app_servers, s.thresholds.writes_per_second) == (1, 50)


@pytest.mark.parametrize(
    "configured, message",
    [
        ({"app_server": 2}, "unknown health setting"),
        ({"app_servers": 0}, "app_servers"),
        ({"error_rate_pct": -1}, "error_rate_pct"),
        ({"error_rate_pct": "high"}, "error_rate_pct"),
        ({"prometheus_selector": 'job="a"} or vector(1) #'}, "label matchers"),
        ({"window_minutes": 0}, "window_minutes"),
        ({"window_minutes": 0.5}, "window_minutes"),
        ({"error_rate_pct": float("nan")}, "finite"),
        ({"writes_per_second": float("inf")}, "finite"),
        ({"app_servers": True}, "app_servers"),
        ({"largest_top_n": True}, "largest_top_n"),
        ({"checkpoint_mb": 0}, "checkpoint_mb"),
        ({"min_errors": 0}, "min_errors"),
        ({"migration_target": "pg; drop"}, "migration_target"),
        ({"prometheus_selector": 'job=~"("'}, "not a valid regex"),
        ({"prometheus_selector": 'backend="postgres"'}, "must not set"),
        ("[1, 2]", "JSON object"),
        ('{"app_servers": 3', "not valid JSON"),
        ("not json", "not valid JSON"),
    ],
)
def test_bad_settings_say_what_to_fix(configured, message):
    with pytest.raises(ValueError, match=message):
        resolve_settings(configured)
