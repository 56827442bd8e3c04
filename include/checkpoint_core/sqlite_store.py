"""SQLite checkpoint files: recognise them, read them without touching them, set them up.

A SqliteSaver file is the product's usual starting point, and it is often a file nobody has
looked at for a while: written by an older langgraph-checkpoint-sqlite, shared with the app's
own tables, or simply the wrong path. ``inspect_sqlite`` answers "what is this file" without
writing to it; ``setup_sqlite`` creates or upgrades the schema the way SqliteSaver does.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

from include.checkpoint_core.errors import (
    CheckpointStoreError,
    CorruptStore,
    NotACheckpointStore,
    NotSqliteFile,
    SetupFailed,
    StoreBusy,
    StoreNeedsRecovery,
    StoreNotFound,
    StoreNotWritable,
    UnsupportedSchema,
)

SQLITE_HEADER = b"SQLite format 3\x00"
DEFAULT_BUSY_TIMEOUT_MS = 5_000

# Columns each layout must have. Extra columns are tolerated: files in the wild carry them.
CHECKPOINT_COLUMNS = {
    "thread_id",
    "checkpoint_ns",
    "checkpoint_id",
    "parent_checkpoint_id",
    "type",
    "checkpoint",
    "metadata",
}
WRITES_COLUMNS = {"thread_id", "checkpoint_ns", "checkpoint_id", "task_id", "idx", "channel", "type", "value"}

# Schema versions, oldest first. The number is ours; the text says which releases wrote it.
SCHEMA_LEGACY = 0  # langgraph < 0.2: checkpoints keyed by thread_ts, no namespaces
SCHEMA_NO_TASK_PATH = 1  # langgraph-checkpoint-sqlite 1.x-2.0.x: writes without task_path
SCHEMA_CURRENT = 2  # writes.task_path (what SqliteSaver.setup() creates today)
SCHEMA_NAMES = {
    SCHEMA_LEGACY: "legacy thread_ts layout (langgraph < 0.2)",
    SCHEMA_NO_TASK_PATH: "writes without task_path (langgraph-checkpoint-sqlite < 2.0.5)",
    SCHEMA_CURRENT: "current (writes.task_path)",
}


@dataclass(frozen=True)
class SqliteSchema:
    """What a checkpoint file holds, as read from its catalogue."""

    path: str
    version: int
    version_name: str
    tables: tuple[str, ...]
    writes_has_task_path: bool
    journal_mode: str
    page_size: int
    page_count: int
    size_bytes: int
    wal_bytes: int

    def as_dict(self) -> dict:
        return asdict(self)


def classify_sqlite_error(exc: sqlite3.Error, path: Path, doing: str) -> CheckpointStoreError:
    """Turn sqlite3's error into one that says what happened to this file and what to do."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc)
    where = f"{doing} {path}"
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "database is locked" in text:
        return StoreBusy(f"{where}: the database is locked by another process.")
    if name == "SQLITE_READONLY_ROLLBACK" or (name == "" and "hot journal" in text):
        return StoreNeedsRecovery(f"{where}: {text}.")
    journal = path.with_name(path.name + "-journal")
    if name.startswith("SQLITE_READONLY") or "readonly database" in text or "unable to open database file" in text:
        if journal.exists() and journal.stat().st_size > 0 and name in ("", "SQLITE_READONLY"):
            return StoreNeedsRecovery(f"{where}: a rollback journal ({journal.name}) is waiting to be replayed.")
        return StoreNotWritable(f"{where}: {text}.")
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or "malformed" in text or "not a database" in text \
            or "disk image" in text:
        return CorruptStore(f"{path} is an unreadable or damaged SQLite file: {text}.")
    return SetupFailed(f"{where}: {text}.")


def _check_file(path: Path) -> None:
    """Fail fast with a clear message before sqlite3 creates or misreads anything."""
    if not path.exists():
        raise StoreNotFound(f"SQLite checkpoint file not found: {path}.")
    if path.is_dir():
        raise NotSqliteFile(f"{path} is a directory, not an SQLite file.")
    size = path.stat().st_size
    if size == 0:
        raise NotACheckpointStore(f"{path} is empty (0 bytes): it holds no checkpoint tables.")
    with path.open("rb") as fh:
        header = fh.read(len(SQLITE_HEADER))
    if header != SQLITE_HEADER:
        if len(header) < len(SQLITE_HEADER) or size < 512:
            raise NotSqliteFile(f"{path} is not an SQLite database ({size} bytes, no SQLite header).")
        raise NotSqliteFile(f"{path} is not an SQLite database (its first bytes are {header[:8]!r}).")


def _readonly_uri(path: Path) -> str:
    return f"{path.resolve().as_uri()}?mode=ro"


