"""Shared fixtures: a throwaway Airflow home, real PostgreSQL databases, SQLite files.

The Airflow environment is set before anything imports airflow, so every test sees the
project's dags/ and plugins/, no examples, and a metadata DB of its own.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from contextlib import closing, contextmanager
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="checkpoint-ops-airflow-"))
atexit.register(shutil.rmtree, _AIRFLOW_HOME, ignore_errors=True)
os.environ.update(
    {
        "AIRFLOW_HOME": str(_AIRFLOW_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_AIRFLOW_HOME}/airflow.db",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
    }
)
for key in [k for k in os.environ if k.startswith("AIRFLOW_CONN_CHECKPOINT")]:
    del os.environ[key]  # tests define the store connections they use

SENTINEL_PASSWORD = "cpo-sentinel-Pa55word"
PG_ADMIN_DSN = os.environ.get("CHECKPOINT_OPS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="session")
def pg_admin():
    """An autocommit connection to the test server; fails loudly when there is none."""
    import psycopg

    try:
        conn = psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is needed at {PG_ADMIN_DSN} (set CHECKPOINT_OPS_TEST_PG): {exc}")
    yield conn
    conn.close()


def _dsn_for(dbname: str) -> str:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    return make_conninfo(**{**conninfo_to_dict(PG_ADMIN_DSN), "dbname": dbname})


@pytest.fixture
def pg_dsn(pg_admin):
    """A fresh, empty database for one test, dropped afterwards."""
    name = f"cpo_test_{uuid.uuid4().hex[:12]}"
    pg_admin.execute(f'CREATE DATABASE "{name}"')
    yield _dsn_for(name)
    pg_admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_path(tmp_path) -> Path:
    return tmp_path / "checkpoints.sqlite"


@pytest.fixture(params=["sqlite", "postgres"])
def saver(request, tmp_path):
    """A ready checkpointer of each backend we ship, on a fresh store."""
    from contextlib import closing

    if request.param == "sqlite":
        from langgraph.checkpoint.sqlite import SqliteSaver

        from include.checkpoint_core.sqlite_store import connect_sqlite, setup_sqlite

        path = tmp_path / "witness.sqlite"
        setup_sqlite(path)
        with closing(connect_sqlite(path)) as conn:
            yield SqliteSaver(conn)
    else:
        from langgraph.checkpoint.postgres import PostgresSaver

        from include.checkpoint_core.postgres_store import open_postgres_pool, setup_postgres

        dsn = request.getfixturevalue("pg_dsn")
        setup_postgres(dsn)
        with closing(open_postgres_pool(dsn)) as pool:
            yield PostgresSaver(pool)


@pytest.fixture(scope="session")
def airflow_db():
    """Migrate the throwaway Airflow metadata DB once per session."""
    from airflow.utils import db

    db.initdb()
    return _AIRFLOW_HOME


@contextmanager
def open_saver(target):
    """The app's view of a store (a ``StoreTarget``): a real saver and store on it."""
    if target.kind == "sqlite":
        from langgraph.checkpoint.sqlite import SqliteSaver
        from langgraph.store.sqlite import SqliteStore

        from include.checkpoint_core.sqlite_store import connect_sqlite

        with closing(connect_sqlite(target.location)) as conn, \
                closing(connect_sqlite(target.location, autocommit=True)) as store_conn:
            yield SqliteSaver(conn), SqliteStore(store_conn)
            conn.commit()
    else:
        from langgraph.checkpoint.postgres import PostgresSaver
        from langgraph.store.postgres import PostgresStore

        from include.checkpoint_core.postgres_store import open_postgres_pool

        with closing(open_postgres_pool(target.location)) as pool:
            yield PostgresSaver(pool), PostgresStore(pool)


def sqlite_conn_env(path: Path) -> str:
    return json.dumps({"conn_type": "sqlite", "host": str(path)})


def postgres_conn_env(dsn: str) -> str:
    from psycopg.conninfo import conninfo_to_dict

    parts = conninfo_to_dict(dsn)
    return json.dumps(
        {
            "conn_type": "postgres",
            "host": parts.get("host", "127.0.0.1"),
            "port": int(parts.get("port", 5432)),
            "login": parts.get("user", "postgres"),
            # The test server trusts local connections and ignores it; tests assert it never leaks.
            "password": SENTINEL_PASSWORD,
            "schema": parts["dbname"],
        }
    )


# A generated migration source, shared by the migration and DAG tests (copied per test).
SOURCE_SPEC = dict(threads=24, turns=3, interrupted=0.25, crashed=0.125, min_age_days=1, max_age_days=30, seed=11)


def make_source(path: Path, **overrides):
    """A SqliteSaver + SqliteStore file written by the sample agent (threads left open included)."""
    from langgraph.checkpoint.sqlite import SqliteSaver
    from langgraph.store.sqlite import SqliteStore

    from include.checkpoint_core.sqlite_store import connect_sqlite, setup_sqlite
    from include.sample_agent.workload import WorkloadSpec, generate

    spec = WorkloadSpec(**{**SOURCE_SPEC, **overrides})
    setup_sqlite(path)
    with closing(connect_sqlite(path)) as conn, closing(connect_sqlite(path, autocommit=True)) as store_conn:
        store = SqliteStore(store_conn)
        store.setup()
        result = generate(SqliteSaver(conn), spec, store)
        conn.commit()
    return result


@pytest.fixture(scope="session")
def generated_source(tmp_path_factory):
    path = tmp_path_factory.mktemp("source") / "checkpoints.sqlite"
    result = make_source(path)
    return path, result


@pytest.fixture
def source(generated_source, tmp_path):
    """A private copy of the generated source, and what the generator left open in it."""
    original, result = generated_source
    path = tmp_path / "source.sqlite"
    shutil.copyfile(original, path)
    return path, result


@pytest.fixture(scope="session")
def moto_s3():
    """A moto S3 server over HTTP on a free port: the endpoint URL (S3Hook and s3fs talk to it as to S3)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def aws_conn_env(endpoint_url: str) -> str:
    """An Airflow aws connection pointing at a moto (or MinIO) endpoint."""
    return json.dumps(
        {
            "conn_type": "aws",
            "login": "testing",
            "password": "testing",
            "extra": {"endpoint_url": endpoint_url, "region_name": "us-east-1"},
        }
    )


@pytest.fixture
def s3_bucket(moto_s3, monkeypatch):
    """A fresh bucket on the moto server, reachable through the ``checkpoint_artifacts`` connection."""
    import boto3

    name = f"cpo-{uuid.uuid4().hex[:12]}"
    boto3.client(
        "s3", endpoint_url=moto_s3, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
    ).create_bucket(Bucket=name)
    monkeypatch.setenv("AIRFLOW_CONN_CHECKPOINT_ARTIFACTS", aws_conn_env(moto_s3))
    return name


def _free_port() -> int:
    import socket

    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def redis_server():
    """A redis-server of the tests' own on a free port (never the machine's 6379): its URL."""
    import subprocess
    import time

    import redis

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is needed for the tiering tests: run `make tools` (Debian package redis-server)")
    port = _free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(100):
        try:
            redis.Redis.from_url(url).ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail(f"redis-server did not start on port {port}")
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def redis_url(redis_server):
    """The tests' Redis, emptied for one test."""
    import redis

    redis.Redis.from_url(redis_server).flushall()
    return redis_server
