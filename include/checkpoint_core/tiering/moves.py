"""Moving one thread between tiers: copy, verify row by row, then delete from where it was.

The source is deleted only if the thread did not change since the copy. Hot: the copy carries the
thread's write counter, and the fence goes up only if that counter is unchanged (one Lua script),
after which the app's writes are refused and routed through the directory. Cold and archive: the
thread's tier lock is held from copy to delete, and every promotion takes it too. A thread the
app touches during a move stays where the app wrote it; the next run picks it up.

Every function takes an autocommit connection to the cold database and opens its own
transactions, so a retried or killed move converges: each step is either not done, or done in a
way the next attempt recognises (the ``staging`` entry, the fence token, the content address).
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg

from include.checkpoint_core.tiering import archive as arc
from include.checkpoint_core.tiering import directory
from include.checkpoint_core.tiering.hot import RedisRowSaver
from include.checkpoint_core.tiering.rows import (
    ThreadRows,
    delete_pg_thread,
    differences,
    has_pg_rows,
    read_pg_thread,
    write_pg_thread,
)


@dataclass
class Outcome:
    thread_id: str
    action: str  # demote | archive | rehydrate | promote
    result: str  # moved | changed | busy | conflict | rejected | gone | missing | corrupt | not-eligible
    checkpoints: int = 0
    writes: int = 0
    row_bytes: int = 0
    archive_bytes: int = 0
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def moved(self) -> bool:
        return self.result == "moved"

    def as_dict(self) -> dict:
        return asdict(self)


def _token(action: str) -> str:
    return f"{action}:{uuid.uuid4().hex}"


def _counted(o: Outcome, rows: ThreadRows) -> Outcome:
    o.checkpoints, o.writes, o.row_bytes = len(rows.checkpoints), len(rows.writes), rows.nbytes
    return o


def _drop_staging(conn: psycopg.Connection, thread_id: str, token: str | None = None) -> None:
    """Remove a demotion's copy, if the directory still says it is one (and, with token, ours)."""
    with conn.transaction():
        directory.lock(conn, thread_id)
        e = directory.entry(conn, thread_id)
        if e is not None and e.tier == "staging" and (token is None or e.token == token):
            delete_pg_thread(conn, thread_id)
            directory.remove(conn, thread_id)


def demote(conn: psycopg.Connection, hot: RedisRowSaver, thread_id: str) -> Outcome:
    """Hot -> cold for one thread."""
    out = Outcome(thread_id, "demote", "moved")
    snap = hot.export_thread(thread_id)
    if snap.version is None:
        out.result, out.detail = "gone", "nothing hot (deleted or already moved)"
        return out
    if snap.fence is not None:
        return _finish_fenced(conn, hot, thread_id, snap.fence, out)
    _counted(out, snap.rows)
    token = _token("demote")
    try:
        with conn.transaction():
            directory.lock(conn, thread_id)
            e = directory.entry(conn, thread_id)
            if e is not None and e.tier in ("cold", "archive"):
                out.result = "conflict"
                out.detail = f"hot rows and a {e.tier} entry without a move in progress: left alone, not merged"
                return out
            if e is None and has_pg_rows(conn, thread_id):
                out.result = "conflict"
                out.detail = "hot rows and PostgreSQL rows written outside tiering: left alone, not merged"
                return out
            if e is not None:  # a staging copy an earlier attempt left behind
                delete_pg_thread(conn, thread_id)
            write_pg_thread(conn, snap.rows)
            directory.put(conn, directory.Entry(thread_id, "staging", token, row_bytes=out.row_bytes,
                                                checkpoints=out.checkpoints))
    except psycopg.DataError as exc:  # e.g. a NUL in metadata: jsonb cannot hold it; the thread stays hot whole
        out.result, out.detail = "rejected", f"PostgreSQL refused the thread's rows: {str(exc).splitlines()[0]}"
        return out
    found = differences(snap.rows, read_pg_thread(conn, thread_id))
    if found:
        _drop_staging(conn, thread_id, token)
        out.result, out.detail = "rejected", "verify: " + "; ".join(found)
        return out
    with conn.transaction():
        directory.lock(conn, thread_id)
        e = directory.entry(conn, thread_id)
        if e is None or e.token != token:
            out.result, out.detail = "changed", "the staging copy was replaced by another attempt"
            return out
        if not hot.fence_if_unchanged(thread_id, snap.version, token):
            delete_pg_thread(conn, thread_id)
            directory.remove(conn, thread_id)
            out.result, out.detail = "changed", "the app wrote to the thread during the copy; it stays hot"
            return out
        try:
            directory.put(conn, directory.Entry(thread_id, "cold", None, row_bytes=out.row_bytes,
                                                checkpoints=out.checkpoints))
        except BaseException:
            hot.clear_fence(thread_id, token)  # not committed: the thread stays hot
            raise
    hot.drop_thread(thread_id, token)
    return out


