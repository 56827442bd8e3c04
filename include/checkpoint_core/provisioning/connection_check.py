"""Check a freshly provisioned checkpoint PostgreSQL the way the app will use it: a round trip,
the server's version, and the LangGraph schema through the same ``setup_store`` as ``checkpoint_setup``
(so a role that cannot create tables fails here, not at the app's first write)."""

from __future__ import annotations

from typing import Any

from include.checkpoint_core.stores import StoreTarget, setup_store


def check_connection(target: StoreTarget) -> dict[str, Any]:
    """``SELECT 1``, ``server_version`` and the schema set-up; raises the store's own errors."""
    from include.checkpoint_core.postgres_store import postgres_connection

    if target.kind != "postgres":
        raise ValueError(f"{target.name!r} is a {target.kind} store: the RDS check needs a postgres connection.")
    with postgres_connection(target.location) as conn:
        one = conn.execute("SELECT 1 AS one").fetchone()["one"]
        version = conn.execute("SHOW server_version").fetchone()["server_version"]
    setup = setup_store(target)
    return {"select_1": one, "server_version": version, "where": target.display, "setup_changes": setup["changes"]}
