"""The alert and recording rules: promtool accepts them, their unit tests pass (and can fail), and
the 5 MiB alert fires on what a real Prometheus scrapes from prometheus_client."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from include.checkpoint_core.observability import names
from tests.conftest import ROOT
from tests.observability.servers import free_port

PROMETHEUS_DIR = ROOT / "observability" / "prometheus"
RULES = PROMETHEUS_DIR / "rules" / "checkpoints.rules.yml"
RULE_TESTS = PROMETHEUS_DIR / "rules" / "checkpoints.rules.test.yml"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
RECORDING_NAME = re.compile(r"^[a-z][a-z0-9_]*:[a-z][a-z0-9_]*:[a-z0-9_]+$")  # level:metric:operations


def _rules() -> list[dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


ALERTS = [rule["alert"] for rule in _rules() if "alert" in rule]


def _run(argv: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120)


def _output(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"


def _mutated_copy(tmp_path: Path, mutate) -> Path:
    """The rules file with ``mutate(rules_text)`` applied, beside a copy of the unit tests."""
    text = RULES.read_text()
    mutated = mutate(text)
    assert mutated != text, "the mutation changed nothing"
    (tmp_path / RULES.name).write_text(mutated)
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    return tmp_path / RULE_TESTS.name


def _replace_in_alert(alert: str, old: str, new: str):
    """A mutation replacing ``old`` by ``new`` in the expr of one alert only."""

    def mutate(text: str) -> str:
        start = text.index(f"- alert: {alert}\n")
        end = text.find("- alert:", start + 1)
        end = len(text) if end < 0 else end
        block = text[start:end]
        assert old in block, f"{old!r} not in the rule {alert}"
        return text[:start] + block.replace(old, new, 1) + text[end:]

    return mutate


# --- promtool ---------------------------------------------------------------------------------


def test_promtool_checks_the_rules(promtool_bin):
    proc = _run([promtool_bin, "check", "rules", str(RULES)])
    assert proc.returncode == 0, _output(proc)
    assert f"SUCCESS: {len(_rules())} rules found" in proc.stdout, _output(proc)


def test_rule_unit_tests_pass(promtool_bin):
    proc = _run([promtool_bin, "test", "rules", RULE_TESTS.name], cwd=RULE_TESTS.parent)
    assert proc.returncode == 0, _output(proc)
    assert "SUCCESS" in proc.stdout and "FAILED" not in proc.stdout, _output(proc)


def test_compose_prometheus_config_is_valid_and_loads_the_rules(promtool_bin):
    proc = _run([promtool_bin, "check", "config", str(PROMETHEUS_CONFIG)])
    assert proc.returncode == 0, _output(proc)
    assert "SUCCESS: 1 rule files found" in proc.stdout, _output(proc)
    assert str(RULES.relative_to(PROMETHEUS_DIR)) in proc.stdout, "the rule glob misses checkpoints.rules.yml"
    assert RULE_TESTS.name not in proc.stdout, "the unit tests file must not be loaded as rules"


def test_a_broken_rule_fails_promtool_check(promtool_bin, tmp_path):
    broken = tmp_path / "broken.rules.yml"
    broken.write_text(RULES.read_text().replace(
        "sum by (backend, operation) (rate(checkpoint_writes_total[5m]))",
        "sum by (backend, operation) (rate(checkpoint_writes_total[5m])", 1))
    assert broken.read_text() != RULES.read_text()
    proc = _run([promtool_bin, "check", "rules", str(broken)])
    assert proc.returncode != 0, _output(proc)
    assert "parse error" in proc.stdout + proc.stderr, _output(proc)


@pytest.mark.parametrize("alert", ALERTS)
def test_unit_tests_fail_when_an_alert_never_fires(promtool_bin, tmp_path, alert):
    """Each alert has a case where it must fire: a rule that never fires fails the unit tests."""

    def never(text: str) -> str:
        rules = yaml.safe_load(text)
        for rule in rules["groups"][0]["rules"]:
            if rule.get("alert") == alert:
                rule["expr"] = "vector(0) > 1"
        return yaml.safe_dump(rules, sort_keys=False)

    tests = _mutated_copy(tmp_path, never)
    proc = _run([promtool_bin, "test", "rules", tests.name], cwd=tmp_path)
    assert proc.returncode != 0, f"{alert}: no unit test expects it to fire\n{_output(proc)}"
    assert f"alertname: {alert}" in proc.stdout + proc.stderr, _output(proc)


# Loosen each alert just past its boundary: a boundary case in the unit tests must then fail.
LOOSENED = [
    ("CheckpointWriteErrorRateHigh", "> 0.01", "> 0.0099"),  # exactly 1% must not fire
    ("CheckpointWriteErrorRateSpike", "3 *", "2 *"),  # 2.7x the baseline must not fire
    ("CheckpointWriteErrorRateSpike", "> 0.001", "> 0"),  # under the 0.1% floor
    ("CheckpointWriteErrorRateSpike", "> 2.5\n", "> 0\n"),  # fewer than 3 errors
    ("CheckpointWriteErrorRateHigh", "> 2.5\n", "> 0\n"),  # 5% from 2.5 errors must not fire
    ("CheckpointSqliteWriteThroughputHigh", "> 80", "> 78.5"),  # 79 writes/s must not fire
    ("CheckpointSqliteWriteThroughputHigh", '{backend="sqlite"}', ""),  # PostgreSQL at 200/s must not fire
    ("CheckpointWriteLatencyP99High", "> 0.5", "> 0.49"),  # P99 of exactly 0.5 s must not fire
    ("CheckpointOver5MiBWritten", "> 0", ">= 0"),  # a 4 MB checkpoint must not fire
    ("CheckpointStoreLargestCheckpointOver5MiB", "> 5242880", "> 5242879"),  # exactly 5 MiB must not fire
    ("CheckpointHealthMigrateNow", "== 1", ">= 0"),  # migrate_soon must not fire
    ("CheckpointHealthStale", "> 3600", "> 3300"),  # exactly one hour must not fire
]


@pytest.mark.parametrize(("alert", "old", "new"), LOOSENED, ids=[f"{a}:{o.strip()}" for a, o, _ in LOOSENED])
def test_unit_tests_fail_when_a_boundary_moves(promtool_bin, tmp_path, alert, old, new):
    tests = _mutated_copy(tmp_path, _replace_in_alert(alert, old, new))
    proc = _run([promtool_bin, "test", "rules", tests.name], cwd=tmp_path)
    assert proc.returncode != 0, f"{alert} with {old!r} -> {new!r} still passes\n{_output(proc)}"
    assert f"alertname: {alert}" in proc.stdout + proc.stderr, _output(proc)


# --- The rules' shape -----------------------------------------------------------------------------


def test_every_alert_is_labelled_annotated_and_tested_both_ways():
    tests = yaml.safe_load(RULE_TESTS.read_text())
    assert tests["rule_files"] == [RULES.name]
    fires: dict[str, int] = {}
    quiet: dict[str, int] = {}
    for group in tests["tests"]:
        for case in group.get("alert_rule_test", []):
            bucket = fires if case.get("exp_alerts") else quiet
            bucket[case["alertname"]] = bucket.get(case["alertname"], 0) + 1
    assert len(ALERTS) >= 8
    for rule in _rules():
        if "alert" not in rule:
            continue
        name = rule["alert"]
        assert re.fullmatch(r"Checkpoint[A-Za-z0-9]+", name), name
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        assert {"summary", "description"} <= set(rule["annotations"]), name
        assert "DAG" in rule["annotations"]["description"] or "Serializer" in rule["annotations"]["description"], \
            f"{name}: the description must say what to do"
        assert fires.get(name, 0) >= 1, f"{name} has no unit test where it fires"
        # One quiet case is the idle app; at least one more is a boundary next to the threshold.
        assert quiet.get(name, 0) >= 2, f"{name} has no boundary unit test where it must not fire"


def test_recording_rules_are_named_level_metric_operations():
    records = [rule["record"] for rule in _rules() if "record" in rule]
    assert "backend:checkpoint_write_errors:ratio_rate5m" in records
    for name in records:
        assert RECORDING_NAME.match(name), name
    # Defined before use: rules of a group run in order, at one evaluation time.
    seen: set[str] = set()
    for rule in _rules():
        used = set(re.findall(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", rule["expr"]))
        assert used <= seen, f"{rule.get('record') or rule.get('alert')} uses {used - seen} before it is recorded"
        if "record" in rule:
            seen.add(rule["record"])


def _five_mib_matcher() -> re.Pattern:
    expr = next(rule["expr"] for rule in _rules() if rule.get("record") == "instance:checkpoint_size_over_5mib:count")
    return re.compile(re.search(r"le=~`([^`]*)`", expr).group(1))


def test_five_mib_matcher_matches_what_prometheus_client_writes():
    """prometheus_client 0.26 writes the 5242880 bucket as le="5.24288e+06" (text and OpenMetrics);
    Prometheus 3 stores it normalised as "5242880". The rule's matcher takes both and no other bucket."""
    from prometheus_client import CollectorRegistry, Histogram, generate_latest
    from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

    registry = CollectorRegistry()
    Histogram(names.CHECKPOINT_SIZE, "size", names.APP_LABELS, buckets=names.SIZE_BUCKETS,
              registry=registry).labels("sqlite", "put").observe(100)
    matcher = _five_mib_matcher()
    for exposition in (generate_latest(registry), generate_openmetrics(registry)):
        les = re.findall(r'_bucket\{[^}]*le="([^"]+)"', exposition.decode())
        assert len(les) == len(names.SIZE_BUCKETS) + 1
        matching = [le for le in les if matcher.fullmatch(le)]
        assert len(matching) == 1 and float(matching[0]) == names.FIVE_MIB, (les, matching)
    assert matcher.fullmatch("5242880") and matcher.fullmatch("5242880.0")
    assert not matcher.fullmatch("1.6777216e+07") and not matcher.fullmatch("52428800")


