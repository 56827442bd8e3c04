"""Where each thread lives during a blue-green cutover, and the guards that make it true.

The routing state is two tables in the green (PostgreSQL) database, which every app process
sees: ``checkpoint_ops_cutover`` (one row: the blue source, the weight, the phase) and
``checkpoint_ops_routes`` (one row per thread: its store, and a move in flight with its lease).
A thread's bucket is a stable hash of its id (0-99); a new thread goes green when its bucket is
below the weight at the moment it is registered.

Caches can be stale, so the stores themselves refuse writes that the routing does not allow:
- green: a row trigger on PostgresSaver's three tables refuses a row of a thread that is not
  routed green with no move in flight (SQLSTATE ``CKR01``); the mover's own session says so
  with ``SET LOCAL checkpoint_ops.mover = 'on'``;
- blue: SQLite triggers on SqliteSaver's two tables refuse a row of a thread fenced in
  ``checkpoint_ops_cutover_fence`` (or of any thread once the fence holds ``'*'``).
So no store ever accepts a write for a thread that has left it, whatever an app process caches.
"""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass

import psycopg
from psycopg.rows import tuple_row

BUCKETS = 100
REFUSED_SQLSTATE = "CKR01"
REFUSED_PREFIX = "checkpoint_ops: thread"
GLOBAL_FENCE = "*"
GREEN_TABLES = ("checkpoints", "checkpoint_blobs", "checkpoint_writes")
BLUE_TABLES = ("checkpoints", "writes")


def bucket(thread_id: str) -> int:
    """0-99, the same in every process and release (blake2b of the id, not Python's hash())."""
    return int.from_bytes(hashlib.blake2b(str(thread_id).encode(), digest_size=8).digest(), "big") % BUCKETS


@dataclass(frozen=True)
class Route:
    thread_id: str
    store: str  # blue | green
    moving_to: str | None = None
    move_id: str | None = None
    generation: int = 0
    expired: bool = False  # the move's lease has run out (by the database's clock)


@dataclass(frozen=True)
class State:
    cutover_id: str
    blue: str
    weight: int
    phase: str  # ramping | complete | rolled_back


# ---- green (PostgreSQL) -------------------------------------------------------------------

GREEN_DDL = (
    """CREATE TABLE IF NOT EXISTS checkpoint_ops_cutover (
        id boolean PRIMARY KEY DEFAULT true CHECK (id),
        cutover_id text NOT NULL,
        blue text NOT NULL,
        weight integer NOT NULL DEFAULT 0 CHECK (weight BETWEEN 0 AND 100),
        phase text NOT NULL DEFAULT 'ramping' CHECK (phase IN ('ramping', 'complete', 'rolled_back')),
        updated_at timestamptz NOT NULL DEFAULT now()
    )""",
    """CREATE TABLE IF NOT EXISTS checkpoint_ops_routes (
        thread_id text PRIMARY KEY,
        bucket smallint NOT NULL,
        store text NOT NULL CHECK (store IN ('blue', 'green')),
        moving_to text CHECK (moving_to IN ('blue', 'green')),
        move_id text,
        lease_until timestamptz,
        generation integer NOT NULL DEFAULT 0,
        moved_at timestamptz
    )""",
    "CREATE INDEX IF NOT EXISTS checkpoint_ops_routes_store_bucket ON checkpoint_ops_routes (store, bucket)",
    "CREATE INDEX IF NOT EXISTS checkpoint_ops_routes_moving ON checkpoint_ops_routes (move_id) WHERE moving_to IS NOT NULL",
    f"""CREATE OR REPLACE FUNCTION checkpoint_ops_route_guard() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE tid text;
    BEGIN
        IF current_setting('checkpoint_ops.mover', true) = 'on' THEN
            RETURN COALESCE(NEW, OLD);
        END IF;
        IF TG_OP = 'DELETE' THEN tid := OLD.thread_id; ELSE tid := NEW.thread_id; END IF;
        PERFORM 1 FROM checkpoint_ops_routes WHERE thread_id = tid AND store = 'green' AND moving_to IS NULL;
        IF NOT FOUND THEN
            RAISE EXCEPTION '{REFUSED_PREFIX} % is not routed to PostgreSQL', tid
                USING ERRCODE = '{REFUSED_SQLSTATE}',
                      HINT = 'a blue-green cutover is in progress: write through RoutingSaver';
        END IF;
        RETURN COALESCE(NEW, OLD);
    END $$""",
)
GUARD_TRIGGER = ("CREATE OR REPLACE TRIGGER checkpoint_ops_route_guard BEFORE INSERT OR UPDATE OR DELETE ON {table} "
                 "FOR EACH ROW EXECUTE FUNCTION checkpoint_ops_route_guard()")
