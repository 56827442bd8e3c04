"""Airflow glue for checkpoint-ops: the store hook and the lifecycle operators.

Thin by design: these modules turn Airflow connections, params and context into plain
arguments for ``include.checkpoint_core`` and its reports back into logs and XCom.
"""
