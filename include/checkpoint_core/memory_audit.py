"""The hybrid-memory audit: is state split well between checkpoints and the Store?

Checkpoints are reloaded on every turn and copied by every lifecycle job, so they should hold
the conversation's working state only; facts that outlive a thread belong in the LangGraph
Store, and bulky values in object storage (``OffloadSerializer``). This reads a store and says,
with numbers, where that split is off:

* the size of each thread's latest root checkpoint (p50/p95/max), the threads over
  ``oversized_bytes`` (10 KiB) and the channels that make them big. Sizes are what a reader
  loads: SQLite's row bytes; on PostgreSQL the row's JSONB as text plus the blobs it names
  (``size_audit`` counts the stored, compressed JSONB instead, which is what the disk holds);
* the Store's items, bytes, vectors and TTL coverage per namespace prefix.

It streams: SQLite rows come one at a time off the cursor, PostgreSQL rows through server-side
cursors, and what stays in memory is one integer per thread (for exact percentiles), the
``list_limit`` largest oversized threads and one counter per namespace group. Read-only.
"""

from __future__ import annotations

import heapq
import math
import sqlite3
from array import array
from pathlib import Path
from typing import Any, Iterator

from include.checkpoint_core.errors import NotACheckpointStore, StoreUnreachable, UnsupportedSchema
from include.checkpoint_core.size_guard import human_bytes
from include.checkpoint_core.stores import StoreTarget

DEFAULT_OVERSIZED_BYTES = 10 * 1024
DEFAULT_ALERT_SHARE_PCT = 5.0
FETCH_ROWS = 2000  # rows per round trip of a server-side cursor
STORE_COLUMNS = {"prefix", "key", "value"}
TTL_COLUMNS = {"expires_at", "ttl_minutes"}
# Channels whose bulk is conversation history: the fix is to trim it and keep facts in the Store.
HISTORY_CHANNELS = {"messages"}

OLD_STORE_HINT = (
    "The store table predates TTL support (no expires_at, ttl_minutes: the store migrations that add them have "
    "not run), so TTL coverage is not measured: run checkpoint_setup (or the app's store.setup()) to add them."
)


def audit_memory(target: StoreTarget, *, oversized_bytes: int = DEFAULT_OVERSIZED_BYTES,
                 alert_share_pct: float = DEFAULT_ALERT_SHARE_PCT, namespace_depth: int = 1,
                 list_limit: int = 20) -> dict[str, Any]:
    """Measure one store's checkpoints and Store; return the report (XCom-safe, no credentials)."""
    if oversized_bytes <= 0 or not 0 <= alert_share_pct <= 100 or namespace_depth < 1 or list_limit < 0:
        raise ValueError("oversized_bytes must be > 0, alert_share_pct within 0-100, namespace_depth >= 1 "
                         "and list_limit >= 0")
    acc = _Checkpoints(oversized_bytes, list_limit)
    groups = _Groups(namespace_depth)
    if target.kind == "sqlite":
        store_layout = _sqlite(Path(target.location), acc, groups)
    else:
        store_layout = _postgres(target.location, acc, groups, oversized_bytes)
    checkpoints = acc.report()
    store = groups.report(store_layout)
    report = {
        "conn_id": target.name, "store": target.kind, "where": target.display,
        "oversized_bytes": oversized_bytes, "oversized_size": human_bytes(oversized_bytes),
        "alert_share_pct": alert_share_pct, "namespace_depth": namespace_depth,
        "checkpoints": checkpoints, "store_items": store,
    }
    report["recommendations"] = recommendations(report)
    share = checkpoints["oversized_share_pct"]
    report["alert"] = checkpoints["threads"] > 0 and share > alert_share_pct
    report["alert_message"] = (
        f"{checkpoints['oversized_threads']} of {checkpoints['threads']} threads ({share:.1f}%) have a latest "
        f"checkpoint over {human_bytes(oversized_bytes)}, above the {alert_share_pct:g}% threshold"
        if report["alert"] else None)
    return report


