#!/usr/bin/env python3
"""Compare what CURRENT LangGraph's get_state() returns for each fixture thread with
what the old release recorded in the sidecar.

    .venv/bin/python scripts/legacy_fixtures/compare_current.py tests/fixtures/legacy/sqlite-*.sqlite

Works on a writable temp copy (current SqliteSaver.setup() adds writes.task_path),
rebuilds the graphs from graph_script.py with the installed LangGraph, and prints
per thread what differs: checkpoint id, next, values (repr), task ids/names/errors.
Importing graph_script registers the custom classes' module, so custom values
come back as the classes here (unlike check_current.py, which never imports them).
"""

import json
import logging
import shutil
import sqlite3
import sys
import tempfile
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import graph_script as gs  # noqa: E402
from langgraph.checkpoint.sqlite import SqliteSaver  # noqa: E402


def compare(path: Path, td: str) -> None:
    side = json.loads(path.with_suffix(".json").read_text())
    dst = Path(td) / path.name
    shutil.copy(path, dst)
    conn = sqlite3.connect(str(dst), check_same_thread=False)
    saver = SqliteSaver(conn)
    graphs = {"basic": gs.build_basic(), "mapreduce": gs.build_mapreduce(), "nested": gs.build_nested("run"),
              "review": gs.build_review(), "fail": gs.build_fail(), "blob": gs.build_blob(), "ask": gs.build_ask()}
    apps = {k: g.compile(checkpointer=saver) for k, g in graphs.items()}
    same = 0
    print(f"=== {path.name}")
    for tid, old in side["threads"].items():
        try:
            now = gs.snapshot_info(apps[old["graph"]].get_state(gs.cfg(tid)))
        except Exception as e:  # noqa: BLE001
            print(f"  {tid}: get_state raised {type(e).__name__}: {e}")
            continue
        probs = []
        for k in ("checkpoint_id", "next", "large_values"):
            if now[k] != old[k]:
                probs.append(f"{k} old={old[k]} now={now[k]}")
        for k in sorted(set(now["values"]) | set(old["values"])):
            if now["values"].get(k) != old["values"].get(k):
                probs.append(f"values[{k}] old={old['values'].get(k)!s:.160} now={now['values'].get(k)!s:.160}")
        for key in ("id", "name", "error"):
            o = [t.get(key) for t in old["tasks"]]
            n = [t.get(key) for t in now["tasks"]]
            if o != n:
                probs.append(f"task {key}s old={o} now={n}")
        if probs:
            print(f"  {tid}:\n    " + "\n    ".join(probs))
        else:
            same += 1
    print(f"  identical: {same}/{len(side['threads'])}\n")
    conn.close()


def main() -> None:
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as td:
        for p in map(Path, sys.argv[1:]):
            compare(p, td)


if __name__ == "__main__":
    main()
