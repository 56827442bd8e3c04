"""Moving threads between blue (SQLite) and green (PostgreSQL), one batch at a time.

A move has one commit point, in the store the threads move to, and the routing row says which:

forward (blue -> green)
  1. claim: ``moving_to = 'green'`` with a move id and a lease (green now refuses the threads,
     and RoutingSaver makes their writers wait);
  2. fence the threads in blue (blue refuses them from here on; rows already written stay);
  3. in one PostgreSQL transaction: lock the routing rows still claimed by this move, replace the
     threads' green rows with blue's, compare row digests, and route them green.
reverse (green -> blue, a rollback)
  1. claim: ``moving_to = 'blue'`` (green refuses the threads);
  2. holding the routing rows' locks: read the green rows, and in one SQLite transaction mark
     the fences ``returned``, replace the threads' blue rows, compare digests, commit;
  3. route them blue.

A writer that finds a move past its lease takes the thread back (``take_back``): a forward move
that never committed is undone; a reverse move whose SQLite side committed is completed. The lock
in ``take_back`` waits for a mover that is still working, so the two never both win. Every step is
safe to repeat, so a killed or retried task converges.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections import defaultdict
from dataclasses import asdict, dataclass, field

import psycopg
from psycopg.rows import tuple_row

from include.checkpoint_core.cutover import routes
from include.checkpoint_core.cutover.reverse import replace_threads, sqlite_rows
from include.checkpoint_core.migration.digests import (
    Digests,
    _sha,
    canonical,
    checkpoint_digest,
    compare,
    settle_disagreements,
    source_digests,
    target_digests,
)
from include.checkpoint_core.migration.source import select_list
from include.checkpoint_core.migration.target import BINARY_TYPES, DIRECT_COPY_SQL, prefer_lz4, transcode_rows
from include.checkpoint_core.migration.transcode import Rejected
from include.checkpoint_core.tiering.rows import ThreadRows, delete_pg_threads, read_pg_threads

DEFAULT_LEASE_S = 30.0
_BLOB_COPY = "COPY checkpoint_blobs (thread_id, checkpoint_ns, channel, version, type, blob) FROM STDIN (FORMAT BINARY)"


@dataclass
class BatchResult:
    direction: str  # green | blue
    moved: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)  # thread -> why it stays where it is
    skipped: list[str] = field(default_factory=list)  # not in the source store, or claimed by another move
    checkpoints: int = 0
    writes: int = 0
    seconds: float = 0.0
    wait_s: float = 0.0  # claim to commit: the longest a writer of these threads waited

    def as_dict(self) -> dict:
        return asdict(self)


class VerifyFailed(routes.CutoverError):
    pass


def _claim(pg: psycopg.Connection, thread_ids: list[str], to: str, move_id: str, lease_s: float) -> list[str]:
    source = "blue" if to == "green" else "green"
    cur = pg.cursor(row_factory=tuple_row)
    cur.execute("""UPDATE checkpoint_ops_routes SET moving_to = %s, move_id = %s,
                       lease_until = now() + make_interval(secs => %s)
                   WHERE thread_id = ANY(%s) AND store = %s AND moving_to IS NULL RETURNING thread_id""",
                (to, move_id, lease_s, thread_ids, source))
    return [r[0] for r in cur.fetchall()]


def _lock_mine(pg: psycopg.Connection, thread_ids: list[str], move_id: str) -> list[str]:
    cur = pg.cursor(row_factory=tuple_row)
    cur.execute("SELECT thread_id FROM checkpoint_ops_routes WHERE thread_id = ANY(%s) AND move_id = %s "
                "ORDER BY thread_id FOR UPDATE", (thread_ids, move_id))
    return [r[0] for r in cur.fetchall()]


def _settle_routes(pg: psycopg.Connection, thread_ids: list[str], store: str | None) -> None:
    """End the move of these threads: route them to ``store`` (None: leave them where they were)."""
    if not thread_ids:
        return
    if store is None:
        pg.execute("UPDATE checkpoint_ops_routes SET moving_to = NULL, move_id = NULL, lease_until = NULL "
                   "WHERE thread_id = ANY(%s)", (thread_ids,))
    else:
        pg.execute("""UPDATE checkpoint_ops_routes SET store = %s, moving_to = NULL, move_id = NULL,
                          lease_until = NULL, generation = generation + 1, moved_at = now()
                      WHERE thread_id = ANY(%s)""", (store, thread_ids))


def _blue_rows(blue: sqlite3.Connection, table: str, thread_ids: list[str]) -> dict[str, list[tuple]]:
    out: dict[str, list[tuple]] = defaultdict(list)
    select = select_list(blue, table)
    for i in range(0, len(thread_ids), 500):
        part = thread_ids[i:i + 500]
        for row in blue.execute(f"SELECT {select} FROM {table} WHERE thread_id IN ({', '.join('?' * len(part))})",
                                part):
            out[row[0]].append(row)
    return out


def _staged(blue: sqlite3.Connection, thread_ids: list[str], result: BatchResult) -> dict[str, dict[str, list]]:
    """Each thread's rows transcoded for PostgreSQL; a thread with a row PostgreSQL cannot hold is refused whole."""
    cps, wrs = _blue_rows(blue, "checkpoints", thread_ids), _blue_rows(blue, "writes", thread_ids)
    out = {}
    for tid in thread_ids:
        c, w = transcode_rows("checkpoints", cps.get(tid, [])), transcode_rows("writes", wrs.get(tid, []))
        bad = c.rejects + w.rejects
        if bad:
            result.refused[tid] = f"{bad[0][1]} (row {bad[0][0]})"
            continue
        out[tid] = {"checkpoints": c.staged["checkpoints"], "blobs": c.staged["blobs"], "writes": w.staged["writes"]}
    return out


