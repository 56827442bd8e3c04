-- Runs once, on the first start of the postgres service: the checkpoint database lives beside
-- Airflow's metadata database but belongs to its own role.
CREATE ROLE checkpoints LOGIN PASSWORD 'checkpoints';
CREATE DATABASE checkpoints OWNER checkpoints;
