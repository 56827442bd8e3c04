"""Setup's indexes for metadata-filtered lists and pruning, checked through the savers' own queries.

100 checkpoints go in through the real savers; filtered lists must equal a Python filter of
everything, setup must create the indexes once, and EXPLAIN must show the planner using them
for the very SQL the savers send. The last tests pin how the two backends' filters differ.
"""

from __future__ import annotations

import sqlite3
import uuid
from contextlib import closing, contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import psycopg
import pytest
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.base.id import uuid6
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from include.checkpoint_core import errors
from include.checkpoint_core.indexes import (
    InvalidIndexKey,
    ensure_indexes,
    postgres_indexes,
    sqlite_filter_expression,
    sqlite_indexes,
)
from include.checkpoint_core.stores import StoreTarget, setup_store

SESSION_TYPES = ("support", "onboarding", "billing")
THREADS, PER_THREAD = 10, 10
GIN = "checkpoint_ops_checkpoints_metadata_idx"
AGE = "checkpoint_ops_checkpoints_age_idx"
WRITES_AGE = "checkpoint_ops_writes_age_idx"
USER_IDX = "checkpoint_ops_meta_user_id_idx"
SESSION_IDX = "checkpoint_ops_meta_session_type_idx"


def thread_config(t: int, ns: bool = True) -> dict:
    return {"configurable": {"thread_id": f"thread-{t}", **({"checkpoint_ns": ""} if ns else {})}}


def write_checkpoints(saver) -> None:
    """10 threads x 10 checkpoints; thread t belongs to user t % 4 and session type t % 3."""
    for step in range(PER_THREAD):
        for t in range(THREADS):
            checkpoint = empty_checkpoint()
            checkpoint["id"] = str(uuid6())
            metadata = {"source": "input" if step % 4 == 0 else "loop", "step": step, "parents": {},
                        "user_id": f"user-{t % 4}", "session_type": SESSION_TYPES[t % 3]}
            config = saver.put(thread_config(t), checkpoint, metadata, {})
            saver.put_writes(config, [("messages", f"note {step}")], "task-1")


@dataclass
class Store:
    kind: str
    target: StoreTarget
    saver: Any
    explain: Callable[[str, tuple], str]  # the plan of one SQL statement, as text
    index_names: Callable[[], set[str]]
    list_sql: Callable[[dict | None, dict], tuple[str, tuple]]  # the statement saver.list(config, filter=...) runs


@contextmanager
def open_store(kind: str, location: str, *, fill: bool = True, **setup_options) -> Iterator[Store]:
    """A store (a file path or a DSN) set up by setup_store, indexes included, while empty; then filled
    through the saver."""
    if kind == "sqlite":
        from langgraph.checkpoint.sqlite import SqliteSaver

        from include.checkpoint_core.sqlite_store import connect_sqlite

        target = StoreTarget("sqlite", location, "lite")
        setup_store(target, **setup_options)
        with closing(connect_sqlite(target.location)) as conn:
            saver = SqliteSaver(conn)
            if fill:
                write_checkpoints(saver)
                conn.commit()

            def explain(sql, params=()):
                return "\n".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, params))

            def index_names():
                return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}

            def list_sql(config, filter):
                # The statement SqliteSaver.list really runs, as SQLite expanded it.
                seen: list[str] = []
                conn.set_trace_callback(seen.append)
                try:
                    list(saver.list(config, filter=filter, limit=10))
                finally:
                    conn.set_trace_callback(None)
                return next(s for s in seen if "FROM checkpoints" in s), ()

            yield Store("sqlite", target, saver, explain, index_names, list_sql)
    else:
        from langgraph.checkpoint.postgres import PostgresSaver

        from include.checkpoint_core.postgres_store import open_postgres_pool

        dsn = location
        target = StoreTarget("postgres", dsn, "pg")
        setup_store(target, **setup_options)
        with closing(open_postgres_pool(dsn)) as pool, psycopg.connect(dsn, autocommit=True) as conn:
            saver = PostgresSaver(pool)
            if fill:
                write_checkpoints(saver)

            def explain(sql, params=()):
                return "\n".join(r[0] for r in conn.execute("EXPLAIN " + sql, params))

            def index_names():
                return {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")}

            def list_sql(config, filter):
                # What PostgresSaver.list builds (langgraph/checkpoint/postgres/__init__.py).
                where, args = saver._search_where(config, filter)
                return saver.SELECT_SQL + where + " ORDER BY checkpoint_id DESC LIMIT %s", (*args, 10)

            yield Store("postgres", target, saver, explain, index_names, list_sql)


def _location(kind: str, request, tmp_path) -> str:
    return str(tmp_path / "checkpoints.sqlite") if kind == "sqlite" else request.getfixturevalue("pg_dsn")


@contextmanager
def scratch_location(kind: str, tmp_path, pg_admin) -> Iterator[str]:
    """A place for a store shared by a module's read-only tests (pg_dsn is per test)."""
    if kind == "sqlite":
        yield str(tmp_path / "checkpoints.sqlite")
        return
    from tests.conftest import _dsn_for

    name = f"cpo_test_{uuid.uuid4().hex[:12]}"
    pg_admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _dsn_for(name)
    finally:
        pg_admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def shared_store(request, tmp_path_factory, pg_admin):
    """The 100 checkpoints, for tests that only read."""
    with scratch_location(request.param, tmp_path_factory.mktemp("shared"), pg_admin) as where, \
            open_store(request.param, where) as s:
        yield s


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path):
    with open_store(request.param, _location(request.param, request, tmp_path)) as s:
        yield s


