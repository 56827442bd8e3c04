"""RoutingSaver: the app's checkpointer during a blue-green cutover, over SqliteSaver and PostgresSaver.

Each thread is read from and written to the one store its routing row names (``routes``). Routes
are cached per process; a stale cache is harmless because the stores refuse writes the routing
does not allow, and a refused write is routed again. Reads are checked after the fact: a blue
read against the thread's fence in the SQLite file (a local query), a green read against the
routing row's generation, and re-read from the other store if the thread moved meanwhile.

While a thread is being moved its writes wait (polling the routing row, a few ms at a time); a
move whose lease runs out is taken back by the writer (``flip.take_back``), so a mover that died
never leaves a thread unwritable for longer than its lease. Before the cutover is prepared every
thread is blue; once it is complete every thread is green and no routing is consulted.

The async methods run the sync ones in a worker thread (SqliteSaver serialises on its lock, the
pool is thread-safe). The extended capabilities (``copy_thread``, ``prune``, ``delete_for_runs``)
are not offered: the two stores do not share them.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import psycopg
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver, ChannelVersions, Checkpoint, CheckpointMetadata, CheckpointTuple
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.checkpoint.sqlite import SqliteSaver
from psycopg_pool import ConnectionPool

from include.checkpoint_core.cutover import flip, routes
from include.checkpoint_core.tiering.hot import _newest_first
from include.checkpoint_core.tiering.rows import delete_pg_threads
from include.checkpoint_core.tiering.threaded_async import AsyncInThread

_STATE_TTL_S = 1.0


class CutoverBusy(routes.CutoverError):
    """A thread stayed unwritable past the wait limit (a move holding it and not ending)."""


class RoutingSaver(AsyncInThread, BaseCheckpointSaver):
    def __init__(self, blue: SqliteSaver, green: PostgresSaver, pool: ConnectionPool, *,
                 wait_timeout_s: float = 60.0, cache_size: int = 100_000) -> None:
        super().__init__(serde=green.serde)
        self.blue, self.green, self.pool = blue, green, pool
        self.wait_timeout_s = wait_timeout_s
        self._cache: OrderedDict[str, routes.Route] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._phase: tuple[float, str | None] = (0.0, None)
        self._fence_conn: sqlite3.Connection | None = None
        self._fence_lock = threading.Lock()
        self.flip_waits: deque[float] = deque(maxlen=100_000)  # seconds each write waited on a move

    def setup(self) -> None:
        """Both savers' schemas; once the cutover is complete the SQLite file is read-only and left alone."""
        self.green.setup()
        if self.phase() != "complete":
            self.blue.setup()

    def get_next_version(self, current: str | None, channel: None) -> str:
        return self.green.get_next_version(current, channel)

    # ---- routing ------------------------------------------------------------------------------
    def _fence_db(self) -> sqlite3.Connection:
        """A connection of our own to the blue file, for fence checks (never SqliteSaver's transaction)."""
        if self._fence_conn is None:
            with self.blue.lock:
                path = self.blue.conn.execute("PRAGMA database_list").fetchone()[2]
            self._fence_conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        return self._fence_conn

    def _blue_call(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        with self._fence_lock:
            return fn(self._fence_db())

    def phase(self) -> str | None:
        """None: no cutover prepared (all blue); ramping | complete | rolled_back. Cached for a second."""
        at, phase = self._phase
        if time.monotonic() - at < _STATE_TTL_S:
            return phase
        with self.pool.connection() as conn:
            st = routes.state(conn) if routes.green_installed(conn) else None
        phase = st.phase if st else None
        self._phase = (time.monotonic(), phase)
        return phase

    def route(self, thread_id: str, *, fresh: bool = False) -> routes.Route:
        phase = self.phase()
        if phase is None:
            return routes.Route(thread_id, "blue")
        if phase == "complete":
            return routes.Route(thread_id, "green")
        if not fresh:
            with self._lock:
                r = self._cache.get(thread_id)
            if r is not None:
                return r
        with self.pool.connection() as conn:
            r = routes.lookup(conn, thread_id)
            if r is None:
                in_blue = self._blue_call(lambda c: routes.blue_has_rows(c, thread_id))
                r = routes.register(conn, thread_id, in_blue=in_blue)
        with self._lock:
            self._cache[thread_id] = r
            self._cache.move_to_end(thread_id)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return r

    def _store(self, r: routes.Route) -> BaseCheckpointSaver:
        return self.blue if r.store == "blue" else self.green

    def _await_move(self, r: routes.Route, deadline: float) -> routes.Route:
        """Poll until the thread's move ends; take it back once its lease has run out."""
        pause = 0.002
        while r.moving_to is not None:
            if r.expired:
                with self.pool.connection() as conn:
                    taken = self._blue_call(lambda b: flip.take_back(conn, b, r.thread_id, r.move_id))
                r = self.route(r.thread_id, fresh=True) if taken is not None else r
                continue
            if time.monotonic() > deadline:
                raise CutoverBusy(f"thread {r.thread_id!r} has been moving to {r.moving_to} for longer than "
                                  f"{self.wait_timeout_s:.0f} s; check the checkpoint_cutover run, then retry")
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
            r = self.route(r.thread_id, fresh=True)
        return r

    def _refused(self, r: routes.Route) -> routes.Route:
        """A store refused a write: find where the thread is now, clearing a fence an undone move left."""
        fresh = self.route(r.thread_id, fresh=True)
        if fresh.store == "blue" and fresh.moving_to is None:
            f = self._blue_call(lambda b: routes.fence_of(b, r.thread_id))
            if f is not None and f[0] == "fenced":
                self._blue_call(lambda b: routes.unfence(b, r.thread_id, f[1]))
            else:  # the whole file is fenced: the final step is about to move this thread
                time.sleep(0.01)
        return fresh

    def _write(self, thread_id: str, fn: Callable[[BaseCheckpointSaver], Any]) -> Any:
        deadline = time.monotonic() + self.wait_timeout_s
        r = self.route(thread_id)
        waited_from: float | None = None
        while True:
            if r.moving_to is not None:
                waited_from = waited_from or time.monotonic()
                r = self._await_move(r, deadline)
            try:
                out = fn(self._store(r))
            except (sqlite3.IntegrityError, psycopg.Error) as exc:
                if not routes.is_refusal(exc):
                    raise
                if time.monotonic() > deadline:
                    raise CutoverBusy(f"thread {thread_id!r}: both stores refused writes for "
                                      f"{self.wait_timeout_s:.0f} s; check the checkpoint_cutover run") from exc
                waited_from = waited_from or time.monotonic()
                r = self._refused(r)
                continue
            if waited_from is not None:
                self.flip_waits.append(time.monotonic() - waited_from)
            return out

    def _read(self, thread_id: str, fn: Callable[[BaseCheckpointSaver], Any]) -> Any:
        r = self.route(thread_id)
        for _ in range(8):
            if self.phase() in (None, "complete"):
                return fn(self._store(r))
            out = fn(self._store(r))
            if r.store == "blue":
                f = self._blue_call(lambda b: routes.fence_of(b, thread_id))
                if f is None or f[0] == "returned":
                    return out
                fresh = self.route(thread_id, fresh=True)
                if fresh.store == "blue":  # leaving but not gone (blue is frozen), or a stale fence
                    return out
            else:
                fresh = self.route(thread_id, fresh=True)
                if fresh.store == "green" and fresh.generation == r.generation:
                    return out
            r = fresh
        raise CutoverBusy(f"thread {thread_id!r} kept moving while it was read; retry")

    # ---- reads --------------------------------------------------------------------------------
    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self._read(str(config["configurable"]["thread_id"]), lambda s: s.get_tuple(config))

    def list(self, config: RunnableConfig | None, *, filter: dict[str, Any] | None = None,
             before: RunnableConfig | None = None, limit: int | None = None) -> Iterator[CheckpointTuple]:
        if config is not None:
            yield from self._read(str(config["configurable"]["thread_id"]),
                                  lambda s: list(s.list(config, filter=filter, before=before, limit=limit)))
            return
        phase = self.phase()
        if phase in (None, "complete"):
            yield from (self.blue if phase is None else self.green).list(None, filter=filter, before=before,
                                                                          limit=limit)
            return
        with self.pool.connection() as conn:
            placed = routes.all_routes(conn)
        streams = [
            (t for t in self.blue.list(None, filter=filter, before=before)
             if placed.get(t.config["configurable"]["thread_id"], "blue") == "blue"),
            (t for t in self.green.list(None, filter=filter, before=before)
             if placed.get(t.config["configurable"]["thread_id"]) == "green"),
        ]
        yield from _newest_first(streams, limit)

    # ---- writes -------------------------------------------------------------------------------
    def put(self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata,
            new_versions: ChannelVersions) -> RunnableConfig:
        return self._write(str(config["configurable"]["thread_id"]),
                           lambda s: s.put(config, checkpoint, metadata, new_versions))

    def put_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str,
                   task_path: str = "") -> None:
        self._write(str(config["configurable"]["thread_id"]),
                    lambda s: s.put_writes(config, writes, task_id, task_path))

    def delete_thread(self, thread_id: str) -> None:
        """Deletes the thread in its store, and a blue thread's copy in PostgreSQL too."""
        thread_id = str(thread_id)
        self._write(thread_id, lambda s: s.delete_thread(thread_id))
        if self.phase() not in (None, "complete") and self.route(thread_id).store == "blue":
            with self.pool.connection() as conn, conn.transaction():
                conn.execute("SET LOCAL checkpoint_ops.mover = 'on'")
                delete_pg_threads(conn, [thread_id])


__all__ = ["CutoverBusy", "RoutingSaver"]