def _finish_fenced(conn: psycopg.Connection, hot: RedisRowSaver, thread_id: str, fence: str, out: Outcome) -> Outcome:
    """A fence left by an interrupted move: finish what the directory says happened."""
    with conn.transaction():
        directory.lock(conn, thread_id)
        e = directory.entry(conn, thread_id)
        if e is not None and e.tier in ("cold", "archive"):
            hot.drop_thread(thread_id, fence)  # committed to the other tier; the hot copy is stale
            out.detail = f"finished an interrupted move (the thread is {e.tier})"
            return out
        hot.clear_fence(thread_id, fence)  # the move never committed: the thread is hot
    out.result, out.detail = "busy", "cleared the fence of an interrupted move; the next run demotes it"
    return out


def promote(conn: psycopg.Connection, hot: RedisRowSaver, archive: arc.ArchiveStore | None,
            thread_id: str) -> Outcome:
    """Cold or archive -> hot, before the app's next write (the caller then writes to hot).

    The fence stays up until the directory no longer names the old tier, so a crash at any point
    leaves one tier that rules: the old one until the commit, the hot one after it.
    """
    out = Outcome(thread_id, "promote", "moved")
    token = _token("promote")
    deletes: list[str] = []
    with conn.transaction():
        directory.lock(conn, thread_id)
        e = directory.entry(conn, thread_id)
        fence = hot.fence_of(thread_id)
        if e is not None and e.tier == "archive":
            if archive is None:
                raise arc.ArchiveUnavailable(f"thread {thread_id!r} is archived, and this saver has no archive")
            rows = arc.fetch(archive, thread_id, e.archive_key, e.archive_sha256)
            deletes.append(e.archive_key)
        elif (e is None or e.tier == "cold") and has_pg_rows(conn, thread_id):
            rows = read_pg_thread(conn, thread_id)
        else:
            # Nothing cold: a new thread, or a fence whose move never committed (its owner is gone:
            # it would hold this lock). Either way the thread is hot from here on.
            if fence is not None:
                hot.clear_fence(thread_id, fence)
            out.result = "not-eligible"
            return out
        _counted(out, rows)
        if not hot.import_thread(rows, token):
            raise RuntimeError(f"thread {thread_id!r}: could not take the hot tier's fence for the promotion")
        delete_pg_thread(conn, thread_id)
        directory.remove(conn, thread_id)
    hot.clear_fence(thread_id, token)
    for key in deletes:
        try:
            archive.delete(key)  # type: ignore[union-attr]
        except arc.ArchiveError:
            out.extra["orphan_object"] = key  # referenced by nothing now; the cost report lists it
    return out


def archive_thread(conn: psycopg.Connection, hot: RedisRowSaver, store: arc.ArchiveStore,
                   thread_id: str) -> Outcome:
    """Cold -> archive: upload, read back and compare, then delete the rows, under the thread lock."""
    out = Outcome(thread_id, "archive", "moved")
    with conn.transaction():
        directory.lock(conn, thread_id)
        e = directory.entry(conn, thread_id)
        if e is not None and e.tier != "cold":
            out.result, out.detail = "not-eligible", f"the thread is {e.tier}"
            return out
        if hot.export_thread(thread_id).version is not None:
            out.result = "conflict" if hot.fence_of(thread_id) is None else "busy"
            out.detail = "the thread also has hot rows: left alone"
            return out
        rows = read_pg_thread(conn, thread_id)
        if not rows:
            out.result, out.detail = "gone", "no rows in PostgreSQL"
            return out
        _counted(out, rows)
        data = arc.encode(rows)
        digest = arc.sha256(data)
        key = arc.object_key(thread_id, digest)
        store.put(key, data)
        found = differences(rows, arc.fetch(store, thread_id, key, digest))
        if found:
            out.result, out.detail = "rejected", "verify: " + "; ".join(found)
            return out
        out.archive_bytes = len(data)
        out.extra.update(key=key, sha256=digest)
        directory.put(conn, directory.Entry(thread_id, "archive", None, key, digest, len(data), out.row_bytes,
                                            out.checkpoints))
        delete_pg_thread(conn, thread_id)
    return out


def rehydrate(conn: psycopg.Connection, hot: RedisRowSaver, store: arc.ArchiveStore, thread_id: str) -> Outcome:
    """Archive -> cold: fetch, check the digest, write and compare the rows, then drop the object."""
    out = Outcome(thread_id, "rehydrate", "moved")
    with conn.transaction():
        directory.lock(conn, thread_id)
        e = directory.entry(conn, thread_id)
        if e is None or e.tier != "archive":
            out.result, out.detail = "not-eligible", f"the thread is {e.tier if e else 'not archived'}"
            return out
        try:
            rows = arc.fetch(store, thread_id, e.archive_key, e.archive_sha256)
        except arc.ArchiveMissing as exc:
            out.result, out.detail = "missing", str(exc)
            return out
        except arc.ArchiveCorrupt as exc:
            out.result, out.detail = "corrupt", str(exc)
            return out
        _counted(out, rows)
        delete_pg_thread(conn, thread_id)
        write_pg_thread(conn, rows)
        found = differences(rows, read_pg_thread(conn, thread_id))
        if found:
            raise RuntimeError(f"thread {thread_id!r}: rows differ after rehydration: {'; '.join(found)}")
        directory.put(conn, directory.Entry(thread_id, "cold", None, row_bytes=out.row_bytes,
                                            checkpoints=out.checkpoints))
    try:
        store.delete(e.archive_key)
    except arc.ArchiveError:
        out.extra["orphan_object"] = e.archive_key
    return out