DROP_GUARD = "DROP TRIGGER IF EXISTS checkpoint_ops_route_guard ON {table}"

_ROUTE_COLUMNS = "thread_id, store, moving_to, move_id, generation, coalesce(lease_until < now(), false)"
LOOKUP_SQL = f"SELECT {_ROUTE_COLUMNS} FROM checkpoint_ops_routes WHERE thread_id = %s"
LOCK_SQL = f"SELECT {_ROUTE_COLUMNS} FROM checkpoint_ops_routes WHERE thread_id = %s FOR UPDATE"
# One statement: the weight is read under a share lock, so a weight change waits for this
# registration to commit, and the flip that follows sees the thread.
REGISTER_SQL = f"""
    WITH w AS (SELECT weight, phase FROM checkpoint_ops_cutover FOR SHARE),
    ins AS (
        INSERT INTO checkpoint_ops_routes (thread_id, bucket, store)
        SELECT %(tid)s, %(bucket)s,
               CASE WHEN %(in_blue)s THEN 'blue' WHEN w.phase = 'complete' OR %(bucket)s < w.weight THEN 'green'
                    ELSE 'blue' END
        FROM w
        ON CONFLICT (thread_id) DO NOTHING
        RETURNING {_ROUTE_COLUMNS.replace('coalesce(lease_until < now(), false)', 'false')}
    )
    SELECT * FROM ins
    UNION ALL
    SELECT {_ROUTE_COLUMNS} FROM checkpoint_ops_routes WHERE thread_id = %(tid)s AND NOT EXISTS (SELECT 1 FROM ins)
"""


def _route(row) -> Route:
    return Route(row[0], row[1], row[2], row[3], row[4], bool(row[5]))


def green_installed(conn: psycopg.Connection) -> bool:
    cur = conn.cursor(row_factory=tuple_row)
    cur.execute("SELECT to_regclass('checkpoint_ops_cutover') IS NOT NULL")
    return bool(cur.fetchone()[0])


def ensure_green(conn: psycopg.Connection, cutover_id: str, blue: str) -> State:
    """The routing tables and guard triggers, and the state row for this blue source.
    Raises ``ConflictingCutover`` when the state row names another source."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('checkpoint_ops_cutover'))")
        for ddl in GREEN_DDL:
            conn.execute(ddl)
        conn.execute("INSERT INTO checkpoint_ops_cutover (cutover_id, blue) VALUES (%s, %s) ON CONFLICT (id) DO NOTHING",
                     (cutover_id, blue))
        st = state(conn)
        if st.blue != blue:
            raise ConflictingCutover(
                f"the target's routing state belongs to another source ({st.blue!r}, cutover {st.cutover_id}), "
                f"not {blue!r}. Finish or roll back that cutover first, or point this run at its source; "
                "nothing was changed")
        install_guards(conn)
    return st


# The order PostgresSaver's put takes them in (blobs, then the checkpoint; writes on their own): a trigger
# change locks the tables in that order too, so it waits for an app's write instead of deadlocking with it.
LOCK_ORDER = "LOCK TABLE checkpoint_blobs, checkpoints, checkpoint_writes IN SHARE ROW EXCLUSIVE MODE"


def install_guards(conn: psycopg.Connection) -> None:
    """In the caller's transaction."""
    conn.execute(LOCK_ORDER)
    for table in GREEN_TABLES:
        conn.execute(GUARD_TRIGGER.format(table=table))


