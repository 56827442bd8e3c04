#!/usr/bin/env python3
"""Generate SqliteSaver fixture files written by OLD LangGraph releases.

For each pinned release set this creates a separate venv under $TMPDIR (never the
project's .venv), installs requirements-<version>.txt into it and runs
graph_script.py there, which writes tests/fixtures/legacy/sqlite-<version>.sqlite and
its .json sidecar.

    python scripts/legacy_fixtures/generate.py              # all versions
    python scripts/legacy_fixtures/generate.py 2.0.11       # one version
    python scripts/legacy_fixtures/generate.py --relock     # re-resolve TOP_LEVEL and rewrite the requirements files

Needs only the standard library and a reachable package index. Run it with the
Python the fixtures should be written by (3.11 for the committed ones).
"""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
OUT_DIR = REPO / "tests" / "fixtures" / "legacy"

# The release sets. langgraph-checkpoint-sqlite is the pin the fixture is named after;
# langgraph / langgraph-checkpoint are the newest releases of that era that resolve with it.
# requirements-<version>.txt is the full `pip freeze` of a venv made from these.
TOP_LEVEL = {
    # sqlite 1.0.4 needs langgraph-checkpoint <2; langgraph 0.2.28 is the last 0.2.x that
    # accepts checkpoint 1.x (0.2.32 needs >=2.0), 1.0.12 the last checkpoint 1.0.x.
    "1.0.4": ["langgraph-checkpoint-sqlite==1.0.4", "langgraph==0.2.28", "langgraph-checkpoint==1.0.12"],
    # sqlite 2.0.11 needs checkpoint >=2.0.21,<3; langgraph 0.3.34 is the last 0.3.x.
    "2.0.11": ["langgraph-checkpoint-sqlite==2.0.11", "langgraph==0.3.34", "langgraph-checkpoint==2.1.2"],
    # sqlite 3.0.3 needs checkpoint >=3,<5; langgraph 1.0.10 is the last 1.0.x, checkpoint 3.0.1 the last 3.x.
    "3.0.3": ["langgraph-checkpoint-sqlite==3.0.3", "langgraph==1.0.10", "langgraph-checkpoint==3.0.1"],
}


def req_file(version: str) -> Path:
    return HERE / f"requirements-{version}.txt"


def venv_root() -> Path:
    return Path(os.environ.get("TMPDIR") or tempfile.gettempdir()) / "checkpoint-ops-legacy-fixtures"


def make_venv(path: Path, python: str) -> Path:
    if path.exists():
        shutil.rmtree(path)
    if python == sys.executable:
        venv.EnvBuilder(with_pip=True, clear=True).create(path)
    else:
        subprocess.run([python, "-m", "venv", "--clear", str(path)], check=True)
    return path / "bin" / "python"


def child_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH"))}
    env.update(LANGCHAIN_TRACING_V2="false", LANGSMITH_TRACING="false", PYTHONHASHSEED="0")
    return env


def pip(py: Path, *args: str) -> None:
    subprocess.run([str(py), "-m", "pip", "--disable-pip-version-check", *args], check=True, env=child_env())


def relock(version: str, python: str) -> None:
    py = make_venv(venv_root() / f"lock-{version}", python)
    pip(py, "install", "-q", *TOP_LEVEL[version])
    frozen = subprocess.run([str(py), "-m", "pip", "freeze"], check=True, capture_output=True, text=True, env=child_env()).stdout
    header = (f"# Fixture sqlite-{version}: full freeze of a venv made from\n"
              f"#   {' '.join(TOP_LEVEL[version])}\n"
              f"# Written by scripts/legacy_fixtures/generate.py --relock; install with pip install -r.\n")
    req_file(version).write_text(header + frozen)
    shutil.rmtree(py.parent.parent, ignore_errors=True)
    print(f"wrote {req_file(version)}")


def generate(version: str, python: str, keep: bool) -> None:
    req = req_file(version)
    digest = hashlib.sha256(req.read_bytes()).hexdigest()
    vdir = venv_root() / f"venv-{version}-{digest[:12]}"
    py = vdir / "bin" / "python"
    marker = vdir / ".installed"
    if not (keep and marker.exists()):
        py = make_venv(vdir, python)
        pip(py, "install", "-q", "-r", str(req))
        marker.write_text(digest)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    db = OUT_DIR / f"sqlite-{version}.sqlite"
    side = OUT_DIR / f"sqlite-{version}.json"
    subprocess.run([str(py), "-W", "ignore", str(HERE / "graph_script.py"), str(db), str(side)],
                   check=True, env=child_env(), cwd=str(vdir))
    data = json.loads(side.read_text())
    data = {
        "fixture": db.name,
        "requirements_file": str(req.relative_to(REPO)),
        "requirements_sha256": digest,
        "top_level_pins": TOP_LEVEL[version],
        **data,
    }
    side.write_text(json.dumps(data, indent=1) + "\n")
    for s in ("-wal", "-shm", "-journal"):
        if Path(str(db) + s).exists():
            raise SystemExit(f"{db}{s} left behind")
    print(f"wrote {db} ({db.stat().st_size} bytes) and {side.name}: {len(data['threads'])} threads")
    if not keep:
        shutil.rmtree(vdir, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("versions", nargs="*", default=list(TOP_LEVEL), help="langgraph-checkpoint-sqlite versions")
    ap.add_argument("--python", default=sys.executable, help="interpreter for the throwaway venvs")
    ap.add_argument("--relock", action="store_true", help="re-resolve TOP_LEVEL into requirements-*.txt first")
    ap.add_argument("--keep-venvs", action="store_true",
                    help="keep the venvs under $TMPDIR and reuse them when the requirements file is unchanged")
    args = ap.parse_args()
    for v in args.versions:
        if v not in TOP_LEVEL:
            raise SystemExit(f"unknown version {v}; known: {', '.join(TOP_LEVEL)}")
        if args.relock:
            relock(v, args.python)
        generate(v, args.python, args.keep_venvs)


if __name__ == "__main__":
    main()
