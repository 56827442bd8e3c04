"""Prune any supported store with one policy; the one call operators make."""

from __future__ import annotations

from collections.abc import Callable

from include.checkpoint_core.pruning.policy import PrunePolicy, PruneReport
from include.checkpoint_core.stores import StoreTarget


def prune_store(target: StoreTarget, policy: PrunePolicy, log: Callable[[str], None] = print) -> dict:
    """Apply ``policy`` to one store and return its report as a plain dict (XCom-safe)."""
    policy.validate()
    report = PruneReport(
        store=target.name or target.display, kind=target.kind, strategy=policy.strategy,
        dry_run=policy.dry_run, cutoff=policy.cutoff.isoformat(timespec="seconds"),
    )
    if target.kind == "sqlite":
        from include.checkpoint_core.pruning.sqlite_prune import prune_sqlite

        prune_sqlite(target.location, policy, report, log)
    else:
        from include.checkpoint_core.pruning.postgres_prune import prune_postgres

        prune_postgres(target.location, policy, report, log)
    return report.finish()
