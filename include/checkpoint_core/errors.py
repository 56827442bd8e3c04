"""Errors that tell an operator what went wrong and what to do about it.

Every error carries a ``hint``: the next step for the person reading the task log. Messages
name files, hosts and databases but never credentials.
"""

from __future__ import annotations


class CheckpointStoreError(Exception):
    """Base class: a checkpoint store cannot be used as asked."""

    hint: str = ""
    # Whether trying again later can succeed (a server that is down) or not (a wrong path).
    retryable: bool = False

    def __init__(self, message: str, hint: str | None = None) -> None:
        if hint is not None:
            self.hint = hint
        self.message = message
        super().__init__(f"{message} {self.hint}".strip())


class StoreNotFound(CheckpointStoreError):
    hint = "Check the path in the connection (for SQLite, the connection's host is the file path)."


class NotSqliteFile(CheckpointStoreError):
    hint = "Point the connection at the SQLite file that SqliteSaver writes to."


class CorruptStore(CheckpointStoreError):
    hint = (
        "Restore the file from a backup, or salvage it with `sqlite3 FILE .recover`, "
        "before running this job again."
    )


class NotACheckpointStore(CheckpointStoreError):
    hint = (
        "Point the connection at the LangGraph checkpoint file, or create the tables first "
        "with the checkpoint_setup DAG."
    )


class UnsupportedSchema(CheckpointStoreError):
    hint = "Open the file once with a LangGraph release that still reads it, then run this job again."


class StoreBusy(CheckpointStoreError):
    retryable = True
    hint = "Another process holds the lock; the task retries. Raise busy_timeout_ms if it keeps happening."


class StoreNotWritable(CheckpointStoreError):
    hint = (
        "Give the Airflow worker's user write access to the file and its directory (SQLite's WAL "
        "needs to create -wal/-shm files beside it), then run this job again."
    )


class StoreNeedsRecovery(CheckpointStoreError):
    hint = (
        "A writer crashed and left a hot rollback journal that SQLite must roll back with write access. "
        "Let the app open the file once (or run checkpoint_setup, which opens it read-write), then run this job again."
    )


class StoreUnreachable(CheckpointStoreError):
    retryable = True
    hint = "Check that the server is running and that the connection's host and port are right."


class AuthenticationFailed(CheckpointStoreError):
    hint = "Check the connection's login and password (or the server's pg_hba.conf)."


class ConnectionSettingsWrong(CheckpointStoreError):
    hint = "Check the connection's options (sslmode and other extras) against the server's settings."


class DatabaseMissing(CheckpointStoreError):
    hint = "Create the database (CREATE DATABASE ...) or fix the schema/database name in the connection."


class SetupFailed(CheckpointStoreError):
    hint = "Fix the cause named above and run the job again: what it already applied stays applied and is not redone."
