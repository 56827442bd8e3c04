"""MeteredSaver on real SQLite files and PostgreSQL databases: counts, errors, durations, sizes."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
import uuid
from contextlib import closing
from pathlib import Path

import pytest
from langgraph.checkpoint.base import BaseCheckpointSaver, empty_checkpoint
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString

from include.checkpoint_core import postgres_store, sqlite_store
from include.checkpoint_core.delegating_saver import DelegatingSaver
from include.checkpoint_core.observability import names
from include.checkpoint_core.observability.metered import MeasuringSerializer, MeteredSaver, backend_of
from include.checkpoint_core.offload import LocalBlobStore, OffloadSerializer
from include.checkpoint_core.size_guard import CheckpointTooLarge, SizeGuardSaver

ROOT = Path(__file__).resolve().parents[2]
MB = 1024 * 1024


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def sample(registry, name: str, operation: str, backend: str = "sqlite", **labels) -> float | None:
    return registry.get_sample_value(name, {"backend": backend, "operation": operation, **labels})


def writes(registry, operation, backend="sqlite"):
    return sample(registry, f"{names.WRITES}_total", operation, backend)


def errors(registry, operation, backend="sqlite"):
    return sample(registry, f"{names.WRITE_ERRORS}_total", operation, backend)


def sizes(registry, operation, backend="sqlite") -> tuple[float, float]:
    """(count, sum) of the size histogram."""
    return (sample(registry, f"{names.CHECKPOINT_SIZE}_count", operation, backend),
            sample(registry, f"{names.CHECKPOINT_SIZE}_sum", operation, backend))


def durations(registry, operation, backend="sqlite") -> tuple[float, float]:
    return (sample(registry, f"{names.WRITE_DURATION}_count", operation, backend),
            sample(registry, f"{names.WRITE_DURATION}_sum", operation, backend))


def root(thread_id: str) -> dict:
    return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}


def checkpoint_with(saver: BaseCheckpointSaver, **values) -> dict:
    checkpoint = empty_checkpoint()
    checkpoint["channel_values"] = dict(values)
    checkpoint["channel_versions"] = {k: saver.get_next_version(None, None) for k in values}
    return checkpoint


def put(saver, thread_id: str, **values) -> dict:
    checkpoint = checkpoint_with(saver, **values)
    return saver.put(root(thread_id), checkpoint, {"source": "input", "step": -1}, checkpoint["channel_versions"])


def stored_bytes(inner: BaseCheckpointSaver, thread_id: str) -> tuple[int, int, int]:
    """(serialized checkpoint bytes, metadata bytes, write bytes) the store holds for a thread.

    SQLite: the checkpoint row's blob. PostgreSQL: the thread's blob rows (the JSONB document with
    its inline primitives is not the serializer's output). Metadata is JSON on both.
    """
    if type(inner).__name__ == "SqliteSaver":
        conn = inner.conn
        ckpt, meta = conn.execute("SELECT coalesce(sum(length(checkpoint)), 0), coalesce(sum(length(metadata)), 0) "
                                  "FROM checkpoints WHERE thread_id = ?", (thread_id,)).fetchone()
        (wr,) = conn.execute("SELECT coalesce(sum(length(value)), 0) FROM writes WHERE thread_id = ?",
                             (thread_id,)).fetchone()
        return ckpt, meta, wr
    return tuple(pg_scalar(inner, sql, (thread_id,)) for sql in (
        "SELECT coalesce(sum(octet_length(blob)), 0) FROM checkpoint_blobs WHERE thread_id = %s",
        "SELECT coalesce(sum(octet_length(metadata::text)), 0) FROM checkpoints WHERE thread_id = %s",
        "SELECT coalesce(sum(octet_length(blob)), 0) FROM checkpoint_writes WHERE thread_id = %s",
    ))


def pg_scalar(inner: BaseCheckpointSaver, sql: str, params: tuple = ()):
    from psycopg.rows import tuple_row

    with inner.conn.connection() as conn, conn.cursor(row_factory=tuple_row) as cur:
        return cur.execute(sql, params).fetchone()[0]


def backend_name(inner: BaseCheckpointSaver) -> str:
    return "sqlite" if "Sqlite" in type(inner).__name__ else "postgres"


# --- sync savers --------------------------------------------------------------------------------


def test_writes_are_counted_timed_and_sized_as_stored(saver, registry):
    backend = backend_name(saver)
    metered = MeteredSaver(saver, registry=registry)
    # Every series exists at 0 before the first write, so rates and error ratios are 0, not absent.
    for op in names.WRITE_OPERATIONS:
        assert writes(registry, op, backend) == 0.0 and errors(registry, op, backend) == 0.0
        assert durations(registry, op, backend)[0] == 0.0

    payload = os.urandom(50_000)
    saved = put(metered, "t1", payload=payload, n=7)  # n stays inline in PostgreSQL's JSONB
    ckpt, meta, _ = stored_bytes(saver, "t1")
    count, total = sizes(registry, "put", backend)
    assert (writes(registry, "put", backend), count) == (1.0, 1.0)
    assert total == ckpt  # the bytes the store got from the serializer, no more, no less
    assert 50_000 <= total <= ckpt + meta

    metered.put_writes(saved, [("a", b"x" * 1000), ("b", {"k": "v"})], task_id=str(uuid.uuid4()), task_path="~a")
    metered.put_writes(saved, [("c", [1, 2, 3])], task_id=str(uuid.uuid4()))
    assert writes(registry, "put_writes", backend) == 2.0
    count, total = sizes(registry, "put_writes", backend)
    assert count == 2.0 and total == stored_bytes(saver, "t1")[2] > 1000
    assert sorted(w[1] for w in saver.get_tuple(saved).pending_writes) == ["a", "b", "c"]

    metered.delete_thread("t1")
    assert saver.get_tuple(root("t1")) is None
    assert writes(registry, "delete_thread", backend) == 1.0
    assert sizes(registry, "delete_thread", backend) == (None, None)  # nothing is serialized there

    for op, n in (("put", 1), ("put_writes", 2), ("delete_thread", 1)):
        count, seconds = durations(registry, op, backend)
        assert count == n and 0 < seconds < 5
        assert errors(registry, op, backend) == 0.0


def test_sqlite_errors_are_counted_and_reraised_unchanged(sqlite_path, registry):
    from langgraph.checkpoint.sqlite import SqliteSaver

    sqlite_store.setup_sqlite(sqlite_path)
    with closing(sqlite_store.connect_sqlite(sqlite_path)) as conn:
        metered = MeteredSaver(SqliteSaver(conn), registry=registry)
        saved = put(metered, "t", note="before")
        conn.execute("PRAGMA query_only = ON")  # the file refuses every write from now on
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            put(metered, "t", note="refused")
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            metered.put_writes(saved, [("note", "x")], task_id="t1")
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            metered.delete_thread("t")
        conn.execute("PRAGMA query_only = OFF")
        assert metered.get_tuple(root("t")).checkpoint["channel_values"] == {"note": "before"}

    assert (writes(registry, "put"), errors(registry, "put")) == (2.0, 1.0)
    assert (writes(registry, "put_writes"), errors(registry, "put_writes")) == (1.0, 1.0)
    assert (writes(registry, "delete_thread"), errors(registry, "delete_thread")) == (1.0, 1.0)
    assert sizes(registry, "put")[0] == 1.0  # a failed write records no size...
    assert sizes(registry, "put_writes")[0] == 0.0
    assert durations(registry, "put")[0] == 2.0  # ...but its duration


def test_postgres_errors_keep_their_type(pg_dsn, registry):
    import psycopg
    from langgraph.checkpoint.postgres import PostgresSaver

    postgres_store.setup_postgres(pg_dsn, include_store=False)
    with closing(postgres_store.open_postgres_pool(pg_dsn)) as pool:
        metered = MeteredSaver(PostgresSaver(pool), registry=registry)
        saved = put(metered, "t", payload=b"p" * 100)
        with pool.connection() as conn:
            conn.execute("DROP TABLE checkpoint_writes")
        with pytest.raises(psycopg.errors.UndefinedTable):
            metered.put_writes(saved, [("note", "x")], task_id="t1")
    assert (writes(registry, "put_writes", "postgres"), errors(registry, "put_writes", "postgres")) == (1.0, 1.0)
    assert (writes(registry, "put", "postgres"), errors(registry, "put", "postgres")) == (1.0, 0.0)
    assert sizes(registry, "put", "postgres")[0] == 1.0


def test_a_6mb_checkpoint_lands_above_the_5mib_bucket(sqlite_path, registry):
    from langgraph.checkpoint.sqlite import SqliteSaver

    sqlite_store.setup_sqlite(sqlite_path)
    with closing(sqlite_store.connect_sqlite(sqlite_path)) as conn:
        metered = MeteredSaver(SqliteSaver(conn), registry=registry)
        put(metered, "small", note="hi")
        put(metered, "big", payload=os.urandom(6 * MB))

    def bucket(le: float) -> float:
        return sample(registry, f"{names.CHECKPOINT_SIZE}_bucket", "put", le=floatToGoString(le))

    assert names.FIVE_MIB in names.SIZE_BUCKETS
    assert bucket(1024) == 1.0  # the small one
    assert bucket(names.FIVE_MIB) == 1.0  # the big one is not at or under 5 MiB...
    assert bucket(16 * MB) == 2.0  # ...but under 16 MiB
    assert 6 * MB < sizes(registry, "put")[1] < 6 * MB + 2048


# --- async savers -------------------------------------------------------------------------------


def test_async_sqlite_saver(sqlite_path, registry):
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    sqlite_store.setup_sqlite(sqlite_path)

    async def scenario():
        async with AsyncSqliteSaver.from_conn_string(str(sqlite_path)) as inner:
            metered = MeteredSaver(inner, registry=registry)

            async def aput(thread_id: str, size: int):
                checkpoint = checkpoint_with(metered, payload=os.urandom(size))
                return await metered.aput(root(thread_id), checkpoint, {"step": -1}, checkpoint["channel_versions"])

            # Concurrent writes each count their own bytes (one ContextVar value per task).
            saved = await asyncio.gather(*(aput(f"t{i}", 1000 * (i + 1)) for i in range(8)))
            await metered.aput_writes(saved[0], [("a", b"x" * 500)], task_id="w1", task_path="~w")
            # The sync methods of the async savers hop to the event loop (run_coroutine_threadsafe),
            # which carries the context, so their sizes are measured too.
            checkpoint = checkpoint_with(metered, payload=os.urandom(3000))
            await asyncio.to_thread(metered.put, root("sync"), checkpoint, {"step": -1},
                                    checkpoint["channel_versions"])
            await metered.adelete_thread("t7")
            assert await metered.aget_tuple(root("t7")) is None
            assert (await metered.aget_tuple(saved[0])).pending_writes[0][1:] == ("a", b"x" * 500)

    asyncio.run(scenario())
    with closing(sqlite3.connect(sqlite_path)) as conn:
        (stored,) = conn.execute("SELECT sum(length(checkpoint)) FROM checkpoints").fetchone()
        (written,) = conn.execute("SELECT sum(length(value)) FROM writes").fetchone()
        (deleted,) = conn.execute("SELECT count(*) FROM checkpoints WHERE thread_id = 't7'").fetchone()
    assert deleted == 0
    count, total = sizes(registry, "put")
    assert count == writes(registry, "put") == 9.0
    # t7 (8,000 random bytes and its envelope) is gone from the file but was measured when written.
    assert stored + 8000 < total < stored + 8500
    assert sizes(registry, "put_writes") == (1.0, written)
    assert writes(registry, "delete_thread") == 1.0
    assert durations(registry, "put")[0] == 9.0


def test_async_postgres_saver_measures_in_its_worker_threads(pg_dsn, registry):
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

    postgres_store.setup_postgres(pg_dsn, include_store=False)

    async def scenario():
        async with AsyncPostgresSaver.from_conn_string(pg_dsn) as inner:
            metered = MeteredSaver(inner, registry=registry)
            # AsyncPostgresSaver serializes in asyncio.to_thread, which copies the context.
            checkpoint = checkpoint_with(metered, payload=os.urandom(20_000), step=3)
            saved = await metered.aput(root("t"), checkpoint, {"step": -1}, checkpoint["channel_versions"])
            await metered.aput_writes(saved, [("a", b"y" * 700), ("b", {"x": 1})], task_id="w1")
            assert [w[1] for w in (await metered.aget_tuple(saved)).pending_writes] == ["a", "b"]
            return saved

    asyncio.run(scenario())
    with closing(postgres_store.open_postgres_pool(pg_dsn)) as pool:
        from langgraph.checkpoint.postgres import PostgresSaver

        ckpt, _, written = stored_bytes(PostgresSaver(pool), "t")
    assert sizes(registry, "put", "postgres") == (1.0, ckpt)
    assert 20_000 <= ckpt < 20_100
    assert sizes(registry, "put_writes", "postgres") == (1.0, written)
    assert writes(registry, "put", "postgres") == 1.0 and errors(registry, "put", "postgres") == 0.0


# --- composition ----------------------------------------------------------------------------------


def test_size_guard_inside_is_counted_once_and_its_refusals_are_errors(sqlite_path, registry):
    from langgraph.checkpoint.sqlite import SqliteSaver

    sqlite_store.setup_sqlite(sqlite_path)
    with closing(sqlite_store.connect_sqlite(sqlite_path)) as conn:
        inner = SqliteSaver(conn)
        metered = MeteredSaver(SizeGuardSaver(inner, max_bytes=1 * MB), registry=registry)
        assert metered.backend == "sqlite"
        put(metered, "ok", payload=os.urandom(200_000))
        # The guard measured the checkpoint too, with the same serde: those bytes are not counted.
        assert sizes(registry, "put") == (1.0, stored_bytes(inner, "ok")[0])
        with pytest.raises(CheckpointTooLarge):
            put(metered, "huge", payload=os.urandom(2 * MB))
        assert (writes(registry, "put"), errors(registry, "put"), sizes(registry, "put")[0]) == (2.0, 1.0, 1.0)
        assert stored_bytes(inner, "huge") == (0, 0, 0)

        # The other order: the guard refuses before the metered saver sees the write.
        outer = SizeGuardSaver(MeteredSaver(inner, registry=registry), max_bytes=1 * MB)
        with pytest.raises(CheckpointTooLarge):
            put(outer, "huge", payload=os.urandom(2 * MB))
        put(outer, "ok2", payload=os.urandom(1000))
        assert (writes(registry, "put"), errors(registry, "put")) == (3.0, 1.0)
        assert sizes(registry, "put")[1] == stored_bytes(inner, "ok")[0] + stored_bytes(inner, "ok2")[0]


def test_offload_serializer_size_is_what_the_store_gets(sqlite_path, tmp_path, registry):
    from langgraph.checkpoint.sqlite import SqliteSaver

    sqlite_store.setup_sqlite(sqlite_path)
    blobs = LocalBlobStore(tmp_path / "blobs")
    with closing(sqlite_store.connect_sqlite(sqlite_path)) as conn:
        inner = SqliteSaver(conn, serde=OffloadSerializer(blobs=blobs))
        metered = MeteredSaver(inner, registry=registry)
        pdf = os.urandom(1 * MB)
        saved = put(metered, "doc", pdf=pdf)
        ckpt = stored_bytes(inner, "doc")[0]
        assert sizes(registry, "put") == (1.0, ckpt)
        assert ckpt < 300  # the reference, not the megabyte
        assert metered.get_tuple(saved).checkpoint["channel_values"]["pdf"] == pdf  # read back through both
    stored = [p for p in (tmp_path / "blobs").rglob("*") if p.is_file()]
    assert len(stored) == 1 and stored[0].stat().st_size > MB


def test_two_savers_share_one_registry(sqlite_path, registry):
    from langgraph.checkpoint.sqlite import SqliteSaver

    sqlite_store.setup_sqlite(sqlite_path)
    with closing(sqlite_store.connect_sqlite(sqlite_path)) as conn:
        first = MeteredSaver(SqliteSaver(conn), registry=registry)
        second = MeteredSaver(SqliteSaver(conn), registry=registry)  # no "Duplicated timeseries"
        memory = MeteredSaver(InMemorySaver(), registry=registry)
        custom = MeteredSaver(InMemorySaver(), registry=registry, backend="edge-cache")
        put(first, "a", note="1")
        put(second, "b", note="2")
        put(memory, "c", note="3")
        put(custom, "d", note="4")
    assert writes(registry, "put") == 2.0
    assert writes(registry, "put", "memory") == 1.0 and sizes(registry, "put", "memory")[0] == 1.0
    assert writes(registry, "put", "edge-cache") == 1.0
    assert writes(registry, "put_writes", "edge-cache") == 0.0
    # Another registry keeps its own numbers.
    other = CollectorRegistry()
    put(MeteredSaver(InMemorySaver(), registry=other), "e", note="5")
    assert writes(other, "put", "memory") == 1.0 and writes(registry, "put", "memory") == 1.0


def test_backend_labels():
    from langgraph.checkpoint.postgres import PostgresSaver
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
    from langgraph.checkpoint.sqlite import SqliteSaver
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    assert backend_of(SqliteSaver(sqlite3.connect(":memory:", check_same_thread=False))) == "sqlite"
    assert backend_of(InMemorySaver()) == "memory"
    assert backend_of(SizeGuardSaver(SizeGuardSaver(InMemorySaver()))) == "memory"

    class RedisSaver(InMemorySaver.__mro__[1]):  # a BaseCheckpointSaver we have no name for
        pass

    assert backend_of(RedisSaver()) == "redissaver"
    for cls in (AsyncSqliteSaver, PostgresSaver, AsyncPostgresSaver):
        expected = "sqlite" if "Sqlite" in cls.__name__ else "postgres"
        fake = cls.__new__(cls)  # the label comes from the class alone
        assert backend_of(fake) == expected


# --- delegation --------------------------------------------------------------------------------


def test_reads_are_delegated_and_record_nothing(saver, registry):
    backend = backend_name(saver)
    metered = MeteredSaver(saver, registry=registry)
    saved = put(metered, "t", payload=b"z" * 5000, note="hi")
    metered.put_writes(saved, [("note", "pending")], task_id="w")
    before = registry.collect()
    snapshot = {(s.name, tuple(sorted(s.labels.items()))): s.value for m in before for s in m.samples
                if not s.name.endswith("_created")}

    assert metered.get_tuple(root("t")).config == saver.get_tuple(root("t")).config
    assert metered.get(root("t"))["channel_values"]["note"] == "hi"
    assert [t.config for t in metered.list(root("t"))] == [t.config for t in saver.list(root("t"))]
    assert metered.get_next_version(None, None).split(".")[0] == saver.get_next_version(None, None).split(".")[0]
    assert metered.config_specs == saver.config_specs
    assert isinstance(metered.serde, MeasuringSerializer) and metered.serde is saver.serde
    metered.setup()  # not on BaseCheckpointSaver: reached through __getattr__
    assert metered.conn is saver.conn
    assert metered.get_tuple(saved).pending_writes[0][1:] == ("note", "pending")
    assert set(metered.get_delta_channel_history(config=saved, channels=["note"])) == {"note"}

    after = {(s.name, tuple(sorted(s.labels.items()))): s.value for m in registry.collect() for s in m.samples
             if not s.name.endswith("_created")}
    assert after == snapshot
    assert writes(registry, "put", backend) == 1.0


def test_every_public_saver_method_is_delegated_explicitly():
    """BaseCheckpointSaver's defaults would shadow the inner saver's overrides (no __getattr__ for them)."""
    public = {n for n in dir(BaseCheckpointSaver) if not n.startswith("_")}
    extended = {"delete_for_runs", "adelete_for_runs", "copy_thread", "acopy_thread", "prune", "aprune"}
    assert public - set(vars(DelegatingSaver)) == extended  # delegated only when the inner saver has them
    assert {"put", "aput", "put_writes", "aput_writes", "delete_thread", "adelete_thread"} <= set(vars(MeteredSaver))


def test_compile_keeps_the_wrapper_and_strict_msgpack(sqlite_path, registry, caplog):
    from langgraph.checkpoint.sqlite import SqliteSaver

    sqlite_store.setup_sqlite(sqlite_path)
    with closing(sqlite_store.connect_sqlite(sqlite_path)) as conn:
        strict = JsonPlusSerializer(allowed_msgpack_modules=None)
        metered = MeteredSaver(SqliteSaver(conn, serde=strict), registry=registry)
        with caplog.at_level(logging.WARNING):
            clone = metered.with_allowlist([("pathlib", "PurePosixPath")])
        assert "allowlist" not in caplog.text  # the allowlist reached the JsonPlusSerializer inside
        assert isinstance(clone, MeteredSaver) and clone is not metered
        assert isinstance(clone.serde, MeasuringSerializer) and clone.serde.inner is not strict
        assert clone.serde.inner._allowed_msgpack_modules != strict._allowed_msgpack_modules
        put(clone, "t", note="via the clone")
        put(metered, "u", note="via the original")
    assert writes(registry, "put") == 2.0 and sizes(registry, "put")[0] == 2.0


def test_a_real_graph_is_counted(saver, registry):
    from include.sample_agent.graph import build_agent_graph, start_turn, thread_config

    backend = backend_name(saver)
    graph = build_agent_graph(MeteredSaver(saver, registry=registry))
    assert isinstance(graph.checkpointer, MeteredSaver)
    start_turn(graph, thread_config("g1", "u1", "support"), "u1", "Where is my order #12?")
    start_turn(graph, thread_config("g2", "u2", "billing"), "u2", "What is the status of ticket 4?")

    if backend == "sqlite":
        (checkpoints,) = saver.conn.execute("SELECT count(*) FROM checkpoints").fetchone()
    else:
        checkpoints = pg_scalar(saver, "SELECT count(*) FROM checkpoints")
    assert checkpoints > 10
    assert writes(registry, "put", backend) == checkpoints  # subgraph checkpoints included
    assert writes(registry, "put_writes", backend) >= 10
    assert errors(registry, "put", backend) == 0.0 and errors(registry, "put_writes", backend) == 0.0
    count, total = sizes(registry, "put", backend)
    assert 0 < count <= checkpoints and total > 1000
    assert durations(registry, "put_writes", backend)[0] == writes(registry, "put_writes", backend)


# --- the processes that serve /metrics -------------------------------------------------------


def _metrics(url: str) -> dict[tuple[str, str, str], float]:
    """{(sample name, backend, operation): value} of the checkpoint families at ``url``."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {(s.name, s.labels.get("backend"), s.labels.get("operation")): s.value
            for family in text_string_to_metric_families(text) if family.name.startswith("checkpoint_")
            for s in family.samples if not s.labels.get("le")}


