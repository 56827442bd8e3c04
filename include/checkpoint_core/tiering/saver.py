"""TieredSaver: one checkpointer over a hot (Redis), a cold (PostgreSQL) and an archive tier.

The app writes to the hot tier only. A read goes to the hot tier first, in one Lua call that
also tells whether the thread is hot; only a thread that is not costs one directory lookup
(``directory``), and then reads from PostgreSQL or its archive object (cached, checksummed). The
first write to a thread that is not hot promotes it (``moves.promote``) under the thread's tier
lock, so history is never in two tiers. Everything else is what one PostgresSaver would do: the
same rows, versions, ordering and filters, whatever tier the thread is in.

The async methods run the sync ones in a worker thread (the Redis client and the connection pool
are thread-safe); the extended capabilities (``copy_thread``, ``prune``, ``delete_for_runs``) are
not offered, because the tiers do not share them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
)
from langgraph.checkpoint.postgres import PostgresSaver
from psycopg_pool import ConnectionPool

from include.checkpoint_core.tiering import archive as arc
from include.checkpoint_core.tiering import directory, moves
from include.checkpoint_core.tiering.hot import FENCED, OK, HotTierFenced, RedisRowSaver, _member, _newest_first
from include.checkpoint_core.tiering.rows import delete_pg_thread, tuples_from_rows
from include.checkpoint_core.tiering.threaded_async import AsyncInThread

_ATTEMPTS = 8


class TieredSaver(AsyncInThread, BaseCheckpointSaver):
    def __init__(self, hot: RedisRowSaver, pool: ConnectionPool, archive: arc.ArchiveStore | None = None, *,
                 archive_cache: int = 64) -> None:
        super().__init__(serde=hot.serde)
        self.hot, self.pool, self.archive = hot, pool, archive
        self.cold = PostgresSaver(pool, serde=hot.serde)
        self._cache: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._cache_size = archive_cache

    def setup(self) -> None:
        """PostgresSaver's schema, the tier directory, and a check that Redis answers."""
        self.cold.setup()
        with self.pool.connection() as conn:
            directory.ensure(conn)
        self.hot.setup()

    def get_next_version(self, current: str | None, channel: None) -> str:
        return self.hot.get_next_version(current, channel)

    # ---- routing ------------------------------------------------------------------------------
    def _locate(self, thread_id: str, status: int) -> tuple[str, directory.Entry | None]:
        """Where a thread that the hot tier did not serve lives: hot, cold or archive."""
        with self.pool.connection() as conn:
            e = directory.entry(conn, thread_id)
        if e is not None and e.tier in ("cold", "archive"):
            return e.tier, e
        if status == FENCED:  # a move that has not committed, or a promotion that has: hot rules
            return "hot", e
        return "cold", e

    def _archived(self, e: directory.Entry):
        key = (e.thread_id, e.archive_sha256)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        if self.archive is None:
            raise arc.ArchiveUnavailable(f"thread {e.thread_id!r} is archived, and this saver has no archive")
        rows = arc.fetch(self.archive, e.thread_id, e.archive_key, e.archive_sha256)
        self._cache[key] = rows
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return rows

    def _thread(self, thread_id: str, *, ns: str | None, checkpoint_id: str | None, latest: bool,
                filter: dict | None = None, before: str | None = None, limit: int | None = None,
                config: RunnableConfig | None = None) -> list[CheckpointTuple]:
        if latest:
            status, tuples = self.hot.read(thread_id, latest_ns=ns or "")
        elif checkpoint_id is not None and ns is not None:
            status, tuples = self.hot.read(thread_id, members=[_member(ns, checkpoint_id)])
        else:
            status, tuples = self.hot.read(thread_id, members=[])
            if status == OK:
                try:
                    return list(self.hot.list_thread(thread_id, ns=ns, checkpoint_id=checkpoint_id, filter=filter,
                                                     before=before, limit=limit, force=False))
                except HotTierFenced:
                    status = FENCED
        if status == OK:
            return tuples
        where, e = self._locate(thread_id, status)
        if where == "hot":
            return list(self.hot.list_thread(thread_id, ns=ns, checkpoint_id=checkpoint_id, filter=filter,
                                             before=before, limit=1 if latest else limit))
        if where == "archive":
            return list(tuples_from_rows(self.hot.codec, self._archived(e), ns=(ns or "") if latest else ns,
                                         checkpoint_id=checkpoint_id, before=before, filter=filter,
                                         limit=1 if latest else limit))
        if latest or (checkpoint_id is not None and ns is not None):
            found = self.cold.get_tuple(config)
            return [found] if found else []
        return list(self.cold.list(config, filter=filter,
                                   before={"configurable": {"checkpoint_id": before}} if before else None,
                                   limit=limit))

    # ---- reads --------------------------------------------------------------------------------
    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        conf = config["configurable"]
        cid = get_checkpoint_id(config)
        found = self._thread(conf["thread_id"], ns=conf.get("checkpoint_ns", ""), checkpoint_id=cid,
                             latest=cid is None, config=config)
        return found[0] if found else None

    def list(self, config: RunnableConfig | None, *, filter: dict[str, Any] | None = None,
             before: RunnableConfig | None = None, limit: int | None = None) -> Iterator[CheckpointTuple]:
        before_id = get_checkpoint_id(before) if before else None
        if config is not None:
            conf = config["configurable"]
            yield from self._thread(conf["thread_id"], ns=conf.get("checkpoint_ns"),
                                    checkpoint_id=get_checkpoint_id(config), latest=False, filter=filter,
                                    before=before_id, limit=limit, config=config)
            return
        yield from _newest_first(self._all_tiers(filter, before_id), limit)

    def _all_tiers(self, filter: dict | None, before: str | None) -> list[Iterator[CheckpointTuple]]:
        """list(None): every thread once, from the tier that holds it, each stream newest first."""
        with self.pool.connection() as conn:
            placed = {e.thread_id: e for e in directory.entries(conn)}
        hot_ids = set()
        streams: list[Iterator[CheckpointTuple]] = []
        for tid in self.hot.hot_threads():
            e = placed.get(tid)
            if e is not None and e.tier in ("cold", "archive"):
                continue  # fenced mid-move (or a conflict a run reports): the directory's tier rules
            hot_ids.add(tid)
            streams.append(self.hot.list_thread(tid, filter=filter, before=before))
        not_cold = hot_ids | {t for t, e in placed.items() if e.tier != "cold"}
        streams.append(t for t in self.cold.list(None, filter=filter,
                                                 before={"configurable": {"checkpoint_id": before}} if before else None)
                       if t.config["configurable"]["thread_id"] not in not_cold)
        for e in placed.values():
            if e.tier == "archive" and e.thread_id not in hot_ids:
                streams.append(iter(list(tuples_from_rows(self.hot.codec, self._archived(e), before=before,
                                                          filter=filter))))
        return streams

    # ---- writes -------------------------------------------------------------------------------
    def _write(self, thread_id: str, attempt) -> Any:
        for _ in range(_ATTEMPTS):
            status, result = attempt("existing")
            if status == OK:
                return result
            with self.pool.connection() as conn:
                moves.promote(conn, self.hot, self.archive, thread_id)
            status, result = attempt("new")
            if status == OK:
                return result
        raise RuntimeError(f"thread {thread_id!r}: the hot tier stayed fenced through {_ATTEMPTS} attempts "
                           "(a tiering move is stuck); retry, or run checkpoint_tiering to settle it")

    def put(self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata,
            new_versions: ChannelVersions) -> RunnableConfig:
        return self._write(config["configurable"]["thread_id"],
                           lambda mode: self.hot.store_checkpoint(config, checkpoint, metadata, new_versions, mode=mode))

    def put_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str,
                   task_path: str = "") -> None:
        self._write(config["configurable"]["thread_id"],
                    lambda mode: (self.hot.store_writes(config, writes, task_id, task_path, mode=mode), None))

    def delete_thread(self, thread_id: str) -> None:
        thread_id = str(thread_id)
        with self.pool.connection() as conn:
            with conn.transaction():
                directory.lock(conn, thread_id)
                e = directory.entry(conn, thread_id)
                self.hot.drop_thread(thread_id)
                delete_pg_thread(conn, thread_id)
                directory.remove(conn, thread_id)
        if e is not None and e.archive_key and self.archive is not None:
            self.archive.delete(e.archive_key)



__all__ = ["TieredSaver"]
