"""checkpoint-ops core: plain Python over LangGraph checkpoint stores.

Nothing here imports Airflow: operators in ``plugins/`` hand this package plain paths,
DSNs and clients, so every piece can be run and tested on its own.
"""
