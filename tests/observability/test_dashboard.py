"""The Grafana dashboard (and the rules): every PromQL expression parses on a real Prometheus and
reads only metrics that exist; the panels the issue asks for are there, on the provisioned datasource."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import pytest
import yaml

from include.checkpoint_core.observability import names
from tests.conftest import ROOT
from tests.observability import servers

GRAFANA = ROOT / "observability" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "checkpoint-ops.json"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDER = GRAFANA / "provisioning" / "dashboards" / "checkpoint-ops.yml"
RULES = ROOT / "observability" / "prometheus" / "rules" / "checkpoints.rules.yml"

# What Grafana would put in place of its variables, for a query Prometheus can run.
GRAFANA_VARIABLES = {
    "__rate_interval": "1m",
    "__interval": "1m",
    "__range": "1h",
    "backend": "sqlite",
    "store": "checkpoints_sqlite",
}
BUILTIN_NAMES = {"up", "ALERTS"}
REQUIRED_PANELS = {
    "Writes/s by backend and operation": "timeseries",
    "Write error %": "timeseries",
    "Write latency P50 and P99": "timeseries",
    "Checkpoint size distribution": "heatmap",
    "Checkpoint size P99": "timeseries",
    "DB size": "timeseries",
    "Threads": "stat",
    "Largest checkpoint": "stat",
    "Health decision over time": "state-timeline",
    "Monthly cost per tier": "timeseries",
    "Bytes per tier": "timeseries",
    "Threads per tier": "stat",
    "Latest checkpoint per thread": "timeseries",
    "Oversized threads %": "timeseries",
    "Threads on PostgreSQL (weight %)": "stat",
    "Threads per store during the cutover": "timeseries",
    "Flip batch time (writers' longest wait)": "timeseries",
}


# --- Extracting the expressions ---------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    where: str  # e.g. 'panel "Write error %" target B'
    expr: str  # PromQL, Grafana variables substituted
    label_values: tuple[str, str] | None = None  # (metric, label) of a label_values() variable


def substitute(expr: str) -> str:
    """Replace $var, ${var} and ${var:format} by literals; an unknown variable is an error."""

    def value(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if name not in GRAFANA_VARIABLES:
            raise KeyError(f"unknown Grafana variable ${name} in {expr!r}")
        return GRAFANA_VARIABLES[name]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", value, expr)


_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(.+?)\s*,\s*)?([A-Za-z_]\w*)\s*\)\s*$", re.S)
_QUERY_RESULT = re.compile(r"^\s*query_result\((.*)\)\s*$", re.S)


def variable_query(where: str, query) -> Query | None:
    """A template variable's query: label_values(metric, label) is Grafana syntax, not PromQL."""
    text = query.get("query", "") if isinstance(query, dict) else (query or "")
    if m := _LABEL_VALUES.match(text):
        selector, label = m.group(1), m.group(2)
        if selector is None:
            return Query(where, "vector(1)", ("", label))
        return Query(where, substitute(selector), (metric_names(substitute(selector)).pop(), label))
    if m := _QUERY_RESULT.match(text):
        return Query(where, substitute(m.group(1)))
    if text.strip():
        return Query(where, substitute(text))
    return None


def _walk_panels(panels: list[dict], prefix: str = ""):
    for panel in panels:
        yield panel, f"{prefix}panel {panel.get('title')!r}"
        # A collapsed row keeps its panels inside it.
        yield from _walk_panels(panel.get("panels", []), f"{prefix}row {panel.get('title')!r} > ")


def all_panels(dashboard: dict) -> list[dict]:
    return [panel for panel, _ in _walk_panels(dashboard.get("panels", []))]


def dashboard_queries(dashboard: dict) -> list[Query]:
    queries = []
    for panel, where in _walk_panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            if target.get("expr"):
                queries.append(Query(f"{where} target {target.get('refId')}", substitute(target["expr"])))
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable_query(f"variable ${variable['name']}", variable.get("query"))
            if query:
                queries.append(query)
    return queries


def _rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def rule_queries() -> list[Query]:
    return [Query(f"rule {rule.get('record') or rule.get('alert')}", rule["expr"]) for rule in _rules()]


def recording_names() -> set[str]:
    return {rule["record"] for rule in _rules() if "record" in rule}


