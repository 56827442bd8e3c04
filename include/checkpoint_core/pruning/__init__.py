"""Retention for checkpoint stores: age-based pruning, orphan sweeps and space reclaim.

``prune_store(target, policy)`` is the one entry point; the backends share the policy, the
thread classification and the report, and differ only in SQL.
"""

from include.checkpoint_core.pruning.policy import STRATEGIES, PrunePolicy, PruneReport
from include.checkpoint_core.pruning.run import prune_store

__all__ = ["STRATEGIES", "PrunePolicy", "PruneReport", "prune_store"]
