"""On idle threads, our keep_latest leaves exactly what PostgresSaver.prune leaves."""

from __future__ import annotations

from contextlib import closing

from include.checkpoint_core.pruning import PrunePolicy, prune_store
from tests.pruning.conftest import aged_copy
from tests.pruning.helpers import newest_ids, raw_rows, thread_ids


def test_keep_latest_matches_postgres_saver_prune_row_for_row(tmp_path, _aged_templates, pg_admin):
    from langgraph.checkpoint.postgres import PostgresSaver

    from include.checkpoint_core.postgres_store import open_postgres_pool

    policy = PrunePolicy(retention_days=30, protect_interrupted=False)
    with aged_copy("postgres", tmp_path, _aged_templates, pg_admin) as (ours, _), \
            aged_copy("postgres", tmp_path, _aged_templates, pg_admin) as (theirs, _):
        idle = sorted(t for t, newest in newest_ids(theirs).items() if newest < policy.cutoff_id)
        assert len(idle) > 5
        with closing(open_postgres_pool(theirs.location)) as pool:
            PostgresSaver(pool).prune(idle, strategy="keep_latest")
        prune_store(ours, policy, log=lambda _: None)
        assert thread_ids(ours) == thread_ids(theirs)
        assert raw_rows(ours, idle) == raw_rows(theirs, idle)
