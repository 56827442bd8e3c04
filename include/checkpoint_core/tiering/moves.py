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
    delete_pg_threads,
    differences,
    has_pg_rows,
    pg_threads_with_rows,
    read_pg_thread,
    read_pg_threads,
    write_pg_thread,
    write_pg_threads,
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


def demote(conn: psycopg.Connection, hot: RedisRowSaver, thread_id: str) -> Outcome:
    """Hot -> cold for one thread."""
    return demote_group(conn, hot, [thread_id])[0]


def demote_group(conn: psycopg.Connection, hot: RedisRowSaver, thread_ids: list[str]) -> list[Outcome]:
    """Hot -> cold for a group of threads, a dozen round trips for the whole group.

    Each thread is still decided on its own: one that changed, is in two tiers or fails its
    comparison stays hot, the others move. A row PostgreSQL refuses aborts the group's copy; the
    group is then moved one thread at a time, so only the thread holding that row stays hot.
    """
    outs = {t: Outcome(t, "demote", "moved") for t in dict.fromkeys(thread_ids)}
    live, left_fenced = {}, {}
    for tid, snap in hot.export_threads(list(outs)).items():
        if snap.version is None:
            outs[tid].result, outs[tid].detail = "gone", "nothing hot (deleted or already moved)"
        elif snap.fence is not None:
            left_fenced[tid] = snap.fence
        else:
            live[tid] = snap
            _counted(outs[tid], snap.rows)
    if left_fenced:
        _finish_fenced(conn, hot, left_fenced, outs)
    tokens = {t: _token("demote") for t in live}
    try:
        staged = _stage(conn, live, tokens, outs)
    except psycopg.DataError as exc:
        if len(live) > 1:
            return [demote_group(conn, hot, [t])[0] if t in live else outs[t] for t in outs]
        for tid in live:  # the thread stays hot, whole
            outs[tid].result = "rejected"
            outs[tid].detail = f"PostgreSQL refused the thread's rows: {str(exc).splitlines()[0]}"
        return list(outs.values())
    copied = read_pg_threads(conn, staged, digests=True)
    failed = {t: found for t in staged if (found := differences(live[t].rows.digested(), copied[t]))}
    if failed:
        with conn.transaction():
            directory.lock(conn, *failed)
            ours = [t for t, e in directory.entries_of(conn, list(failed)).items()
                    if e.tier == "staging" and e.token == tokens[t]]
            delete_pg_threads(conn, ours)
            directory.remove(conn, *ours)
        for tid, found in failed.items():
            outs[tid].result, outs[tid].detail = "rejected", "verify: " + "; ".join(found)
    _commit_demotions(conn, hot, {t: live[t] for t in staged if t not in failed}, tokens, outs)
    return list(outs.values())


def _stage(conn: psycopg.Connection, live: dict, tokens: dict[str, str], outs: dict[str, Outcome]) -> list[str]:
    """Copy the threads' rows into PostgreSQL as ``staging`` (the hot copy still rules)."""
    if not live:
        return []
    with conn.transaction():
        ids = list(live)
        directory.lock(conn, *ids)
        placed = directory.entries_of(conn, ids)
        foreign = pg_threads_with_rows(conn, [t for t in ids if t not in placed])
        go = []
        for tid in ids:
            e = placed.get(tid)
            if e is not None and e.tier in ("cold", "archive"):
                outs[tid].result = "conflict"
                outs[tid].detail = f"hot rows and a {e.tier} entry without a move in progress: left alone, not merged"
            elif tid in foreign:
                outs[tid].result = "conflict"
                outs[tid].detail = "hot rows and PostgreSQL rows written outside tiering: left alone, not merged"
            else:
                go.append(tid)
        delete_pg_threads(conn, [t for t in go if t in placed])  # staging copies an earlier attempt left
        write_pg_threads(conn, [live[t].rows for t in go])
        directory.put(conn, *[directory.Entry(t, "staging", tokens[t], row_bytes=outs[t].row_bytes,
                                              checkpoints=outs[t].checkpoints) for t in go])
    return go


def _commit_demotions(conn: psycopg.Connection, hot: RedisRowSaver, verified: dict, tokens: dict[str, str],
                      outs: dict[str, Outcome]) -> None:
    """Fence each unchanged thread, name it cold, then delete its hot rows; a changed one stays hot."""
    if not verified:
        return
    with conn.transaction():
        directory.lock(conn, *verified)
        placed = directory.entries_of(conn, list(verified))
        mine = [t for t in verified if t in placed and placed[t].token == tokens[t]]
        for tid in verified.keys() - set(mine):
            outs[tid].result, outs[tid].detail = "changed", "the staging copy was replaced by another attempt"
        fenced = hot.fence_unchanged({t: (verified[t].version, tokens[t]) for t in mine})
        changed = [t for t in mine if t not in fenced]
        delete_pg_threads(conn, changed)
        directory.remove(conn, *changed)
        for tid in changed:
            outs[tid].result, outs[tid].detail = "changed", "the app wrote to the thread during the copy; it stays hot"
        try:
            directory.put(conn, *[directory.Entry(t, "cold", None, row_bytes=outs[t].row_bytes,
                                                  checkpoints=outs[t].checkpoints) for t in fenced])
        except BaseException:
            hot.clear_fences({t: tokens[t] for t in fenced})  # not committed: those threads stay hot
            raise
    hot.drop_threads({t: tokens[t] for t in fenced})


def _finish_fenced(conn: psycopg.Connection, hot: RedisRowSaver, fences: dict[str, str],
                   outs: dict[str, Outcome]) -> None:
    """Fences left by interrupted moves: finish what the directory says happened."""
    with conn.transaction():
        directory.lock(conn, *fences)
        placed = directory.entries_of(conn, list(fences))
        done = {t: f for t, f in fences.items() if t in placed and placed[t].tier in ("cold", "archive")}
        hot.drop_threads(done)  # committed to the other tier: the hot copy is stale
        hot.clear_fences({t: f for t, f in fences.items() if t not in done})  # never committed: still hot
    for tid in fences:
        if tid in done:
            outs[tid].detail = f"finished an interrupted move (the thread is {placed[tid].tier})"
        else:
            outs[tid].result = "busy"
            outs[tid].detail = "cleared the fence of an interrupted move; the next run demotes it"


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
        if fence is not None and e is not None and e.tier in ("cold", "archive"):
            # A move committed and has not yet dropped its fenced hot copy: that copy is stale.
            hot.drop_thread(thread_id, fence)
            fence = None
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
