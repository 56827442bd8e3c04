"""Find the largest checkpoints already in a store, and how many are over a size limit.

``SizeGuardSaver`` stops new oversized checkpoints; this answers "what is already there",
read-only, on stores of a million checkpoints:

* SQLite keeps each checkpoint in one row, so its size is ``length(checkpoint) +
  length(metadata)``. SQLite reads a BLOB's length from the record header without loading
  the value, so the scan does not read the payloads.
* PostgreSQL keeps non-primitive channel values in ``checkpoint_blobs``, shared between the
  checkpoints of a thread, so a checkpoint's size is its own row (``pg_column_size`` of the
  JSONB columns: the stored, possibly compressed size, the only cheap one JSONB has) plus
  ``octet_length`` of every blob its ``channel_versions`` names (the raw bytes a reader
  loads, taken from the TOAST pointer without decompressing). Summing blobs for every
  checkpoint is a million JSONB reads and several million index probes, so the audit first
  bounds each thread from cheap aggregates (largest own row + largest blob per channel) and
  sizes checkpoints exactly only in threads whose bound can still reach the top N or the
  limit.
"""

from __future__ import annotations

import heapq
import sqlite3
from pathlib import Path

from include.checkpoint_core.errors import NotACheckpointStore, StoreUnreachable, UnsupportedSchema
from include.checkpoint_core.size_guard import DEFAULT_MAX_BYTES, human_bytes
from include.checkpoint_core.stores import StoreTarget

# Threads sized exactly per query on PostgreSQL: small at first, so a full top N stops the
# scan early, then larger, so a store without outliers is not sized in thousands of round trips.
FIRST_BATCH, MAX_BATCH = 50, 5000


def largest_checkpoints(target: StoreTarget, limit: int = 10, max_bytes: int = DEFAULT_MAX_BYTES) -> dict:
    """The ``limit`` largest checkpoints of a store and the count over ``max_bytes``; writes nothing."""
    if limit < 0 or max_bytes <= 0:
        raise ValueError("limit must be >= 0 and max_bytes > 0")
    if target.kind == "sqlite":
        largest, total, over = _sqlite(Path(target.location), limit, max_bytes)
    else:
        largest, total, over = _postgres(target.location, limit, max_bytes)
    return {
        "conn_id": target.name,
        "store": target.kind,
        "where": target.display,
        "max_bytes": max_bytes,
        "max_size": human_bytes(max_bytes),
        "checkpoints": total,
        "over_limit": over,
        "largest": [
            {"thread_id": t, "checkpoint_ns": ns, "checkpoint_id": cid, "bytes": n, "size": human_bytes(n)}
            for n, t, ns, cid in largest
        ],
    }


# --- SQLite -------------------------------------------------------------------------------

def _byte_length(column: str) -> str:
    # length() counts characters for TEXT; SqliteSaver writes BLOBs, but files in the wild vary.
    return (
        f"(CASE typeof({column}) WHEN 'text' THEN length(CAST({column} AS BLOB)) "
        f"ELSE COALESCE(length({column}), 0) END)"
    )


SQLITE_SIZE = f"{_byte_length('checkpoint')} + {_byte_length('metadata')}"


def _sqlite(path: Path, limit: int, max_bytes: int) -> tuple[list[tuple], int, int]:
    from include.checkpoint_core.sqlite_store import (
        SCHEMA_LEGACY,
        SCHEMA_NAMES,
        classify_sqlite_error,
        open_sqlite_readonly,
        read_schema,
    )

    with open_sqlite_readonly(path) as conn:
        schema = read_schema(conn, path)  # raises NotACheckpointStore when the tables are missing
        if schema.version == SCHEMA_LEGACY:
            raise UnsupportedSchema(f"{path} uses the {SCHEMA_NAMES[SCHEMA_LEGACY]}, which has no checkpoint ids.")
        try:
            total, over = conn.execute(
                f"SELECT COUNT(*), COALESCE(SUM(({SQLITE_SIZE}) > ?), 0) FROM checkpoints", (max_bytes,)
            ).fetchone()
            rows = conn.execute(
                f"SELECT {SQLITE_SIZE} AS bytes, thread_id, checkpoint_ns, checkpoint_id FROM checkpoints "
                "ORDER BY bytes DESC, thread_id, checkpoint_ns, checkpoint_id LIMIT ?",
                (limit,),
            ).fetchall()
        except sqlite3.Error as exc:
            raise classify_sqlite_error(exc, path, "reading") from exc
    return [tuple(r) for r in rows], total, over


# --- PostgreSQL ---------------------------------------------------------------------------