def drop_guards(conn: psycopg.Connection) -> None:
    """In the caller's transaction."""
    conn.execute(LOCK_ORDER)
    for table in GREEN_TABLES:
        conn.execute(DROP_GUARD.format(table=table))


def state(conn: psycopg.Connection) -> State | None:
    cur = conn.cursor(row_factory=tuple_row)
    cur.execute("SELECT cutover_id, blue, weight, phase FROM checkpoint_ops_cutover")
    row = cur.fetchone()
    return State(*row) if row else None


def set_weight(conn: psycopg.Connection, weight: int, phase: str = "ramping") -> None:
    """Commits at once: from here on, new threads register by the new weight."""
    with conn.transaction():
        conn.execute("UPDATE checkpoint_ops_cutover SET weight = %s, phase = %s, updated_at = now()", (weight, phase))


def lookup(conn: psycopg.Connection, thread_id: str) -> Route | None:
    cur = conn.cursor(row_factory=tuple_row)
    cur.execute(LOOKUP_SQL, (thread_id,))
    row = cur.fetchone()
    return _route(row) if row else None


def register(conn: psycopg.Connection, thread_id: str, *, in_blue: bool) -> Route:
    """The thread's route, registering it first if it has none (a thread with rows in blue stays blue)."""
    cur = conn.cursor(row_factory=tuple_row)
    cur.execute(REGISTER_SQL, {"tid": thread_id, "bucket": bucket(thread_id), "in_blue": in_blue})
    row = cur.fetchone()
    if row is None:
        # A concurrent registration (the DAG enrolling the thread) won the insert after this statement's
        # snapshot was taken: a new statement sees it.
        found = lookup(conn, thread_id)
        if found is None:
            raise CutoverNotPrepared("the target has no cutover state row: run checkpoint_cutover's prepare step")
        return found
    return _route(row)


def enroll(conn: psycopg.Connection, thread_ids: list[str]) -> int:
    """Register threads that have rows in blue as blue (those already registered are left alone).
    Returns how many were new. In the caller's transaction."""
    if not thread_ids:
        return 0
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS cpo_enroll (thread_id text, bucket smallint) ON COMMIT DELETE ROWS")
    with conn.cursor() as cur:
        with cur.copy("COPY cpo_enroll (thread_id, bucket) FROM STDIN") as copy:
            for tid in thread_ids:
                copy.write_row((tid, bucket(tid)))
        cur.execute("INSERT INTO checkpoint_ops_routes (thread_id, bucket, store) "
                    "SELECT DISTINCT thread_id, bucket, 'blue' FROM cpo_enroll ON CONFLICT (thread_id) DO NOTHING")
        return cur.rowcount


def all_routes(conn: psycopg.Connection) -> dict[str, str]:
    cur = conn.cursor(row_factory=tuple_row)
    cur.execute("SELECT thread_id, store FROM checkpoint_ops_routes")
    return dict(cur.fetchall())


def counts(conn: psycopg.Connection) -> dict[str, int]:
    cur = conn.cursor(row_factory=tuple_row)
    cur.execute("SELECT store, count(*), count(*) FILTER (WHERE moving_to IS NOT NULL) FROM checkpoint_ops_routes "
                "GROUP BY store")
    out = {"blue": 0, "green": 0, "moving": 0}
    for store, n, moving in cur:
        out[store] = n
        out["moving"] += moving
    return out


# ---- blue (SQLite) ------------------------------------------------------------------------

