"""Turn an Airflow connection id into a checkpoint store the core can use."""

from __future__ import annotations

from pathlib import Path

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

from include.checkpoint_core.errors import CheckpointStoreError
from include.checkpoint_core.stores import StoreTarget

SQLITE_CONN_ID = "checkpoints_sqlite"
POSTGRES_CONN_ID = "checkpoints_postgres"
REDIS_CONN_ID = "checkpoints_redis"
ARTIFACTS_CONN_ID = "checkpoint_artifacts"


class ConnectionNotUsable(CheckpointStoreError):
    hint = (
        "Define it in the Airflow UI (Admin > Connections) or as AIRFLOW_CONN_<ID>; "
        "see the README's Configuration section."
    )


class CheckpointStoreHook(BaseHook):
    """Resolves ``checkpoint_conn_id`` to a ``StoreTarget`` using the provider hooks' rules.

    - ``sqlite`` connections: the file path is the connection's host (SqliteHook's convention);
    - ``postgres`` connections: host, port, login, password, schema (the database) and extras
      are read the way PostgresHook reads them, including its IAM token support.
    """

    conn_name_attr = "checkpoint_conn_id"
    default_conn_name = SQLITE_CONN_ID
    hook_name = "LangGraph checkpoint store"

    def __init__(self, checkpoint_conn_id: str = default_conn_name) -> None:
        super().__init__()
        self.checkpoint_conn_id = checkpoint_conn_id

    def get_target(self) -> StoreTarget:
        try:
            conn = self.get_connection(self.checkpoint_conn_id)
        except AirflowNotFoundException:
            raise ConnectionNotUsable(f"connection {self.checkpoint_conn_id!r} is not defined.") from None
        conn_type = (conn.conn_type or "").lower()
        if conn_type == "sqlite":
            return StoreTarget("sqlite", self._sqlite_path(conn), self.checkpoint_conn_id)
        if conn_type in ("postgres", "postgresql"):
            return StoreTarget("postgres", self._postgres_dsn(), self.checkpoint_conn_id)
        raise ConnectionNotUsable(
            f"connection {self.checkpoint_conn_id!r} has type {conn.conn_type!r}; "
            "a checkpoint store needs type 'sqlite' or 'postgres'."
        )

    def _sqlite_path(self, conn) -> str:
        # SqliteHook reads the path from host; a URI such as sqlite:////data/x.sqlite lands in schema.
        raw = (conn.host or conn.schema or "").strip()
        if not raw:
            raise ConnectionNotUsable(
                f"connection {self.checkpoint_conn_id!r} has no file path: put the SQLite file's path in its host."
            )
        return str(Path(raw).expanduser().resolve())

    def _postgres_dsn(self) -> str:
        import psycopg
        from airflow.providers.postgres.hooks.postgres import PostgresHook
        from psycopg.conninfo import make_conninfo

        hook = PostgresHook(postgres_conn_id=self.checkpoint_conn_id)
        conn = hook.connection
        login, password, port = conn.login, conn.password, conn.port
        if conn.extra_dejson.get("iam", False):
            login, password, port = hook.get_iam_token(conn)
        args = {
            "host": conn.host,
            "port": port,
            "user": login,
            "password": password,
            "dbname": hook.database or conn.schema,
        }
        for key, value in conn.extra_dejson.items():
            if key not in hook.ignored_extra_options:
                args[key] = value
        try:
            return make_conninfo(**{k: str(v) for k, v in args.items() if v not in (None, "")})
        except psycopg.ProgrammingError:
            extras = sorted(k for k in conn.extra_dejson if k not in hook.ignored_extra_options)
            raise ConnectionNotUsable(
                f"connection {self.checkpoint_conn_id!r} has options libpq does not accept (extras: {extras})."
            ) from None


KNOWN_STORE_CONN_IDS = (SQLITE_CONN_ID, POSTGRES_CONN_ID)


def resolve_store_conn_ids(
    requested: list[str], known: tuple[str, ...] = KNOWN_STORE_CONN_IDS, log=print, param: str = "stores"
) -> list[str]:
    """The store connections a run should work on, checked up front.

    An explicit list must name only defined, usable sqlite/postgres connections. An empty list
    means "every one of ``known`` that is defined": undefined ones are skipped, but a defined
    one that cannot be used is a problem, not something to skip. All problems are reported at once.
    """
    from airflow.sdk.exceptions import AirflowFailException

    requested = list(dict.fromkeys(requested))
    usable, problems = [], []
    for conn_id in requested or known:
        try:
            CheckpointStoreHook(conn_id).get_target()
            usable.append(conn_id)
        except ConnectionNotUsable as exc:
            if requested or "is not defined" not in exc.message:
                problems.append(exc.message)
            else:
                log(f"skipping {conn_id}: {exc.message}")
    if problems:
        raise AirflowFailException("; ".join(problems) + " " + ConnectionNotUsable.hint)
    if not usable:
        raise AirflowFailException(
            "No checkpoint store connection is defined: define "
            + " or ".join(known)
            + f" (Admin > Connections, or AIRFLOW_CONN_<ID>), or name a connection in the '{param}' param."
        )
    return usable


def resolve_sqlite_source(source: str) -> StoreTarget:
    """A migration source given as a connection id, a file path, or a ``sqlite:///``/``file://`` URI."""
    from urllib.parse import unquote, urlparse

    text = (source or "").strip()
    if not text:
        raise ConnectionNotUsable("the source is empty: give a connection id, a file path or a sqlite:/// URI.")
    if text.startswith(("sqlite:", "file:")):
        path = unquote(urlparse(text).path)
        if text.startswith("sqlite:"):
            # SQLAlchemy's form: sqlite:///relative/path, sqlite:////absolute/path
            path = path[1:]
        return StoreTarget("sqlite", str(Path(path).expanduser().resolve()), text)
    if "/" in text or text.endswith((".sqlite", ".db", ".sqlite3")):
        return StoreTarget("sqlite", str(Path(text).expanduser().resolve()), text)
    target = CheckpointStoreHook(text).get_target()
    if target.kind != "sqlite":
        raise ConnectionNotUsable(f"connection {text!r} is a {target.kind} store; the migration source must be SQLite.")
    return target


# --- HTTP services the health DAG talks to ----------------------------------------------------

PROMETHEUS_CONN_ID = "checkpoint_prometheus"
PUSHGATEWAY_CONN_ID = "checkpoint_pushgateway"
ALERTS_CONN_ID = "checkpoint_alerts"


def http_service(conn_id: str):
    """``(HttpHook, requests.Session)`` for an http connection (its host, scheme, port, login,
    password and extra headers, as the http provider reads them), or None when it is undefined."""
    from airflow.providers.http.hooks.http import HttpHook

    hook = HttpHook(method="GET", http_conn_id=conn_id)
    try:
        session = hook.get_conn()
    except AirflowNotFoundException:
        return None
    return hook, session
