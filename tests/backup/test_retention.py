"""Retention on synthetic backups: daily and weekly windows, never the last good copy."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from include.checkpoint_core.backup import apply_retention, list_backups

NOW = datetime(2025, 3, 20, 18, 0, tzinfo=timezone.utc)  # a Thursday, ISO week 2025-W12


def fake_backup(folder, bid: str, created: datetime, *, drill: bool | None = None, complete: bool = True) -> None:
    d = folder / bid
    d.mkdir(parents=True)
    (d / "started.json").write_text(json.dumps({"backup_id": bid, "started_at": created.isoformat()}))
    (d / "dump.pgdump").write_bytes(b"data")
    if complete:
        (d / "manifest.json").write_text(json.dumps({"backup_id": bid, "kind": "postgres", "file": "dump.pgdump",
                                                     "created_at": created.isoformat()}))
    if drill is not None:
        (d / "drill.json").write_text(json.dumps({"passed": drill}))


def twenty_daily(folder) -> None:
    """03:00 every day from 1 to 20 March, plus a later one on the 19th."""
    for day in range(1, 21):
        fake_backup(folder, f"2025-03-{day:02d}", datetime(2025, 3, day, 3, tzinfo=timezone.utc))
    fake_backup(folder, "2025-03-19-late", datetime(2025, 3, 19, 15, tzinfo=timezone.utc))


def test_daily_and_weekly_windows_keep_the_newest_of_each(tmp_path):
    twenty_daily(tmp_path)
    report = apply_retention(tmp_path, keep_daily=7, keep_weekly=4, now=NOW, log=lambda _: None)
    daily = ["2025-03-20", "2025-03-19-late", "2025-03-18", "2025-03-17", "2025-03-16", "2025-03-15", "2025-03-14"]
    weekly = ["2025-03-09", "2025-03-02"]  # Sundays closing W10 and W09 (W11 and W12 are inside the days)
    assert report["kept"] == daily + weekly
    assert sorted(report["deleted"]) == ["2025-03-01", *(f"2025-03-{d:02d}" for d in (3, 4, 5, 6, 7, 8)),
                                         *(f"2025-03-{d:02d}" for d in (10, 11, 12, 13, 19))]
    assert [m["backup_id"] for m in list_backups(tmp_path)] == daily + weekly
    assert "weekly 2025-W10" in report["reasons"]["2025-03-09"]
    assert report["reasons"]["2025-03-19"] == ["outside every window"]
    # Idempotent: a second run finds nothing more to delete.
    assert apply_retention(tmp_path, keep_daily=7, keep_weekly=4, now=NOW, log=lambda _: None)["deleted"] == []


def test_dry_run_deletes_nothing(tmp_path):
    twenty_daily(tmp_path)
    report = apply_retention(tmp_path, keep_daily=3, keep_weekly=0, now=NOW, dry_run=True, log=lambda _: None)
    assert len(report["deleted"]) == 18 and report["dry_run"] is True
    assert len(list_backups(tmp_path)) == 21


def test_the_last_good_backups_survive_any_window(tmp_path):
    """Months later, with every window empty: the newest backup and the newest drilled one stay."""
    twenty_daily(tmp_path)
    (tmp_path / "2025-03-10" / "drill.json").write_text(json.dumps({"passed": True}))
    (tmp_path / "2025-03-20" / "drill.json").write_text(json.dumps({"passed": False}))
    report = apply_retention(tmp_path, keep_daily=7, keep_weekly=4, now=NOW + timedelta(days=90), log=lambda _: None)
    assert report["kept"] == ["2025-03-20", "2025-03-10"]
    assert report["reasons"]["2025-03-20"] == ["newest complete backup", "the backup the next restore drill takes"]
    assert report["reasons"]["2025-03-10"] == ["newest backup that passed a drill"]
    assert [m["backup_id"] for m in list_backups(tmp_path)] == ["2025-03-20", "2025-03-10"]
    # Even with both windows switched off.
    assert apply_retention(tmp_path, keep_daily=0, keep_weekly=0, now=NOW, log=lambda _: None)["kept"] == \
        ["2025-03-20", "2025-03-10"]


def test_unfinished_backups_go_only_after_a_day(tmp_path):
    fake_backup(tmp_path, "done", NOW - timedelta(hours=5))
    fake_backup(tmp_path, "died", NOW - timedelta(days=2), complete=False)
    fake_backup(tmp_path, "running", NOW - timedelta(hours=1), complete=False)
    (tmp_path / "not-a-backup").mkdir()
    (tmp_path / "not-a-backup" / "notes.txt").write_text("someone else's")
    report = apply_retention(tmp_path, now=NOW, log=lambda _: None)
    assert report["kept"] == ["done"]
    assert report["deleted"] == ["died"] and not (tmp_path / "died").exists()
    assert report["unfinished_kept"] == ["running"] and (tmp_path / "running").exists()
    assert report["ignored"] == ["not-a-backup"] and (tmp_path / "not-a-backup" / "notes.txt").exists()
    assert [m["backup_id"] for m in list_backups(tmp_path)] == ["done"], "unfinished backups are never listed"


def test_the_backup_the_next_drill_takes_survives_a_one_day_window(tmp_path):
    """With keep_daily=1 the drill's pick (the newest at least 24 h old) is outside the window."""
    twenty_daily(tmp_path)
    report = apply_retention(tmp_path, keep_daily=1, keep_weekly=0, now=NOW, log=lambda _: None)
    # 20 March 03:00 is 15 h old (the window's and the newest); the drill takes 19 March 15:00.
    assert report["kept"] == ["2025-03-20", "2025-03-19-late"]
    assert report["reasons"]["2025-03-19-late"] == ["the backup the next restore drill takes"]