def percentile(sorted_values, q: float) -> int:
    """Nearest-rank percentile of an ascending sequence (0 when it is empty)."""
    if not sorted_values:
        return 0
    return int(sorted_values[max(0, math.ceil(q / 100 * len(sorted_values)) - 1)])


def namespace_group(prefix: str, depth: int) -> str:
    """The first ``depth`` labels of a stored prefix (labels never contain '.', LangGraph refuses them)."""
    return ".".join(prefix.split(".")[:depth])


class _Checkpoints:
    def __init__(self, oversized_bytes: int, list_limit: int) -> None:
        self.limit, self.list_limit = oversized_bytes, list_limit
        self.sizes = array("q")
        self.total = 0
        self.oversized = 0
        self.top: list[tuple] = []  # min-heap of (bytes, thread_id, checkpoint_id, channels)
        self.channels: dict[str, list[int]] = {}  # channel -> [oversized threads it is in, bytes]
        self.undecoded = 0

    def wants_channels(self, size: int) -> bool:
        return size > self.limit

    def add(self, thread_id: str, checkpoint_id: str, size: int, channels: dict[str, int] | None = None) -> None:
        self.sizes.append(size)
        self.total += size
        if size <= self.limit:
            return
        self.oversized += 1
        if channels is None:
            self.undecoded += 1
            channels = {}
        for name, n in channels.items():
            c = self.channels.setdefault(name, [0, 0])
            c[0] += 1
            c[1] += n
        if self.list_limit == 0:
            return
        top3 = dict(sorted(channels.items(), key=lambda kv: (-kv[1], kv[0]))[:3])
        item = (size, thread_id, checkpoint_id, top3)
        if len(self.top) < self.list_limit:
            heapq.heappush(self.top, item)
        elif item[:2] > self.top[0][:2]:
            heapq.heapreplace(self.top, item)

    def report(self) -> dict[str, Any]:
        ordered = sorted(self.sizes)
        n = len(ordered)
        over_bytes = sum(c[1] for c in self.channels.values()) or 1
        return {
            "threads": n, "total_bytes": self.total,
            "p50_bytes": percentile(ordered, 50), "p95_bytes": percentile(ordered, 95),
            "max_bytes": int(ordered[-1]) if n else 0,
            "oversized_threads": self.oversized,
            "oversized_share_pct": round(100 * self.oversized / n, 2) if n else 0.0,
            "oversized": [
                {"thread_id": t, "checkpoint_id": cid, "bytes": b, "size": human_bytes(b), "largest_channels": ch}
                for b, t, cid, ch in sorted(self.top, key=lambda r: (-r[0], r[1]))
            ],
            "oversized_channels": [
                {"channel": name, "threads": c[0], "bytes": c[1], "share_pct": round(100 * c[1] / over_bytes, 1)}
                for name, c in sorted(self.channels.items(), key=lambda kv: (-kv[1][1], kv[0]))
            ],
            "undecoded_oversized": self.undecoded,
        }


class _Groups:
    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.groups: dict[str, dict[str, int]] = {}

    def _get(self, prefix: str) -> dict[str, int]:
        key = namespace_group(prefix, self.depth)
        g = self.groups.get(key)
        if g is None:
            g = self.groups[key] = {"items": 0, "bytes": 0, "with_ttl": 0, "expired": 0, "vectors": 0}
        return g

    def add_item(self, prefix: str, size: int, has_ttl: bool, expired: bool) -> None:
        g = self._get(prefix)
        g["items"] += 1
        g["bytes"] += size
        g["with_ttl"] += bool(has_ttl)
        g["expired"] += bool(expired)

    def add_vectors(self, prefix: str, n: int) -> None:
        self._get(prefix)["vectors"] += n

    def report(self, layout: dict[str, Any]) -> dict[str, Any]:
        rows = [{"namespace": k, **g, "ttl_coverage_pct": round(100 * g["with_ttl"] / g["items"], 1) if g["items"] else 0.0}
                for k, g in sorted(self.groups.items(), key=lambda kv: (-kv[1]["bytes"], kv[0]))]
        items = sum(r["items"] for r in rows)
        with_ttl = sum(r["with_ttl"] for r in rows)
        return {
            **layout, "items": items, "bytes": sum(r["bytes"] for r in rows), "with_ttl": with_ttl,
            "expired": sum(r["expired"] for r in rows), "vectors": sum(r["vectors"] for r in rows),
            "ttl_coverage_pct": round(100 * with_ttl / items, 1) if items else 0.0, "namespaces": rows,
        }