def _copy_green(pg: psycopg.Connection, staged: dict[str, dict[str, list]]) -> None:
    prefer_lz4(pg)
    cur = pg.cursor()
    for table, sql, types in (("checkpoints", DIRECT_COPY_SQL["checkpoints"], None),
                              ("blobs", _BLOB_COPY, BINARY_TYPES["blobs"]),
                              ("writes", DIRECT_COPY_SQL["writes"], BINARY_TYPES["writes"])):
        with cur.copy(sql) as copy:
            if types:
                copy.set_types(types)
            for rows in staged.values():
                for r in rows[table]:
                    copy.write_row(r)


def _staged_digests(staged: dict[str, dict[str, list]]) -> Digests:
    """The digests of the rows a forward move wrote, computed from the rows it staged (the transcoding is
    the migration's, already run once; parsing the staged JSON is cheaper than decoding the source again)."""
    out: Digests = {"checkpoints": {}, "blobs": {}, "writes": {}}
    for rows in staged.values():
        for tid, ns, cid, parent, doc, meta in rows["checkpoints"]:
            out["checkpoints"][(tid, ns, cid)] = checkpoint_digest(parent, doc, meta)
        for tid, ns, channel, version, type_, blob in rows["blobs"]:
            out["blobs"][(tid, ns, channel, version)] = (type_, _sha(blob))
        for tid, ns, cid, task, path, idx, channel, type_, blob in rows["writes"]:
            out["writes"][(tid, ns, cid, task, idx)] = (path, channel, type_, _sha(blob))
    return out


def _green_digests(green: dict[str, ThreadRows]) -> Digests:
    """``target_digests`` of rows already read (a rollback holds them), without asking PostgreSQL again."""
    out: Digests = {"checkpoints": {}, "blobs": {}, "writes": {}}
    for tid, rows in green.items():
        for c in rows.checkpoints:
            out["checkpoints"][(tid, c.ns, c.checkpoint_id)] = canonical(c.parent_id, c.checkpoint, c.metadata)
        for b in rows.blobs:
            out["blobs"][(tid, b.ns, b.channel, b.version)] = (b.type, _sha(b.blob))
        for w in rows.writes:
            out["writes"][(tid, w.ns, w.checkpoint_id, w.task_id, w.idx)] = (w.task_path, w.channel, w.type, _sha(w.blob))
    return out


