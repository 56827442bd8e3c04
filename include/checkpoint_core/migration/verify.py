"""Prove the target holds what the snapshot held: counts, content checksums, and the same
CheckpointTuples read back through SqliteSaver and PostgresSaver."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Callable

from include.checkpoint_core.migration import digests
from include.checkpoint_core.migration.source import source_tables, thread_ids
from include.checkpoint_core.migration.transcode import replace_nul
from include.checkpoint_core.postgres_store import connect_postgres
from include.checkpoint_core.sqlite_store import open_sqlite_readonly, readonly_saver

SEMANTIC_CHECKPOINTS_PER_THREAD = 25


def _per_thread(keys) -> dict[str, int]:
    counts: dict[str, int] = {}
    for key in keys:
        counts[key[0]] = counts.get(key[0], 0) + 1
    return counts


def _differs(lite, post) -> str | None:
    """Which part of two CheckpointTuples of one checkpoint differs, allowing for what
    PostgresSaver itself stores differently: metadata without "writes", DeltaChannel snapshots
    it joins in from their blob rows, and pre-v4 sends it rebuilds from the parent's writes."""
    from langgraph.checkpoint.serde.types import TASKS, _DeltaSnapshot

    a, b = dict(lite.checkpoint), dict(post.checkpoint)
    a_values, b_values = dict(a.get("channel_values") or {}), dict(b.get("channel_values") or {})
    for channel in [c for c in b_values if c not in a_values and isinstance(b_values[c], _DeltaSnapshot)]:
        del b_values[channel]
    if a.get("v", 4) < 4:
        # SqliteSaver returns the inline sends; PostgresSaver rebuilds them from the parent's TASKS
        # writes as a TASKS channel (value and version): the same sends, held elsewhere.
        sends = a.pop("pending_sends", None) or []
        b.pop("pending_sends", None)
        rebuilt = b_values.pop(TASKS, None)
        a_values.pop(TASKS, None)
        if rebuilt is not None and list(rebuilt) != list(sends):
            return "pending_sends"
        for d in (a, b):
            d["channel_versions"] = {k: v for k, v in (d.get("channel_versions") or {}).items() if k != TASKS}
    a["channel_values"], b["channel_values"] = a_values, b_values
    if a != b:
        return "checkpoint"
    if {k: v for k, v in (lite.metadata or {}).items() if k != "writes"} != post.metadata:
        return "metadata"
    if lite.parent_config != post.parent_config:
        return "parent_config"
    if lite.pending_writes != post.pending_writes:
        return "pending_writes"
    return None


def _version_collisions_only(lite, a, b) -> bool:
    """Whether two tuples of a checkpoint differ only in channels that hold the same version with
    a value another source checkpoint holds for that version: a version collision, where
    PostgresSaver keeps one blob per version (preflight named it), not a copying error."""
    va, vb = a.checkpoint.get("channel_values") or {}, b.checkpoint.get("channel_values") or {}
    if {k: v for k, v in a.checkpoint.items() if k != "channel_values"} != \
            {k: v for k, v in b.checkpoint.items() if k != "channel_values"}:
        return False
    versions = a.checkpoint.get("channel_versions") or {}
    differing = [c for c in set(va) | set(vb) if va.get(c) != vb.get(c)]
    if not differing or any(c not in versions or c not in vb for c in differing):
        return False
    conf = {"configurable": {k: a.config["configurable"][k] for k in ("thread_id", "checkpoint_ns")}}
    copies: dict[str, list] = {c: [] for c in differing}
    for other in lite.list(conf):
        for c in differing:
            if (other.checkpoint.get("channel_versions") or {}).get(c) == versions[c] and c in other.checkpoint["channel_values"]:
                copies[c].append(other.checkpoint["channel_values"][c])
    return all(vb[c] in copies[c] for c in differing)


