"""How long each DAG file takes to parse, against a trivial DAG parsed in the same run.

The dag-processor parses every file in a fresh process that has Airflow loaded already, so
each sample is: a new interpreter, `import airflow.sdk` and the dag-processor's own module (not
timed; it loads Airflow's models, which e.g. TriggerDagRunOperator imports), then one timed
DagBag(file). The baseline is a one-task DAG written to a temp folder in this same run; the
ratio says how much our imports and DAG building add. Usage: `make bench` (or with PYTHONPATH
set to the project root and plugins/).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = int(os.environ.get("SAMPLES", "5"))
BASELINE_DAG = '''
from airflow.sdk import DAG, task
with DAG(dag_id="baseline", schedule=None):
    @task
    def noop():
        return None
    noop()
'''
PROBE = r"""
import json, sys, time
import airflow.sdk
import airflow.dag_processing.processor  # what the parsing process has loaded before a file
from airflow.dag_processing.dagbag import DagBag
t = time.perf_counter()
bag = DagBag(sys.argv[1])
elapsed = time.perf_counter() - t
assert not bag.import_errors, bag.import_errors
print(json.dumps({"seconds": elapsed, "dags": len(bag.dag_ids)}))
"""


def sample(probe: Path, path: Path, env: dict) -> float:
    # A script file, as a real process runs: under `python -c` some DAGs parse several times slower.
    out = subprocess.run([sys.executable, str(probe), str(path)], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["seconds"]


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="dag-parse-"))
    baseline = tmp / "baseline_dag.py"
    baseline.write_text(BASELINE_DAG)
    probe = tmp / "probe.py"
    probe.write_text(PROBE)
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'plugins'}",
        "AIRFLOW_HOME": str(tmp / "home"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
    }
    files = [baseline, *sorted((ROOT / "dags").glob("*.py"))]
    medians = {}
    for path in files:
        runs = [sample(probe, path, env) for _ in range(SAMPLES)]
        medians[path.name] = (statistics.median(runs), max(runs))
    base = medians[baseline.name][0]
    print(f"DAG file parse time, median of {SAMPLES} fresh processes (Airflow preloaded, as in the dag-processor)")
    print(f"{'file':<28} {'median ms':>10} {'max ms':>8} {'x baseline':>11}")
    for name, (med, worst) in medians.items():
        print(f"{name:<28} {med * 1000:>10.1f} {worst * 1000:>8.1f} {med / base:>11.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
