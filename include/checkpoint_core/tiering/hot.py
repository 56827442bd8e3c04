"""The hot tier: PostgresSaver's rows kept in plain Redis, one small group of keys per thread.

Why not ``langgraph-checkpoint-redis``: its RedisSaver re-encodes every checkpoint through its own
JSON serializer (values become RedisJSON documents), so moving a thread to PostgreSQL would mean
decoding the app's objects where tiering runs, and it needs the RedisJSON and RediSearch modules.
Here a row is the bytes PostgresSaver would store (``rows.RowCodec``), so a demotion is a copy, and
any Redis >= 6.2 (or Valkey) serves it. Each operation on a thread is one Lua script: atomic, one
round trip, and guarded by the thread's *fence*, the key a move sets so that no write lands in a
tier a thread is leaving.

Keys, under ``{prefix}:{<thread id>}:`` (the hash tag keeps a thread on one cluster slot):
``ix`` zset of ``ns\\0checkpoint_id`` (lexical order = PostgresSaver's order), ``cp`` hash member ->
checkpoint row, ``cf`` hash member -> the blob fields it references, ``bl`` hash
``ns\\0channel\\0version`` -> blob, ``w:<member>`` hash ``task_id\\0idx`` -> write, ``wk`` set of
members with writes, ``v`` a counter bumped by every write, ``fence``. ``{prefix}:threads`` is a
zset of hot thread ids scored by last write time: the planner's idle index.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import ormsgpack
import redis
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from include.checkpoint_core.tiering.rows import (
    BlobRow,
    CheckpointRow,
    RowCodec,
    ThreadRows,
    WriteRow,
    contains,
    sends_of,
)
from include.checkpoint_core.tiering.threaded_async import AsyncInThread

SEP = "\0"
FENCED, ABSENT, OK = -1, -2, 1

# KEYS: fence v ix cp cf bl threads; ARGV: mode tid now member row fields n (field value)*
_PUT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
if ARGV[1] == 'existing' and redis.call('EXISTS', KEYS[2]) == 0 then return -2 end
redis.call('HSET', KEYS[4], ARGV[4], ARGV[5])
redis.call('HSET', KEYS[5], ARGV[4], ARGV[6])
redis.call('ZADD', KEYS[3], 0, ARGV[4])
for i = 8, 7 + 2 * tonumber(ARGV[7]), 2 do redis.call('HSETNX', KEYS[6], ARGV[i], ARGV[i + 1]) end
if redis.call('EXISTS', KEYS[2]) == 0 then redis.call('SET', KEYS[2], ARGV[3]) end
redis.call('INCR', KEYS[2])
redis.call('ZADD', KEYS[7], ARGV[3], ARGV[2])
return 1
"""

# KEYS: fence v wkey wk threads; ARGV: mode tid now member upsert (field value)*
_PUT_WRITES = """
if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
if ARGV[1] == 'existing' and redis.call('EXISTS', KEYS[2]) == 0 then return -2 end
local cmd = 'HSETNX'
if ARGV[5] == '1' then cmd = 'HSET' end
for i = 6, #ARGV, 2 do redis.call(cmd, KEYS[3], ARGV[i], ARGV[i + 1]) end
redis.call('SADD', KEYS[4], ARGV[4])
if redis.call('EXISTS', KEYS[2]) == 0 then redis.call('SET', KEYS[2], ARGV[3]) end
redis.call('INCR', KEYS[2])
redis.call('ZADD', KEYS[5], ARGV[3], ARGV[2])
return 1
"""

