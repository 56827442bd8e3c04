"""The migration's closing summary: a pgloader-style table plus verification and rejects."""

from __future__ import annotations

from typing import Any

TABLE_NAMES = {"checkpoints": "checkpoints", "writes": "checkpoint_writes", "store": "store"}


def summarize(batches: dict[tuple[str, int], dict], catch_up: dict | None) -> list[dict]:
    """Rows of the summary table, one per source table, from the target's own bookkeeping."""
    rows: dict[str, dict[str, Any]] = {}
    for (table, _), b in batches.items():
        r = rows.setdefault(table, {"table": table, "target": TABLE_NAMES.get(table, table), "read": 0, "imported": 0,
                                    "already_there": 0, "rejected": 0, "catch_up": 0})
        r["read"] += b["rows_read"]
        r["imported"] += b["rows_imported"]
        r["rejected"] += b["rows_rejected"]
        r["already_there"] += b["rows_read"] - b["rows_imported"] - b["rows_rejected"]
        r["seconds"] = r.get("seconds", 0.0) + b["seconds"]
    for table, t in ((catch_up or {}).get("tables") or {}).items():
        r = rows.setdefault(table, {"table": table, "target": TABLE_NAMES.get(table, table), "read": 0, "imported": 0,
                                    "already_there": 0, "rejected": 0, "catch_up": 0})
        r["catch_up"] += t["imported"]
        r["rejected"] += t["rejected"]
    for r in rows.values():
        r["seconds"] = round(r.get("seconds", 0.0), 2)
    order = list(TABLE_NAMES)
    return sorted(rows.values(), key=lambda r: order.index(r["table"]) if r["table"] in order else 99)


def render(rows: list[dict], total_seconds: float) -> str:
    header = f"{'table':<20} {'read':>10} {'imported':>10} {'existing':>10} {'rejected':>9} {'catch-up':>9} {'time (s)':>9}"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(f"{r['target']:<20} {r['read']:>10,} {r['imported']:>10,} {r['already_there']:>10,} "
                     f"{r['rejected']:>9,} {r['catch_up']:>9,} {r['seconds']:>9.2f}")
    lines.append("-" * len(header))
    lines.append(f"{'total':<20} {sum(r['read'] for r in rows):>10,} {sum(r['imported'] for r in rows):>10,} "
                 f"{sum(r['already_there'] for r in rows):>10,} {sum(r['rejected'] for r in rows):>9,} "
                 f"{sum(r['catch_up'] for r in rows):>9,} {total_seconds:>9.2f}")
    return "\n".join(lines)
