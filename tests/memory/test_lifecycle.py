"""Cross-thread memory through the lifecycle: a new thread answers with what an earlier thread
stored, on both backends, after a migration, a backup + restore drill and pruning; TTL'd items
keep their expiry, and only expired ones are swept."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from include.checkpoint_core.backup import restore_drill, take_backup
from include.checkpoint_core.pruning import PrunePolicy, prune_store
from include.checkpoint_core.stores import StoreTarget
from tests.backup.conftest import ADMIN_DSN
from tests.conftest import open_saver
from tests.memory.conftest import make_app_store
from tests.memory.helpers import ASK, KNOWN, USER, assert_recalls, reply, ttl_rows
from tests.migration.helpers import migrate, verify_full


def test_a_new_thread_answers_with_what_thread_a_stored(app_store):
    # A new process (fresh connections): the facts come from the store, not from anything in memory.
    with open_saver(app_store) as (saver, store):
        # Thread B has no checkpoint before its first turn: what it knows can only come from the Store.
        assert saver.get_tuple({"configurable": {"thread_id": "thread-B"}}) is None
        assert KNOWN in reply(saver, store, USER, ASK, "thread-B")
        assert_recalls(saver, store)


def test_memory_and_ttls_survive_the_migration(tmp_path, pg_dsn):
    source = make_app_store(StoreTarget("sqlite", str(tmp_path / "app.sqlite"), "checkpoints_sqlite"))
    before = ttl_rows(source)
    assert before["expired"][0] < datetime.now(timezone.utc) < before["live"][0] and before["forever"] == (None, None)
    migrate(tmp_path / "app.sqlite", pg_dsn, tmp_path / "migration")
    assert verify_full(tmp_path / "migration", pg_dsn)["ok"]
    target = StoreTarget("postgres", pg_dsn, "checkpoints_postgres")
    assert ttl_rows(target) == before  # expires_at to the second, ttl_minutes, the expired item included
    with open_saver(target) as (saver, store):
        assert_recalls(saver, store)
        assert saver.get_tuple({"configurable": {"thread_id": "thread-A"}}) is not None


def test_memory_and_ttls_survive_backup_and_restore(app_store, tmp_path):
    before = ttl_rows(app_store)
    take_backup(app_store, tmp_path / "backups", backup_id="b1", log=lambda _: None)
    checked = []

    def on_restored(target):
        assert ttl_rows(target) == before
        with open_saver(target) as (saver, store):
            assert_recalls(saver, store)
        checked.append(target.kind)

    assert restore_drill(tmp_path / "backups", admin_dsn=ADMIN_DSN, min_age_hours=0, on_restored=on_restored,
                         log=lambda _: None)["passed"]
    assert checked == [app_store.kind]


def test_pruning_leaves_the_store_to_its_own_ttl(app_store):
    """Retention deletes thread A itself; the facts it stored stay, and the sweep takes only expired items."""
    before = ttl_rows(app_store)
    later = datetime.now(timezone.utc) + timedelta(days=3)
    report = prune_store(app_store, PrunePolicy(retention_days=1, strategy="delete", now=later, vacuum="off"),
                         log=lambda _: None)
    assert report["threads_deleted"] >= 1 and report["store_items_expired"] == 1
    after = ttl_rows(app_store)
    assert set(after) == {"live", "forever"} and after["live"] == before["live"]
    with open_saver(app_store) as (saver, store):
        assert saver.get_tuple({"configurable": {"thread_id": "thread-A"}}) is None
        assert_recalls(saver, store)