# --- End to end: a real Prometheus scraping prometheus_client -----------------------------------


def _firing(prom, alert: str) -> list:
    return prom.query(f'ALERTS{{alertname="{alert}", alertstate="firing"}}')["data"]["result"]


def test_large_checkpoint_alert_fires_on_a_real_scrape(prometheus_factory):
    """The app's histogram as prometheus_client serves it, scraped and evaluated every second:
    a 4 MB checkpoint does not fire CheckpointOver5MiBWritten, a 6 MB one does."""
    from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

    registry = CollectorRegistry()
    sizes = Histogram(names.CHECKPOINT_SIZE, "size", names.APP_LABELS, buckets=names.SIZE_BUCKETS, registry=registry)
    writes = Counter(names.WRITES, "writes", names.APP_LABELS, registry=registry)
    port = free_port()
    httpd, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        size = sizes.labels("sqlite", "put")
        size.observe(2_000)
        writes.labels("sqlite", "put").inc()
        prom = prometheus_factory({"checkpoint-app": [f"127.0.0.1:{port}"]}, rule_files=[RULES])
        # Two recorded samples of the over-5-MiB count before anything large is written.
        prom.wait_for("count_over_time(instance:checkpoint_size_over_5mib:count[1m])",
                      lambda result: result and float(result[0]["value"][1]) >= 2, timeout=20)
        size.observe(4_000_000)
        scraped = prom.wait_for('timestamp(checkpoint_size_bytes_count{backend="sqlite"} == 2)', bool, timeout=10)
        at = float(scraped[0]["value"][1])
        # Rules evaluated after that scrape (the alert is in the same group, after the record).
        prom.wait_for(f"timestamp(instance:checkpoint_size_over_5mib:count) > {at + 1.5}", bool, timeout=10)
        assert not _firing(prom, "CheckpointOver5MiBWritten")
        assert prom.value("instance:checkpoint_size_over_5mib:count") == 0

        size.observe(6_000_000)
        result = prom.wait_for('ALERTS{alertname="CheckpointOver5MiBWritten", alertstate="firing"}',
                               lambda r: len(r) == 1, timeout=20)
        labels = result[0]["metric"]
        assert (labels["backend"], labels["operation"], labels["severity"]) == ("sqlite", "put", "warning")
        assert prom.value("instance:checkpoint_size_over_5mib:count") == 1
        # Nothing else fires on this healthy, slow app (no NaN from the ratios either).
        others = prom.query('ALERTS{alertname!="CheckpointOver5MiBWritten"}')["data"]["result"]
        assert others == []
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
