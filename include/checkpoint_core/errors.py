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


class StoreUnreachable(CheckpointStoreError):
    retryable = True
    hint = "Check that the server is running and that the connection's host and port are right."


class AuthenticationFailed(CheckpointStoreError):
    hint = "Check the connection's login and password (or the server's pg_hba.conf)."


class DatabaseMissing(CheckpointStoreError):
    hint = "Create the database (CREATE DATABASE ...) or fix the schema/database name in the connection."


class SetupFailed(CheckpointStoreError):
    hint = "Nothing else was changed; fix the cause and run checkpoint_setup again."