def semantic_check(snapshot: Path, target_dsn: str, threads: list[str], *, repair_nul: bool = False,
                   per_thread: int = SEMANTIC_CHECKPOINTS_PER_THREAD) -> list[dict]:
    """CheckpointTuples through both savers must be deep-equal (values decoded, so sets
    compare as sets). Reads each checkpoint by id: PostgresSaver.list() is quadratic on long
    threads. With ``repair_nul`` the source's metadata is repaired as the import repaired it."""
    from langgraph.checkpoint.postgres import PostgresSaver

    problems: list[dict] = []
    with open_sqlite_readonly(snapshot) as conn, closing(connect_postgres(target_dsn)) as pg:
        lite, post = readonly_saver(conn), PostgresSaver(pg)
        for tid in threads:
            keys = conn.execute(
                "SELECT checkpoint_ns, checkpoint_id FROM checkpoints WHERE thread_id = ? ORDER BY checkpoint_id DESC LIMIT ?",
                (tid, per_thread),
            ).fetchall()
            for ns, cid in keys:
                config = {"configurable": {"thread_id": tid, "checkpoint_ns": ns, "checkpoint_id": cid}}
                a, b = lite.get_tuple(config), post.get_tuple(config)
                if repair_nul and a is not None:
                    a = a._replace(metadata=replace_nul(a.metadata)[0])
                problem = "missing in target" if b is None else _differs(a, b)
                if problem == "checkpoint" and _version_collisions_only(lite, a, b):
                    problem = None
                if problem:
                    problems.append({"thread_id": tid, "checkpoint_ns": ns, "checkpoint_id": cid,
                                     "problem": problem if b is None else f"{problem} differs"})
    return problems


def checked_threads(src, *, mode: str, sample_threads: int, seed: str, rejected_threads: set[str]) -> tuple[list[str], int]:
    """The threads whose rows verify compares (all but the rejected ones in "full" mode, a seeded
    sample otherwise), and how many threads the snapshot holds apart from the rejected ones."""
    all_threads = [t for t in thread_ids(src) if t not in rejected_threads]
    if mode == "full":
        return all_threads, len(all_threads)
    rng = random.Random(seed)
    return sorted(rng.sample(all_threads, min(sample_threads, len(all_threads)))), len(all_threads)


def thread_groups(snapshot: Path, *, mode: str, sample_threads: int, seed: str, rejected_threads: set[str],
                  threads_per_group: int) -> list[dict]:
    """Verify's work split for mapped tasks: contiguous thread-id ranges in "full" mode (an XCom
    stays small however many threads there are), the sampled threads themselves otherwise."""
    with open_sqlite_readonly(snapshot) as src:
        checked, _ = checked_threads(src, mode=mode, sample_threads=sample_threads, seed=seed,
                                     rejected_threads=rejected_threads)
    if mode != "full":
        return [{"threads": checked}]
    return [{"first": part[0], "last": part[-1], "count": len(part)}
            for part in digests.chunks(checked, threads_per_group)] or [{"threads": []}]


def _group_threads(src, group: dict, rejected_threads: set[str]) -> list[str]:
    if "threads" in group:
        return list(group["threads"])
    rows = src.execute("SELECT thread_id FROM checkpoints WHERE thread_id BETWEEN ? AND ? UNION "
                       "SELECT thread_id FROM writes WHERE thread_id BETWEEN ? AND ? ORDER BY thread_id",
                       (group["first"], group["last"], group["first"], group["last"])).fetchall()
    return [r[0] for r in rows if r[0] not in rejected_threads]


