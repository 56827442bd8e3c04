"""The tiering run's steps, callable from Airflow or a script: plan, move groups, measure, price.

``plan`` reads only: which hot threads are idle past ``demote_after_hours`` (Redis's idle index),
which cold threads are idle past ``archive_after_days`` (their newest checkpoint's ``ts``), the
threads an interrupted move left fenced, and the threads found in two tiers. The move steps call
``moves`` once per thread and never raise for one thread's trouble: a thread that changed, is
in two tiers or cannot be stored is counted and named, and stays where it is.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
from psycopg.rows import tuple_row

from include.checkpoint_core.tiering import directory, moves
from include.checkpoint_core.tiering.hot import RedisRowSaver

TIERS = ("hot", "cold", "archive")
NAMED_LIMIT = 50  # threads named per outcome in a summary (the counts are always complete)


def chunk(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)] if items else []


def idle_cold_threads(conn: psycopg.Connection, older_than: datetime, limit: int) -> list[str]:
    """Cold threads whose newest checkpoint is older than ``older_than`` (not archived, not staging)."""
    cutoff = older_than.astimezone(timezone.utc).isoformat()
    cur = conn.cursor(row_factory=tuple_row)
    cur.execute(
        f"SELECT c.thread_id FROM checkpoints c LEFT JOIN {directory.TABLE} d USING (thread_id) "
        "WHERE d.thread_id IS NULL OR d.tier = 'cold' "
        "GROUP BY c.thread_id HAVING max(c.checkpoint->>'ts') < %s ORDER BY max(c.checkpoint->>'ts') LIMIT %s",
        (cutoff, limit))
    return [r[0] for r in cur.fetchall()]


def plan(conn: psycopg.Connection, hot: RedisRowSaver, *, demote_after_hours: float, archive_after_days: float,
         max_threads: int, threads_per_task: int, rehydrate: Iterable[str] = (), archive_enabled: bool = True,
         now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    directory.ensure(conn)
    placed = {e.thread_id: e for e in directory.entries(conn)}
    idle = hot.hot_threads(idle_before=now - demote_after_hours * 3600, limit=max_threads)
    every_hot = hot.hot_threads()
    fenced = list(hot.fences(every_hot))
    conflicts = [t for t in every_hot if t in placed and placed[t].tier in ("cold", "archive") and t not in fenced]
    demote = [t for t in dict.fromkeys(fenced + idle) if t not in conflicts][:max_threads]
    to_archive: list[str] = []
    if archive_enabled:
        cutoff = datetime.fromtimestamp(now, timezone.utc) - timedelta(days=archive_after_days)
        to_archive = [t for t in idle_cold_threads(conn, cutoff, max_threads) if t not in demote]
    wanted = list(dict.fromkeys(rehydrate))
    not_archived = [t for t in wanted if t not in placed or placed[t].tier != "archive"]
    return {
        "hot_threads": len(every_hot),
        "demote_groups": chunk(demote, threads_per_task),
        "archive_groups": chunk(to_archive, threads_per_task),
        "rehydrate": [t for t in wanted if t not in not_archived],
        "rehydrate_not_archived": not_archived,
        "conflicts": conflicts[:NAMED_LIMIT],
        "conflict_count": len(conflicts),
        "interrupted_moves": len(fenced),
        "counts": {"demote": len(demote), "archive": len(to_archive), "rehydrate": len(wanted) - len(not_archived)},
    }


def run_moves(action: str, thread_ids: list[str], move_group: Callable[[list[str]], list[moves.Outcome]], *,
              batch: int = 50, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Move the threads a batch at a time; count outcomes, name the threads that did not move,
    and log progress after each batch."""
    counts: Counter[str] = Counter()
    named: dict[str, list[dict]] = {}
    totals = Counter()
    objects: list[dict] = []
    started = time.monotonic()
    done = 0
    for group in chunk(thread_ids, batch):
        for out in move_group(group):
            counts[out.result] += 1
            if out.moved:
                totals.update(checkpoints=out.checkpoints, writes=out.writes, row_bytes=out.row_bytes,
                              archive_bytes=out.archive_bytes)
                if "key" in out.extra:
                    objects.append({"thread_id": out.thread_id, "key": out.extra["key"], "sha256": out.extra["sha256"],
                                    "bytes": out.archive_bytes, "checkpoints": out.checkpoints, "writes": out.writes})
            elif out.result not in ("gone", "not-eligible") or out.detail:
                bucket = named.setdefault(out.result, [])
                if len(bucket) < NAMED_LIMIT:
                    bucket.append({"thread_id": out.thread_id, "detail": out.detail})
        done += len(group)
        rate = totals["checkpoints"] / max(time.monotonic() - started, 1e-9)
        log(f"{action}: {done:,}/{len(thread_ids):,} threads, {totals['checkpoints']:,} checkpoints "
            f"({rate:,.0f}/s), outcomes {dict(counts)}")
    seconds = time.monotonic() - started
    return {"action": action, "threads": len(thread_ids), "outcomes": dict(counts), "not_moved": named,
            **({"objects": objects} if objects else {}),
            **dict(totals), "seconds": round(seconds, 3),
            "checkpoints_per_second": round(totals["checkpoints"] / seconds, 1) if seconds else None}