@pytest.fixture
def sqlite_store(request, tmp_path):
    with open_store("sqlite", _location("sqlite", request, tmp_path)) as s:
        yield s


@pytest.fixture(scope="module")
def padded_pg_store(pg_admin):
    """The 100 checkpoints among 20,000 older ones of other threads (see _pad_postgres), for EXPLAIN."""
    with scratch_location("postgres", None, pg_admin) as dsn, open_store("postgres", dsn) as s:
        _pad_postgres(dsn)
        yield s


def ids(tuples) -> list[str]:
    return [t.config["configurable"]["checkpoint_id"] for t in tuples]


FILTERS = [
    {"user_id": "user-1"},
    {"session_type": "billing"},
    {"user_id": "user-1", "session_type": "onboarding"},  # thread 1 only: the intersection
    {"user_id": "user-3", "session_type": "billing"},  # user-3 owns threads 3 and 7: support, onboarding
    {"source": "input", "user_id": "user-0"},
    {"step": 3},
]


@pytest.mark.parametrize("flt", FILTERS, ids=lambda f: "+".join(f))
def test_filtered_lists_equal_a_python_filter(shared_store, flt):
    store = shared_store
    everything = list(store.saver.list(None))
    assert len(everything) == THREADS * PER_THREAD

    def expected(rows):
        return [cid for cid, t in zip(ids(rows), rows) if all(t.metadata.get(k) == v for k, v in flt.items())]

    assert ids(store.saver.list(None, filter=flt)) == expected(everything)
    assert ids(store.saver.list(None, filter=flt, limit=3)) == expected(everything)[:3]
    for t in (1, 2):
        for config in (thread_config(t), thread_config(t, ns=False)):
            in_thread = list(store.saver.list(config))
            assert ids(store.saver.list(config, filter=flt)) == expected(in_thread)


def test_several_tags_are_the_intersection(shared_store):
    store = shared_store
    both = set(ids(store.saver.list(None, filter={"user_id": "user-1", "session_type": "onboarding"})))
    users = set(ids(store.saver.list(None, filter={"user_id": "user-1"})))
    kinds = set(ids(store.saver.list(None, filter={"session_type": "onboarding"})))
    assert both == users & kinds and len(both) == PER_THREAD
    assert users - both and kinds - both, "each tag alone matches more"


def test_setup_creates_the_indexes_once(store):
    expected = {s.name for s in (sqlite_indexes if store.kind == "sqlite" else postgres_indexes)(["user_id", "session_type"])}
    assert expected <= store.index_names()
    assert ensure_indexes(store.target) == []
    again = setup_store(store.target)
    assert again["changes"] == []


def test_new_key_adds_only_its_index(store):
    created = ensure_indexes(store.target, ["user_id", "session_type", "tenant"])
    # SQLite: an expression index per key. PostgreSQL: the one GIN index serves every key.
    assert created == (["checkpoint_ops_meta_tenant_idx"] if store.kind == "sqlite" else [])


