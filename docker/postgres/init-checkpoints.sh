#!/bin/bash
# Runs once, on the first start of the postgres service: the checkpoint database lives beside
# Airflow's metadata database but belongs to its own role, whose password comes from the
# same CHECKPOINTS_DB_PASSWORD the Airflow services use for the checkpoints_postgres connection.
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v pw="${CHECKPOINTS_DB_PASSWORD:?set CHECKPOINTS_DB_PASSWORD}" <<-'EOSQL'
	CREATE ROLE checkpoints LOGIN PASSWORD :'pw';
	CREATE DATABASE checkpoints OWNER checkpoints;
EOSQL
