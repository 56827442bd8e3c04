"""Row counts and content checksums of a store's tables, the same on the source and the restore.

A table's checksum is order-independent: the sums of every row's md5 (as two 64-bit halves).
So PostgreSQL computes it in one sequential scan, with no sort, no 1 GB ``string_agg`` limit
and nothing but three numbers sent back; and collation or physical order cannot make an
identical restore look different. Rows are read as their text form under pinned session
settings (UTC, hex bytea, ISO dates), which pg_dump/pg_restore reproduce exactly.
"""

from __future__ import annotations

import hashlib
import sqlite3

import psycopg
from psycopg import sql
from psycopg.rows import tuple_row

CANARY_TABLE = "checkpoint_ops_canary"
# What PostgresSaver, PostgresStore and checkpoint-ops create; other app tables are left out
# of the checksums (pg_dump still copies them) so the cost follows the checkpoint data.
PG_TABLES = (
    "checkpoints", "checkpoint_blobs", "checkpoint_writes", "checkpoint_migrations",
    "store", "store_migrations", "store_vectors", "vector_migrations", CANARY_TABLE,
)
SQLITE_TABLES = ("checkpoints", "writes", "store", "store_migrations")
# Output settings the text form of a row depends on.
PG_SESSION = {"TimeZone": "UTC", "DateStyle": "ISO, YMD", "IntervalStyle": "postgres",
              "bytea_output": "hex", "extra_float_digits": "1"}

_MASK = (1 << 64) - 1


def pin_session(conn: psycopg.Connection) -> None:
    for name, value in PG_SESSION.items():
        conn.execute("SELECT set_config(%s, %s, false)", (name, value))


def pg_tables(conn: psycopg.Connection) -> list[str]:
    rows = conn.execute(
        "SELECT c.relname FROM pg_class c WHERE c.relkind IN ('r', 'p') "
        "AND c.relnamespace = current_schema()::regnamespace AND c.relname = ANY(%s)",
        (list(PG_TABLES),),
    ).fetchall()
    present = {r[0] if isinstance(r, tuple) else r["relname"] for r in rows}
    return [t for t in PG_TABLES if t in present]


def _fold(count: int, a: int, b: int) -> str:
    return hashlib.sha256(f"{count}:{a & _MASK:016x}:{b & _MASK:016x}".encode()).hexdigest()


def pg_table_digests(conn: psycopg.Connection, tables: list[str] | None = None) -> tuple[dict[str, int], dict[str, str]]:
    """(row counts, checksums) of the checkpoint tables in ``conn``'s current snapshot."""
    pin_session(conn)
    counts, sums = {}, {}
    with conn.cursor(row_factory=tuple_row) as cur:
        for table in tables if tables is not None else pg_tables(conn):
            cur.execute(sql.SQL(
                "SELECT count(*), coalesce(sum(('x' || substr(h, 1, 16))::bit(64)::bigint::numeric), 0), "
                "coalesce(sum(('x' || substr(h, 17, 16))::bit(64)::bigint::numeric), 0) "
                "FROM (SELECT md5(t::text) AS h FROM {} AS t) AS rows"
            ).format(sql.Identifier(table)))
            n, a, b = cur.fetchone()
            counts[table], sums[table] = int(n), _fold(int(n), int(a), int(b))
    return counts, sums


def _row_md5(row: tuple) -> bytes:
    h = hashlib.md5()
    for value in row:
        if value is None:
            h.update(b"N;")
            continue
        if isinstance(value, bytes):
            tag, data = b"B", value
        elif isinstance(value, str):
            tag, data = b"S", value.encode("utf-8", "surrogatepass")
        else:  # int or float: repr is exact and stable
            tag, data = (b"I" if isinstance(value, int) else b"F"), repr(value).encode()
        h.update(tag + str(len(data)).encode() + b":" + data)
    return h.digest()


def sqlite_tables(conn: sqlite3.Connection) -> list[str]:
    present = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    return [t for t in SQLITE_TABLES if t in present]


def sqlite_table_digests(conn: sqlite3.Connection, tables: list[str] | None = None) -> tuple[dict[str, int], dict[str, str]]:
    """(row counts, checksums) of a (static) SQLite file, streamed a row at a time."""
    counts, sums = {}, {}
    for table in tables if tables is not None else sqlite_tables(conn):
        n = a = b = 0
        for row in conn.execute(f'SELECT * FROM "{table}"'):  # names come from SQLITE_TABLES
            digest = _row_md5(row)
            n += 1
            a += int.from_bytes(digest[:8], "big")
            b += int.from_bytes(digest[8:], "big")
        counts[table], sums[table] = n, _fold(n, a, b)
    return counts, sums