def _subprocess_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def test_sample_agent_cli_serves_metrics(tmp_path):
    db = tmp_path / "cli.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-m", "include.sample_agent", "--sqlite", str(db), "--threads", "3", "--turns", "1",
         "--interrupted", "0", "--crashed", "0", "--no-store", "--metrics-port", "0", "--linger", "60"],
        cwd=ROOT, env=_subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        url = None
        for line in proc.stderr:  # "metrics on http://...", progress, then "workload done; ..."
            if line.startswith("metrics on "):
                url = line.split()[-1]
            if line.startswith("workload done"):
                break
        assert url and url.startswith("http://127.0.0.1:"), "the CLI did not say where /metrics is"
        summary_lines = []
        for line in proc.stdout:  # the JSON summary, printed before lingering
            summary_lines.append(line)
            if line.rstrip() == "}":
                break
        summary = json.loads("".join(summary_lines))
        metrics = _metrics(url)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert summary["threads"] == 3 and summary["completed_threads"] == 3
    assert metrics[("checkpoint_writes_total", "sqlite", "put")] == summary["rows"]["checkpoints"]
    assert metrics[("checkpoint_writes_total", "sqlite", "put_writes")] > 0
    assert metrics[("checkpoint_write_errors_total", "sqlite", "put")] == 0
    assert metrics[("checkpoint_size_bytes_count", "sqlite", "put")] == summary["rows"]["checkpoints"]