# --- A PromQL tokenizer, just enough to list the metric names an expression reads ------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_PLACEHOLDER = re.compile(r"\x00(\d+)\x00")
_BRACES = re.compile(r"\{[^{}]*\}")
_NAME_MATCHER = re.compile(r"__name__\s*=\s*\x00(\d+)\x00")
_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_TOKEN = re.compile(
    r"(?P<number>(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)(?:ms|[smhdwy])?(?:\d+(?:ms|[smhdwy]))*)"
    r"|(?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)(?P<call>\s*\()?"
)
KEYWORDS = {"and", "or", "unless", "atan2", "by", "without", "on", "ignoring", "group_left", "group_right",
            "offset", "bool", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """Metric names ``expr`` selects: strings, label matchers {...}, ranges and subqueries [...],
    by/without/on/ignoring/group_left/group_right (...) lists, function calls, keywords and numbers
    are stripped; what is left are names. {__name__="x"} selectors count as x."""
    strings: list[str] = []

    def stash(match: re.Match) -> str:
        strings.append(match.group(0)[1:-1])
        return f"\x00{len(strings) - 1}\x00"

    found: set[str] = set()

    def braces(match: re.Match) -> str:
        for index in _NAME_MATCHER.findall(match.group(0)):
            found.add(strings[int(index)])
        return " "

    text = _STRING.sub(stash, expr)
    text = _BRACES.sub(braces, text)
    text = _PLACEHOLDER.sub(" ", text)  # strings outside braces: count_values("x", ...), label_replace(...)
    while _BRACKETS.search(text):
        text = _BRACKETS.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    text = re.sub(r"\b(?:group_left|group_right)\b", " ", text)
    for token in _TOKEN.finditer(text):
        ident = token.group("ident")
        if ident is None or token.group("call") or ident.lower() in KEYWORDS:
            continue
        found.add(ident)
    return found


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('sum by (backend, operation) (rate(checkpoint_writes_total{backend=~"sqlite|x{y}"}[5m]))',
         {"checkpoint_writes_total"}),
        ("histogram_quantile(0.99, sum by (le) (rate(a_bucket[5m] offset 1h30m))) > 1e-3",
         {"a_bucket"}),
        ("a / on (x) group_left (y) b > bool 0.5 and c unless ignoring(z) d or sum(e) without (f)",
         {"a", "b", "c", "d", "e"}),
        ("max_over_time(rate(foo[1m])[1h:15s]) > 0x1F or vector(0) * Inf", {"foo"}),
        ('time() - max by (store) (checkpoint_health_last_run_timestamp_seconds{store=~"$store"})',
         {"checkpoint_health_last_run_timestamp_seconds"}),
        ("backend:checkpoint_write_errors:ratio_rate5m > 3 * backend:checkpoint_writes:rate1h_offset5m",
         {"backend:checkpoint_write_errors:ratio_rate5m", "backend:checkpoint_writes:rate1h_offset5m"}),
        ('{__name__="checkpoint_store_threads", store="s"} + count_values("le", up)',
         {"checkpoint_store_threads", "up"}),
        ('label_replace(ALERTS{alertstate="firing"}, "x", "$1", "alertname", "(.*)")', {"ALERTS"}),
        ("checkpoint_size_bytes_count - ignoring (le) checkpoint_size_bytes_bucket{le=~`5\\.24288e\\+06`}",
         {"checkpoint_size_bytes_count", "checkpoint_size_bytes_bucket"}),
        ("sum(rate(nan_total[5m])) / 2.5e+06", {"nan_total"}),
    ],
)
def test_metric_name_tokenizer(expr, expected):
    assert metric_names(expr) == expected


def test_variable_substitution_and_label_values():
    assert substitute('rate(x{backend=~"$backend"}[$__rate_interval])') == 'rate(x{backend=~"sqlite"}[1m])'
    assert substitute("${store:regex} ${__range}") == "checkpoints_sqlite 1h"
    with pytest.raises(KeyError):
        substitute("$nope")
    q = variable_query("v", {"query": "label_values(checkpoint_writes_total, backend)", "refId": "A"})
    assert q.label_values == ("checkpoint_writes_total", "backend") and q.expr == "checkpoint_writes_total"
    q = variable_query("v", 'label_values(checkpoint_health_decision{backend=~"$backend"}, store)')
    assert q.label_values == ("checkpoint_health_decision", "store")


# --- Fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    """One Prometheus for the module (parse checks need no data)."""
    try:
        server = servers.start_prometheus(tmp_path_factory.mktemp("prom-parse"), {})
    except servers.ToolMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server
    server.stop()


def parse_failures(prometheus, queries: list[Query]) -> list[str]:
    failures = []
    for query in queries:
        answer = prometheus.query(query.expr)
        if answer.get("status") != "success":
            failures.append(f"{query.where}: {answer.get('errorType')}: {answer.get('error')}\n  {query.expr}")
    return failures


def unknown_names(queries: list[Query]) -> list[str]:
    known = names.scraped_names() | recording_names() | BUILTIN_NAMES
    return [f"{q.where}: {sorted(metric_names(q.expr) - known)} in {q.expr!r}"
            for q in queries if metric_names(q.expr) - known]


# --- The checks -------------------------------------------------------------------------------


def test_every_expression_parses_on_prometheus(prometheus, dashboard):
    queries = dashboard_queries(dashboard) + rule_queries()
    assert len(dashboard_queries(dashboard)) >= 15
    assert parse_failures(prometheus, queries) == []


def test_a_broken_expression_is_caught(prometheus, dashboard):
    answer = prometheus.query("sum(rate(checkpoint_writes_total[5m])")
    assert answer["status"] == "error" and answer["errorType"] == "bad_data", answer
    broken = json.loads(json.dumps(dashboard))
    target = next(p for p in all_panels(broken) if p.get("title") == "Write error %")["targets"][0]
    target["expr"] = target["expr"].replace("[$__rate_interval]", "[$__rate_interval", 1)
    failures = parse_failures(prometheus, dashboard_queries(broken))
    assert len(failures) == 1 and "Write error %" in failures[0] and "bad_data" in failures[0], failures


