"""Backup then restore drill on both backends: the restore equals the source and LangGraph works on it."""

from __future__ import annotations

import hashlib
import json
from contextlib import closing

import psycopg
import pytest

from include.checkpoint_core.backup import list_backups, restore_drill, take_backup
from include.checkpoint_core.backup.pgtools import libpq_env
from tests.backup.conftest import ADMIN_DSN, SPEC, all_rows, drill_databases, open_saver
from tests.conftest import SENTINEL_PASSWORD
from tests.witnesses import (
    witness_fault_tolerance,
    witness_human_in_the_loop,
    witness_session_memory,
    witness_time_travel,
)


def test_round_trip_restores_an_equal_store(source, folder, pg_admin):
    logs: list[str] = []
    before = drill_databases(pg_admin)
    manifest = take_backup(source, folder, backup_id="2025-06-01T0300", log=logs.append)

    stored = folder / "2025-06-01T0300" / manifest["file"]
    assert manifest["sha256"] == hashlib.sha256(stored.read_bytes()).hexdigest()
    assert manifest["size_bytes"] == stored.stat().st_size
    assert json.loads((stored.parent / "manifest.json").read_text()) == manifest
    live = all_rows(source)
    main = "checkpoints"
    assert manifest["rows"][main] == len(live[main]) > 0
    assert manifest["rows"]["store"] == len(live["store"]) > 0
    if source.kind == "postgres":
        assert manifest["schema_versions"]["checkpoints"] >= 1 and manifest["schema_versions"]["store"] >= 1
        with psycopg.connect(source.location) as conn:  # the canary was committed in the source
            token = conn.execute("SELECT token FROM checkpoint_ops_canary WHERE id = %s",
                                 ("2025-06-01T0300",)).fetchone()[0]
        assert manifest["canary"]["token"] == token
    else:
        newest = max(live["checkpoints"], key=lambda r: r[2])
        assert manifest["canary"]["checkpoint_id"] == newest[2]

    restored_rows = {}
    report = restore_drill(folder, admin_dsn=ADMIN_DSN, min_age_hours=0, sample_threads=50, log=logs.append,
                           on_restored=lambda target: restored_rows.update(all_rows(target)))
    assert report["passed"] and report["problems"] == []
    assert restored_rows == all_rows(source), "the restore holds exactly the source's rows"
    assert len(report["sampled_threads"]) == SPEC["threads"], "every thread (crashed ones too) loaded"
    assert set(report["rto_s"]) == {"download", "restore", "verify", "total"}
    assert list_backups(folder)[0]["drill"]["passed"] is True
    assert drill_databases(pg_admin) == before, "the scratch database was dropped"
    # The password never reaches the manifest, the drill report or the logs.
    for text in (json.dumps(manifest), json.dumps(report), *logs):
        assert SENTINEL_PASSWORD not in text


@pytest.mark.parametrize("kind", ["postgres", "sqlite"])
def test_witnesses_hold_on_the_restored_store(kind, request, folder):
    """Memory, time travel, human-in-the-loop and fault tolerance all work on a restored store."""
    source = request.getfixturevalue("pg_source" if kind == "postgres" else "sqlite_source")
    take_backup(source, folder, backup_id="b1", log=lambda _: None)
    ran = []

    def witnesses(target):
        with open_saver(target) as (saver, _):
            for witness in (witness_session_memory, witness_time_travel, witness_human_in_the_loop,
                            witness_fault_tolerance):
                witness(saver)
                ran.append(witness.__name__)
            # And the restored threads carry on: a restored interrupted thread still waits at its interrupt.
            assert saver.get_tuple({"configurable": {"thread_id": "thread-000000"}}) is not None

    restore_drill(folder, admin_dsn=ADMIN_DSN, min_age_hours=0, on_restored=witnesses, log=lambda _: None)
    assert len(ran) == 4


def test_keep_leaves_the_scratch_database_for_inspection(pg_source, folder, pg_admin):
    take_backup(pg_source, folder, backup_id="b1", log=lambda _: None)
    report = restore_drill(folder, admin_dsn=ADMIN_DSN, min_age_hours=0, keep=True, log=lambda _: None)
    name = report["scratch"].rsplit("/", 1)[1]
    try:
        assert name in drill_databases(pg_admin)
        assert report["kept"] is True
    finally:
        pg_admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_backup_without_canary_adds_no_table(pg_source, folder):
    manifest = take_backup(pg_source, folder, backup_id="b1", canary=False, log=lambda _: None)
    assert manifest["canary"] is None and "checkpoint_ops_canary" not in manifest["rows"]
    with closing(psycopg.connect(pg_source.location)) as conn:
        assert conn.execute("SELECT to_regclass('checkpoint_ops_canary')").fetchone()[0] is None
    assert restore_drill(folder, admin_dsn=ADMIN_DSN, min_age_hours=0, log=lambda _: None)["passed"]


def test_client_tools_get_the_password_from_a_private_passfile(pg_source):
    """Never on the command line (visible in ps) nor in the environment."""
    import os
    import stat

    with libpq_env(pg_source.location) as (env, conninfo):
        assert SENTINEL_PASSWORD not in conninfo and "PGPASSWORD" not in env
        assert SENTINEL_PASSWORD not in json.dumps({k: v for k, v in env.items() if k != "PGPASSFILE"})
        passfile = env["PGPASSFILE"]
        assert stat.S_IMODE(os.stat(passfile).st_mode) == 0o600
        assert open(passfile).read().endswith(f":{SENTINEL_PASSWORD}\n")
    assert not os.path.exists(passfile)
