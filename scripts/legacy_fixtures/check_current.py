#!/usr/bin/env python3
"""Read the legacy fixtures with the CURRENT langgraph-checkpoint-sqlite (the project's venv).

    .venv/bin/python scripts/legacy_fixtures/check_current.py tests/fixtures/legacy/sqlite-*.sqlite

For each file, three ways of opening it:
  ro-skip-setup : uri mode=ro, saver.is_setup = True (setup() never runs)
  ro-skip-setup+no-task-path : as ro-skip-setup, plus saver._has_task_path = False (private
                  attribute that current setup() sets when its ALTER fails on a read-only file)
  ro-setup      : uri mode=ro, setup() runs (it tries ALTER TABLE writes ADD COLUMN task_path)
  rw-copy       : a writable copy in a temp dir, setup() runs and migrates the copy
and for each: list(None), then per thread and checkpoint_ns get_tuple() and list().
Prints each distinct error once with the calls that raised it, and counts of what
could be read (checkpoints, pending writes, custom-class values that came back as
what type). Never writes to the fixture files.
"""

import collections
import json
import shutil
import sqlite3
import sys
import tempfile
import traceback
import warnings
from pathlib import Path

from langgraph.checkpoint.sqlite import SqliteSaver


def open_saver(path: Path, mode: str, tmp: Path):
    if mode == "rw-copy":
        dst = tmp / path.name
        shutil.copy(path, dst)
        conn = sqlite3.connect(str(dst), check_same_thread=False)
        saver = SqliteSaver(conn)
        saver.setup()
        return saver, conn
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    saver = SqliteSaver(conn)
    if mode.startswith("ro-skip-setup"):
        saver.is_setup = True
        if mode.endswith("no-task-path"):
            saver._has_task_path = False
    else:
        saver.setup()
    return saver, conn


def type_names(x, out):
    if isinstance(x, dict):
        for v in x.values():
            type_names(v, out)
    elif isinstance(x, (list, tuple)):
        for v in x:
            type_names(v, out)
    else:
        out[f"{type(x).__module__}.{type(x).__qualname__}"] += 1


def check(path: Path, mode: str, tmp: Path) -> dict:
    res = {"errors": collections.defaultdict(list), "ok": collections.Counter(), "warnings": collections.Counter()}
    sidecar = json.loads(path.with_suffix(".json").read_text())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            saver, conn = open_saver(path, mode, tmp)
        except Exception as e:  # noqa: BLE001
            res["errors"][f"{type(e).__name__}: {e}"].append("open/setup")
            return res
        res["has_task_path"] = getattr(saver, "_has_task_path", None)

        def attempt(label, fn):
            try:
                out = fn()
                res["ok"][label.split("(")[0]] += 1
                return out
            except Exception as e:  # noqa: BLE001
                msg = f"{type(e).__name__}: {e}"
                if not res["errors"][msg]:
                    res.setdefault("tracebacks", {})[msg] = traceback.format_exc(limit=-3)
                res["errors"][msg].append(label)
                return None

        allc = attempt("list(None)", lambda: list(saver.list(None)))
        if allc is not None:
            res["list_all_count"] = len(allc)
        vals = collections.Counter()
        pw_channels = collections.Counter()
        id_match = id_mismatch = 0
        for tid, info in sidecar["threads"].items():
            for ns, nsinfo in info["namespaces"].items():
                conf = {"configurable": {"thread_id": tid, "checkpoint_ns": ns}}
                tup = attempt(f"get_tuple({tid},{ns[:12]})", lambda: saver.get_tuple(conf))
                if tup is not None:
                    if tup.checkpoint["id"] == nsinfo["latest_checkpoint_id"]:
                        id_match += 1
                    else:
                        id_mismatch += 1
                    type_names(tup.checkpoint["channel_values"], vals)
                    for _, ch, _ in tup.pending_writes or []:
                        pw_channels[ch] += 1
                lst = attempt(f"list({tid},{ns[:12]})", lambda: list(saver.list(conf)))
                if lst is not None and len(lst) != nsinfo["checkpoints"]:
                    res["errors"]["list count differs from sidecar"].append(f"{tid},{ns[:12]}")
        res["latest_id_matches_sidecar"] = (id_match, id_mismatch)
        res["channel_value_types"] = dict(vals)
        res["pending_write_channels"] = dict(pw_channels)
        conn.close()
    for w in caught:
        res["warnings"][f"{w.category.__name__}: {str(w.message)[:200]}"] += 1
    return res


def main() -> None:
    with tempfile.TemporaryDirectory() as td:
        for p in map(Path, sys.argv[1:]):
            for mode in ("ro-skip-setup", "ro-skip-setup+no-task-path", "ro-setup", "rw-copy"):
                r = check(p, mode, Path(td))
                print(f"=== {p.name} [{mode}] _has_task_path={r.get('has_task_path')}")
                print("  ok calls:", dict(r["ok"]), "| list(None):", r.get("list_all_count"),
                      "| latest id matches sidecar (yes, no):", r.get("latest_id_matches_sidecar"))
                for msg, labels in r["errors"].items():
                    print(f"  ERROR x{len(labels)}: {msg}  (e.g. {labels[:3]})")
                    tb = r.get("tracebacks", {}).get(msg)
                    if tb:
                        print("    " + tb.strip().replace("\n", "\n    "))
                if r.get("channel_value_types"):
                    print("  leaf value types in latest channel_values:", r["channel_value_types"])
                if r.get("pending_write_channels"):
                    print("  pending write channels:", r["pending_write_channels"])
                for w, n in r["warnings"].items():
                    print(f"  warning x{n}: {w}")


if __name__ == "__main__":
    main()
