"""checkpoint_setup: create or upgrade the LangGraph schemas of the checkpoint stores."""

from __future__ import annotations

from airflow.sdk import DAG, Param, task

from checkpoint_ops.dag_defaults import lifecycle_dag, resolve_stores, stores_param
from checkpoint_ops.operators.setup import CheckpointSetupOperator
from include.checkpoint_core.indexes import DEFAULT_TAG_KEYS, TAG_KEY_PATTERN

DOC = """
### Set up checkpoint stores

Creates or upgrades the LangGraph schema of every store named in **stores**:

* **SQLite** (`sqlite` connection, file path in *host*): `SqliteSaver.setup()` — tables, the
  `writes.task_path` upgrade for files from older langgraph-checkpoint-sqlite releases, WAL
  (checked with `PRAGMA journal_mode`) and a busy timeout for the setup connection.
* **PostgreSQL** (`postgres` connection): `PostgresSaver.setup()` and, with *include_store*,
  `PostgresStore.setup()`, under an advisory lock.
* **Indexes** (both): for `list(..., filter=...)` on the **metadata_index_keys** (SQLite: one
  expression index per key; PostgreSQL: one GIN index for every key, with the `btree_gin`
  extension) and for pruning by age (`checkpoint_id`). PostgreSQL builds them `CONCURRENTLY`,
  so the app keeps writing meanwhile.

Leave **stores** empty to set up every checkpoint store connection this deployment defines
(`checkpoints_sqlite`, `checkpoints_postgres`). Safe to run any number of times: a store that is
already current is left untouched and its report says `changes: []`. The combined report goes to
the task log, to XCom and to `reports/checkpoint_setup/<run_id>/setup.json` under the artifacts root.
"""

with DAG(
    dag_id="checkpoint_setup",
    description="Create or upgrade LangGraph checkpoint schemas (SQLite WAL, PostgresSaver, PostgresStore).",
    doc_md=DOC,
    schedule=None,
    **lifecycle_dag("setup"),
    params={
        "stores": stores_param("set up"),
        "include_store": Param(
            True,
            type="boolean",
            title="Also set up PostgresStore",
            description="Run PostgresStore.setup() (the cross-thread memory store) on PostgreSQL stores.",
        ),
        "busy_timeout_ms": Param(
            5000,
            type="integer",
            minimum=0,
            maximum=600000,
            title="SQLite busy timeout (ms)",
            description="How long the SQLite setup waits for the app's write lock before giving up.",
        ),
        "metadata_index_keys": Param(
            list(DEFAULT_TAG_KEYS),
            type="array",
            items={"type": "string", "pattern": TAG_KEY_PATTERN},
            uniqueItems=True,
            title="Metadata keys to index",
            description="Top-level checkpoint metadata keys that list(..., filter={...}) queries use, most "
            "selective first. SQLite gets one index per key; PostgreSQL one GIN index for all keys. Empty: none.",
        ),
    },
) as dag:

    setup_store = CheckpointSetupOperator.partial(
        task_id="setup_store",
        include_store="{{ params.include_store }}",
        busy_timeout_ms="{{ params.busy_timeout_ms }}",
        metadata_index_keys="{{ params.metadata_index_keys }}",
        map_index_template="{{ task.checkpoint_conn_id }}",
    ).expand(checkpoint_conn_id=resolve_stores())

    @task(task_id="report", multiple_outputs=False)
    def report(results, dag_run=None) -> dict:
        """One summary for the run: a line per store in the log, JSON in XCom and artifacts."""
        from checkpoint_ops.artifacts import write_report

        stores = list(results)
        for r in stores:
            print(
                f"{r['conn_id']:<24} {r['store']:<8} changes: {', '.join(r['changes']) or 'none'}; "
                f"rows: {r.get('rows') or r.get('rows_estimate')}"
            )
        summary = {"stores": stores, "changed": sum(1 for r in stores if r["changes"])}
        summary["artifact"] = write_report(dag_run.dag_id, dag_run.run_id, "setup", summary)
        return summary

    report(setup_store.output)