# --- channel sizes of a SQLite checkpoint ----------------------------------------------------

def msgpack_channel_sizes(blob: bytes) -> dict[str, int] | None:
    """Bytes each channel value takes inside a msgpack checkpoint, without building any object
    (extension types stay opaque bytes, so no class of the app is imported or instantiated)."""
    import ormsgpack

    try:
        doc = ormsgpack.unpackb(blob, ext_hook=lambda tag, data: ormsgpack.Ext(tag, data))
        values = doc.get("channel_values") if isinstance(doc, dict) else None
        if not isinstance(values, dict):
            return None
        return {str(k): len(ormsgpack.packb(v)) for k, v in values.items()}
    except (ormsgpack.MsgpackDecodeError, TypeError, ValueError):
        return None


# --- SQLite -----------------------------------------------------------------------------------

def _byte_length(column: str) -> str:
    return (f"(CASE typeof({column}) WHEN 'text' THEN length(CAST({column} AS BLOB)) "
            f"ELSE COALESCE(length({column}), 0) END)")


SQLITE_LATEST_SQL = f"""
    WITH latest AS (SELECT thread_id, MAX(checkpoint_id) AS checkpoint_id FROM checkpoints
                    WHERE checkpoint_ns = '' GROUP BY thread_id)
    SELECT c.thread_id, c.checkpoint_id, c.type, {_byte_length('c.checkpoint')} + {_byte_length('c.metadata')} AS bytes
    FROM latest JOIN checkpoints c
      ON c.thread_id = latest.thread_id AND c.checkpoint_ns = '' AND c.checkpoint_id = latest.checkpoint_id
"""


def _sqlite(path: Path, acc: _Checkpoints, groups: _Groups) -> dict[str, Any]:
    from include.checkpoint_core.sqlite_store import (
        SCHEMA_LEGACY, SCHEMA_NAMES, classify_sqlite_error, open_sqlite_readonly, read_schema,
    )

    with open_sqlite_readonly(path) as conn:
        schema = read_schema(conn, path)
        if schema.version == SCHEMA_LEGACY:
            raise UnsupportedSchema(f"{path} uses the {SCHEMA_NAMES[SCHEMA_LEGACY]}, which has no checkpoint ids.")
        try:
            for thread_id, checkpoint_id, type_, size in conn.execute(SQLITE_LATEST_SQL):
                channels = None
                if acc.wants_channels(size) and type_ == "msgpack":
                    blob = conn.execute(
                        "SELECT checkpoint FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = '' "
                        "AND checkpoint_id = ?", (thread_id, checkpoint_id)).fetchone()[0]
                    channels = msgpack_channel_sizes(bytes(blob))
                acc.add(thread_id, checkpoint_id, size, channels)
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "store" not in tables:
                return {"present": False}
            columns = {r[1] for r in conn.execute("PRAGMA table_info('store')")}
            layout = _store_layout(columns, f"{path}'s store table")
            ttl = layout["ttl"]
            sql = (f"SELECT prefix, {_byte_length('value')}, "
                   + ("expires_at IS NOT NULL, COALESCE(expires_at < CURRENT_TIMESTAMP, 0)" if ttl else "0, 0")
                   + " FROM store")
            for prefix, size, has_ttl, expired in conn.execute(sql):
                groups.add_item(prefix, size, has_ttl, expired)
            if "store_vectors" in tables:
                for prefix, n in conn.execute("SELECT prefix, COUNT(*) FROM store_vectors GROUP BY prefix"):
                    groups.add_vectors(prefix, n)
        except sqlite3.Error as exc:
            raise classify_sqlite_error(exc, path, "reading") from exc
    return layout


