"""Backups and restore drills for checkpoint stores.

Plain functions over a ``StoreTarget`` and a backup ``folder`` (any pathlib-like object:
``pathlib.Path``, or Airflow's ``ObjectStoragePath`` for file:// and s3://), so operators
only resolve connections and paths and hand them over.
"""

from include.checkpoint_core.backup.drill import restore_drill
from include.checkpoint_core.backup.errors import (
    BackupCorrupt,
    BackupError,
    BackupExists,
    BackupFailed,
    BackupFolderMissing,
    DrillFailed,
    InvalidBackupId,
    NoBackupFound,
    ToolMissing,
)
from include.checkpoint_core.backup.layout import list_backups
from include.checkpoint_core.backup.retention import apply_retention
from include.checkpoint_core.backup.take import take_backup

__all__ = [
    "BackupCorrupt", "BackupError", "BackupExists", "BackupFailed", "BackupFolderMissing", "DrillFailed",
    "InvalidBackupId", "NoBackupFound", "ToolMissing", "apply_retention", "list_backups", "restore_drill",
    "take_backup",
]