def _verify(blue: sqlite3.Connection, pg: psycopg.Connection, thread_ids: list[str], *, extra_blobs_ok: bool,
            staged: dict[str, dict[str, list]] | None = None, green: dict[str, ThreadRows] | None = None) -> None:
    """Every row of these threads equal in both stores (digests), or ``VerifyFailed``. Forward: PostgreSQL
    against what was staged. Reverse: the SQLite rows just written, decoded again, against the green rows."""
    if staged is not None:
        want, rejected = _staged_digests(staged), 0
        have = target_digests(pg, thread_ids)
    else:
        want, rejected, refs = source_digests(blue, thread_ids)
        have = _green_digests({t: green[t] for t in thread_ids}) if green is not None else target_digests(pg, thread_ids)
        settle_disagreements(blue, want, have, refs)
    for table, r in compare(want, have, limit=3).items():
        extra = 0 if (table == "blobs" and extra_blobs_ok) else r["extra"]
        if r["missing"] or r["different"] or extra or rejected:
            raise VerifyFailed(f"{table}: {r['missing']} missing, {r['different']} different, {r['extra']} extra "
                               f"after copying threads {thread_ids[:3]}...; examples {r['examples']}")


def _begin(pg: psycopg.Connection, thread_ids: list[str], to: str, lease_s: float):
    """(start time, the batch's result, its move id, the threads it claimed): step 1 of either move."""
    result = BatchResult(to)
    move_id = f"{'fwd' if to == 'green' else 'rev'}:{uuid.uuid4().hex}"
    claimed = _claim(pg, thread_ids, to, move_id, lease_s)
    result.skipped = sorted(set(thread_ids) - set(claimed))
    return time.monotonic(), result, move_id, claimed


def move_to_green(pg: psycopg.Connection, blue: sqlite3.Connection, thread_ids: list[str], *,
                  lease_s: float = DEFAULT_LEASE_S) -> BatchResult:
    """Forward move of one batch. ``pg`` autocommit (green), ``blue`` with ``isolation_level=None``."""
    started, result, move_id, claimed = _begin(pg, thread_ids, "green", lease_s)
    if not claimed:
        return result
    blue.execute("BEGIN IMMEDIATE")
    try:
        routes.fence(blue, claimed, move_id)
        blue.execute("COMMIT")
    except BaseException:
        blue.execute("ROLLBACK")
        raise
    staged = _staged(blue, claimed, result)
    try:
        with pg.transaction():
            pg.execute("SET LOCAL checkpoint_ops.mover = 'on'")
            locked = _lock_mine(pg, claimed, move_id)
            mine = [t for t in locked if t in staged]
            if mine:
                delete_pg_threads(pg, mine)
                ours = {t: staged[t] for t in mine}
                _copy_green(pg, ours)
                _verify(blue, pg, mine, extra_blobs_ok=False, staged=ours)
                _settle_routes(pg, mine, "green")
            _settle_routes(pg, [t for t in locked if t in result.refused], None)
    except BaseException:
        _undo_forward(pg, blue, claimed, move_id)
        raise
    result.moved = mine
    result.skipped += sorted(set(claimed) - set(mine) - set(result.refused))
    for tid in set(claimed) - set(mine):  # refused, or taken back by a writer: blue still rules
        routes.unfence(blue, tid, move_id)
    result.checkpoints = sum(len(staged[t]["checkpoints"]) for t in mine)
    result.writes = sum(len(staged[t]["writes"]) for t in mine)
    result.seconds = result.wait_s = time.monotonic() - started
    return result


def _undo_forward(pg: psycopg.Connection, blue: sqlite3.Connection, claimed: list[str], move_id: str) -> None:
    """The batch failed before its commit: blue rules again for every thread this move still holds."""
    try:
        with pg.transaction():
            mine = _lock_mine(pg, claimed, move_id)
            _settle_routes(pg, mine, None)
        for tid in mine:
            routes.unfence(blue, tid, move_id)
    except Exception:  # the lease ends it: a writer or the next attempt takes the threads back
        pass


