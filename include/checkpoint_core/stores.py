"""One name for "a checkpoint store", whatever its backend.

Operators resolve an Airflow connection into a ``StoreTarget`` and hand it to the core;
the core dispatches on ``kind``. A target's ``repr`` never shows a password.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

SUPPORTED_KINDS = ("sqlite", "postgres")


@dataclass(frozen=True)
class StoreTarget:
    kind: Literal["sqlite", "postgres"]
    location: str = field(repr=False)  # a file path, or a libpq DSN (which may hold a password)
    name: str = ""  # the connection id it came from, for logs and reports

    def __post_init__(self) -> None:
        if self.kind not in SUPPORTED_KINDS:
            raise ValueError(f"unsupported checkpoint store kind {self.kind!r}; use one of {SUPPORTED_KINDS}")

    @property
    def display(self) -> str:
        """Where the store is, safe for logs."""
        if self.kind == "postgres":
            from include.checkpoint_core.postgres_store import describe_dsn

            return describe_dsn(self.location)
        return self.location

    def __repr__(self) -> str:
        return f"StoreTarget(kind={self.kind!r}, name={self.name!r}, at={self.display!r})"


def setup_store(target: StoreTarget, **options) -> dict:
    """Create or upgrade the LangGraph schema of any supported store, then its checkpoint-ops
    indexes (``metadata_index_keys``: the metadata keys filtered lists use); return a report."""
    from include.checkpoint_core.indexes import DEFAULT_TAG_KEYS, ensure_indexes, validate_tag_keys

    # A bad key is a configuration error: refuse it before touching the store.
    raw_keys = options.get("metadata_index_keys")
    keys = validate_tag_keys(DEFAULT_TAG_KEYS if raw_keys is None else raw_keys)
    busy = options.get("busy_timeout_ms")
    if target.kind == "sqlite":
        from include.checkpoint_core.sqlite_store import setup_sqlite

        report = setup_sqlite(target.location, **({"busy_timeout_ms": busy} if busy is not None else {}))
    else:
        from include.checkpoint_core.postgres_store import setup_postgres

        report = setup_postgres(target.location, include_store=options.get("include_store", True))
    created = ensure_indexes(target, keys, busy_timeout_ms=busy)
    report["changes"] = [
        *report["changes"],
        *(f"extension {name} created" for name in created.extensions),
        *(f"index {name} created" for name in created),
    ]
    return {"conn_id": target.name, **report}