def test_setup_reports_each_index_it_creates(tmp_path, pg_dsn):
    lite = setup_store(StoreTarget("sqlite", str(tmp_path / "new.sqlite")))
    assert lite["changes"][-4:] == [f"index {AGE} created", f"index {WRITES_AGE} created",
                                    f"index {SESSION_IDX} created", f"index {USER_IDX} created"]
    post = setup_store(StoreTarget("postgres", pg_dsn))
    assert post["changes"][-3:] == [f"index {AGE} created", f"index {WRITES_AGE} created", f"index {GIN} created"]
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'btree_gin'").fetchone()
    assert setup_store(StoreTarget("postgres", pg_dsn))["changes"] == []


def test_no_keys_means_no_metadata_index(tmp_path, pg_dsn):
    lite = setup_store(StoreTarget("sqlite", str(tmp_path / "bare.sqlite")), metadata_index_keys=[])
    assert [c for c in lite["changes"] if c.startswith("index")] == [f"index {AGE} created", f"index {WRITES_AGE} created"]
    post = setup_store(StoreTarget("postgres", pg_dsn), metadata_index_keys=[])
    assert [c for c in post["changes"] if c.startswith(("index", "extension"))] == [
        f"index {AGE} created", f"index {WRITES_AGE} created"]


# --- the planner uses them ---------------------------------------------------------------


def test_sqlite_expression_is_the_one_the_saver_filters_on(sqlite_store):
    sql, _ = sqlite_store.list_sql(None, {"user_id": "user-1"})
    assert sqlite_filter_expression("user_id") + " = 'user-1'" in sql


def test_sqlite_filtered_lists_use_the_tag_indexes(sqlite_store):
    # Set up on an empty file, so no statistics: the first key's index wins the planner's tie.
    for flt in ({"user_id": "user-1"}, {"user_id": "user-1", "session_type": "onboarding"},
                {"session_type": "onboarding", "user_id": "user-1"}):
        assert f"USING INDEX {USER_IDX} (<expr>=?)" in sqlite_store.explain(*sqlite_store.list_sql(None, flt))
    assert f"USING INDEX {SESSION_IDX} (<expr>=?)" in sqlite_store.explain(*sqlite_store.list_sql(None, {"session_type": "billing"}))
    # Thread-scoped lists keep the primary key, which narrows to one thread.
    plan = sqlite_store.explain(*sqlite_store.list_sql(thread_config(1), {"user_id": "user-1"}))
    assert "USING INDEX sqlite_autoindex_checkpoints_1 (thread_id=? AND checkpoint_ns=?)" in plan


def test_sqlite_statistics_from_setup_on_a_filled_file(tmp_path):
    """Indexes added to a file that already has rows get statistics, which pick user_id over session_type."""
    from langgraph.checkpoint.sqlite import SqliteSaver

    from include.checkpoint_core.sqlite_store import connect_sqlite, setup_sqlite

    path = tmp_path / "filled.sqlite"
    setup_sqlite(path)
    with closing(connect_sqlite(path)) as conn:
        write_checkpoints(SqliteSaver(conn))
        conn.commit()
    # Listed session_type first: without statistics it would win the tie.
    assert len(ensure_indexes(StoreTarget("sqlite", str(path)), ["session_type", "user_id"])) == 4
    with closing(sqlite3.connect(path)) as conn:
        assert {r[0] for r in conn.execute("SELECT idx FROM sqlite_stat1")} >= {USER_IDX, SESSION_IDX}
        sql = (f"SELECT checkpoint_id FROM checkpoints WHERE {sqlite_filter_expression('session_type')} = 'onboarding' "
               f"AND {sqlite_filter_expression('user_id')} = 'user-1' ORDER BY checkpoint_id DESC LIMIT 10")
        plan = "\n".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql))
    assert f"USING INDEX {USER_IDX}" in plan