def verify_group(snapshot: Path, target_dsn: str, group: dict, *, rejected_threads: set[str] = frozenset(),
                 repair_nul: bool = False, chunk_threads: int = 200,
                 progress: Callable[[int], None] | None = None) -> dict:
    """Row-by-row content comparison of one group of threads (one mapped task's share)."""
    rejected_threads = set(rejected_threads)
    totals: dict[str, dict] = {}
    source_rejected = 0
    thread_count_mismatch: list[dict] = []
    with open_sqlite_readonly(snapshot) as src, closing(connect_postgres(target_dsn)) as pg:
        checked = _group_threads(src, group, rejected_threads)
        # The target's side is fetched in a thread: the server hashes and serialises while this
        # process transcodes the source's side of the same chunk.
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = None
            chunk_list = list(digests.chunks(checked, chunk_threads))
            for i, chunk in enumerate(chunk_list):
                if pending is None:
                    pending = pool.submit(digests.target_digests, pg, chunk)
                want, chunk_rejected, refs = digests.source_digests(src, chunk, repair_nul=repair_nul)
                have = pending.result()
                source_rejected += chunk_rejected + digests.settle_disagreements(src, want, have, refs,
                                                                                 repair_nul=repair_nul)
                pending = pool.submit(digests.target_digests, pg, chunk_list[i + 1]) if i + 1 < len(chunk_list) else None
                for table, res in digests.compare(want, have).items():
                    agg = totals.setdefault(table, _empty_totals())
                    _add_totals(agg, res)
                for table in ("checkpoints", "writes"):
                    s, t = _per_thread(want[table]), _per_thread(have[table])
                    for tid in chunk:
                        if s.get(tid, 0) != t.get(tid, 0) and len(thread_count_mismatch) < 20:
                            thread_count_mismatch.append({"thread_id": tid, "table": table, "source": s.get(tid, 0), "target": t.get(tid, 0)})
                if progress:
                    progress(sum(len(v) for v in want.values()))
    return {"threads_checked": len(checked), "content": totals, "per_thread_mismatches": thread_count_mismatch,
            "rejected_in_checked_threads": source_rejected}


def _empty_totals() -> dict:
    return {"expected": 0, "found": 0, "missing": 0, "different": 0, "extra": 0, "examples": {"missing": [], "different": []}}


def _add_totals(agg: dict, res: dict) -> None:
    for k in ("expected", "found", "missing", "different", "extra"):
        agg[k] += res[k]
    for k in ("missing", "different"):
        agg["examples"][k] = (agg["examples"][k] + res["examples"][k])[:20]


def merge_groups(results: list[dict]) -> dict:
    """One content result from the mapped groups' results."""
    merged = {"threads_checked": 0, "content": {}, "per_thread_mismatches": [], "rejected_in_checked_threads": 0}
    for r in results:
        merged["threads_checked"] += r["threads_checked"]
        merged["rejected_in_checked_threads"] += r["rejected_in_checked_threads"]
        merged["per_thread_mismatches"] = (merged["per_thread_mismatches"] + r["per_thread_mismatches"])[:20]
        for table, res in r["content"].items():
            _add_totals(merged["content"].setdefault(table, _empty_totals()), res)
    return merged