def _store_layout(columns: set[str], what: str) -> dict[str, Any]:
    missing = STORE_COLUMNS - columns
    if missing:
        raise UnsupportedSchema(
            f"{what} lacks {', '.join(sorted(missing))}: it is not a LangGraph Store table.",
            hint="Rename the app's own table, or point the connection at the store the app's SqliteStore/"
            "PostgresStore writes to.")
    ttl = TTL_COLUMNS <= columns
    return {"present": True, "ttl": ttl, "note": None if ttl else OLD_STORE_HINT}


# --- PostgreSQL -------------------------------------------------------------------------------

# Each thread's latest root checkpoint: its own row as text (what a reader decodes: JSONB is stored
# compressed, and a 30 KB string in channel_values may take 1 KB on disk yet costs 30 KB every turn)
# plus the blobs its channel_versions name and, for oversized ones only, the bytes per channel
# (blobs, and the primitives PostgresSaver keeps inline in channel_values).
PG_LATEST_SQL = """
    SELECT l.thread_id, l.checkpoint_id, l.own + COALESCE(r.blob_bytes, 0) AS bytes,
           CASE WHEN l.own + COALESCE(r.blob_bytes, 0) > %(limit)s THEN
               COALESCE(r.blob_sizes, '{}'::jsonb) || COALESCE((
                   SELECT jsonb_object_agg(key, octet_length(value::text))
                   FROM jsonb_each(l.checkpoint -> 'channel_values')), '{}'::jsonb)
           END AS channels
    FROM (SELECT thread_id, checkpoint_id, checkpoint,
                 octet_length(checkpoint::text) + COALESCE(octet_length(metadata::text), 0) AS own
          FROM (SELECT DISTINCT ON (thread_id) thread_id, checkpoint_id, checkpoint, metadata
                FROM checkpoints WHERE checkpoint_ns = ''
                -- the primary key read backwards (no sort); only the rows kept are sized below
                ORDER BY thread_id DESC, checkpoint_id DESC) latest
          OFFSET 0) l  -- a fence: the sizes are not pushed down into the scan of every row
    CROSS JOIN LATERAL (
        SELECT SUM(octet_length(b.blob)) AS blob_bytes,
               jsonb_object_agg(b.channel, octet_length(b.blob)) AS blob_sizes
        FROM jsonb_each_text(l.checkpoint -> 'channel_versions') AS v(channel, version)
        JOIN checkpoint_blobs b ON b.thread_id = l.thread_id AND b.checkpoint_ns = ''
             AND b.channel = v.channel AND b.version = v.version
    ) r
"""