def _free_port() -> int:
    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_metrics_app_fails_the_asked_fraction_of_writes(tmp_path):
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.observability.metrics_app", "--port", str(port), "--sqlite",
         str(tmp_path / "app.sqlite"), "--writes-per-sec", "100", "--error-rate", "0.3", "--duration", "0"],
        cwd=ROOT, env=_subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(2.5)
        metrics = _metrics(f"http://127.0.0.1:{port}/metrics")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    attempts = sum(v for (n, b, _), v in metrics.items() if n == "checkpoint_writes_total" and b == "sqlite")
    failed = sum(v for (n, b, _), v in metrics.items() if n == "checkpoint_write_errors_total" and b == "sqlite")
    assert 50 <= attempts <= 300  # about 100 per second for 2.5 s (less on a loaded machine)
    assert 0.15 < failed / attempts < 0.45
    assert metrics[("checkpoint_writes_total", "sqlite", "put")] > 0
    assert metrics[("checkpoint_writes_total", "sqlite", "put_writes")] > 0
    assert metrics[("checkpoint_size_bytes_count", "sqlite", "put")] > 0


def test_a_name_clash_leaves_nothing_half_registered():
    from langgraph.checkpoint.memory import InMemorySaver
    from prometheus_client import CollectorRegistry, Counter

    registry = CollectorRegistry()
    theirs = Counter("checkpoint_write_errors", "someone else's", registry=registry)
    with pytest.raises(ValueError, match="pass another registry"):
        MeteredSaver(InMemorySaver(), registry=registry)
    registry.unregister(theirs)
    MeteredSaver(InMemorySaver(), registry=registry)  # our own names were not left behind
    assert registry.get_sample_value("checkpoint_writes_total", {"backend": "memory", "operation": "put"}) == 0


def test_registry_none_is_refused_with_a_reason():
    from langgraph.checkpoint.memory import InMemorySaver

    with pytest.raises(ValueError, match="needs a registry"):
        MeteredSaver(InMemorySaver(), registry=None)
