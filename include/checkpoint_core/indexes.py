"""Indexes for metadata-filtered lists and age-based pruning, on SQLite and PostgreSQL.

LangGraph's savers index only what thread lookups need, so ``saver.list(None, filter=...)``
(a user's checkpoints across threads) reads every row, and pruning's "threads with
checkpoints older than X" (``checkpoint_id < cutoff``: uuid6 ids sort by time) walks the
whole primary key. ``ensure_indexes`` adds, under names starting ``checkpoint_ops_``:

* both backends: ``checkpoints (checkpoint_id, thread_id)``, which answers the pruning scan
  from the index alone, and ``(checkpoint_id)`` on the writes table, for old and orphan writes;
* PostgreSQL: one GIN index that serves ``metadata @> %s`` for every key (see below);
* SQLite: one expression index per tag key, on exactly the expression SqliteSaver compares.

Nothing is dropped except an index an interrupted ``CREATE INDEX CONCURRENTLY`` left invalid;
an index for a key no longer configured stays until someone drops it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from include.checkpoint_core.errors import CheckpointStoreError, NotACheckpointStore, SetupFailed, UnsupportedSchema

INDEX_PREFIX = "checkpoint_ops_"
DEFAULT_TAG_KEYS = ("user_id", "session_type")
# The key becomes part of an index name and of a JSON path in DDL (which takes no bound
# parameters), so only plain identifiers are accepted. 63 keeps PostgreSQL names whole.
TAG_KEY_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"
_TAG_KEY = re.compile(TAG_KEY_PATTERN)


class InvalidIndexKey(CheckpointStoreError):
    hint = (
        "Metadata index keys must be plain identifiers: letters, digits and underscores, not starting "
        "with a digit, at most 63 characters (nested paths such as 'a.b' are not indexed)."
    )


class CreatedIndexes(list):
    """The names of the indexes created (empty when all existed), plus any extension installed for them."""

    def __init__(self, names: Iterable[str] = (), extensions: Iterable[str] = ()) -> None:
        super().__init__(names)
        self.extensions = list(extensions)


@dataclass(frozen=True)
class IndexSpec:
    name: str
    table: str
    definition: str  # what follows ``ON <table>``: built from constants and validated keys only
    needs_extension: str | None = None


def validate_tag_keys(keys: Iterable[str]) -> tuple[str, ...]:
    """The keys, de-duplicated in order; raise InvalidIndexKey on the first one that is not an identifier."""
    if isinstance(keys, (str, bytes)):
        raise InvalidIndexKey(f"metadata index keys must be a list of keys, not the single string {keys!r}.")
    out: list[str] = []
    for key in keys:
        if not isinstance(key, str) or not _TAG_KEY.match(key):
            raise InvalidIndexKey(f"metadata index key {key!r} is not allowed.")
        if key not in out:
            out.append(key)
    return tuple(out)


def sqlite_filter_expression(key: str) -> str:
    """The expression SqliteSaver.list compares for ``filter={key: ...}``
    (``_metadata_predicate`` in langgraph/checkpoint/sqlite/utils.py), character for character."""
    return f"json_extract(CAST(metadata AS TEXT), '$.{key}')"


def sqlite_indexes(tag_keys: Iterable[str]) -> list[IndexSpec]:
    keys = validate_tag_keys(tag_keys)
    specs = [
        IndexSpec(f"{INDEX_PREFIX}checkpoints_age_idx", "checkpoints", "(checkpoint_id, thread_id)"),
        IndexSpec(f"{INDEX_PREFIX}writes_age_idx", "writes", "(checkpoint_id)"),
    ]
    # Created last-key-first: with no statistics SQLite's planner rates every tag index alike and
    # keeps the newest, so the first key listed (put the most selective first) wins the tie.
    for key in reversed(keys):
        specs.append(IndexSpec(f"{INDEX_PREFIX}meta_{key}_idx", "checkpoints", f"({sqlite_filter_expression(key)})"))
    return specs


def postgres_indexes(tag_keys: Iterable[str]) -> list[IndexSpec]:
    keys = validate_tag_keys(tag_keys)
    specs = [
        IndexSpec(f"{INDEX_PREFIX}checkpoints_age_idx", "checkpoints", "(checkpoint_id, thread_id)"),
        IndexSpec(f"{INDEX_PREFIX}writes_age_idx", "checkpoint_writes", "(checkpoint_id)"),
    ]
    if keys:
        # GIN (thread_id, metadata jsonb_path_ops), not GIN (metadata jsonb_path_ops): PostgresSaver
        # prepares its statements, and after five runs a thread-scoped filtered list gets a generic
        # plan that ANDs a thread index with the metadata GIN. For a common value such as
        # {"source": "input"} the metadata-only GIN then builds a bitmap of every matching row in
        # the table (1M rows: 40 ms p50 instead of 0.8 ms); with thread_id in the key one scan
        # intersects both (benchmarks/metadata_queries.py measures both shapes). No separate
        # (thread_id, checkpoint_id) btree: the generic plan prefers this GIN anyway.
        # fastupdate off: a pending list makes every query scan it, and the planner, pricing
        # that in, fell back to a sequential scan on 20K rows (tests/core/test_metadata_indexes.py).
        specs.append(IndexSpec(f"{INDEX_PREFIX}checkpoints_metadata_idx", "checkpoints",
                               "USING gin (thread_id, metadata jsonb_path_ops) WITH (fastupdate = off)",
                               needs_extension="btree_gin"))
    return specs


def ensure_indexes(target, tag_keys: Iterable[str] = DEFAULT_TAG_KEYS, *, busy_timeout_ms: int | None = None) -> CreatedIndexes:
    """Create the missing checkpoint-ops indexes on a store that has LangGraph's tables.

    ``target`` is a ``StoreTarget``. Returns what was created, so a second call returns ``[]``.
    """
    keys = validate_tag_keys(tag_keys)
    if target.kind == "sqlite":
        from include.checkpoint_core.sqlite_store import DEFAULT_BUSY_TIMEOUT_MS

        busy = DEFAULT_BUSY_TIMEOUT_MS if busy_timeout_ms is None else busy_timeout_ms
        return _ensure_sqlite(Path(target.location), keys, busy)
    return _ensure_postgres(target.location, keys)


def _ensure_sqlite(path: Path, keys: tuple[str, ...], busy_timeout_ms: int) -> CreatedIndexes:
    import sqlite3

    from include.checkpoint_core.sqlite_store import (
        SCHEMA_LEGACY,
        classify_sqlite_error,
        connect_sqlite,
        open_sqlite_readonly,
        read_schema,
    )

    specs = sqlite_indexes(keys)
    # Read-only first: when every index exists, the file is neither locked nor written.
    with open_sqlite_readonly(path, busy_timeout_ms) as ro:
        if read_schema(ro, path).version == SCHEMA_LEGACY:
            raise UnsupportedSchema(f"{path} uses the legacy thread_ts layout, which has no checkpoint_id to index.")
        try:
            if {s.name for s in specs} <= _sqlite_index_names(ro):
                return CreatedIndexes()
        except sqlite3.Error as exc:
            raise classify_sqlite_error(exc, path, "indexing") from exc
    try:
        with closing(connect_sqlite(path, busy_timeout_ms, autocommit=True)) as conn:
            conn.execute("BEGIN IMMEDIATE")  # one transaction: all the indexes or none
            try:
                existing = _sqlite_index_names(conn)  # again, under the write lock
                todo = [s for s in specs if s.name not in existing]
                for spec in todo:
                    conn.execute(f'CREATE INDEX IF NOT EXISTS "{spec.name}" ON {spec.table} {spec.definition}')
                # Statistics let the planner prefer user_id (many values) to session_type (a
                # few). Only for the new indexes and only when there is data to measure: the
                # app's own ANALYZE or PRAGMA optimize keeps them current later.
                if conn.execute("SELECT EXISTS (SELECT 1 FROM checkpoints)").fetchone()[0]:
                    for spec in todo:
                        conn.execute(f'ANALYZE "{spec.name}"')
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
    except sqlite3.Error as exc:
        raise classify_sqlite_error(exc, path, "indexing") from exc
    return CreatedIndexes(s.name for s in todo)


def _sqlite_index_names(conn) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}


_EXISTING_INDEXES_SQL = """
    SELECT c.relname AS name, i.indisvalid AS valid FROM pg_index i
    JOIN pg_class c ON c.oid = i.indexrelid
    WHERE c.relname = ANY(%s) AND c.relnamespace = current_schema()::regnamespace