def test_every_expression_reads_known_metrics(dashboard):
    queries = dashboard_queries(dashboard) + rule_queries()
    assert unknown_names(queries) == []
    read = set().union(*(metric_names(q.expr) for q in dashboard_queries(dashboard)))
    # The dashboard shows every health gauge and the app's four families.
    assert {names.HEALTH_DECISION, names.STORE_SIZE, names.STORE_THREADS, names.STORE_LARGEST_CHECKPOINT,
            names.STORE_WRITES_PER_SECOND, names.HEALTH_LAST_RUN} <= read
    assert {f"{names.WRITES}_total", f"{names.WRITE_ERRORS}_total", f"{names.WRITE_DURATION}_bucket",
            f"{names.CHECKPOINT_SIZE}_bucket"} <= read


def test_a_misspelt_metric_is_caught(dashboard):
    assert unknown_names([Query("x", "sum(rate(checkpoint_writes[5m]))")]) == [
        "x: ['checkpoint_writes'] in 'sum(rate(checkpoint_writes[5m]))'"]
    broken = json.loads(json.dumps(dashboard))
    broken["templating"]["list"][0]["query"]["query"] = "label_values(checkpoint_write_total, backend)"
    assert len(unknown_names(dashboard_queries(broken))) == 1


def test_variable_queries_read_labels_the_metrics_have(dashboard):
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert {"backend", "store"} <= set(variables)
    assert variables["backend"]["definition"] == "label_values(checkpoint_writes_total, backend)"
    for query in dashboard_queries(dashboard):
        if query.label_values:
            metric, label = query.label_values
            labels = names.HEALTH_LABELS + ("decision",) if metric.startswith("checkpoint_health") or \
                metric.startswith("checkpoint_store") else names.APP_LABELS
            assert label in labels, f"{query.where}: {metric} has no label {label}"
    for variable in variables.values():
        # Multi-value and All select several values: they only work in regex matchers.
        assert variable["multi"] and variable["includeAll"] and variable["allValue"] == ".*"
    text = json.dumps(dashboard)
    assert not re.search(r'(?<![=!])=\s*\\"\$(backend|store)', text), "use =~ with a multi-value variable"


def test_rate_windows_use_rate_interval(dashboard):
    for panel, where in _walk_panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            for window in re.findall(r"\[([^\]]*)\]", target.get("expr", "")):
                assert window in {"$__rate_interval", "$__range"}, f"{where}: window [{window}]"


def test_dashboard_has_the_panels_of_the_issue(dashboard):
    panels = {p.get("title"): p for p in all_panels(dashboard)}
    for title, kind in REQUIRED_PANELS.items():
        assert title in panels, f"no panel {title!r}"
        assert panels[title]["type"] == kind, f"{title}: {panels[title]['type']} != {kind}"
    latency = [t["expr"] for t in panels["Write latency P50 and P99"]["targets"]]
    assert any("histogram_quantile(0.5," in e for e in latency) and any("histogram_quantile(0.99," in e for e in latency)
    heatmap = panels["Checkpoint size distribution"]
    assert heatmap["targets"][0]["format"] == "heatmap" and "checkpoint_size_bytes_bucket" in heatmap["targets"][0]["expr"]
    assert "histogram_quantile(0.99" in panels["Checkpoint size P99"]["targets"][0]["expr"]
    decision = panels["Health decision over time"]
    assert "checkpoint_health_decision" in decision["targets"][0]["expr"]
    mapped = {o["text"] for m in decision["fieldConfig"]["defaults"]["mappings"] for o in m["options"].values()}
    assert {"MIGRATE NOW", "MIGRATE SOON", "SQLite sufficient", "on PostgreSQL"} <= mapped
    cost = " ".join(t["expr"] for t in panels["Monthly cost per tier"]["targets"])
    assert "checkpoint_tier_monthly_cost_usd" in cost and "checkpoint_tier_all_hot_monthly_cost_usd" in cost


def test_dashboard_is_importable_and_on_the_provisioned_datasource(dashboard):
    datasources = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    prometheus_ds = [d for d in datasources if d["type"] == "prometheus"]
    assert len(prometheus_ds) == 1
    uid = prometheus_ds[0]["uid"]
    assert uid == "prometheus" and prometheus_ds[0]["url"] == "http://prometheus:9090"
    assert dashboard["uid"] and dashboard["title"] and 36 <= dashboard["schemaVersion"] <= 41
    assert "id" not in dashboard or dashboard["id"] is None, "a provisioned dashboard carries no database id"
    panels = all_panels(dashboard)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]) and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid, panel["title"]
    for variable in dashboard["templating"]["list"]:
        assert variable["datasource"]["uid"] == uid
    # The provider loads the directory the JSON is in (as docker-compose.yaml mounts it).
    provider = yaml.safe_load(DASHBOARD_PROVIDER.read_text())["providers"][0]
    assert provider["type"] == "file" and provider["options"]["path"]
