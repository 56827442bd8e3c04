"""What can go wrong with a backup or a restore drill, and what the operator does next."""

from __future__ import annotations

from include.checkpoint_core.errors import CheckpointStoreError


class BackupError(CheckpointStoreError):
    """Base class; ``retryable`` may be set per instance when the cause decides it."""

    hint = "Fix the cause named above and run the job again."

    def __init__(self, message: str, hint: str | None = None, *, retryable: bool | None = None) -> None:
        if retryable is not None:
            self.retryable = retryable
        super().__init__(message, hint)


class BackupFolderMissing(BackupError):
    hint = "Check the backup folder (path or bucket/prefix) the job points at; take a backup there first."


class NoBackupFound(BackupError):
    hint = "Take a backup first (or lower min_age_hours); only folders with a manifest.json count."


class BackupExists(BackupError):
    hint = "Use a new backup_id: a finished backup is never overwritten."


class InvalidBackupId(BackupError):
    hint = "Use letters, digits, '.', '_' and '-' only (e.g. the run's logical date)."


class ToolMissing(BackupError):
    hint = (
        "Install the PostgreSQL client tools (pg_dump/pg_restore) of the server's major version or newer "
        "on the worker, or pass pg_bin_dir."
    )


class BackupFailed(BackupError):
    """pg_dump, the canary or the upload failed; the copy was not published (no manifest)."""

    retryable = True
    hint = "The task retries; if it keeps failing, read the tool's message above."


class BackupCorrupt(BackupError):
    """The stored file is not the file the backup wrote: trying again reads the same bytes."""

    hint = "Do not rely on this backup: take a new one, and check the storage it sits on."


class DrillFailed(BackupError):
    """The backup restored, or tried to, but is not what its manifest promises."""

    hint = "Treat this backup as unusable: take a new backup and drill it; keep=True keeps the scratch copy to inspect."

    def __init__(self, message: str, hint: str | None = None, *, report: dict | None = None,
                 retryable: bool | None = None) -> None:
        self.report = report or {}
        super().__init__(message, hint, retryable=retryable)