def dry_run_sizes(action: str, thread_ids: list[str], size: Callable[[str], tuple[int, int]]) -> dict[str, Any]:
    """What a move would carry, measured and changing nothing."""
    checkpoints = row_bytes = 0
    for tid in thread_ids:
        c, b = size(tid)
        checkpoints, row_bytes = checkpoints + c, row_bytes + b
    return {"action": action, "dry_run": True, "threads": len(thread_ids), "checkpoints": checkpoints,
            "row_bytes": row_bytes, "outcomes": {"would-move": len(thread_ids)}}


# ---- measuring the tiers and pricing them ----------------------------------------------------

def _hot_memory(hot: RedisRowSaver, sample: int) -> tuple[int, int, int]:
    """(estimated Redis bytes, their rows' serialised bytes, threads sampled) from a random sample."""
    total = hot.client.zcard(hot.threads_key)
    if not total:
        return 0, 0, 0
    ids = [t.decode() for t in hot.client.zrandmember(hot.threads_key, min(sample, total))]
    memory = rows = 0
    for tid in ids:
        keys = hot._k(tid, "fence", "v", "ix", "cp", "cf", "bl", "wk")
        keys += [hot._wprefix(tid) + m.decode() for m in hot.client.smembers(hot._k(tid, "wk")[0])]
        pipe = hot.client.pipeline(transaction=False)
        for k in keys:
            pipe.memory_usage(k, samples=0)
        memory += sum(v or 0 for v in pipe.execute())
        rows += hot.export_thread(tid).rows.nbytes
    scale = total / len(ids)
    return int(memory * scale), int(rows * scale), len(ids)


def measure(conn: psycopg.Connection, hot: RedisRowSaver, *, sample: int = 200) -> dict[str, Any]:
    """Threads and bytes per tier, as a bill would count them."""
    cur = conn.cursor(row_factory=tuple_row)
    hot_bytes, hot_rows, sampled = _hot_memory(hot, sample)
    cold_threads = cur.execute(
        f"SELECT count(DISTINCT c.thread_id) FROM checkpoints c LEFT JOIN {directory.TABLE} d USING (thread_id) "
        "WHERE d.thread_id IS NULL OR d.tier = 'cold'").fetchone()[0]
    cold_bytes = cur.execute(
        "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
        "WHERE c.relname IN ('checkpoints', 'checkpoint_blobs', 'checkpoint_writes') AND c.relkind = 'r'").fetchone()[0]
    cold_rows = cur.execute(
        f"SELECT coalesce(sum(row_bytes), 0) FROM {directory.TABLE} WHERE tier = 'cold'").fetchone()[0]
    arch = cur.execute(f"SELECT count(*), coalesce(sum(archive_bytes), 0), coalesce(sum(row_bytes), 0) "
                       f"FROM {directory.TABLE} WHERE tier = 'archive'").fetchone()
    return {
        "hot": {"threads": hot.client.zcard(hot.threads_key), "bytes": hot_bytes, "row_bytes": hot_rows,
                "sampled_threads": sampled, "redis_used_memory": hot.client.info("memory").get("used_memory")},
        "cold": {"threads": cold_threads, "bytes": int(cold_bytes), "row_bytes_of_demoted": int(cold_rows)},
        "archive": {"threads": arch[0], "bytes": int(arch[1]), "row_bytes": int(arch[2])},
    }