def test_sqlite_age_indexes_serve_pruning_scans(sqlite_store):
    plan = sqlite_store.explain("SELECT thread_id FROM checkpoints WHERE checkpoint_id < ?", ("1",))
    assert f"USING COVERING INDEX {AGE} (checkpoint_id<?)" in plan
    plan = sqlite_store.explain("SELECT thread_id, checkpoint_ns, checkpoint_id FROM writes WHERE checkpoint_id < ?", ("1",))
    assert f"USING INDEX {WRITES_AGE} (checkpoint_id<?)" in plan
    # Pinned: for DISTINCT, SQLite (no STAT4) prefers walking the whole primary key in thread
    # order to a range of the age index plus a temp b-tree; pruning code can keep a subquery
    # from being flattened to get the range scan.
    assert "SCAN checkpoints USING COVERING INDEX sqlite_autoindex_checkpoints_1" in sqlite_store.explain(
        "SELECT DISTINCT thread_id FROM checkpoints WHERE checkpoint_id < ?", ("1",))
    assert f"USING COVERING INDEX {AGE} (checkpoint_id<?)" in sqlite_store.explain(
        "SELECT DISTINCT thread_id FROM (SELECT thread_id FROM checkpoints WHERE checkpoint_id < ? LIMIT -1)", ("1",))