def move_to_blue(pg: psycopg.Connection, blue: sqlite3.Connection, thread_ids: list[str], *,
                 lease_s: float = DEFAULT_LEASE_S) -> BatchResult:
    """Reverse move (rollback) of one batch, with every checkpoint the threads wrote in green."""
    started, result, move_id, claimed = _begin(pg, thread_ids, "blue", lease_s)
    if not claimed:
        return result
    try:
        with pg.transaction():
            mine = _lock_mine(pg, claimed, move_id)
            green = read_pg_threads(pg, mine)
            prepared = []
            for tid in mine:
                try:
                    prepared.append((tid, *sqlite_rows(green[tid])))
                except Rejected as exc:
                    result.refused[tid] = exc.reason
            ok = [p[0] for p in prepared]
            if ok:
                blue.execute("BEGIN IMMEDIATE")
                try:
                    routes.fence(blue, ok, move_id, state="returned")
                    replace_threads(blue, prepared)
                    _verify(blue, pg, ok, extra_blobs_ok=True, green=green)
                    blue.execute("COMMIT")
                except BaseException:
                    blue.execute("ROLLBACK")
                    raise
            _settle_routes(pg, ok, "blue")
            _settle_routes(pg, list(result.refused), None)
    except BaseException:
        _undo_reverse(pg, blue, claimed, move_id)
        raise
    result.moved = ok
    result.skipped += sorted(set(claimed) - set(mine))
    result.checkpoints = sum(len(p[1]) for p in prepared)
    result.writes = sum(len(p[2]) for p in prepared)
    result.seconds = result.wait_s = time.monotonic() - started
    return result


def _undo_reverse(pg: psycopg.Connection, blue: sqlite3.Connection, claimed: list[str], move_id: str) -> None:
    try:
        for tid in claimed:
            take_back(pg, blue, tid, move_id, force=True)
    except Exception:
        pass


def take_back(pg: psycopg.Connection, blue: sqlite3.Connection, thread_id: str, move_id: str | None = None, *,
              force: bool = False) -> routes.Route | None:
    """End a move whose lease ran out (or, ``force``, this process's own failed move): undo it where its
    commit point was not reached, complete it where it was. Returns the thread's route afterwards."""
    with pg.transaction():
        cur = pg.cursor(row_factory=tuple_row)
        cur.execute(routes.LOCK_SQL, (thread_id,))  # waits for a mover that still holds the thread
        row = cur.fetchone()
        if row is None:
            return None
        r = routes._route(row)
        if r.moving_to is None or (move_id is not None and r.move_id != move_id) or not (r.expired or force):
            return r
        if r.moving_to == "green":  # its commit point is this database: it never happened
            _settle_routes(pg, [thread_id], None)
            undone_forward = True
        else:
            undone_forward = False
            f = routes.fence_of(blue, thread_id)
            done = f is not None and f == ("returned", r.move_id)
            _settle_routes(pg, [thread_id], "blue" if done else None)
    if undone_forward:
        routes.unfence(blue, thread_id, r.move_id)
    return routes.lookup(pg, thread_id)


def settle_expired(pg: psycopg.Connection, blue: sqlite3.Connection) -> int:
    """Take back every thread whose move outlived its lease (a killed attempt). Returns how many."""
    cur = pg.cursor(row_factory=tuple_row)
    cur.execute("SELECT thread_id, move_id FROM checkpoint_ops_routes WHERE moving_to IS NOT NULL "
                "AND lease_until < now()")
    stale = cur.fetchall()
    for tid, move_id in stale:
        take_back(pg, blue, tid, move_id)
    return len(stale)


def stale_fences(pg: psycopg.Connection, blue: sqlite3.Connection) -> int:
    """Drop fences left by undone moves (routed blue, no move in flight). Returns how many."""
    try:
        fenced = blue.execute("SELECT thread_id, move_id FROM checkpoint_ops_cutover_fence "
                              "WHERE state = 'fenced' AND thread_id != ?", (routes.GLOBAL_FENCE,)).fetchall()
    except sqlite3.OperationalError:
        return 0
    if not fenced:
        return 0
    cur = pg.cursor(row_factory=tuple_row)
    cur.execute("SELECT thread_id FROM checkpoint_ops_routes WHERE thread_id = ANY(%s) AND store = 'blue' "
                "AND moving_to IS NULL", ([t for t, _ in fenced],))
    loose = {r[0] for r in cur}
    n = 0
    for tid, move_id in fenced:
        if tid in loose:
            n += routes.unfence(blue, tid, move_id)
    return n
