"""PostgreSQL checkpoint databases: connect with clear errors, pool, set up the schemas.

Connections follow what PostgresSaver requires (``autocommit=True``, ``prepare_threshold=0``,
``dict_row``): its ``setup()`` runs ``CREATE INDEX CONCURRENTLY``, which cannot run inside a
transaction, and its queries are not safe as server-side prepared statements behind poolers.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from include.checkpoint_core.errors import (
    AuthenticationFailed,
    ConnectionSettingsWrong,
    DatabaseMissing,
    SetupFailed,
    StoreBusy,
    StoreUnreachable,
)

CONNECT_TIMEOUT_S = 10
# One key for every checkpoint-ops schema change, so two setup runs never interleave migrations.
SETUP_LOCK_KEY = 0x63_6B_70_74_6F_70_73  # "ckptops"
SETUP_LOCK_WAIT_S = 300
SAVER_KWARGS = {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row}


def describe_dsn(dsn: str) -> str:
    """``user@host:port/dbname`` for messages: enough to find the server, never the password."""
    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparseable connection string>"
    host = parts.get("host") or "localhost"
    port = parts.get("port") or "5432"
    user = parts.get("user") or "<default user>"
    return f"{user}@{host}:{port}/{parts.get('dbname') or '<default db>'}"


def _classify(exc: psycopg.OperationalError, dsn: str) -> Exception:
    where = describe_dsn(dsn)
    text = " ".join(str(exc).split()) or type(exc).__name__
    msg = text.rstrip(".")
    sqlstate = getattr(exc, "sqlstate", None)
    # libpq reports connection failures without a SQLSTATE, so these read the (English) server
    # message; anything unrecognised is treated as "unreachable", which is retried.
    auth_markers = ("password authentication failed", "no pg_hba.conf entry", "role \"", "password is required",
                    "permission denied for database", "authentication failed")
    settings_markers = ("SSL", "sslmode", "invalid connection option", "invalid sslmode", "certificate")
    if sqlstate in ("28P01", "28000", "42501") or any(m in text for m in auth_markers):
        return AuthenticationFailed(f"PostgreSQL at {where} refused access: {msg}.")
    if sqlstate == "3D000" or ("database" in text and "does not exist" in text):
        return DatabaseMissing(f"PostgreSQL at {where}: {msg}.")
    if any(m in text for m in settings_markers):
        return ConnectionSettingsWrong(f"PostgreSQL at {where}: {msg}.")
    for markers, hint in _REFUSALS:
        if any(m in text for m in markers):
            # The server is running and answered: "check that it is running" would mislead.
            return StoreUnreachable(f"PostgreSQL at {where} answered but refused the connection: {msg}.", hint=hint)
    return StoreUnreachable(f"cannot reach PostgreSQL at {where}: {msg}.")


# Refusals from a server that is up, each with what to do; all are retried, as they pass.
_REFUSALS = (
    (("too many connections", "too many clients", "remaining connection slots"),
     "The server is at its connection limit: the task retries. If it persists, raise max_connections or put a "
     "pooler (PgBouncer) in front of it."),
    (("is not currently accepting connections",),
     "The database refuses new connections (ALLOW_CONNECTIONS false, or it is being dropped or renamed): the task "
     "retries; if it persists, check the database's settings."),
    (("starting up", "shutting down", "in recovery mode", "not yet accepting connections", "hot standby"),
     "The server is starting, stopping or recovering: the task retries once it accepts connections."),
)


def connect_postgres(dsn: str, *, timeout_s: int = CONNECT_TIMEOUT_S, **kwargs) -> psycopg.Connection:
    """One connection with PostgresSaver's settings, or an error that says what to fix."""
    options = {**SAVER_KWARGS, **kwargs}
    try:
        conninfo = make_conninfo(dsn, connect_timeout=timeout_s)
    except psycopg.ProgrammingError:
        # psycopg's message may quote the offending part of the string, password included.
        raise ConnectionSettingsWrong("the PostgreSQL connection string cannot be parsed.") from None
    try:
        return psycopg.connect(conninfo, **options)
    except psycopg.OperationalError as exc:
        raise _classify(exc, dsn) from None


def open_postgres_pool(dsn: str, *, min_size: int = 1, max_size: int = 4, timeout_s: int = CONNECT_TIMEOUT_S) -> ConnectionPool:
    """A psycopg pool for PostgresSaver/PostgresStore, checked before it is handed out.

    The probe connection turns "pool timed out" (all a pool can say) into the real reason:
    refused, wrong password, missing database.
    """
    connect_postgres(dsn, timeout_s=timeout_s).close()
    pool = ConnectionPool(
        make_conninfo(dsn, connect_timeout=timeout_s),
        min_size=min_size,
        max_size=max_size,
        kwargs=dict(SAVER_KWARGS),
        open=False,
        name="checkpoint-ops",
    )
    pool.open(wait=True, timeout=timeout_s)
    return pool


@contextmanager
def postgres_connection(dsn: str, **kwargs) -> Iterator[psycopg.Connection]:
    conn = connect_postgres(dsn, **kwargs)
    try:
        yield conn
    finally:
        conn.close()


def _migration_version(conn: psycopg.Connection, table: str) -> int | None:
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL AS present", (table,)).fetchone()["present"]
    if not exists:
        return None
    row = conn.execute(f"SELECT max(v) AS v FROM {table}").fetchone()  # table is one of our constants
    return row["v"] if row and row["v"] is not None else -1


def schema_versions(conn: psycopg.Connection) -> dict[str, int | None]:
    """Applied migration versions of PostgresSaver and PostgresStore (None: never set up)."""
    return {
        "checkpoints": _migration_version(conn, "checkpoint_migrations"),
        "store": _migration_version(conn, "store_migrations"),
    }


