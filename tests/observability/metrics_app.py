"""A small app whose checkpoint writes a real Prometheus scrapes: for the alert-rule tests.

    python -m tests.observability.metrics_app --port P --sqlite PATH --writes-per-sec R \\
        --error-rate F --duration S [--checkpoint-bytes N] [--seed K]

A real SqliteSaver on PATH, wrapped by ``FlakySaver`` (fails a fraction F of the writes with
``sqlite3.OperationalError("database is locked")``, before they reach the file; the same seed
fails the same writes), wrapped by MeteredSaver, with /metrics served on 127.0.0.1:P. It writes
about R times per second in all, alternating ``put`` (a checkpoint holding N bytes) and
``put_writes`` (one small write), so ``sum(rate(checkpoint_writes_total))`` is about R and the
error ratio about F. It prints one line, ``ready``, on stdout once /metrics is served, and stops
after S seconds (0: when killed).
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import sys
import time
import uuid
from contextlib import closing
from typing import Any, Sequence

from langgraph.checkpoint.base import BaseCheckpointSaver, empty_checkpoint

from include.checkpoint_core.delegating_saver import DelegatingSaver


class FlakySaver(DelegatingSaver):
    """Fails ``put``/``put_writes`` (sync and async) at ``error_rate``, as a locked SQLite file would."""

    def __init__(self, inner: BaseCheckpointSaver, error_rate: float, seed: int = 0) -> None:
        super().__init__(inner)
        self.error_rate = error_rate
        self._rng = random.Random(seed)

    def _maybe_fail(self) -> None:
        if self._rng.random() < self.error_rate:
            raise sqlite3.OperationalError("database is locked")

    def put(self, config, checkpoint, metadata, new_versions):
        self._maybe_fail()
        return super().put(config, checkpoint, metadata, new_versions)

    async def aput(self, config, checkpoint, metadata, new_versions):
        self._maybe_fail()
        return await super().aput(config, checkpoint, metadata, new_versions)

    def put_writes(self, config, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = "") -> None:
        self._maybe_fail()
        super().put_writes(config, writes, task_id, task_path)

    async def aput_writes(self, config, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = "") -> None:
        self._maybe_fail()
        await super().aput_writes(config, writes, task_id, task_path)


def run(saver: BaseCheckpointSaver, writes_per_sec: float, duration: float, checkpoint_bytes: int,
        threads: int = 8) -> dict[str, int]:
    """Alternate put and put_writes at ``writes_per_sec`` for ``duration`` seconds (0: forever)."""
    payload = os.urandom(checkpoint_bytes)
    heads: dict[str, dict] = {}  # thread -> config of its latest checkpoint
    counts = {"attempts": 0, "failed": 0}
    start = time.monotonic()
    n = 0
    while not duration or time.monotonic() - start < duration:
        thread_id = f"app-{(n // 2) % threads}"
        try:
            if n % 2 == 0 or thread_id not in heads:
                checkpoint = empty_checkpoint()
                checkpoint["channel_values"] = {"payload": payload, "step": n}
                checkpoint["channel_versions"] = {"payload": saver.get_next_version(None, None)}
                parent = heads.get(thread_id) or {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
                heads[thread_id] = saver.put(parent, checkpoint, {"source": "loop", "step": n},
                                             checkpoint["channel_versions"])
            else:
                saver.put_writes(heads[thread_id], [("note", f"write {n}")], task_id=str(uuid.uuid4()))
        except sqlite3.OperationalError:
            counts["failed"] += 1
        counts["attempts"] += 1
        n += 1
        delay = start + n / writes_per_sec - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    return counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.observability.metrics_app", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--sqlite", required=True, metavar="PATH")
    ap.add_argument("--writes-per-sec", type=float, default=20.0)
    ap.add_argument("--error-rate", type=float, default=0.0)
    ap.add_argument("--duration", type=float, default=0.0, help="seconds; 0 runs until killed")
    ap.add_argument("--checkpoint-bytes", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    if args.writes_per_sec <= 0 or not 0 <= args.error_rate <= 1:
        ap.error("--writes-per-sec must be positive and --error-rate between 0 and 1")

    from langgraph.checkpoint.sqlite import SqliteSaver
    from prometheus_client import start_http_server

    from include.checkpoint_core.observability.metered import MeteredSaver
    from include.checkpoint_core.sqlite_store import connect_sqlite, setup_sqlite

    setup_sqlite(args.sqlite)
    with closing(connect_sqlite(args.sqlite)) as conn:
        saver = MeteredSaver(FlakySaver(SqliteSaver(conn), args.error_rate, seed=args.seed))
        start_http_server(args.port, addr="127.0.0.1")
        print("ready", flush=True)
        counts = run(saver, args.writes_per_sec, args.duration, args.checkpoint_bytes)
    print(f"done: {counts['attempts']} write attempts, {counts['failed']} failed", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