def verify_totals(snapshot: Path, target_dsn: str, content: dict, *, mode: str = "sample", sample_threads: int = 10,
                  seed: str = "", rejected_threads: set[str] = frozenset(), repair_nul: bool = False,
                  allow_extra: bool = False, include_store: bool = False) -> dict:
    """The whole-store checks around the groups' ``content`` (``merge_groups``): table counts,
    rejected threads wholly absent, store items, and CheckpointTuples of sampled threads."""
    rejected_threads = set(rejected_threads)
    with open_sqlite_readonly(snapshot) as src, closing(connect_postgres(target_dsn)) as pg:
        checked, threads_total = checked_threads(src, mode=mode, sample_threads=sample_threads, seed=seed,
                                                 rejected_threads=rejected_threads)
        store = digests.store_digests(src, pg) if include_store and "store" in source_tables(src) else None
        table_counts, left_behind = {}, {}
        rejected_list = sorted(rejected_threads)
        for table, pg_table in (("checkpoints", "checkpoints"), ("writes", "checkpoint_writes")):
            in_rejected = sum(src.execute(f"SELECT COUNT(*) FROM {table} WHERE thread_id IN ({', '.join('?' * len(part))})",
                                          part).fetchone()[0] for part in digests.chunks(rejected_list, 500))
            total = src.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            # Rows of the snapshot's threads only: the target may hold other apps' threads.
            target = pg.execute(f"SELECT COUNT(*) AS n FROM {pg_table} WHERE thread_id = ANY(%s)",
                                (list(thread_ids_excluding(src, rejected_threads)),)).fetchone()["n"]
            table_counts[table] = {"source": total, "in_rejected_threads": in_rejected, "target": target}
            left_behind[table] = pg.execute(f"SELECT COUNT(*) AS n FROM {pg_table} WHERE thread_id = ANY(%s)",
                                            (rejected_list,)).fetchone()["n"] if rejected_list else 0
    rng = random.Random(seed + "semantic")
    semantic_threads = sorted(rng.sample(checked, min(sample_threads, len(checked))))
    semantic = semantic_check(snapshot, target_dsn, semantic_threads, repair_nul=repair_nul)
    counts_ok = all((c["target"] >= c["source"] - c["in_rejected_threads"]) if allow_extra
                    else (c["source"] - c["in_rejected_threads"] == c["target"]) for c in table_counts.values())
    # Rows of a rejected thread found in the target are the half-copied thread this must never leave.
    rejected_ok = not any(left_behind.values())
    totals = content["content"]
    content_ok = all(t["missing"] == 0 and t["different"] == 0 and (allow_extra or t["extra"] == 0) for t in totals.values())
    thread_count_mismatch = content["per_thread_mismatches"]
    if allow_extra:
        thread_count_mismatch = [m for m in thread_count_mismatch if m["target"] < m["source"]]
    store_ok = store is None or (store["missing"] == 0 and store["different"] == 0)
    return {
        "ok": counts_ok and content_ok and store_ok and rejected_ok and not thread_count_mismatch and not semantic,
        "store": store,
        "mode": mode,
        "threads_checked": content["threads_checked"],
        "threads_total": threads_total,
        "table_counts": table_counts,
        "rejected_threads": {"count": len(rejected_threads), "examples": rejected_list[:20],
                             "rows_left_in_target": left_behind},
        "per_thread_mismatches": thread_count_mismatch,
        "content": totals,
        "semantic": {"threads": len(semantic_threads), "problems": semantic[:20]},
        "rejected_in_checked_threads": content["rejected_in_checked_threads"],
        "counts_ok": counts_ok,
        "content_ok": content_ok,
    }


def thread_ids_excluding(src, excluded: set[str]) -> list[str]:
    return [t for t in thread_ids(src) if t not in excluded]


def verify(snapshot: Path, target_dsn: str, *, mode: str = "sample", sample_threads: int = 10, seed: str = "",
           rejected_threads: set[str] = frozenset(), repair_nul: bool = False,
           allow_extra: bool = False, include_store: bool = False,
           chunk_threads: int = 200, progress: Callable[[int], None] | None = None) -> dict:
    """Compare snapshot and target in one process. ``mode`` is "sample" (N threads) or "full".

    ``rejected_threads`` were rejected whole: none of their rows may be in the target, and
    they are counted apart. Everything else must match exactly, per table, per thread and per
    row (store items PostgreSQL refused aside). ``allow_extra`` accepts rows only
    the target has (once catch-up has copied what the app wrote after the snapshot). The DAG
    runs the same steps as mapped tasks: ``thread_groups`` -> ``verify_group`` -> ``verify_totals``.
    """
    groups = thread_groups(snapshot, mode=mode, sample_threads=sample_threads, seed=seed,
                           rejected_threads=set(rejected_threads), threads_per_group=10**9)
    content = merge_groups([verify_group(snapshot, target_dsn, g, rejected_threads=set(rejected_threads),
                                         repair_nul=repair_nul, chunk_threads=chunk_threads, progress=progress)
                            for g in groups])
    return verify_totals(snapshot, target_dsn, content, mode=mode, sample_threads=sample_threads, seed=seed,
                         rejected_threads=rejected_threads, repair_nul=repair_nul, allow_extra=allow_extra,
                         include_store=include_store)