SAVER_TABLES = ("checkpoints", "checkpoint_blobs", "checkpoint_writes", "store")


def estimate_rows(conn: psycopg.Connection) -> dict[str, int]:
    """Row estimates from the planner's statistics: free, unlike COUNT(*) on a big table."""
    rows = conn.execute(
        "SELECT c.relname, GREATEST(c.reltuples, 0)::bigint AS n FROM pg_class c "
        "WHERE c.relname = ANY(%s) AND c.relkind = 'r' AND c.relnamespace = current_schema()::regnamespace",
        (list(SAVER_TABLES),),
    ).fetchall()
    return {r["relname"]: r["n"] for r in rows}


INVALID_INDEXES_SQL = """
    SELECT ic.relname AS index_name FROM pg_index i
    JOIN pg_class ic ON ic.oid = i.indexrelid
    JOIN pg_class t ON t.oid = i.indrelid
    WHERE NOT i.indisvalid AND t.relname = ANY(%s) AND t.relnamespace = current_schema()::regnamespace
"""


def repair_invalid_indexes(conn: psycopg.Connection) -> list[str]:
    """Rebuild indexes an interrupted CREATE INDEX CONCURRENTLY left invalid.

    LangGraph's migrations use ``CREATE INDEX CONCURRENTLY IF NOT EXISTS``, which skips an
    invalid index left by a killed run, so without this the store would look current while
    its thread lookups scan whole tables.
    """
    from psycopg import sql

    rebuilt = []
    for row in conn.execute(INVALID_INDEXES_SQL, (list(SAVER_TABLES),)).fetchall():
        conn.execute(sql.SQL("REINDEX INDEX CONCURRENTLY {}").format(sql.Identifier(row["index_name"])))
        rebuilt.append(row["index_name"])
    return rebuilt


def count_rows(conn: psycopg.Connection) -> dict[str, int]:
    present = {
        r["table_name"]
        for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        )
    }
    counts = {}
    for table in ("checkpoints", "checkpoint_blobs", "checkpoint_writes", "store"):
        if table in present:
            counts[table] = conn.execute(f"SELECT COUNT(*) AS n FROM {table}").fetchone()["n"]
    return counts


def _take_setup_lock(conn: psycopg.Connection, dsn: str, timeout_s: float = SETUP_LOCK_WAIT_S) -> None:
    """Wait for the setup lock by polling, never by blocking.

    A blocked ``pg_advisory_lock`` call is an open transaction, and the lock holder's
    ``CREATE INDEX CONCURRENTLY`` waits for every open transaction to end: a deadlock.
    Short ``pg_try_advisory_lock`` calls leave nothing open between tries.
    """
    deadline = time.monotonic() + timeout_s
    while not conn.execute("SELECT pg_try_advisory_lock(%s) AS ok", (SETUP_LOCK_KEY,)).fetchone()["ok"]:
        if time.monotonic() > deadline:
            raise SetupFailed(
                f"another schema setup on {describe_dsn(dsn)} has held the lock for over {timeout_s:.0f}s.",
                hint="Wait for it to finish (or end its session), then run checkpoint_setup again.",
            )
        time.sleep(0.2)


def setup_postgres(dsn: str, *, include_store: bool = True, lock_timeout_s: float = 30) -> dict:
    """Run PostgresSaver.setup() (and PostgresStore.setup()) under an advisory lock.

    LangGraph's migrations are numbered and recorded in ``checkpoint_migrations`` /
    ``store_migrations``, so running this again applies nothing new. The lock keeps two
    concurrent setup runs from racing on the same migration number.
    """
    from langgraph.checkpoint.postgres import PostgresSaver
    from langgraph.store.postgres import PostgresStore

    where = describe_dsn(dsn)
    with postgres_connection(dsn) as conn:
        _take_setup_lock(conn, dsn)
        try:
            # Never queue for long behind the app's transactions: while an ALTER waits for its
            # lock, every app query on that table waits behind it.
            conn.execute(f"SET lock_timeout = '{int(lock_timeout_s * 1000)}ms'")
            before = schema_versions(conn)
            PostgresSaver(conn).setup()
            if include_store:
                PostgresStore(conn).setup()
            rebuilt = repair_invalid_indexes(conn)
            after = schema_versions(conn)
            rows = estimate_rows(conn)
            server = conn.execute("SHOW server_version").fetchone()["server_version"]
        except psycopg.errors.LockNotAvailable as exc:
            raise StoreBusy(f"schema setup on {where} waited {lock_timeout_s}s for a table lock held by the app.") from exc
        except psycopg.OperationalError as exc:
            raise StoreUnreachable(f"lost the connection to PostgreSQL at {where} during setup: {' '.join(str(exc).split())}.") from exc
        except psycopg.Error as exc:
            raise SetupFailed(f"schema setup failed on {where}: {' '.join(str(exc).split())}".rstrip(".") + ".") from exc
        finally:
            if not conn.closed:  # a dead session has released its advisory lock already
                try:
                    conn.execute("SELECT pg_advisory_unlock(%s)", (SETUP_LOCK_KEY,))
                except psycopg.Error:
                    pass
    changes = [f"rebuilt invalid index {name}" for name in rebuilt]
    for name, old in before.items():
        new = after[name]
        if new != old:
            changes.append(f"{name} migrations {'none' if old is None else old} -> {new}")
    return {
        "store": "postgres",
        "database": describe_dsn(dsn),
        "server_version": server,
        "schema_versions": after,
        "rows_estimate": rows,
        "changes": changes,
    }