def _postgres(dsn: str, acc: _Checkpoints, groups: _Groups, limit: int) -> dict[str, Any]:
    import psycopg

    from include.checkpoint_core.postgres_store import connect_postgres, describe_dsn
    from include.checkpoint_core.size_audit import PG_NOT_A_STORE_HINT

    where = describe_dsn(dsn)
    conn = connect_postgres(dsn)
    try:
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            conn.execute("SET LOCAL jit = off")
            present = conn.execute(
                "SELECT to_regclass('checkpoints') IS NOT NULL AS c, to_regclass('checkpoint_blobs') IS NOT NULL AS b, "
                "to_regclass('store') IS NOT NULL AS s, to_regclass('store_vectors') IS NOT NULL AS v").fetchone()
            if not (present["c"] and present["b"]):
                raise NotACheckpointStore(
                    f"PostgreSQL at {where} has no LangGraph checkpoint tables (checkpoints, checkpoint_blobs) "
                    "in its search_path.", hint=PG_NOT_A_STORE_HINT)
            for row in _stream(conn, "memory_audit_checkpoints", PG_LATEST_SQL, {"limit": limit}):
                acc.add(row["thread_id"], row["checkpoint_id"], int(row["bytes"]), row["channels"])
            if not present["s"]:
                return {"present": False}
            columns = {r["column_name"] for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'store' "
                "AND table_schema = ANY (current_schemas(false))")}
            layout = _store_layout(columns, f"the store table at {where}")
            sql = ("SELECT prefix, pg_column_size(value) AS bytes, "
                   + ("expires_at IS NOT NULL AS has_ttl, COALESCE(expires_at < now(), false) AS expired"
                      if layout["ttl"] else "false AS has_ttl, false AS expired") + " FROM store")
            for row in _stream(conn, "memory_audit_store", sql):
                groups.add_item(row["prefix"], int(row["bytes"]), row["has_ttl"], row["expired"])
            if present["v"]:
                for row in _stream(conn, "memory_audit_vectors",
                                   "SELECT prefix, COUNT(*) AS n FROM store_vectors GROUP BY prefix"):
                    groups.add_vectors(row["prefix"], int(row["n"]))
    except psycopg.OperationalError as exc:
        raise StoreUnreachable(f"lost the connection to PostgreSQL at {where}: {' '.join(str(exc).split())}.") from exc
    finally:
        conn.close()
    return layout


def _stream(conn, name: str, sql: str, params: dict | None = None) -> Iterator[dict]:
    with conn.cursor(name=name) as cur:
        cur.itersize = FETCH_ROWS
        cur.execute(sql, params)
        yield from cur


# --- what to do about it ----------------------------------------------------------------------

def recommendations(report: dict[str, Any]) -> list[str]:
    """Where state should move, with the numbers that say so."""
    out = []
    cp, st = report["checkpoints"], report["store_items"]
    limit = human_bytes(report["oversized_bytes"])
    for ch in cp["oversized_channels"][:5]:
        if ch["share_pct"] < 10:
            continue
        lead = (f"channel '{ch['channel']}' is {ch['share_pct']:g}% of the bytes of the {cp['oversized_threads']} "
                f"threads over {limit} (in {ch['threads']} of them, {human_bytes(ch['bytes'])} in all): ")
        if ch["channel"] in HISTORY_CHANNELS:
            out.append(lead + "trim or summarise the history kept in state, and keep facts that outlive the "
                       "thread in the Store (store.put under a per-user namespace).")
        else:
            out.append(lead + "offload its large values with OffloadSerializer (S3, a reference in the checkpoint), "
                       "or keep it in the Store if other threads need it.")
    if cp["undecoded_oversized"]:
        out.append(f"{cp['undecoded_oversized']} oversized threads use a serializer this audit does not decode "
                   "(not msgpack): their channels are not broken down.")
    for ns in st.get("namespaces", [])[:10]:
        if ns["items"] and ns["with_ttl"] == 0 and st.get("ttl"):
            out.append(f"namespace '{ns['namespace']}': {ns['items']} items ({human_bytes(ns['bytes'])}) and none has "
                       "a TTL: if they are per-session, give the store a TTLConfig (or put(..., ttl=minutes)) so "
                       "the sweep bounds them; durable facts can stay.")
    if st.get("expired"):
        out.append(f"{st['expired']} store item(s) expired and not swept yet: checkpoint_pruning's TTL sweep "
                   "(store.sweep_ttl()) removes them.")
    if st.get("note"):
        out.append(st["note"])
    return out


