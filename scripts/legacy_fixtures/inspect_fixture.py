#!/usr/bin/env python3
"""Summarize the raw layout of SqliteSaver fixture files without LangGraph.

    .venv/bin/python scripts/legacy_fixtures/inspect_fixture.py tests/fixtures/legacy/sqlite-*.sqlite

Opens each file read-only and decodes the msgpack blobs with ormsgpack (or msgpack),
showing extension types as (code, module, class) instead of importing anything.
Prints: tables and their columns, checkpoint/write `type` values, checkpoint `v`
values and blob keys, channel-name families, metadata keys, the special writes
(__error__/__interrupt__/__resume__/__pregel_tasks...) with their idx, the
pending_sends shape, and which extension types / classes occur.
"""

import collections
import json
import re
import sqlite3
import sys

try:
    import ormsgpack

    def unpack(b):
        return ormsgpack.unpackb(b, ext_hook=_ext, option=ormsgpack.OPT_NON_STR_KEYS)
except ImportError:  # pragma: no cover
    import msgpack

    def unpack(b):
        return msgpack.unpackb(b, ext_hook=_ext, strict_map_key=False, raw=False)


class Ext:
    def __init__(self, code, payload):
        self.code, self.payload = code, payload

    def cls(self):
        p = self.payload
        if isinstance(p, (list, tuple)) and len(p) >= 2 and all(isinstance(x, str) for x in p[:2]):
            return f"{p[0]}.{p[1]}"
        return "?"

    def __repr__(self):
        return f"Ext({self.code}, {self.cls()}, {self.payload!r})"


def _ext(code, data):
    try:
        return Ext(code, unpack(data))
    except Exception:  # noqa: BLE001
        return Ext(code, data)


def decode(type_, blob):
    if blob is None:
        return None
    if type_ == "msgpack":
        return unpack(blob)
    if type_ == "json":
        return json.loads(blob)
    return (type_, bytes(blob[:40]))


def walk_ext(x, seen):
    if isinstance(x, Ext):
        seen[(x.code, x.cls())] += 1
        walk_ext(x.payload, seen)
    elif isinstance(x, dict):
        for k, v in x.items():
            walk_ext(k, seen)
            walk_ext(v, seen)
    elif isinstance(x, (list, tuple)):
        for v in x:
            walk_ext(v, seen)


def walk_lc(x, seen):
    """langchain-style constructor dicts in JSON metadata."""
    if isinstance(x, dict):
        if x.get("type") == "constructor" and "id" in x:
            seen[(x.get("lc"), ".".join(x["id"]))] += 1
        for v in x.values():
            walk_lc(v, seen)
    elif isinstance(x, list):
        for v in x:
            walk_lc(v, seen)


def family(ch):
    if ch.startswith("branch:to:"):
        return "branch:to:<node>"
    if ch.startswith("branch:"):
        return "branch:<node>:<cond>:<dest>"
    if ch.startswith("start:"):
        return "start:<node>"
    if ch.startswith("join:"):
        return "join:<a+b>:<node>"
    if ch.startswith("__"):
        return ch
    return "<state key or node name>"


def short(x, n=240):
    r = repr(x)
    return r if len(r) <= n else r[:n] + f"...({len(r)} chars)"


def inspect(path):
    print(f"=== {path}")
    c = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    print("journal_mode:", c.execute("PRAGMA journal_mode").fetchone()[0],
          "| user_version:", c.execute("PRAGMA user_version").fetchone()[0])
    for name, kind in c.execute("SELECT name, type FROM sqlite_master ORDER BY name"):
        cols = [r[1] for r in c.execute(f"PRAGMA table_info({name})")] if kind == "table" else []
        print(f"  {kind} {name} {cols if cols else ''}")
    print("checkpoint type:", dict(c.execute("SELECT coalesce(type,'NULL'), count(*) FROM checkpoints GROUP BY 1")))
    print("writes type:", dict(c.execute("SELECT coalesce(type,'NULL'), count(*) FROM writes GROUP BY 1")))
    print("threads:", c.execute("SELECT count(DISTINCT thread_id) FROM checkpoints").fetchone()[0],
          "checkpoints:", c.execute("SELECT count(*) FROM checkpoints").fetchone()[0],
          "writes:", c.execute("SELECT count(*) FROM writes").fetchone()[0])
    nss = [r[0] for r in c.execute("SELECT DISTINCT checkpoint_ns FROM checkpoints")]
    print("checkpoint_ns shapes:", sorted({re.sub(r"[0-9a-f-]{36}", "<uuid>", n) for n in nss}))

    vs, keys, fams, chans = collections.Counter(), collections.Counter(), collections.Counter(), set()
    md_keys, md_src, lc_ids, exts = collections.Counter(), collections.Counter(), collections.Counter(), collections.Counter()
    sends_shapes = collections.Counter()
    for ctype, blob, md in c.execute("SELECT type, checkpoint, metadata FROM checkpoints"):
        cp = decode(ctype, blob)
        vs[cp.get("v")] += 1
        keys[tuple(sorted(cp))] += 1
        for ch in list(cp.get("channel_values", {})) + list(cp.get("channel_versions", {})):
            fams[family(ch)] += 1
            chans.add(ch)
        for seen in cp.get("versions_seen", {}).values():
            for ch in seen:
                chans.add(ch)
                fams[family(ch)] += 1
        ps = cp.get("pending_sends")
        if ps:
            sends_shapes[short(ps[0], 160)] += 1
        walk_ext(cp, exts)
        m = json.loads(md) if md else {}
        md_keys[tuple(sorted(m))] += 1
        md_src[m.get("source")] += 1
        walk_lc(m, lc_ids)
    print("checkpoint v:", dict(vs))
    print("checkpoint blob keys:", {", ".join(k): n for k, n in keys.items()})
    print("channel name families:", dict(fams))
    print("non-state channel names:", sorted(ch for ch in chans if ":" in ch or ch.startswith("__"))[:40])
    print("metadata keys:", {", ".join(k): n for k, n in md_keys.items()}, "| sources:", dict(md_src))
    print("constructor dicts in metadata (lc, id):", dict(lc_ids))
    print("pending_sends (first element of non-empty lists):", dict(sends_shapes) or "none non-empty")
    wexts = collections.Counter()
    special = collections.defaultdict(collections.Counter)
    samples = {}
    for ch, idx, wtype, val in c.execute("SELECT channel, idx, type, value FROM writes"):
        v = decode(wtype, val)
        walk_ext(v, wexts)
        if ch.startswith("__") or idx < 0:
            special[ch][idx] += 1
            samples.setdefault(ch, short(v, 300))
    print("ext types in checkpoints (code, class):", dict(exts))
    print("ext types in writes (code, class):", dict(wexts))
    print("special write channels {channel: {idx: n}}:", {k: dict(v) for k, v in special.items()})
    for ch, s in samples.items():
        print(f"  sample {ch}: {s}")
    print()


if __name__ == "__main__":
    for p in sys.argv[1:]:
        inspect(p)
