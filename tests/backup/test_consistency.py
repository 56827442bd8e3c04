"""A backup taken while the app writes is one consistent moment: the drill's checksums match."""

from __future__ import annotations

import threading

from include.checkpoint_core.backup import restore_drill, take_backup
from include.sample_agent.graph import build_agent_graph, start_turn, thread_config
from tests.backup.conftest import ADMIN_DSN, all_rows, open_saver

WAIT_S = 120  # a safety net against a hung writer, not a timing assertion


class Writer(threading.Thread):
    """The app: runs agent turns on new threads, one after another, until told to stop."""

    def __init__(self, target) -> None:
        super().__init__(daemon=True)
        self.target, self.turns, self.error = target, 0, None
        self.stop, self.progress = threading.Event(), threading.Condition()

    def run(self) -> None:
        try:
            with open_saver(self.target) as (saver, store):
                graph = build_agent_graph(saver, store, interrupt_before=[])
                while not self.stop.is_set():
                    config = thread_config(f"live-{self.turns:05d}", "user-live", "support")
                    start_turn(graph, config, "user-live", f"Where is my order #{10000 + self.turns}?")
                    with self.progress:
                        self.turns += 1
                        self.progress.notify_all()
        except Exception as exc:  # surfaced by the test
            self.error = exc
            with self.progress:
                self.progress.notify_all()

    def wait_for(self, turns: int) -> None:
        with self.progress:
            assert self.progress.wait_for(lambda: self.turns >= turns or self.error, timeout=WAIT_S)
        assert self.error is None, self.error


def test_backup_under_a_live_writer_is_consistent(source, folder):
    writer = Writer(source)
    writer.start()
    try:
        writer.wait_for(3)
        manifest = take_backup(source, folder, backup_id="busy", log=lambda _: None)
        during = writer.turns
        writer.wait_for(during + 3)  # the app kept writing after the snapshot
    finally:
        writer.stop.set()
        writer.join(WAIT_S)
    assert writer.error is None, writer.error
    live = all_rows(source)
    assert manifest["rows"]["checkpoints"] < len(live["checkpoints"]), "the source moved on after the snapshot"
    report = restore_drill(folder, admin_dsn=ADMIN_DSN, min_age_hours=0, sample_threads=8, log=lambda _: None)
    assert report["passed"], report["problems"]
    assert report["rows"]["checkpoints"] == manifest["rows"]["checkpoints"]