GB = 1024 ** 3


def cost(measured: dict[str, Any], prices: dict[str, float]) -> dict[str, Any]:
    """Monthly cost per tier (bytes x price per GB-month) beside keeping every thread hot.

    Everything hot is priced at the hot tier's measured bytes per row byte (Redis keeps more than
    the rows: keys, hash overhead) applied to the cold and archived threads' sizes; with nothing
    hot to measure it falls back to the cold tier's bytes, which understates Redis.
    """
    tiers = {}
    for tier in TIERS:
        gb = measured[tier]["bytes"] / GB
        tiers[tier] = {"threads": measured[tier]["threads"], "gb": round(gb, 6),
                       "usd_month": round(gb * prices[tier], 4)}
    hot = measured["hot"]
    factor = hot["bytes"] / hot["row_bytes"] if hot["row_bytes"] else None
    others = measured["cold"]["bytes"] + (measured["archive"]["row_bytes"] * (factor or 1.0))
    all_hot_gb = (hot["bytes"] + (others * factor if factor else others)) / GB
    total = sum(t["usd_month"] for t in tiers.values())
    all_hot = round(all_hot_gb * prices["hot"], 4)
    return {"tiers": tiers, "total_usd_month": round(total, 4), "all_hot_usd_month": all_hot,
            "all_hot_gb": round(all_hot_gb, 6), "savings_ratio": round(all_hot / total, 2) if total else None,
            "redis_bytes_per_row_byte": round(factor, 3) if factor else None, "prices_usd_gb_month": prices}


def render_cost(report: dict[str, Any]) -> str:
    lines = [f"{'tier':<9}{'threads':>10}{'GB':>14}{'$/GB-month':>12}{'$/month':>12}"]
    for tier, t in report["tiers"].items():
        lines.append(f"{tier:<9}{t['threads']:>10,}{t['gb']:>14.6f}{report['prices_usd_gb_month'][tier]:>12.4f}"
                     f"{t['usd_month']:>12.4f}")
    lines.append(f"{'tiered':<9}{'':>10}{'':>14}{'':>12}{report['total_usd_month']:>12.4f}")
    lines.append(f"{'all hot':<9}{'':>10}{report['all_hot_gb']:>14.6f}{report['prices_usd_gb_month']['hot']:>12.4f}"
                 f"{report['all_hot_usd_month']:>12.4f}")
    if report["savings_ratio"]:
        lines.append(f"keeping every thread hot would cost {report['savings_ratio']}x the tiered total")
    return "\n".join(lines)



PUSH_JOB = "checkpoint_tiering"


def cost_registry(report: dict[str, Any], measured_at: float):
    """The cost report as gauges, for the Pushgateway and the dashboard's tiering panels."""
    from prometheus_client import CollectorRegistry, Gauge

    from include.checkpoint_core.observability import names

    registry = CollectorRegistry()
    threads = Gauge(names.TIER_THREADS, "Threads held by each checkpoint tier", names.TIER_LABELS, registry=registry)
    size = Gauge(names.TIER_BYTES, "Bytes each checkpoint tier holds", names.TIER_LABELS, registry=registry)
    usd = Gauge(names.TIER_MONTHLY_COST, "Monthly cost of each tier at the configured prices", names.TIER_LABELS,
                registry=registry)
    for tier, t in report["tiers"].items():
        threads.labels(tier=tier).set(t["threads"])
        size.labels(tier=tier).set(t["gb"] * GB)
        usd.labels(tier=tier).set(t["usd_month"])
    Gauge(names.TIER_ALL_HOT_MONTHLY_COST, "Monthly cost if every thread were hot", registry=registry) \
        .set(report["all_hot_usd_month"])
    Gauge(names.TIER_LAST_RUN, "When checkpoint_tiering last reported (unix time)", registry=registry).set(measured_at)
    return registry
