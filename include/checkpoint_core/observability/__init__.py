"""Checkpoint metrics: what the app exports (MeteredSaver) and what the health DAG publishes."""