# KEYS: fence v ix cp cf bl; ARGV: wprefix force mode ns-or-member...
# mode 'latest': newest member of namespace ARGV[4]; mode 'members': ARGV[4..]
_READ = """
if ARGV[2] ~= '1' and redis.call('EXISTS', KEYS[1]) == 1 then return {-1} end
if redis.call('EXISTS', KEYS[2]) == 0 then return {-2} end
local members = {}
if ARGV[3] == 'latest' then
  members = redis.call('ZREVRANGEBYLEX', KEYS[3], '(' .. ARGV[4] .. '\\1', '[' .. ARGV[4] .. '\\0', 'LIMIT', 0, 1)
else
  for i = 4, #ARGV do members[#members + 1] = ARGV[i] end
end
local out = {1}
for _, m in ipairs(members) do
  local row = redis.call('HGET', KEYS[4], m)
  if row then
    local fields = cmsgpack.unpack(redis.call('HGET', KEYS[5], m))
    local blobs = {}
    if #fields > 0 then blobs = redis.call('HMGET', KEYS[6], unpack(fields)) end
    out[#out + 1] = {m, row, fields, blobs, redis.call('HGETALL', ARGV[1] .. m)}
  end
end
return out
"""

# KEYS: fence v ix cp bl wk; ARGV: wprefix -> {v, fence, {member, row}*, bl pairs, {member, writes}*}
_EXPORT = """
local v = redis.call('GET', KEYS[2])
if not v then return {false, redis.call('GET', KEYS[1]) or false} end
local cps = {}
for _, m in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do cps[#cps + 1] = {m, redis.call('HGET', KEYS[4], m)} end
local ws = {}
for _, m in ipairs(redis.call('SMEMBERS', KEYS[6])) do ws[#ws + 1] = {m, redis.call('HGETALL', ARGV[1] .. m)} end
return {v, redis.call('GET', KEYS[1]) or false, cps, redis.call('HGETALL', KEYS[5]), ws}
"""

_DROP_BODY = """
for _, m in ipairs(redis.call('SMEMBERS', KEYS[7])) do redis.call('DEL', ARGV[1] .. m) end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7])
redis.call('ZREM', KEYS[8], ARGV[2])
"""
# KEYS: fence v ix cp cf bl wk threads; ARGV: wprefix tid token ('' = unconditional)
_DROP = """
if ARGV[3] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[3] then return 0 end
""" + _DROP_BODY + """
redis.call('DEL', KEYS[1])
return 1
"""

# KEYS: fence v; ARGV: expected-version token
_FENCE_IF_UNCHANGED = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""

# KEYS: fence; ARGV: token
_CLEAR_FENCE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) return 1 end
return 0
"""

# KEYS: fence v ix cp cf bl wk threads; ARGV: wprefix tid token now ncp (member row fields)* nbl (f v)* (member nw (f v)*)*
_IMPORT = """
local fence = redis.call('GET', KEYS[1])
if fence and fence ~= ARGV[3] then return 0 end
""" + _DROP_BODY + """
redis.call('SET', KEYS[1], ARGV[3])
local i = 6
for _ = 1, tonumber(ARGV[5]) do
  redis.call('HSET', KEYS[4], ARGV[i], ARGV[i + 1]); redis.call('HSET', KEYS[5], ARGV[i], ARGV[i + 2])
  redis.call('ZADD', KEYS[3], 0, ARGV[i]); i = i + 3
end
local nbl = tonumber(ARGV[i]); i = i + 1
for _ = 1, nbl do redis.call('HSET', KEYS[6], ARGV[i], ARGV[i + 1]); i = i + 2 end
while i <= #ARGV do
  local m, n = ARGV[i], tonumber(ARGV[i + 1]); i = i + 2
  redis.call('SADD', KEYS[7], m)
  for _ = 1, n do redis.call('HSET', ARGV[1] .. m, ARGV[i], ARGV[i + 1]); i = i + 2 end
end
redis.call('SET', KEYS[2], ARGV[4])
redis.call('ZADD', KEYS[8], ARGV[4], ARGV[2])
return 1
"""


class HotTierFenced(RuntimeError):
    """A move holds this thread: the caller routes through the tier directory instead."""


@dataclass(frozen=True)
class Export:
    version: str | None  # None: the thread has nothing hot
    fence: str | None
    rows: ThreadRows


def _now_us() -> int:
    """Scores and version seeds in microseconds: a thread's counter never repeats after a round trip."""
    return time.time_ns() // 1000