@contextmanager
def open_sqlite_readonly(path: str | Path, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS) -> Iterator[sqlite3.Connection]:
    """Open a checkpoint file read-only after checking it exists and is SQLite.

    ``mode=ro`` guarantees the database file's bytes are not changed. (In WAL mode SQLite
    may still create the ``-wal``/``-shm`` side files; that is SQLite's own protocol.)
    """
    p = Path(path)
    _check_file(p)
    try:
        conn = sqlite3.connect(_readonly_uri(p), uri=True, timeout=busy_timeout_ms / 1000, check_same_thread=False)
    except sqlite3.Error as exc:  # pragma: no cover - connect itself rarely fails after the checks
        raise CorruptStore(f"cannot open {p}: {exc}.") from exc
    with closing(conn):
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        yield conn


def readonly_saver(conn: sqlite3.Connection, serde=None):
    """A SqliteSaver reading a file opened read-only, whatever layout ``read_schema`` accepts.

    SqliteSaver's readers select ``writes.task_path``, which files from
    langgraph-checkpoint-sqlite < 2.0.5 lack, and a read-only file cannot be upgraded. A TEMP
    view named ``writes`` (SQLite resolves the temp schema first, and it lives in memory, so
    the file is untouched) gives those files the column with SqliteSaver's own default ''.
    """
    from langgraph.checkpoint.sqlite import SqliteSaver

    if "writes" in {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")} \
            and "task_path" not in _columns(conn, "writes"):
        conn.execute("CREATE TEMP VIEW IF NOT EXISTS writes AS SELECT *, '' AS task_path FROM main.writes")
    saver = SqliteSaver(conn) if serde is None else SqliteSaver(conn, serde=serde)
    saver.is_setup = True  # setup() would try to write
    return saver


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info('{table}')")}


def read_schema(conn: sqlite3.Connection, path: Path) -> SqliteSchema:
    """Classify an open SQLite file. Raises the error a user can act on."""
    try:
        tables = tuple(
            r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        )
        journal_mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        page_count = conn.execute("PRAGMA page_count").fetchone()[0]
    except sqlite3.Error as exc:
        raise classify_sqlite_error(exc, path, "reading") from exc
    if "checkpoints" not in tables:
        shown = ", ".join(tables[:10]) or "none"
        raise NotACheckpointStore(
            f"{path} is an SQLite database without LangGraph checkpoint tables (tables found: {shown})."
        )
    ckpt_cols = _columns(conn, "checkpoints")
    if "thread_ts" in ckpt_cols and "checkpoint_id" not in ckpt_cols:
        version = SCHEMA_LEGACY
        has_task_path = False
    else:
        missing = CHECKPOINT_COLUMNS - ckpt_cols
        if missing:
            raise NotACheckpointStore(
                f"{path}: table 'checkpoints' lacks LangGraph columns {sorted(missing)}; "
                "it was not written by SqliteSaver."
            )
        if "writes" not in tables:
            raise NotACheckpointStore(f"{path} has a 'checkpoints' table but no 'writes' table.")
        write_cols = _columns(conn, "writes")
        missing = WRITES_COLUMNS - write_cols
        if missing:
            raise NotACheckpointStore(
                f"{path}: table 'writes' lacks LangGraph columns {sorted(missing)}; it was not written by SqliteSaver."
            )
        has_task_path = "task_path" in write_cols
        version = SCHEMA_CURRENT if has_task_path else SCHEMA_NO_TASK_PATH
    sizes = sqlite_file_sizes(path)
    return SqliteSchema(
        path=str(path),
        version=version,
        version_name=SCHEMA_NAMES[version],
        tables=tables,
        writes_has_task_path=has_task_path,
        journal_mode=str(journal_mode).lower(),
        page_size=int(page_size),
        page_count=int(page_count),
        size_bytes=sizes["main"],
        wal_bytes=sizes.get("wal", 0),
    )


def sqlite_file_sizes(path: Path) -> dict[str, int]:
    """Bytes on disk of the database file ("main") and of its "wal" and "shm" side files when present."""
    sizes = {"main": path.stat().st_size}
    for side in ("wal", "shm"):
        try:
            sizes[side] = path.with_name(f"{path.name}-{side}").stat().st_size
        except FileNotFoundError:
            pass
    return sizes


def inspect_sqlite(path: str | Path, *, check_integrity: bool = False) -> SqliteSchema:
    """Say what a checkpoint file is, without writing to it.

    ``check_integrity`` runs ``PRAGMA quick_check`` (a full read of the file: costly on big
    files, so callers ask for it where it matters, such as before a migration).
    """
    p = Path(path)
    with open_sqlite_readonly(p) as conn:
        schema = read_schema(conn, p)
        if check_integrity:
            check_sqlite_integrity(conn, p)
    return schema


def check_sqlite_integrity(conn: sqlite3.Connection, path: Path) -> None:
    try:
        problems = [r[0] for r in conn.execute("PRAGMA quick_check(20)")]
    except sqlite3.Error as exc:
        error = classify_sqlite_error(exc, path, "checking")
        if isinstance(error, (StoreBusy, StoreNeedsRecovery, StoreNotWritable)):
            raise error from exc
        raise CorruptStore(f"{path} failed its integrity check: {exc}.") from exc
    if problems != ["ok"]:
        raise CorruptStore(f"{path} failed its integrity check: {'; '.join(problems)}.")


def count_rows(conn: sqlite3.Connection) -> dict[str, int]:
    """Rows and threads per checkpoint table: a quick size picture for logs and reports."""
    return {
        "threads": conn.execute("SELECT COUNT(DISTINCT thread_id) FROM checkpoints").fetchone()[0],
        "checkpoints": conn.execute("SELECT COUNT(*) FROM checkpoints").fetchone()[0],
        "writes": conn.execute("SELECT COUNT(*) FROM writes").fetchone()[0],
    }


def connect_sqlite(
    path: str | Path, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS, *, autocommit: bool = False
) -> sqlite3.Connection:
    """A read-write connection the way a LangGraph app should open its file.

    ``check_same_thread=False`` is what SqliteSaver expects (it serialises access with a
    lock); the busy timeout makes a writer wait for another process's lock instead of
    failing at once with "database is locked". ``autocommit`` is what SqliteStore needs
    (it issues its own BEGIN).
    """
    extra = {"isolation_level": None} if autocommit else {}
    conn = sqlite3.connect(str(path), timeout=busy_timeout_ms / 1000, check_same_thread=False, **extra)
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    return conn


def _replay_hot_journal(path: Path, busy_timeout_ms: int) -> None:
    """Open the file read-write once: SQLite rolls a crashed writer's journal back on first read."""
    try:
        with closing(connect_sqlite(path, busy_timeout_ms)) as conn:
            conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as exc:
        raise classify_sqlite_error(exc, path, "recovering") from exc


def setup_sqlite(path: str | Path, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS) -> dict:
    """Create or upgrade a SqliteSaver schema and switch the file to WAL.

    Idempotent: on a file that is already current, nothing is written and the report's
    ``changes`` list is empty. A hot journal left by a crashed writer is replayed first (what
    the app's next open would do anyway). A file that holds other tables but no checkpoint tables is
    refused: it is far more likely a wrong path than a wish to add tables to an app's DB.
    """
    from langgraph.checkpoint.sqlite import SqliteSaver

    p = Path(path)
    if not p.parent.is_dir():
        raise StoreNotFound(f"the directory for the SQLite checkpoint file does not exist: {p.parent}.")
    before: SqliteSchema | None = None
    existed = p.exists() and p.stat().st_size > 0
    changes: list[str] = []
    if existed:
        try:
            try:
                before = inspect_sqlite(p)
            except StoreNeedsRecovery:
                _replay_hot_journal(p, busy_timeout_ms)
                changes.append("rolled back a crashed writer's unfinished transaction (hot journal)")
                before = inspect_sqlite(p)
        except NotACheckpointStore:
            with open_sqlite_readonly(p) as conn:
                tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            if tables:
                raise
        if before is not None and before.version == SCHEMA_LEGACY:
            raise UnsupportedSchema(
                f"{p} uses the {SCHEMA_NAMES[SCHEMA_LEGACY]}, which SqliteSaver can no longer read or upgrade."
            )
    unwritable = [str(x) for x in ((p, p.parent) if p.exists() else (p.parent,)) if not os.access(x, os.W_OK)]
    if unwritable:
        raise StoreNotWritable(f"setting up {p}: no write access to {', '.join(unwritable)}.")
    if not existed:
        changes.append("created the database file")
    try:
        with closing(connect_sqlite(p, busy_timeout_ms)) as conn:
            SqliteSaver(conn).setup()
            conn.commit()
            journal_mode = conn.execute("PRAGMA journal_mode").fetchone()[0].lower()
    except sqlite3.Error as exc:
        raise classify_sqlite_error(exc, p, "setting up") from exc
    if journal_mode != "wal":
        raise SetupFailed(
            f"{p} stayed in journal_mode={journal_mode} after setup; WAL needs a local filesystem "
            "with shared-memory support (not NFS/SMB).",
            hint="Move the file to a local disk and run checkpoint_setup again.",
        )
    after = inspect_sqlite(p)
    if after.version != SCHEMA_CURRENT:
        # SqliteSaver.setup() swallows a read-only failure of its task_path upgrade.
        raise StoreNotWritable(f"setting up {p}: the schema stayed at version {after.version} ({after.version_name}).")
    if before is None or before.version != after.version:
        if before is not None:
            changes.append(f"upgraded schema {before.version} -> {after.version} ({after.version_name})")
        else:
            changes.append(f"created checkpoint tables (schema {after.version})")
    if before is not None and before.journal_mode != "wal":
        changes.append(f"switched journal_mode {before.journal_mode} -> wal")
    with open_sqlite_readonly(p) as conn:
        rows = count_rows(conn)
    return {
        "store": "sqlite",
        "path": str(p),
        "schema_version": after.version,
        "schema": after.version_name,
        "journal_mode": after.journal_mode,
        "busy_timeout_ms": int(busy_timeout_ms),
        "size_bytes": after.size_bytes,
        "rows": rows,
        "changes": changes,
    }
