"""Restore drills: prove a backup restores, holds what its manifest says, and loads in LangGraph.

A backup nobody has restored is a hope. The drill downloads one (checking its sha256 on the
way), restores it somewhere disposable, compares counts and content checksums with the
manifest, looks for the canary, and loads sampled threads through the real saver: the same
path the app would take after a disaster. The timings are the restore time objective.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import closing
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from include.checkpoint_core.backup.checksums import CANARY_TABLE, pg_table_digests, sqlite_table_digests
from include.checkpoint_core.backup.errors import BackupCorrupt, BackupError, DrillFailed, NoBackupFound, ToolMissing
from include.checkpoint_core.backup.layout import DRILL, MANIFEST, download, iso, list_backups, parse_time, utc, write_json
from include.checkpoint_core.backup.pgtools import find_tool, run_tool, tool_version
from include.checkpoint_core.errors import CheckpointStoreError
from include.checkpoint_core.postgres_store import connect_postgres, describe_dsn, schema_versions
from include.checkpoint_core.stores import StoreTarget

SCRATCH_PREFIX = "checkpoint_ops_drill_"
STALE_SCRATCH = timedelta(hours=6)
LIST_LIMIT = 20  # checkpoints listed per sampled thread: enough to walk history, bounded on long threads


def pick_backup(folder, *, min_age_hours: float, backup_id: str | None, now: datetime) -> dict:
    """The named backup, or the newest one at least ``min_age_hours`` old."""
    backups = list_backups(folder)
    if backup_id is not None:
        for manifest in backups:
            if manifest["backup_id"] == backup_id:
                return manifest
        raise NoBackupFound(f"no complete backup {backup_id!r} in {folder} ({len(backups)} complete backups there).")
    if not backups:
        raise NoBackupFound(f"no complete backup in {folder}.")
    cutoff = now - timedelta(hours=min_age_hours)
    for manifest in backups:
        if parse_time(manifest["created_at"]) <= cutoff:
            return manifest
    newest = backups[0]
    age = (now - parse_time(newest["created_at"])).total_seconds() / 3600
    raise NoBackupFound(
        f"none of the {len(backups)} backups in {folder} is at least {min_age_hours}h old "
        f"(the newest, {newest['backup_id']}, is {age:.1f}h old)."
    )


def restore_drill(
    folder, *, admin_dsn: str | None = None, min_age_hours: float = 24, backup_id: str | None = None,
    now: datetime | None = None, sample_threads: int = 5, log: Callable[[str], None] = print,
    keep: bool = False, on_restored: Callable[[StoreTarget], None] | None = None, record: bool = True,
    work_dir: str | Path | None = None, pg_bin_dir: str | Path | None = None, blobs=None,
) -> dict:
    """Restore one backup into a scratch store, verify it, drop the scratch store; return the report.

    ``admin_dsn`` (PostgreSQL backups) must be allowed to CREATE DATABASE; the scratch database
    ``checkpoint_ops_drill_<id>`` is dropped WITH (FORCE) whatever happens, unless ``keep``.
    ``on_restored(target)`` runs on the verified scratch store before it goes (extra checks).
    ``record`` writes the verdict to ``<backup>/drill.json``, which retention uses to spare the
    newest backup proven restorable. Raises ``BackupCorrupt`` or ``DrillFailed`` (with ``.report``).
    """
    now = utc(now)
    t_start = time.perf_counter()
    manifest = pick_backup(folder, min_age_hours=min_age_hours, backup_id=backup_id, now=now)
    bid = manifest["backup_id"]
    report = {
        "backup_id": bid, "kind": manifest["kind"], "source": manifest.get("source"),
        "created_at": manifest["created_at"],
        "age_hours": round((now - parse_time(manifest["created_at"])).total_seconds() / 3600, 2),
        "drilled_at": iso(now), "passed": False, "problems": [], "rows": {}, "sampled_threads": [],
        "scratch": None, "kept": keep, "rto_s": {},
    }
    log(f"drill: backup {bid} ({manifest['kind']}, {manifest['created_at']}, {manifest.get('size_bytes')} bytes)")
    if manifest["kind"] == "postgres" and not admin_dsn:
        raise BackupError(f"backup {bid} is a PostgreSQL dump and the drill has no admin_dsn to restore it with.",
                          hint="Pass admin_dsn: a connection allowed to CREATE DATABASE on a scratch server.")
    with tempfile.TemporaryDirectory(prefix="checkpoint-ops-drill-", dir=work_dir) as tmp:
        local = Path(tmp) / manifest["file"]
        t0 = time.perf_counter()
        try:
            size, digest = download(folder / bid / manifest["file"], local)
        except FileNotFoundError as exc:
            size, digest = 0, f"nothing: {manifest['file']} is missing ({exc})"
        except OSError as exc:
            raise BackupError(f"cannot read backup {bid} from {folder}: {exc}.", retryable=True,
                              hint="The task retries; check the storage if it keeps failing.") from exc
        report["rto_s"]["download"] = round(time.perf_counter() - t0, 3)
        want_sha, want_size = manifest.get("sha256"), manifest.get("size_bytes")
        if digest != want_sha or size != want_size:
            report["problems"] = [f"sha256 expected {want_sha}, got {digest} (size expected {want_size}, got {size})"]
            _record(folder, bid, report, record, t_start)
            raise BackupCorrupt(f"backup {bid} in {folder} is corrupt: sha256 expected {want_sha}, "
                                f"actual {digest} (size expected {want_size}, actual {size}).")
        log(f"drill: downloaded {size} bytes in {report['rto_s']['download']}s, sha256 ok")
        serde = _check_offloaded(folder / bid, manifest, blobs, report, log)
        try:
            if manifest["kind"] == "postgres":
                _drill_postgres(manifest, local, admin_dsn, report, sample_threads, keep, on_restored, pg_bin_dir, log,
                                serde=serde)
            else:
                _drill_sqlite(manifest, local, report, sample_threads, keep, on_restored, log, serde=serde)
        except DrillFailed as exc:
            report["problems"] = report["problems"] or [exc.message]
            _record(folder, bid, report, record, t_start)
            exc.report = report
            raise
    report["passed"] = not report["problems"]
    _record(folder, bid, report, record, t_start)
    if not report["passed"]:
        raise DrillFailed(
            f"drill of backup {bid} failed with {len(report['problems'])} problem(s): " + "; ".join(report["problems"]),
            report=report,
        )
    log(f"drill: backup {bid} passed; RTO {report['rto_s']}")
    return report


def _check_offloaded(backup_dir, manifest: dict, blobs, report: dict, log):
    """Every offloaded blob the backup references must still exist; returns the serializer to load with."""
    from include.checkpoint_core.backup.layout import OFFLOAD_REFS, read_json

    expected = int(manifest.get("offload_references") or 0)
    if not expected:
        return None
    if blobs is None:
        report["problems"].append(
            f"the backup's rows reference {expected} offloaded blobs and the drill was given no blob store to read "
            "them from (set checkpoint_blob_offload_url)")
        return None
    from include.checkpoint_core.offload import OffloadSerializer

    digests = (read_json(backup_dir / OFFLOAD_REFS) or {}).get("sha256") or []
    if len(digests) != expected:
        report["problems"].append(f"{OFFLOAD_REFS} lists {len(digests)} blobs, the manifest says {expected}")
    missing = [d for d in digests if blobs.stat(blobs.key_for(d)) is None]
    if missing:
        report["problems"].append(f"{len(missing)} offloaded blobs the backup references are gone, e.g. {missing[0]}")
    log(f"drill: {len(digests) - len(missing)}/{len(digests)} offloaded blobs present")
    return OffloadSerializer(blobs=blobs)


def _record(folder, bid: str, report: dict, record: bool, t_start: float) -> None:
    report["rto_s"]["total"] = round(time.perf_counter() - t_start, 3)
    # Only beside a backup that is still there: retention may have removed it meanwhile, and a
    # lone drill.json would re-create its folder.
    if record and (folder / bid / MANIFEST).exists():
        write_json(folder / bid / DRILL, report)


def _compare(manifest: dict, counts: dict, checksums: dict, problems: list[str]) -> None:
    for table, expected in manifest["rows"].items():
        if table not in counts:
            problems.append(f"table {table} is missing from the restore")
            continue
        if counts[table] != expected:
            problems.append(f"{table}: {counts[table]} rows restored, manifest says {expected}")
        elif checksums[table] != manifest["checksums"][table]:
            problems.append(f"{table}: content checksum {checksums[table][:16]}... differs from the manifest's "
                            f"{manifest['checksums'][table][:16]}...")


def _check_threads(saver, threads: list[str], raw: Callable[[str], tuple], problems: list[str], report: dict) -> None:
    """Each sampled thread loads through the saver: its latest checkpoint, pending writes and history.

    ``raw(thread)`` gives what the tables hold: (newest checkpoint id, its write rows, checkpoints).
    """
    for thread in threads:
        config = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
        newest, writes, total = raw(thread)
        try:
            tup = saver.get_tuple(config)
            listed = len(list(saver.list(config, limit=LIST_LIMIT)))
        except Exception as exc:  # any failure to load is the finding, whatever raised it
            problems.append(f"thread {thread}: the saver cannot load it: {type(exc).__name__}: {exc}")
            continue
        got = None if tup is None else tup.checkpoint["id"]
        if got != newest:
            problems.append(f"thread {thread}: get_tuple returned checkpoint {got}, the newest stored is {newest}")
        elif len(tup.pending_writes or []) != writes:
            problems.append(f"thread {thread}: {len(tup.pending_writes or [])} pending writes loaded, {writes} stored")
        if listed != min(total, LIST_LIMIT):
            problems.append(f"thread {thread}: list() returned {listed} checkpoints, {min(total, LIST_LIMIT)} expected")
        report["sampled_threads"].append(thread)


def _drill_postgres(manifest, local: Path, admin_dsn: str, report: dict, sample_threads: int, keep: bool,
                    on_restored, pg_bin_dir, log, serde=None) -> None:
    pg_restore = find_tool("pg_restore", pg_bin_dir)
    # The creation time is in the name, so a later drill can drop one a killed worker left behind.
    scratch = f"{SCRATCH_PREFIX}{datetime.now(timezone.utc):%Y%m%d%H%M}_{uuid.uuid4().hex[:8]}"
    schema = manifest.get("schema") or "public"
    # Tables restored outside public are only found on the source's search_path.
    scratch_dsn = make_conninfo(admin_dsn, dbname=scratch,
                                **({"options": f"-csearch_path={schema}"} if schema != "public" else {}))
    report["scratch"] = describe_dsn(scratch_dsn)
    with closing(connect_postgres(admin_dsn, autocommit=True)) as admin:
        _check_restore_tool(pg_restore, manifest)
        _drop_stale_scratch(admin, log)
        encoding = manifest.get("encoding") or admin.execute("SHOW server_encoding").fetchone()["server_encoding"]
        try:
            admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING {}").format(
                sql.Identifier(scratch), sql.Literal(encoding)))
        except psycopg.errors.InsufficientPrivilege as exc:
            raise BackupError(f"cannot create the scratch database on {describe_dsn(admin_dsn)}: "
                              f"{' '.join(str(exc).split())}.",
                              hint="Give the drill's admin connection CREATEDB (ALTER ROLE ... CREATEDB).") from exc
    log(f"drill: restoring into scratch database {scratch}")
    try:
        t0 = time.perf_counter()
        run_tool([pg_restore, "--no-owner", "--no-privileges", "--exit-on-error", "--no-password", str(local)],
                 admin_dsn, dbname=scratch, error=DrillFailed, what=f"pg_restore of backup {manifest['backup_id']}")
        report["rto_s"]["restore"] = round(time.perf_counter() - t0, 3)
        t0 = time.perf_counter()
        _verify_postgres(manifest, scratch_dsn, report, sample_threads, serde=serde)
        report["rto_s"]["verify"] = round(time.perf_counter() - t0, 3)
        if on_restored is not None and not report["problems"]:
            on_restored(StoreTarget("postgres", scratch_dsn, f"drill:{manifest['backup_id']}"))
    finally:
        if not keep:
            _drop_scratch(admin_dsn, scratch, log)
        else:
            with closing(connect_postgres(admin_dsn, autocommit=True)) as admin:
                admin.execute(sql.SQL("COMMENT ON DATABASE {} IS 'keep'").format(sql.Identifier(scratch)))


def _drop_stale_scratch(admin, log) -> None:
    """Scratch databases older than STALE_SCRATCH that a killed drill left behind (kept ones spared)."""
    rows = admin.execute(
        "SELECT datname FROM pg_database WHERE datname LIKE %s "
        "AND COALESCE(shobj_description(oid, 'pg_database'), '') <> 'keep'",
        (SCRATCH_PREFIX.replace("_", "\\_") + "%",),
    ).fetchall()
    now = datetime.now(timezone.utc)
    for row in rows:
        match = re.fullmatch(rf"{SCRATCH_PREFIX}(\d{{12}})_[0-9a-f]{{8}}", row["datname"])
        if match and datetime.strptime(match.group(1), "%Y%m%d%H%M").replace(tzinfo=timezone.utc) < now - STALE_SCRATCH:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(row["datname"])))
            log(f"drill: dropped scratch database {row['datname']}, left behind by an earlier drill")


def _check_restore_tool(pg_restore: str, manifest: dict) -> None:
    """pg_restore cannot read archives from a newer pg_dump; say so instead of a header error."""
    text, major = tool_version(pg_restore)
    match = re.search(r"(\d+)", manifest.get("tool") or "")
    if match and int(match.group(1)) > major:
        raise ToolMissing(f"backup {manifest['backup_id']} was written by {manifest['tool']}; {text} cannot read it.")


def _drop_scratch(admin_dsn: str, scratch: str, log) -> None:
    """Always runs: a fresh connection (the first may be gone) and FORCE (sessions left behind)."""
    with closing(connect_postgres(admin_dsn, autocommit=True)) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(scratch)))
    log(f"drill: dropped scratch database {scratch}")


def _verify_postgres(manifest: dict, dsn: str, report: dict, sample_threads: int, serde=None) -> None:
    from langgraph.checkpoint.postgres import PostgresSaver

    problems = report["problems"]
    with closing(connect_postgres(dsn)) as conn:
        counts, checksums = pg_table_digests(conn, None)
        report["rows"] = counts
        _compare(manifest, counts, checksums, problems)
        versions = schema_versions(conn)
        if versions != manifest.get("schema_versions"):
            problems.append(f"schema versions {versions} differ from the manifest's {manifest.get('schema_versions')}")
        canary = manifest.get("canary")
        if canary:
            row = None
            if CANARY_TABLE in counts:
                row = conn.execute(sql.SQL("SELECT token FROM {} WHERE id = %s").format(sql.Identifier(CANARY_TABLE)),
                                   (canary["id"],)).fetchone()
            if row is None or row["token"] != canary["token"]:
                problems.append(f"canary {canary['id']} is not in the restore with the backup's token")
        if "checkpoints" not in counts:
            return
        threads = _sample(conn, sample_threads, "SELECT thread_id FROM checkpoints WHERE checkpoint_ns = '' "
                          "ORDER BY checkpoint_id DESC LIMIT 1", "SELECT thread_id FROM (SELECT DISTINCT thread_id "
                          "FROM checkpoints WHERE checkpoint_ns = '') t ORDER BY random() LIMIT %s")

        def raw(thread: str) -> tuple:
            row = conn.execute(
                "SELECT max(checkpoint_id) AS newest, count(*) AS n FROM checkpoints "
                "WHERE thread_id = %s AND checkpoint_ns = ''", (thread,)).fetchone()
            writes = conn.execute(
                "SELECT count(*) AS n FROM checkpoint_writes WHERE thread_id = %s AND checkpoint_ns = '' "
                "AND checkpoint_id = %s", (thread, row["newest"])).fetchone()["n"]
            return row["newest"], writes, row["n"]

        _check_threads(PostgresSaver(conn, serde=serde), threads, raw, problems, report)


def _sample(conn, n: int, newest_sql: str, random_sql: str) -> list[str]:
    """The thread written last (the one most likely torn by a bad backup) plus random others."""
    def first(row):
        return row[0] if isinstance(row, tuple) else row["thread_id"]

    picked = [first(r) for r in conn.execute(newest_sql).fetchall()]
    for row in conn.execute(random_sql, (n,)).fetchall():
        if len(picked) >= n:
            break
        if first(row) not in picked:
            picked.append(first(row))
    return picked[:max(n, 0)]


def _drill_sqlite(manifest, local: Path, report: dict, sample_threads: int, keep: bool, on_restored, log,
                  serde=None) -> None:
    scratch_dir = Path(tempfile.mkdtemp(prefix="checkpoint-ops-drill-sqlite-"))
    scratch = scratch_dir / "restored.sqlite"
    report["scratch"] = str(scratch)
    try:
        t0 = time.perf_counter()
        shutil.copyfile(local, scratch)
        report["rto_s"]["restore"] = round(time.perf_counter() - t0, 3)
        t0 = time.perf_counter()
        _verify_sqlite(manifest, scratch, report, sample_threads, serde=serde)
        report["rto_s"]["verify"] = round(time.perf_counter() - t0, 3)
        if on_restored is not None and not report["problems"]:
            on_restored(StoreTarget("sqlite", str(scratch), f"drill:{manifest['backup_id']}"))
    finally:
        if not keep:
            shutil.rmtree(scratch_dir, ignore_errors=True)
            log(f"drill: removed scratch copy {scratch}")


def _verify_sqlite(manifest: dict, path: Path, report: dict, sample_threads: int, serde=None) -> None:
    from langgraph.checkpoint.sqlite import SqliteSaver

    from include.checkpoint_core.sqlite_store import connect_sqlite, open_sqlite_readonly, read_schema

    problems = report["problems"]
    try:
        with open_sqlite_readonly(path) as conn:
            bad = [r[0] for r in conn.execute("PRAGMA integrity_check(20)")]
            if bad != ["ok"]:
                problems.append("integrity_check: " + "; ".join(" ".join(b.split()) for b in bad))
                return
            schema = read_schema(conn, path)
            counts, checksums = sqlite_table_digests(conn)
    except CheckpointStoreError as exc:
        problems.append(f"the restored file does not open as a checkpoint store: {exc.message}")
        return
    except Exception as exc:  # sqlite3.DatabaseError on a damaged file, whatever the page
        problems.append(f"the restored file cannot be read: {exc}")
        return
    report["rows"] = counts
    _compare(manifest, counts, checksums, problems)
    if manifest.get("schema_versions", {}).get("sqlite") != schema.version:
        problems.append(f"schema version {schema.version} differs from the manifest's {manifest.get('schema_versions')}")
    # SqliteSaver sets the file up on first use (a write), so it works on the scratch copy only after the checksums.
    with closing(connect_sqlite(path)) as conn:
        canary = manifest.get("canary")
        if canary and conn.execute(
            "SELECT 1 FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ?",
            (canary["thread_id"], canary["checkpoint_ns"], canary["checkpoint_id"]),
        ).fetchone() is None:
            problems.append(f"canary checkpoint {canary['checkpoint_id']} of thread {canary['thread_id']} is missing")
        threads = _sample(conn, sample_threads, "SELECT thread_id FROM checkpoints WHERE checkpoint_ns = '' "
                          "ORDER BY checkpoint_id DESC LIMIT 1", "SELECT thread_id FROM (SELECT DISTINCT thread_id "
                          "FROM checkpoints WHERE checkpoint_ns = '') ORDER BY random() LIMIT ?")

        def raw(thread: str) -> tuple:
            newest, n = conn.execute("SELECT max(checkpoint_id), count(*) FROM checkpoints "
                                     "WHERE thread_id = ? AND checkpoint_ns = ''", (thread,)).fetchone()
            writes = conn.execute("SELECT count(*) FROM writes WHERE thread_id = ? AND checkpoint_ns = '' "
                                  "AND checkpoint_id = ?", (thread, newest)).fetchone()[0]
            return newest, writes, n

        _check_threads(SqliteSaver(conn, serde=serde), threads, raw, problems, report)
        conn.commit()