def _pack(value: Any) -> bytes:
    return ormsgpack.packb(value)


def _unpack(data: bytes) -> Any:
    return ormsgpack.unpackb(data)


def _member(ns: str, checkpoint_id: str) -> str:
    return f"{ns}{SEP}{checkpoint_id}"


def _split(member: bytes | str) -> list[str]:
    return (member.decode() if isinstance(member, bytes) else member).split(SEP)


def _pairs(flat: list) -> list[tuple]:
    return list(zip(flat[::2], flat[1::2]))


class RedisRowSaver(AsyncInThread, BaseCheckpointSaver):
    """A checkpointer on plain Redis whose rows are PostgresSaver's (sync; async runs in a thread).

    Standalone it is a complete saver; ``TieredSaver`` drives its fenced, per-thread primitives.
    """

    def __init__(self, client: redis.Redis, *, prefix: str = "checkpoint_ops", serde: SerializerProtocol | None = None):
        self.codec = RowCodec(serde)
        super().__init__(serde=self.codec.serde)
        if client.get_connection_kwargs().get("decode_responses"):
            raise ValueError("RedisRowSaver needs a client with decode_responses=False: rows hold raw bytes")
        self.client = client
        self.prefix = prefix
        self.threads_key = f"{prefix}:threads"
        self._scripts = {name: client.register_script(src) for name, src in {
            "put": _PUT, "put_writes": _PUT_WRITES, "read": _READ, "export": _EXPORT, "drop": _DROP,
            "fence": _FENCE_IF_UNCHANGED, "clear": _CLEAR_FENCE, "import": _IMPORT}.items()}

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisRowSaver:
        return cls(redis.Redis.from_url(url), **kwargs)

    def setup(self) -> None:
        """Nothing to create: checks the server answers and runs Lua (any Redis >= 6.2 or Valkey)."""
        self.client.ping()

    # ---- keys ---------------------------------------------------------------------------------
    def _k(self, thread_id: str, *names: str) -> list[str]:
        base = f"{self.prefix}:{{{thread_id}}}:"
        return [base + n for n in names]

    def _wprefix(self, thread_id: str) -> str:
        return self._k(thread_id, "w:")[0]

    def get_next_version(self, current: str | None, channel: None) -> str:
        return self.codec.get_next_version(current, channel)

    # ---- fenced primitives (TieredSaver and the moves use these) -----------------------------
    def store_checkpoint(self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata,
                         new_versions: ChannelVersions, *, mode: str = "new") -> tuple[int, RunnableConfig]:
        row, blobs = self.codec.checkpoint_rows(config, checkpoint, metadata, new_versions)
        tid = config["configurable"]["thread_id"]
        member = _member(row.ns, row.checkpoint_id)
        fields = [f"{row.ns}{SEP}{ch}{SEP}{ver}" for ch, ver in (row.checkpoint.get("channel_versions") or {}).items()]
        args: list[Any] = [mode, tid, _now_us(), member,
                           _pack([row.parent_id, row.checkpoint, row.metadata, row.type]), _pack(fields), len(blobs)]
        for b in blobs:
            args += [f"{b.ns}{SEP}{b.channel}{SEP}{b.version}", _pack([b.type, b.blob])]
        status = self._scripts["put"](keys=self._k(tid, "fence", "v", "ix", "cp", "cf", "bl") + [self.threads_key],
                                      args=args)
        return status, {"configurable": {"thread_id": tid, "checkpoint_ns": row.ns, "checkpoint_id": row.checkpoint_id}}

    def store_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str,
                     task_path: str = "", *, mode: str = "new") -> int:
        rows, upsert = self.codec.write_rows(config, writes, task_id, task_path)
        conf = config["configurable"]
        tid, member = conf["thread_id"], _member(conf.get("checkpoint_ns", ""), conf["checkpoint_id"])
        args: list[Any] = [mode, tid, _now_us(), member, "1" if upsert else "0"]
        for w in rows:
            args += [f"{w.task_id}{SEP}{w.idx}", _pack([w.task_path, w.channel, w.type, w.blob])]
        return self._scripts["put_writes"](
            keys=self._k(tid, "fence", "v") + [self._wprefix(tid) + member] + self._k(tid, "wk") + [self.threads_key],
            args=args)

    def read(self, thread_id: str, *, latest_ns: str | None = None, members: Sequence[str] = (),
             force: bool = False) -> tuple[int, list[CheckpointTuple]]:
        """Checkpoint tuples of a thread in one atomic call: ``(OK|FENCED|ABSENT, tuples)``."""
        mode_args = ["latest", latest_ns] if latest_ns is not None else ["members", *members]
        reply = self._scripts["read"](keys=self._k(thread_id, "fence", "v", "ix", "cp", "cf", "bl"),
                                      args=[self._wprefix(thread_id), "1" if force else "0", *mode_args])
        if reply[0] != OK:
            return reply[0], []
        out = []
        for member, row, fields, blobs, writes in reply[1:]:
            ns, cid = _split(member)
            cp = self._checkpoint_row(ns, cid, row)
            blob_rows = [self._blob_row(f, b) for f, b in zip(fields, blobs) if b is not None]
            write_rows = [self._write_row(ns, cid, f, v) for f, v in _pairs(writes)]
            sends: list[WriteRow] = []
            if cp.checkpoint.get("v", 4) < 4 and cp.parent_id:
                parent = _member(ns, cp.parent_id)
                flat = self.client.hgetall(self._wprefix(thread_id) + parent)
                sends = sends_of([self._write_row(ns, cp.parent_id, f, v) for f, v in flat.items()], ns, cp.parent_id)
            out.append(self.codec.to_tuple(thread_id, cp, blob_rows, write_rows, sends))
        return OK, out

    def members(self, thread_id: str) -> list[str]:
        return [m.decode() for m in self.client.zrange(self._k(thread_id, "ix")[0], 0, -1)]

    def export_threads(self, thread_ids: Sequence[str]) -> dict[str, Export]:
        """Every row of each thread with its version, each a consistent snapshot (one round trip)."""
        pipe = self.client.pipeline(transaction=False)
        for tid in thread_ids:
            self._scripts["export"](keys=self._k(tid, "fence", "v", "ix", "cp", "bl", "wk"), args=[self._wprefix(tid)],
                                    client=pipe)
        return {tid: self._export(tid, reply) for tid, reply in zip(thread_ids, pipe.execute())}

    def export_thread(self, thread_id: str) -> Export:
        return self.export_threads([thread_id])[thread_id]

    def _export(self, thread_id: str, reply: list) -> Export:
        fence = reply[1].decode() if reply[1] else None
        rows = ThreadRows(thread_id)
        if not reply[0]:
            return Export(None, fence, rows)
        for member, row in reply[2]:
            rows.checkpoints.append(self._checkpoint_row(*_split(member), row))
        rows.blobs = [self._blob_row(f, v) for f, v in _pairs(reply[3])]
        for member, flat in reply[4]:
            ns, cid = _split(member)
            rows.writes += [self._write_row(ns, cid, f, v) for f, v in _pairs(flat)]
        return Export(reply[0].decode(), fence, rows)

    def import_thread(self, rows: ThreadRows, token: str) -> bool:
        """Replace a thread's hot rows with ``rows`` and leave it fenced with ``token``."""
        tid = rows.thread_id
        args: list[Any] = [self._wprefix(tid), tid, token, _now_us(), len(rows.checkpoints)]
        for c in rows.checkpoints:
            fields = [f"{c.ns}{SEP}{ch}{SEP}{ver}" for ch, ver in (c.checkpoint.get("channel_versions") or {}).items()]
            args += [_member(c.ns, c.checkpoint_id), _pack([c.parent_id, c.checkpoint, c.metadata, c.type]),
                     _pack(fields)]
        args.append(len(rows.blobs))
        for b in rows.blobs:
            args += [f"{b.ns}{SEP}{b.channel}{SEP}{b.version}", _pack([b.type, b.blob])]
        by_member: dict[str, list[WriteRow]] = {}
        for w in rows.writes:
            by_member.setdefault(_member(w.ns, w.checkpoint_id), []).append(w)
        for member, ws in by_member.items():
            args += [member, len(ws)]
            for w in ws:
                args += [f"{w.task_id}{SEP}{w.idx}", _pack([w.task_path, w.channel, w.type, w.blob])]
        return bool(self._scripts["import"](keys=self._thread_keys(tid), args=args))

    def fence_if_unchanged(self, thread_id: str, version: str, token: str) -> bool:
        return thread_id in self.fence_unchanged({thread_id: (version, token)})

    def fence_unchanged(self, wanted: dict[str, tuple[str, str]]) -> set[str]:
        """Fence each thread whose version is still the one given (thread -> (version, token));
        returns the threads fenced. One round trip; each thread's check-and-set is atomic."""
        return self._each("fence", {t: (self._k(t, "fence", "v"), list(vt)) for t, vt in wanted.items()})

    def clear_fence(self, thread_id: str, token: str) -> bool:
        return thread_id in self.clear_fences({thread_id: token})

    def clear_fences(self, tokens: dict[str, str]) -> set[str]:
        return self._each("clear", {t: (self._k(t, "fence"), [token]) for t, token in tokens.items()})

    def _each(self, script: str, calls: dict[str, tuple[list, list]]) -> set[str]:
        """Run a script once per thread in one pipelined round trip; the threads it returned 1 for."""
        if not calls:
            return set()
        pipe = self.client.pipeline(transaction=False)
        for keys, args in calls.values():
            self._scripts[script](keys=keys, args=args, client=pipe)
        return {t for t, ok in zip(calls, pipe.execute()) if ok}

    def fence_of(self, thread_id: str) -> str | None:
        value = self.client.get(self._k(thread_id, "fence")[0])
        return value.decode() if value else None

    def fences(self, thread_ids: Sequence[str]) -> dict[str, str]:
        """The fenced threads among ``thread_ids`` (one pipelined round trip) and their tokens."""
        pipe = self.client.pipeline(transaction=False)
        for tid in thread_ids:
            pipe.get(self._k(tid, "fence")[0])
        return {tid: v.decode() for tid, v in zip(thread_ids, pipe.execute()) if v}

    def drop_thread(self, thread_id: str, token: str = "") -> bool:
        """Delete a thread's hot rows and its fence; with ``token``, only while that fence holds."""
        return thread_id in self.drop_threads({thread_id: token})

    def drop_threads(self, tokens: dict[str, str]) -> set[str]:
        return self._each("drop", {t: (self._thread_keys(t), [self._wprefix(t), t, token])
                                   for t, token in tokens.items()})

    def _thread_keys(self, tid: str) -> list[str]:
        return self._k(tid, "fence", "v", "ix", "cp", "cf", "bl", "wk") + [self.threads_key]

    def hot_threads(self, *, idle_before: float | None = None, limit: int | None = None) -> list[str]:
        """Hot thread ids, least recently written first; ``idle_before``: last write before that time."""
        high = "+inf" if idle_before is None else f"({int(idle_before * 1e6)}"
        ids = self.client.zrangebyscore(self.threads_key, "-inf", high, start=0 if limit else None,
                                        num=limit if limit else None)
        return [i.decode() for i in ids]

    def last_write(self, thread_id: str) -> float | None:
        """Unix time of the thread's last hot write."""
        score = self.client.zscore(self.threads_key, thread_id)
        return None if score is None else score / 1e6

    # ---- row decoding -------------------------------------------------------------------------
    @staticmethod
    def _checkpoint_row(ns: str, cid: str, packed: bytes) -> CheckpointRow:
        parent, checkpoint, metadata, type_ = _unpack(packed)
        return CheckpointRow(ns, cid, parent, checkpoint, metadata, type_)

    @staticmethod
    def _blob_row(field: bytes, packed: bytes) -> BlobRow:
        ns, channel, version = _split(field)
        type_, blob = _unpack(packed)
        return BlobRow(ns, channel, version, type_, blob)

    @staticmethod
    def _write_row(ns: str, cid: str, field: bytes, packed: bytes) -> WriteRow:
        task_id, idx = _split(field)
        task_path, channel, type_, blob = _unpack(packed)
        return WriteRow(ns, cid, task_id, task_path, int(idx), channel, type_, blob)

    # ---- the saver API ------------------------------------------------------------------------
    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        conf = config["configurable"]
        tid, ns, cid = conf["thread_id"], conf.get("checkpoint_ns", ""), get_checkpoint_id(config)
        _, tuples = self.read(tid, latest_ns=None if cid else ns, members=[_member(ns, cid)] if cid else (),
                              force=True)
        return tuples[0] if tuples else None

    def list_thread(self, thread_id: str, *, ns: str | None = None, checkpoint_id: str | None = None,
                    filter: dict[str, Any] | None = None, before: str | None = None, limit: int | None = None,
                    force: bool = True, page: int = 50) -> Iterator[CheckpointTuple]:
        """One thread's checkpoints newest first, as PostgresSaver.list orders and filters them."""
        members = [m for m in self.members(thread_id)
                   if (ns is None or m.split(SEP)[0] == ns) and (checkpoint_id is None or m.split(SEP)[1] == checkpoint_id)
                   and (before is None or m.split(SEP)[1] < before)]
        members.sort(key=lambda m: m.split(SEP)[1], reverse=True)
        yielded = 0
        for start in range(0, len(members), page):
            status, tuples = self.read(thread_id, members=members[start:start + page], force=force)
            if status == FENCED:
                raise HotTierFenced(thread_id)
            for t in tuples:
                if filter and not contains(t.metadata, filter):
                    continue
                yield t
                yielded += 1
                if limit is not None and yielded >= limit:
                    return

    def list(self, config: RunnableConfig | None, *, filter: dict[str, Any] | None = None,
             before: RunnableConfig | None = None, limit: int | None = None) -> Iterator[CheckpointTuple]:
        before_id = get_checkpoint_id(before) if before else None
        if config is not None:
            conf = config["configurable"]
            yield from self.list_thread(conf["thread_id"], ns=conf.get("checkpoint_ns"),
                                        checkpoint_id=get_checkpoint_id(config), filter=filter, before=before_id,
                                        limit=limit)
            return
        yield from _newest_first((self.list_thread(t, filter=filter, before=before_id) for t in self.hot_threads()),
                                 limit)

    def put(self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata,
            new_versions: ChannelVersions) -> RunnableConfig:
        _, next_config = self.store_checkpoint(config, checkpoint, metadata, new_versions)
        return next_config

    def put_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str,
                   task_path: str = "") -> None:
        self.store_writes(config, writes, task_id, task_path)

    def delete_thread(self, thread_id: str) -> None:
        self.drop_thread(str(thread_id))



def _newest_first(streams, limit: int | None) -> Iterator[CheckpointTuple]:
    """Merge per-thread newest-first streams into one, as PostgresSaver orders list(None)."""
    import heapq

    merged = heapq.merge(*streams, key=lambda t: t.config["configurable"]["checkpoint_id"], reverse=True)
    for n, item in enumerate(merged):
        if limit is not None and n >= limit:
            return
        yield item