"""


def _ensure_postgres(dsn: str, keys: tuple[str, ...]) -> CreatedIndexes:
    import psycopg
    from psycopg import sql

    from include.checkpoint_core.errors import StoreBusy, StoreUnreachable
    from include.checkpoint_core.postgres_store import SETUP_LOCK_KEY, _take_setup_lock, connect_postgres, describe_dsn

    specs = postgres_indexes(keys)
    where = describe_dsn(dsn)
    created: list[str] = []
    extensions: list[str] = []
    # Autocommit (connect_postgres's default): CREATE INDEX CONCURRENTLY refuses to run in a
    # transaction. It takes no lock the app's reads and writes wait for, so unlike setup's
    # ALTERs it needs no lock_timeout; it does wait for transactions already open to end.
    with closing(connect_postgres(dsn)) as conn:
        # The setup lock: a second run must not see our index half-built (invalid) and drop it.
        _take_setup_lock(conn, dsn)
        try:
            missing = [t for t in {s.table for s in specs}
                       if conn.execute("SELECT to_regclass(%s) IS NULL AS missing", (t,)).fetchone()["missing"]]
            if missing:
                raise NotACheckpointStore(f"{where} has no {', '.join(sorted(missing))} table: run the schema setup first.")
            state = {r["name"]: r["valid"] for r in conn.execute(_EXISTING_INDEXES_SQL, ([s.name for s in specs],))}
            for spec in specs:
                if state.get(spec.name):
                    continue
                if spec.needs_extension:
                    if _create_extension(conn, spec.needs_extension, where):
                        extensions.append(spec.needs_extension)
                name = sql.Identifier(spec.name)
                if spec.name in state:
                    # Left invalid by an interrupted CREATE INDEX CONCURRENTLY, which IF NOT EXISTS
                    # would skip forever while the planner ignores the index.
                    conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(name))
                conn.execute(sql.SQL("CREATE INDEX CONCURRENTLY IF NOT EXISTS {} ON {} {}").format(
                    name, sql.Identifier(spec.table), sql.SQL(spec.definition)))
                created.append(spec.name)
        except CheckpointStoreError:
            raise
        except psycopg.errors.LockNotAvailable as exc:
            raise StoreBusy(f"creating indexes on {where} waited too long for a lock.") from exc
        except psycopg.OperationalError as exc:
            raise StoreUnreachable(f"lost the connection to PostgreSQL at {where} while creating indexes: "
                                   f"{' '.join(str(exc).split())}.") from exc
        except psycopg.Error as exc:
            raise SetupFailed(f"creating indexes on {where} failed: {' '.join(str(exc).split())}".rstrip(".") + ".",
                              hint="Fix the cause and run the job again: an index it left invalid is rebuilt.") from exc
        finally:
            if not conn.closed:
                try:
                    conn.execute("SELECT pg_advisory_unlock(%s)", (SETUP_LOCK_KEY,))
                except psycopg.Error:
                    pass
    return CreatedIndexes(created, extensions)


def _create_extension(conn, name: str, where: str) -> bool:
    """Install ``name`` if it is missing; True when this call installed it."""
    import psycopg
    from psycopg import sql

    if conn.execute("SELECT 1 FROM pg_extension WHERE extname = %s", (name,)).fetchone():
        return False
    try:
        conn.execute(sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(sql.Identifier(name)))
    except (psycopg.errors.InsufficientPrivilege, psycopg.errors.UndefinedFile, psycopg.errors.FeatureNotSupported) as exc:
        raise SetupFailed(
            f"the metadata index on {where} needs the {name} extension, which could not be installed: "
            f"{' '.join(str(exc).split())}".rstrip(".") + ".",
            hint=f"Ask the database owner to run CREATE EXTENSION {name} (it ships with PostgreSQL and is trusted "
                 "from PostgreSQL 13), or set metadata_index_keys to [] to skip the metadata index.",
        ) from exc
    return True
