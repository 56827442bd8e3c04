"""What a prune run is asked to do, and what it reports.

Age comes from the checkpoint id: LangGraph ids are uuid6, whose text sorts by creation
time, so "older than the retention" is ``checkpoint_id < cutoff_id`` — an index range scan
in both backends, with no JSON or msgpack decoding.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone

from include.checkpoint_core.ids import uuid6_floor

STRATEGIES = ("keep_latest", "delete")
ORPHAN_MIN_AGE = timedelta(days=1)


@dataclass(frozen=True)
class PrunePolicy:
    """The knobs of one run; ``validate`` turns a bad value into a message that says what to do."""

    retention_days: float = 30
    strategy: str = "keep_latest"
    protect_interrupted: bool = True
    max_threads: int = 10_000  # the sweep limit: threads changed per run
    batch_size: int = 100  # threads per short transaction
    dry_run: bool = False
    busy_timeout_ms: int = 5_000  # SQLite: how long a batch waits for the app's write lock
    vacuum: str = "auto"  # auto | full | off (SQLite VACUUM; PostgreSQL always runs VACUUM (ANALYZE) unless off)
    now: datetime | None = None

    def validate(self) -> "PrunePolicy":
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, not {self.strategy!r}.")
        if not self.retention_days >= 0:
            raise ValueError(f"retention_days must be 0 or more, not {self.retention_days!r}.")
        if self.max_threads < 1 or self.batch_size < 1:
            raise ValueError("max_threads and batch_size must be at least 1.")
        if self.vacuum not in ("auto", "full", "off"):
            raise ValueError(f"vacuum must be auto, full or off, not {self.vacuum!r}.")
        return self

    def now_or_utcnow(self) -> datetime:
        return self.now or datetime.now(timezone.utc)

    @property
    def cutoff(self) -> datetime:
        return self.now_or_utcnow() - timedelta(days=self.retention_days)

    @property
    def cutoff_id(self) -> str:
        return uuid6_floor(self.cutoff)

    @property
    def orphan_cutoff_id(self) -> str:
        """Orphan sweeps look at least a day back, whatever the retention: a run may save a
        step's writes before its checkpoint, so a young orphan may be a checkpoint on its way."""
        return uuid6_floor(min(self.cutoff, self.now_or_utcnow() - ORPHAN_MIN_AGE))


@dataclass
class PruneReport:
    """Counts for one store; the task log line and the XCom summary are made from it."""

    store: str
    kind: str
    strategy: str
    dry_run: bool
    cutoff: str
    threads_examined: int = 0
    threads_trimmed: int = 0  # old history removed, the thread lives on
    threads_deleted: int = 0  # idle threads dropped whole (strategy=delete)
    threads_protected: int = 0  # paused on an interrupt, left as they are
    threads_skipped_delta: int = 0  # use a DeltaChannel: keep_latest would corrupt them
    threads_busy: int = 0  # changed by the app under the prune; the next run picks them up
    checkpoints_deleted: int = 0
    writes_deleted: int = 0
    blobs_deleted: int = 0
    orphan_writes_deleted: int = 0
    orphan_blobs_deleted: int = 0
    store_items_expired: int = 0
    sweep_limit_reached: bool = False
    bytes_before: int = 0
    bytes_after: int = 0
    space: dict = field(default_factory=dict)
    seconds: float = 0.0
    _started: float = field(default_factory=time.perf_counter, repr=False)

    def add(self, counts: dict[str, int]) -> None:
        for key, value in counts.items():
            setattr(self, key, getattr(self, key) + value)

    def finish(self) -> dict:
        self.seconds = round(time.perf_counter() - self._started, 3)
        d = asdict(self)
        d.pop("_started")
        # A dry run rolls back, so it frees nothing (and its rolled-back work can grow the files); a
        # real run on PostgreSQL frees pages for reuse without shrinking the files until VACUUM FULL.
        d["bytes_reclaimed"] = 0 if self.dry_run else max(0, self.bytes_before - self.bytes_after)
        d["rate_checkpoints_per_s"] = round(self.checkpoints_deleted / self.seconds, 1) if self.seconds else 0.0
        return d
