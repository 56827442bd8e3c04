from include.checkpoint_core.progress import Progress


def test_progress_lines_carry_rate_and_eta():
    lines: list[str] = []
    p = Progress(10_000, "rows", lines.append, every_s=0.0, label="import")
    p.advance(2_500)
    assert lines and lines[-1].startswith("import: 2,500/10,000 rows (25.0%)")
    assert "rows/s" in lines[-1] and "ETA" in lines[-1]
    p.advance(7_500)
    assert "ETA" not in lines[-1], "no ETA once everything is done"
    summary = p.finish()
    assert summary["done"] == 10_000 and lines[-1].startswith("import: done: 10,000 rows in")


def test_progress_is_throttled_and_works_without_total():
    lines: list[str] = []
    p = Progress(None, "threads", lines.append, every_s=3600)
    for _ in range(100):
        p.advance()
    assert lines == [], "at most one line per interval"
    assert p.line().startswith("100 threads, ")