def _pad_postgres(dsn: str, threads: int = 2000, per_thread: int = 10) -> None:
    """Rows of other users and threads, older than the saver's, so the statistics look like a real
    store's and a filter is as selective as it is there (on 100 rows, reading everything is cheapest)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            """INSERT INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, checkpoint, metadata)
               SELECT 'pad-' || t, '', '0-' || lpad(t::text, 6, '0') || '-' || lpad(s::text, 4, '0'), '{}'::jsonb,
                      jsonb_build_object('source', CASE WHEN s %% 4 = 0 THEN 'input' ELSE 'loop' END, 'step', s,
                                         'parents', '{}'::jsonb, 'user_id', 'pad-user-' || (t %% 1000),
                                         'session_type', (ARRAY['support', 'onboarding', 'billing'])[1 + t %% 3])
               FROM generate_series(1, %s) t, generate_series(1, %s) s""",
            (threads, per_thread),
        )
        conn.execute(
            """INSERT INTO checkpoint_writes (thread_id, checkpoint_ns, checkpoint_id, task_id, idx, channel, type, blob)
               SELECT thread_id, '', checkpoint_id, 'task-1', 0, 'messages', 'json', '\\x00'
               FROM checkpoints WHERE thread_id LIKE 'pad-%'"""
        )
        conn.execute("ANALYZE")


PAD_CUTOFF = "0-000100"  # the checkpoints of 99 of the 2,000 padding threads are older


def test_postgres_filtered_lists_use_the_gin_index(padded_pg_store):
    for flt in ({"user_id": "user-1"}, {"user_id": "user-1", "session_type": "onboarding"}):
        plan = padded_pg_store.explain(*padded_pg_store.list_sql(None, flt))
        assert f"Bitmap Index Scan on {GIN}" in plan, plan
        assert "Seq Scan on checkpoints" not in plan
    # Thread-scoped: the planner may pick the GIN (both conditions in one scan) or a thread
    # index; either way it never reads other threads' rows.
    for config in (thread_config(1), thread_config(1, ns=False)):
        plan = padded_pg_store.explain(*padded_pg_store.list_sql(config, {"user_id": "user-1"}))
        assert "Seq Scan on checkpoints" not in plan and "thread_id = 'thread-1'" in plan, plan


def test_postgres_generic_plan_of_a_thread_filter_scans_one_index(padded_pg_store):
    """Why thread_id is in the GIN key: PostgresSaver's statements are prepared, and the generic
    plan for "thread + filter" would otherwise AND the thread index with a metadata-only GIN,
    whose bitmap for a common value holds every matching row of the table."""
    sql, _ = padded_pg_store.list_sql(thread_config(1, ns=False), {"source": "input"})
    with psycopg.connect(padded_pg_store.target.location, autocommit=True) as conn:
        conn.execute("SET plan_cache_mode = force_generic_plan")
        conn.execute("PREPARE thread_list AS " + sql.replace("%s", "$1", 1).replace("%s", "$2", 1).replace("%s", "$3", 1))
        plan = "\n".join(r[0] for r in conn.execute(
            "EXPLAIN EXECUTE thread_list ('thread-1', '{\"source\": \"input\"}', 10)"))
    assert f"Bitmap Index Scan on {GIN}" in plan and "BitmapAnd" not in plan, plan
    assert "Index Cond: ((thread_id = $1) AND (metadata @> $2))" in plan, plan


def test_postgres_age_indexes_serve_pruning_scans(padded_pg_store):
    plan = padded_pg_store.explain("SELECT DISTINCT thread_id FROM checkpoints WHERE checkpoint_id < %s", (PAD_CUTOFF,))
    assert AGE in plan and "Index Cond: (checkpoint_id <" in plan and "Seq Scan" not in plan, plan
    plan = padded_pg_store.explain(
        "SELECT thread_id, checkpoint_ns, checkpoint_id FROM checkpoint_writes WHERE checkpoint_id < %s", (PAD_CUTOFF,))
    assert WRITES_AGE in plan and "Index Cond: (checkpoint_id <" in plan and "Seq Scan" not in plan, plan


# --- keeping the store safe -----------------------------------------------------------------


@pytest.mark.parametrize("bad", ["user-id", "a.b", "1st", "x'); DROP TABLE checkpoints; --", "", "k" * 64, 7])
def test_keys_must_be_identifiers(tmp_path, bad):
    path = tmp_path / "never.sqlite"
    with pytest.raises(InvalidIndexKey) as info:
        setup_store(StoreTarget("sqlite", str(path)), metadata_index_keys=["user_id", bad])
    assert isinstance(info.value, errors.CheckpointStoreError) and not info.value.retryable
    assert "letters, digits and underscores" in str(info.value)
    assert not path.exists(), "a bad key is refused before the store is touched"
    with pytest.raises(InvalidIndexKey, match="single string"):
        ensure_indexes(StoreTarget("sqlite", str(path)), "user_id")


def test_busy_sqlite_file_is_a_retryable_busy_error(tmp_path):
    from include.checkpoint_core.sqlite_store import setup_sqlite

    path = tmp_path / "busy.sqlite"
    setup_sqlite(path)
    target = StoreTarget("sqlite", str(path))
    with closing(sqlite3.connect(path, isolation_level=None)) as app:
        app.execute("BEGIN IMMEDIATE")  # the app is writing
        with pytest.raises(errors.StoreBusy, match="locked") as info:
            ensure_indexes(target, busy_timeout_ms=100)
        assert info.value.retryable
        app.execute("ROLLBACK")
    assert len(ensure_indexes(target)) == 4
    with closing(sqlite3.connect(path, isolation_level=None)) as app:
        app.execute("BEGIN IMMEDIATE")
        assert ensure_indexes(target, busy_timeout_ms=100) == [], "nothing to create: no write lock needed"
        app.execute("ROLLBACK")


def test_store_without_checkpoint_tables_is_refused(tmp_path, pg_dsn):
    app_db = tmp_path / "app.sqlite"
    with closing(sqlite3.connect(app_db)) as conn:
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
        conn.commit()
    with pytest.raises(errors.NotACheckpointStore):
        ensure_indexes(StoreTarget("sqlite", str(app_db)))
    with pytest.raises(errors.NotACheckpointStore, match="run the schema setup first"):
        ensure_indexes(StoreTarget("postgres", pg_dsn))


def test_invalid_index_left_by_an_interrupted_build_is_recreated(pg_dsn):
    target = StoreTarget("postgres", pg_dsn)
    setup_store(target)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"UPDATE pg_index SET indisvalid = false WHERE indexrelid = '{GIN}'::regclass")
        old = conn.execute(f"SELECT '{GIN}'::regclass::oid").fetchone()[0]
    assert ensure_indexes(target) == [GIN]
    with psycopg.connect(pg_dsn) as conn:
        valid, oid = conn.execute(
            f"SELECT indisvalid, indexrelid::oid FROM pg_index WHERE indexrelid = '{GIN}'::regclass").fetchone()
    assert valid and oid != old, "dropped and built again"
    assert ensure_indexes(target) == []


def test_missing_extension_privilege_says_what_to_do(pg_dsn, pg_admin):
    """Without CREATE on the database, btree_gin cannot be installed: the other indexes are
    still built and the error names the two ways out."""
    from include.checkpoint_core.postgres_store import setup_postgres

    setup_postgres(pg_dsn, include_store=False)
    role = f"cpo_noext_{uuid.uuid4().hex[:8]}"
    pg_admin.execute(f"CREATE ROLE {role} LOGIN")
    try:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(f"GRANT CREATE ON SCHEMA public TO {role}")  # an app role that owns its tables
            for table in ("checkpoints", "checkpoint_blobs", "checkpoint_writes", "checkpoint_migrations"):
                conn.execute(f"ALTER TABLE {table} OWNER TO {role}")
        as_role = make_conninfo(**{**conninfo_to_dict(pg_dsn), "user": role})
        with pytest.raises(errors.SetupFailed, match="btree_gin") as info:
            ensure_indexes(StoreTarget("postgres", as_role))
        assert "CREATE EXTENSION btree_gin" in str(info.value) and "metadata_index_keys" in str(info.value)
        assert ensure_indexes(StoreTarget("postgres", as_role), []) == [], "the age indexes were built before"
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(f"REASSIGN OWNED BY {role} TO postgres")
            conn.execute(f"DROP OWNED BY {role}")
        pg_admin.execute(f"DROP ROLE {role}")


# --- where the backends' filters differ -------------------------------------------------------

ODD_ROWS = {
    "a": {"tags": ["x", "y"], "ctx": {"k": 1, "j": 2}, "n": 1, "flag": True, "opt": None, "s": "1"},
    "b": {"tags": ["x"], "ctx": {"k": 1}, "n": 1.0, "flag": False, "s": 1},
    "c": {"tags": [], "ctx": {}, "n": "1", "flag": 1},
}
# filter -> (rows SqliteSaver returns, rows PostgresSaver returns). SQLite compares
# json_extract(metadata, '$.key') = value (IS NULL for None; dicts and lists as compact JSON
# text); PostgreSQL asks whether metadata @> filter (JSON containment).
SEMANTICS = [
    ({"tags": ["x"]}, "b", "ab"),  # PostgreSQL: a list contains its sub-lists
    ({"tags": ["x", "y"]}, "a", "a"),
    ({"tags": ["y", "x"]}, "", "a"),  # SQLite: same text or nothing, so order matters
    ({"tags": "x"}, "", ""),  # a value is not "in" a nested list on either
    ({"ctx": {"k": 1}}, "b", "ab"),  # PostgreSQL: an object contains its sub-objects
    ({"ctx": {}}, "c", "abc"),
    ({"ctx": {"j": 2, "k": 1}}, "", "a"),  # SQLite: key order of the stored JSON matters
    ({"opt": None}, "abc", "a"),  # SQLite: IS NULL also matches rows without the key
    ({"missing": None}, "abc", ""),
    ({"n": 1}, "ab", "ab"),  # 1 == 1.0 on both
    ({"n": "1"}, "c", "c"),  # numbers and strings never match each other on either
    ({"s": 1}, "b", "b"),
    ({"flag": True}, "ac", "a"),  # SQLite: true is 1
    ({"flag": 1}, "ac", "c"),
    ({"flag": 0}, "b", ""),
    ({"ctx.k": 1}, "ab", ""),  # SQLite: a dotted key is a JSON path; PostgreSQL: a key with a dot
]


def _odd_store(saver) -> dict[str, str]:
    names = {}
    for name, metadata in ODD_ROWS.items():
        checkpoint = empty_checkpoint()
        checkpoint["id"] = str(uuid6())
        saver.put({"configurable": {"thread_id": f"odd-{name}", "checkpoint_ns": ""}}, checkpoint, metadata, {})
        names[checkpoint["id"]] = name
    return names


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def odd_store(request, tmp_path_factory, pg_admin):
    """The rows above, with every key indexed: on SQLite the filters then go through the expression indexes."""
    with scratch_location(request.param, tmp_path_factory.mktemp("odd"), pg_admin) as where, \
            open_store(request.param, where, fill=False, metadata_index_keys=list(ODD_ROWS["a"])) as store:
        yield store, _odd_store(store.saver)


@pytest.mark.parametrize("flt,on_sqlite,on_postgres", SEMANTICS, ids=[repr(s[0]) for s in SEMANTICS])
def test_filter_semantics_differ_between_backends(odd_store, flt, on_sqlite, on_postgres):
    store, names = odd_store
    got = "".join(sorted(names[cid] for cid in ids(store.saver.list(None, filter=flt))))
    assert got == (on_sqlite if store.kind == "sqlite" else on_postgres)