# One row per (thread, namespace): an upper bound of any of its checkpoints' size. A
# checkpoint names at most one version per channel, so the sum of each channel's largest
# blob bounds its blob bytes. Both aggregates read only row headers and TOAST pointers.
PG_THREAD_BOUNDS_SQL = """
    WITH own AS (
        SELECT thread_id, checkpoint_ns, COUNT(*) AS n,
               MAX(pg_column_size(checkpoint) + COALESCE(pg_column_size(metadata), 0)) AS own_max
        FROM checkpoints GROUP BY thread_id, checkpoint_ns
    ), blob AS (
        SELECT thread_id, checkpoint_ns, SUM(channel_max) AS blob_max
        FROM (SELECT thread_id, checkpoint_ns, channel, MAX(octet_length(blob)) AS channel_max
              FROM checkpoint_blobs GROUP BY thread_id, checkpoint_ns, channel) per_channel
        GROUP BY thread_id, checkpoint_ns
    )
    SELECT o.thread_id, o.checkpoint_ns, o.own_max + COALESCE(b.blob_max, 0) AS bound,
           SUM(o.n) OVER () AS total
    FROM own o LEFT JOIN blob b USING (thread_id, checkpoint_ns)
    ORDER BY bound DESC, o.thread_id, o.checkpoint_ns
"""

# Exact sizes of every checkpoint in a batch of threads: own row plus the blobs it names,
# found by the blobs' primary key (thread_id, checkpoint_ns, channel, version).
PG_EXACT_SIZES_SQL = """
    SELECT pg_column_size(c.checkpoint) + COALESCE(pg_column_size(c.metadata), 0)
           + COALESCE(refs.blob_bytes, 0) AS bytes,
           c.thread_id, c.checkpoint_ns, c.checkpoint_id
    FROM unnest(%(threads)s::text[], %(namespaces)s::text[]) AS t(thread_id, checkpoint_ns)
    JOIN checkpoints c ON c.thread_id = t.thread_id AND c.checkpoint_ns = t.checkpoint_ns
    CROSS JOIN LATERAL (
        SELECT SUM(octet_length(b.blob)) AS blob_bytes
        FROM jsonb_each_text(c.checkpoint -> 'channel_versions') AS v(channel, version)
        JOIN checkpoint_blobs b ON b.thread_id = c.thread_id AND b.checkpoint_ns = c.checkpoint_ns
             AND b.channel = v.channel AND b.version = v.version
    ) refs
"""

PG_NOT_A_STORE_HINT = (
    "Point the connection at the database the app's PostgresSaver writes to, or create the tables "
    "first with the checkpoint_setup DAG."
)


def _postgres(dsn: str, limit: int, max_bytes: int) -> tuple[list[tuple], int, int]:
    import psycopg

    from include.checkpoint_core.postgres_store import connect_postgres, describe_dsn

    where = describe_dsn(dsn)
    top: list[tuple] = []  # min-heap of (bytes, thread_id, checkpoint_ns, checkpoint_id)
    over = total = 0
    conn = connect_postgres(dsn)
    try:
        # One snapshot for the bounds and the exact sizes, and no way to write by accident.
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            # Compiling these one-off aggregates costs more than it saves (seconds on 1M rows).
            conn.execute("SET LOCAL jit = off")
            present = conn.execute(
                "SELECT to_regclass('checkpoints') IS NOT NULL AS c, to_regclass('checkpoint_blobs') IS NOT NULL AS b"
            ).fetchone()
            if not (present["c"] and present["b"]):
                raise NotACheckpointStore(
                    f"PostgreSQL at {where} has no LangGraph checkpoint tables (checkpoints, checkpoint_blobs) "
                    "in its search_path.",
                    hint=PG_NOT_A_STORE_HINT,
                )
            batch: list[tuple[str, str]] = []
            batch_size = FIRST_BATCH
            # A server-side cursor: the bounds arrive in order and reading stops early.
            with conn.cursor(name="checkpoint_size_bounds") as bounds:
                bounds.execute(PG_THREAD_BOUNDS_SQL)
                for row in bounds:
                    total = int(row["total"])
                    if not _may_matter(int(row["bound"]), top, limit, max_bytes):
                        break
                    batch.append((row["thread_id"], row["checkpoint_ns"]))
                    if len(batch) >= batch_size:
                        over += _size_batch(conn, batch, top, limit, max_bytes)
                        batch, batch_size = [], min(batch_size * 2, MAX_BATCH)
            if batch:
                over += _size_batch(conn, batch, top, limit, max_bytes)
    except psycopg.OperationalError as exc:
        raise StoreUnreachable(f"lost the connection to PostgreSQL at {where}: {' '.join(str(exc).split())}.") from exc
    finally:
        conn.close()
    return sorted(top, key=lambda r: (-r[0], r[1], r[2], r[3])), total, over


def _may_matter(bound: int, top: list[tuple], limit: int, max_bytes: int) -> bool:
    """Whether a thread whose checkpoints are at most ``bound`` bytes can change the report."""
    return bound > max_bytes or len(top) < limit or (limit > 0 and bound > top[0][0])


def _size_batch(conn, batch: list[tuple[str, str]], top: list[tuple], limit: int, max_bytes: int) -> int:
    rows = conn.execute(
        PG_EXACT_SIZES_SQL, {"threads": [t for t, _ in batch], "namespaces": [ns for _, ns in batch]}
    ).fetchall()
    over = 0
    for row in rows:
        item = (int(row["bytes"]), row["thread_id"], row["checkpoint_ns"], row["checkpoint_id"])
        over += item[0] > max_bytes
        if limit == 0:
            continue
        if len(top) < limit:
            heapq.heappush(top, item)
        elif item[0] > top[0][0]:
            heapq.heapreplace(top, item)
    return over