def render(report: dict[str, Any]) -> str:
    """The report as the plain-text tables of the task log."""
    cp, st = report["checkpoints"], report["store_items"]
    lines = [
        f"{report['conn_id'] or report['where']} ({report['store']}): latest checkpoint per thread",
        f"  threads {cp['threads']}  p50 {human_bytes(cp['p50_bytes'])}  p95 {human_bytes(cp['p95_bytes'])}  "
        f"max {human_bytes(cp['max_bytes'])}  over {report['oversized_size']}: {cp['oversized_threads']} "
        f"({cp['oversized_share_pct']:g}%)",
    ]
    if cp["oversized"]:
        lines.append(f"  {'size':>10}  {'thread':<28} largest channels")
        for row in cp["oversized"]:
            chans = ", ".join(f"{k} {human_bytes(v)}" for k, v in row["largest_channels"].items()) or "-"
            lines.append(f"  {row['size']:>10}  {row['thread_id']:<28} {chans}")
    if cp["oversized_channels"]:
        lines.append(f"  {'channel (oversized threads)':<30} {'threads':>7} {'bytes':>10} {'share':>6}")
        for ch in cp["oversized_channels"][:8]:  # the rest are in the XCom and the artifact
            lines.append(f"  {ch['channel'][:30]:<30} {ch['threads']:>7} {human_bytes(ch['bytes']):>10} {ch['share_pct']:>5g}%")
    if not st.get("present"):
        lines.append("Store: no store table")
    else:
        lines.append(f"Store: {st['items']} items, {human_bytes(st['bytes'])}, {st['vectors']} vectors, "
                     f"TTL on {st['ttl_coverage_pct']:g}%, {st['expired']} expired")
        lines.append(f"  {'namespace':<24} {'items':>7} {'bytes':>10} {'vectors':>7} {'ttl':>6} {'expired':>7}")
        for ns in st["namespaces"]:
            lines.append(f"  {ns['namespace']:<24} {ns['items']:>7} {human_bytes(ns['bytes']):>10} {ns['vectors']:>7} "
                         f"{ns['ttl_coverage_pct']:>5g}% {ns['expired']:>7}")
    if report["recommendations"]:
        lines.append("Recommendations:")
        lines += [f"  - {r}" for r in report["recommendations"]]
    if report["alert"]:
        lines.append(f"ALERT: {report['alert_message']}")
    return "\n".join(lines)


def audit_registry(report: dict[str, Any], measured_at: float):
    """The report as gauges for the Pushgateway and the dashboard's memory row."""
    from prometheus_client import CollectorRegistry, Gauge

    from include.checkpoint_core.observability import names

    registry = CollectorRegistry()
    store = report["conn_id"] or report["where"]
    cp, st = report["checkpoints"], report["store_items"]
    sizes = Gauge(names.MEMORY_CHECKPOINT_BYTES, "Latest checkpoint per thread: p50, p95 and max bytes",
                  [*names.MEMORY_LABELS, "quantile"], registry=registry)
    for q in ("p50", "p95", "max"):
        sizes.labels(store=store, quantile=q).set(cp[f"{q}_bytes"])
    for name, value, doc in (
        (names.MEMORY_THREADS, cp["threads"], "Threads measured by the memory audit"),
        (names.MEMORY_OVERSIZED_THREADS, cp["oversized_threads"], "Threads whose latest checkpoint is oversized"),
        (names.MEMORY_AUDIT_LAST_RUN, measured_at, "When the memory audit last ran (unix time)"),
    ):
        Gauge(name, doc, names.MEMORY_LABELS, registry=registry).labels(store=store).set(value)
    items = Gauge(names.MEMORY_STORE_ITEMS, "Store items per namespace prefix", [*names.MEMORY_LABELS, "namespace"],
                  registry=registry)
    size = Gauge(names.MEMORY_STORE_BYTES, "Store bytes per namespace prefix", [*names.MEMORY_LABELS, "namespace"],
                 registry=registry)
    ttl = Gauge(names.MEMORY_STORE_TTL_RATIO, "Share of store items with a TTL per namespace prefix",
                [*names.MEMORY_LABELS, "namespace"], registry=registry)
    for ns in st.get("namespaces", []):
        items.labels(store=store, namespace=ns["namespace"]).set(ns["items"])
        size.labels(store=store, namespace=ns["namespace"]).set(ns["bytes"])
        ttl.labels(store=store, namespace=ns["namespace"]).set(ns["ttl_coverage_pct"] / 100)
    return registry
