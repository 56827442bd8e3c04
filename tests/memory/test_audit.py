"""The hybrid-memory audit against a direct count on generated stores, and on odd and old inputs."""

from __future__ import annotations

import hashlib
import math
import sqlite3
from contextlib import closing
from typing import TypedDict

import psycopg
import pytest
from langgraph.graph import END, START, StateGraph

from include.checkpoint_core.errors import UnsupportedSchema
from include.checkpoint_core.memory_audit import audit_memory, audit_registry, render
from include.checkpoint_core.stores import StoreTarget, setup_store
from include.sample_agent.workload import WorkloadSpec, generate
from tests.conftest import open_saver
from tests.memory.helpers import TTL_NS, USER, age_expired_item, put_ttl_items, teach

ARTIFACT_BYTES = 30_000


class ReportState(TypedDict, total=False):
    request: str
    artifact: str


def build_report_graph(checkpointer):
    """A tool that returns a large artifact into state: the channel the audit should name."""

    def render_report(state: ReportState) -> dict:
        return {"artifact": hashlib.sha256(state["request"].encode()).hexdigest() * (ARTIFACT_BYTES // 64)}

    builder = StateGraph(ReportState)
    builder.add_node("render_report", render_report)
    builder.add_edge(START, "render_report")
    builder.add_edge("render_report", END)
    return builder.compile(checkpointer=checkpointer)


def make_store(target: StoreTarget) -> StoreTarget:
    """Short threads (small), long threads (big message history), one with a 30 KB artifact, and a
    Store with facts under odd namespace labels, TTL'd items and per-turn memories."""
    setup_store(target)
    with open_saver(target) as (saver, store):
        store.setup()
        generate(saver, WorkloadSpec(threads=6, turns=1, seed=5, thread_prefix="short"), store)
        generate(saver, WorkloadSpec(threads=3, turns=4, interrupted=0, crashed=0, seed=6, thread_prefix="long"), store)
        build_report_graph(saver).invoke({"request": "q3 sales"}, {"configurable": {"thread_id": "artifact-1"}})
        teach(saver, store)
        put_ttl_items(store)
    age_expired_item(target)
    return target


@pytest.fixture(params=["sqlite", "postgres"])
def generated(request, tmp_path):
    if request.param == "sqlite":
        return make_store(StoreTarget("sqlite", str(tmp_path / "audit.sqlite"), "checkpoints_sqlite"))
    return make_store(StoreTarget("postgres", request.getfixturevalue("pg_dsn"), "checkpoints_postgres"))


def direct_sizes(target: StoreTarget) -> dict[str, int]:
    """Each thread's latest root checkpoint, sized one thread at a time with plain queries."""
    if target.kind == "sqlite":
        with closing(sqlite3.connect(target.location)) as conn:
            threads = [r[0] for r in conn.execute("SELECT DISTINCT thread_id FROM checkpoints WHERE checkpoint_ns = ''")]
            return {t: conn.execute(
                "SELECT length(checkpoint) + length(metadata) FROM checkpoints WHERE thread_id = ? "
                "AND checkpoint_ns = '' ORDER BY checkpoint_id DESC LIMIT 1", (t,)).fetchone()[0] for t in threads}
    out = {}
    with psycopg.connect(target.location) as conn:
        threads = [r[0] for r in conn.execute("SELECT DISTINCT thread_id FROM checkpoints WHERE checkpoint_ns = ''")]
        for t in threads:
            checkpoint, own = conn.execute(
                "SELECT checkpoint, octet_length(checkpoint::text) + octet_length(metadata::text) FROM checkpoints "
                "WHERE thread_id = %s AND checkpoint_ns = '' ORDER BY checkpoint_id DESC LIMIT 1", (t,)).fetchone()
            blobs = 0
            for channel, version in checkpoint["channel_versions"].items():
                row = conn.execute("SELECT octet_length(blob) FROM checkpoint_blobs WHERE thread_id = %s AND "
                                   "checkpoint_ns = '' AND channel = %s AND version = %s", (t, channel, str(version))).fetchone()
                blobs += row[0] or 0 if row else 0
            out[t] = own + blobs
    return out


def direct_store(target: StoreTarget, depth: int) -> dict[str, tuple[int, int]]:
    """namespace group -> (items, items with a TTL)."""
    sql = "SELECT prefix, expires_at FROM store"
    if target.kind == "sqlite":
        with closing(sqlite3.connect(target.location)) as conn:
            rows = conn.execute(sql).fetchall()
    else:
        with psycopg.connect(target.location) as conn:
            rows = conn.execute(sql).fetchall()
    out: dict[str, list[int]] = {}
    for prefix, expires in rows:
        g = out.setdefault(".".join(prefix.split(".")[:depth]), [0, 0])
        g[0] += 1
        g[1] += expires is not None
    return {k: tuple(v) for k, v in out.items()}


def nearest_rank(values: list[int], q: float) -> int:
    s = sorted(values)
    return s[math.ceil(q / 100 * len(s)) - 1]


def test_figures_match_a_direct_count(generated):
    sizes = direct_sizes(generated)
    report = audit_memory(generated, namespace_depth=2, list_limit=100)
    cp = report["checkpoints"]
    assert cp["threads"] == len(sizes) == 11
    assert (cp["p50_bytes"], cp["p95_bytes"], cp["max_bytes"], cp["total_bytes"]) == (
        nearest_rank(list(sizes.values()), 50), nearest_rank(list(sizes.values()), 95), max(sizes.values()),
        sum(sizes.values()))
    over = {t for t, n in sizes.items() if n > 10 * 1024}
    assert {r["thread_id"] for r in cp["oversized"]} == over and cp["oversized_threads"] == len(over)
    assert {"artifact-1", "long-000000", "long-000001", "long-000002"} <= over
    assert not any(t.startswith("short-") for t in over)
    assert {r["thread_id"]: r["bytes"] for r in cp["oversized"]} == {t: sizes[t] for t in over}
    # The channel that makes each one big is named.
    biggest = {r["thread_id"]: next(iter(r["largest_channels"])) for r in cp["oversized"]}
    assert biggest["artifact-1"] == "artifact" and biggest["long-000000"] == "messages"
    assert cp["oversized"][0]["largest_channels"]["artifact"] > ARTIFACT_BYTES - 100

    st = report["store_items"]
    want = direct_store(generated, 2)
    assert {ns["namespace"]: (ns["items"], ns["with_ttl"]) for ns in st["namespaces"]} == want
    assert f"users.{USER}" in want and want[".".join(TTL_NS[:2])] == (3, 2)
    assert st["expired"] == 1 and st["items"] == sum(v[0] for v in want.values())
    assert any("'messages'" in r and "Store" in r for r in report["recommendations"])
    assert any("'artifact'" in r and "OffloadSerializer" in r for r in report["recommendations"])
    assert "ALERT" in render(report)
    assert_thresholds_are_strict(generated, sorted(sizes.values()))
    assert_gauges_carry_the_figures(report)


def assert_thresholds_are_strict(generated, sizes: list[int]) -> None:
    at_max = audit_memory(generated, oversized_bytes=sizes[-1])
    assert at_max["checkpoints"]["oversized_threads"] == 0 and not at_max["alert"]
    below = audit_memory(generated, oversized_bytes=sizes[-1] - 1)
    assert below["checkpoints"]["oversized_threads"] == sizes.count(sizes[-1])
    share = below["checkpoints"]["oversized_share_pct"]
    assert audit_memory(generated, oversized_bytes=sizes[-1] - 1, alert_share_pct=share - 0.01)["alert"]
    assert not audit_memory(generated, oversized_bytes=sizes[-1] - 1, alert_share_pct=share)["alert"]


def assert_gauges_carry_the_figures(report: dict) -> None:
    from prometheus_client import generate_latest

    text = generate_latest(audit_registry(report, 1_700_000_000)).decode()
    cp, store = report["checkpoints"], report["conn_id"]
    assert f'checkpoint_memory_oversized_threads{{store="{store}"}} {float(cp["oversized_threads"])}' in text
    assert f'checkpoint_memory_latest_checkpoint_bytes{{quantile="p95",store="{store}"}} {float(cp["p95_bytes"])}' in text
    assert f'checkpoint_memory_store_ttl_ratio{{namespace="sessions.{USER}",store="{store}"}} 0.667' in text


OLD_SQLITE_STORE = """CREATE TABLE store (prefix text NOT NULL, key text NOT NULL, value text NOT NULL,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP, updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (prefix, key))"""


def test_a_store_table_from_before_ttl_is_audited_and_migrated_whole(tmp_path, pg_dsn):
    """SqliteStore's first two migrations made (prefix, key, value, created_at, updated_at); TTL columns came later."""
    from tests.migration.helpers import migrate

    path = tmp_path / "old.sqlite"
    setup_store(StoreTarget("sqlite", str(path)))
    with closing(sqlite3.connect(path)) as conn:
        conn.execute(OLD_SQLITE_STORE)
        conn.executemany("INSERT INTO store (prefix, key, value) VALUES (?, ?, ?)",
                         [(f"users.{USER}.facts", f"k{i}", '{"kind": "name", "value": "Ann"}') for i in range(3)])
        conn.commit()
    report = audit_memory(StoreTarget("sqlite", str(path)))
    st = report["store_items"]
    assert st["items"] == 3 and st["ttl"] is False and "predates TTL" in st["note"]
    assert st["note"] in report["recommendations"]
    migrate(path, pg_dsn, tmp_path / "m")
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT count(*), count(expires_at) FROM store WHERE prefix = %s",
                            (f"users.{USER}.facts",)).fetchone() == (3, 0)
    with open_saver(StoreTarget("postgres", pg_dsn)) as (_, store):
        assert store.get(("users", USER, "facts"), "k1").value == {"kind": "name", "value": "Ann"}


def test_a_postgres_store_table_from_before_ttl(pg_dsn):
    setup_store(StoreTarget("postgres", pg_dsn), include_store=False)
    with psycopg.connect(pg_dsn) as conn:
        conn.execute(OLD_SQLITE_STORE.replace("value text", "value jsonb").replace("TIMESTAMP DEFAULT", "timestamptz DEFAULT"))
        conn.execute("""INSERT INTO store (prefix, key, value) VALUES ('users.a b.facts', 'k', '{"x": 1}')""")
    st = audit_memory(StoreTarget("postgres", pg_dsn))["store_items"]
    assert (st["items"], st["ttl"], st["namespaces"][0]["namespace"]) == (1, False, "users")


def test_an_app_table_named_store_is_refused_untouched(tmp_path):
    path = tmp_path / "app.sqlite"
    setup_store(StoreTarget("sqlite", str(path)))
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE store (id integer primary key, name text)")
        conn.commit()
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(UnsupportedSchema, match="lacks key, prefix, value: it is not a LangGraph Store table"):
        audit_memory(StoreTarget("sqlite", str(path)))
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


@pytest.mark.parametrize("kwargs", [{"oversized_bytes": 0}, {"alert_share_pct": 101}, {"namespace_depth": 0}])
def test_bad_settings_are_refused(tmp_path, kwargs):
    with pytest.raises(ValueError, match="oversized_bytes must be > 0"):
        audit_memory(StoreTarget("sqlite", str(tmp_path / "none.sqlite")), **kwargs)
