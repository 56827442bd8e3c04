#!/usr/bin/env bash
# Airflow standalone (api-server, scheduler, dag-processor, triggerer; LocalExecutor on SQLite)
# with this project's DAGs and plugins, examples off, and a fixed admin login. Run via `make ui`.
set -euo pipefail
: "${AIRFLOW_HOME:?run through make ui}"
mkdir -p "$AIRFLOW_HOME" "$CHECKPOINT_OPS_DEMO_DIR"
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="admin:admin"
echo '{"admin": "admin"}' > "$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated"
echo "checkpoint-ops: Airflow UI on http://localhost:8080  (login: admin / password: admin)"
echo "DAGs from $AIRFLOW__CORE__DAGS_FOLDER, picked up every ${AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL}s."
exec airflow standalone
