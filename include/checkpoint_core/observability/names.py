"""The metric names and buckets checkpoint-ops exports: one list that the wrapper, the alert
rules, the dashboard and their tests all agree on.

Names are the family names prometheus_client registers; a counter ``checkpoint_writes`` is
scraped as ``checkpoint_writes_total`` and a histogram as ``_bucket``/``_sum``/``_count``.
"""

from __future__ import annotations

# Exported by the app through MeteredSaver (labels: backend, operation).
WRITES = "checkpoint_writes"  # counter: every write attempt, failed ones included
WRITE_ERRORS = "checkpoint_write_errors"  # counter: attempts that raised
WRITE_DURATION = "checkpoint_write_duration_seconds"  # histogram
CHECKPOINT_SIZE = "checkpoint_size_bytes"  # histogram: bytes the saver's serializer produced
APP_LABELS = ("backend", "operation")
WRITE_OPERATIONS = ("put", "put_writes", "delete_thread")

# Buckets: the alert on checkpoints over 5 MiB reads the 5 MiB bucket, so it must be one.
FIVE_MIB = 5 * 1024 * 1024
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SIZE_BUCKETS = (
    1024, 4 * 1024, 16 * 1024, 64 * 1024, 256 * 1024, 1024 * 1024, FIVE_MIB,
    16 * 1024 * 1024, 64 * 1024 * 1024,
)

# Published by the checkpoint_health DAG to a Pushgateway (labels: store, backend; the decision
# gauge also has decision, 1 for the current one and 0 for the others).
HEALTH_DECISION = "checkpoint_health_decision"
HEALTH_LAST_RUN = "checkpoint_health_last_run_timestamp_seconds"
STORE_SIZE = "checkpoint_store_size_bytes"
STORE_THREADS = "checkpoint_store_threads"
STORE_LARGEST_CHECKPOINT = "checkpoint_store_largest_checkpoint_bytes"
STORE_WRITES_PER_SECOND = "checkpoint_store_writes_per_second"
HEALTH_LABELS = ("store", "backend")
DECISIONS = ("migrate_now", "migrate_soon", "sqlite_sufficient", "on_postgres")

# Published by the checkpoint_tiering DAG's cost report (labels: tier; the all-hot figure has none).
TIER_THREADS = "checkpoint_tier_threads"
TIER_BYTES = "checkpoint_tier_bytes"
TIER_MONTHLY_COST = "checkpoint_tier_monthly_cost_usd"
TIER_ALL_HOT_MONTHLY_COST = "checkpoint_tier_all_hot_monthly_cost_usd"
TIER_LAST_RUN = "checkpoint_tiering_last_run_timestamp_seconds"
TIER_LABELS = ("tier",)

# Published by the checkpoint_memory_audit DAG (labels: store; per-namespace gauges add namespace,
# the checkpoint size gauge quantile = p50, p95 or max).
MEMORY_CHECKPOINT_BYTES = "checkpoint_memory_latest_checkpoint_bytes"
MEMORY_THREADS = "checkpoint_memory_threads"
MEMORY_OVERSIZED_THREADS = "checkpoint_memory_oversized_threads"
MEMORY_STORE_ITEMS = "checkpoint_memory_store_items"
MEMORY_STORE_BYTES = "checkpoint_memory_store_bytes"
MEMORY_STORE_TTL_RATIO = "checkpoint_memory_store_ttl_ratio"
MEMORY_AUDIT_LAST_RUN = "checkpoint_memory_audit_last_run_timestamp_seconds"
MEMORY_LABELS = ("store",)

# The cutover DAG's gauges (Pushgateway, job="checkpoint_cutover"), for the dashboard's Cutover row.
CUTOVER_WEIGHT = "checkpoint_cutover_weight_percent"
CUTOVER_THREADS = "checkpoint_cutover_threads"  # labels: store (blue | green | moving)
CUTOVER_FLIP_SECONDS = "checkpoint_cutover_flip_batch_seconds"  # labels: quantile (0.5 | 0.99 | 1)
CUTOVER_LAST_RUN = "checkpoint_cutover_last_run_timestamp_seconds"


def scraped_names() -> frozenset[str]:
    """Every sample name a Prometheus scraping the app and the Pushgateway can hold."""
    names = {f"{WRITES}_total", f"{WRITE_ERRORS}_total"}
    for histogram in (WRITE_DURATION, CHECKPOINT_SIZE):
        names |= {f"{histogram}_bucket", f"{histogram}_sum", f"{histogram}_count"}
    names |= {HEALTH_DECISION, HEALTH_LAST_RUN, STORE_SIZE, STORE_THREADS,
              STORE_LARGEST_CHECKPOINT, STORE_WRITES_PER_SECOND}
    names |= {TIER_THREADS, TIER_BYTES, TIER_MONTHLY_COST, TIER_ALL_HOT_MONTHLY_COST, TIER_LAST_RUN}
    names |= {MEMORY_CHECKPOINT_BYTES, MEMORY_THREADS, MEMORY_OVERSIZED_THREADS, MEMORY_STORE_ITEMS,
              MEMORY_STORE_BYTES, MEMORY_STORE_TTL_RATIO, MEMORY_AUDIT_LAST_RUN}
    names |= {CUTOVER_WEIGHT, CUTOVER_THREADS, CUTOVER_FLIP_SECONDS, CUTOVER_LAST_RUN}
    return frozenset(names)
