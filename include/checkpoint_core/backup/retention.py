"""Backup retention: daily and weekly windows, and never the last good copy.

The windows are calendar ones counted back from ``now`` (UTC): the newest backup of each of
the last ``keep_daily`` days and of each of the last ``keep_weekly`` ISO weeks. Whatever the
windows say, the newest complete backup and the newest one that passed a drill stay: a job
that has been failing for a month must not leave the store with no backup at all.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from include.checkpoint_core.backup.errors import BackupError
from include.checkpoint_core.backup.layout import (
    DRILL, MANIFEST, STARTED, backup_dirs, iso, parse_time, read_json, read_manifest, remove_tree, utc,
)

DRILL_MIN_AGE = timedelta(hours=24)  # the drill's default min_age_hours
INCOMPLETE_GRACE = timedelta(days=1)  # a backup without a manifest this young may still be running


def apply_retention(
    folder, *, keep_daily: int = 7, keep_weekly: int = 4, now: datetime | None = None, dry_run: bool = False,
    log: Callable[[str], None] = print,
) -> dict:
    """Delete the backups no window keeps; return ``kept``/``deleted`` ids and the reason for each.

    Directories without a manifest are unfinished backups: deleted once their ``started.json``
    is over a day old. Directories with neither file are not ours and are left alone (``ignored``).
    """
    if keep_daily < 0 or keep_weekly < 0:
        raise BackupError(f"keep_daily={keep_daily} and keep_weekly={keep_weekly} must not be negative.",
                          hint="Use 0 to switch a window off.")
    now = utc(now)
    complete, incomplete, ignored = [], [], []
    for d in backup_dirs(folder):
        manifest = read_manifest(d)
        if manifest is not None:
            complete.append((parse_time(manifest["created_at"]), d.name, d))
            continue
        started = read_json(d / STARTED)
        try:
            incomplete.append((parse_time(started["started_at"]), d.name, d))
        except (TypeError, KeyError, ValueError):
            ignored.append(d.name)
    complete.sort(reverse=True)

    reasons: dict[str, list[str]] = {}
    days = {(now - timedelta(days=i)).date() for i in range(keep_daily)}
    weeks = {tuple((now - timedelta(weeks=j)).isocalendar())[:2] for j in range(keep_weekly)}
    seen_days, seen_weeks = set(), set()
    for created, bid, d in complete:
        why = []
        if created > now:
            why.append("dated after now (clock skew)")
        day, week = created.date(), tuple(created.isocalendar())[:2]
        if day in days and day not in seen_days:
            seen_days.add(day)
            why.append(f"daily {day.isoformat()}")
        if week in weeks and week not in seen_weeks:
            seen_weeks.add(week)
            why.append(f"weekly {week[0]}-W{week[1]:02d}")
        reasons[bid] = why
    if complete:
        reasons[complete[0][1]].append("newest complete backup")
        for _, bid, d in complete:
            drill = read_json(d / DRILL)
            if drill and drill.get("passed") is True:
                reasons[bid].append("newest backup that passed a drill")
                break
        # The one the next drill will pick (the newest a day old): never deleted under a drill.
        for created, bid, _ in complete:
            if now - created >= DRILL_MIN_AGE:
                reasons[bid].append("the backup the next restore drill takes")
                break

    kept = [bid for _, bid, _ in complete if reasons[bid]]
    doomed = [(bid, d) for _, bid, d in complete if not reasons[bid]]
    for bid in (b for b, _ in doomed):
        reasons[bid] = ["outside every window"]
    for started, bid, d in sorted(incomplete, reverse=True):
        if now - started > INCOMPLETE_GRACE:
            doomed.append((bid, d))
            reasons[bid] = [f"unfinished (no manifest), started {iso(started)}"]
        else:
            reasons[bid] = [f"unfinished, started {iso(started)}: may still be running"]

    doomed_ids = {bid for bid, _ in doomed}
    deleted, failures = [], []
    for bid, d in doomed:
        log(f"retention: {'would delete' if dry_run else 'deleting'} {bid} ({reasons[bid][0]})")
        if dry_run:
            deleted.append(bid)
            continue
        try:
            _delete_backup(d)
            deleted.append(bid)
        except OSError as exc:
            failures.append(f"{bid}: {exc}")
    report = {
        "kept": kept, "deleted": deleted,
        "unfinished_kept": [b for _, b, _ in sorted(incomplete, reverse=True) if b not in doomed_ids],
        "ignored": sorted(ignored), "reasons": reasons, "dry_run": dry_run, "now": iso(now),
        "keep_daily": keep_daily, "keep_weekly": keep_weekly,
    }
    if failures:
        raise BackupError(f"retention could not delete {len(failures)} backup(s): " + "; ".join(failures),
                          hint="The task retries; deletion resumes where it stopped.", retryable=True)
    return report


def _delete_backup(d) -> None:
    """Manifest first: a deletion cut short leaves an unfinished backup, never a broken "complete" one."""
    manifest = d / MANIFEST
    if manifest.exists():
        manifest.unlink()
    remove_tree(d)