BLUE_DDL = [
    """CREATE TABLE IF NOT EXISTS checkpoint_ops_cutover_fence (
        thread_id TEXT PRIMARY KEY,
        state TEXT NOT NULL CHECK (state IN ('fenced', 'returned')),
        move_id TEXT NOT NULL,
        at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
    )""",
]
for _table in BLUE_TABLES:
    for _op, _ref in (("INSERT", "NEW"), ("UPDATE", "NEW"), ("DELETE", "OLD")):
        BLUE_DDL.append(
            f"""CREATE TRIGGER IF NOT EXISTS checkpoint_ops_fence_{_table}_{_op.lower()} BEFORE {_op} ON {_table}
            WHEN EXISTS (SELECT 1 FROM checkpoint_ops_cutover_fence
                         WHERE thread_id IN ({_ref}.thread_id, '{GLOBAL_FENCE}') AND state = 'fenced')
            BEGIN SELECT RAISE(ABORT, '{REFUSED_PREFIX} has moved to PostgreSQL'); END""")
BLUE_TRIGGERS = [f"checkpoint_ops_fence_{t}_{op}" for t in BLUE_TABLES for op in ("insert", "update", "delete")]


def ensure_blue(conn: sqlite3.Connection) -> None:
    with conn:
        conn.execute("BEGIN IMMEDIATE")
        for ddl in BLUE_DDL:
            conn.execute(ddl)


def drop_blue_guards(conn: sqlite3.Connection) -> None:
    with conn:
        conn.execute("BEGIN IMMEDIATE")
        for name in BLUE_TRIGGERS:
            conn.execute(f"DROP TRIGGER IF EXISTS {name}")


def blue_installed(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'checkpoint_ops_cutover_fence'").fetchone() is not None


def fence_of(conn: sqlite3.Connection, thread_id: str) -> tuple[str, str] | None:
    """(state, move_id) of the thread's own fence row, if any."""
    try:
        row = conn.execute("SELECT state, move_id FROM checkpoint_ops_cutover_fence WHERE thread_id = ?",
                           (thread_id,)).fetchone()
    except sqlite3.OperationalError:  # no fence table: the cutover has not touched this file
        return None
    return (row[0], row[1]) if row else None


def fence(conn: sqlite3.Connection, thread_ids: list[str], move_id: str, state: str = "fenced") -> None:
    """In the caller's transaction."""
    conn.executemany("INSERT OR REPLACE INTO checkpoint_ops_cutover_fence (thread_id, state, move_id) VALUES (?, ?, ?)",
                     [(t, state, move_id) for t in thread_ids])


def unfence(conn: sqlite3.Connection, thread_id: str, move_id: str) -> int:
    """Drop a fence this move set (and no later one). Commits."""
    with conn:
        cur = conn.execute("DELETE FROM checkpoint_ops_cutover_fence WHERE thread_id = ? AND move_id = ? "
                           "AND state = 'fenced'", (thread_id, move_id))
    return cur.rowcount


def blue_has_rows(conn: sqlite3.Connection, thread_id: str) -> bool:
    return conn.execute("SELECT EXISTS (SELECT 1 FROM checkpoints WHERE thread_id = ?) "
                        "OR EXISTS (SELECT 1 FROM writes WHERE thread_id = ?)", (thread_id, thread_id)).fetchone()[0] == 1


def is_refusal(exc: BaseException) -> bool:
    """A write one of the guards refused (the thread is not routed to that store)."""
    if isinstance(exc, sqlite3.IntegrityError):
        return str(exc).startswith(REFUSED_PREFIX)
    return isinstance(exc, psycopg.Error) and getattr(exc, "sqlstate", None) == REFUSED_SQLSTATE


class CutoverError(RuntimeError):
    """A cutover cannot go on; the message says why and what to do. Nothing was changed."""


class ConflictingCutover(CutoverError):
    pass


class CutoverNotPrepared(CutoverError):
    pass
