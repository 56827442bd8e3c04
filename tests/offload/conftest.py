"""Offload fixtures: buckets on the session's moto server (over HTTP), savers that offload."""

from __future__ import annotations

import random
import uuid
from collections import Counter
from contextlib import closing, contextmanager
from typing import TypedDict

import pytest
import requests

from include.checkpoint_core.offload import OffloadSerializer, S3BlobStore
from include.checkpoint_core.stores import StoreTarget


def s3_client(endpoint_url: str, key: str = "testing", secret: str = "testing", **config):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3", endpoint_url=endpoint_url, region_name="us-east-1", aws_access_key_id=key,
        aws_secret_access_key=secret, config=Config(**config) if config else None,
    )


class CountingClient:
    """A real boto3 client that also counts the operations called through it."""

    def __init__(self, client) -> None:
        self._client = client
        self.calls: Counter = Counter()

    def __getattr__(self, name: str):
        attr = getattr(self._client, name)
        if not callable(attr) or name.startswith("_") or name in ("get_paginator", "meta"):
            return attr

        def call(*args, **kwargs):
            self.calls[name] += 1
            return attr(*args, **kwargs)

        return call


@pytest.fixture
def client(moto_s3):
    return s3_client(moto_s3)


@pytest.fixture
def bucket(client) -> str:
    name = f"offload-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_blobs(client, bucket) -> S3BlobStore:
    return S3BlobStore(client, bucket)


@contextmanager
def moto_auth(endpoint_url: str, free_requests: int = 0):
    """Turn on moto's IAM checks (after ``free_requests`` unchecked calls), restore on exit.

    moto keeps this switch process-wide, so every test sharing the session server is restored.
    """
    previous = requests.post(f"{endpoint_url}/moto-api/reset-auth", data=str(free_requests).encode()).json()
    try:
        yield
    finally:
        restore = previous["PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT"].encode()
        requests.post(f"{endpoint_url}/moto-api/reset-auth", data=restore)


def pdf_like(size: int, seed: int = 7) -> bytes:
    """Incompressible bytes dressed as a PDF: what an agent's uploaded attachment looks like."""
    rng = random.Random(seed)
    head = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
    pages = b"".join(b"%d 0 obj << /Type /Page >> endobj\n" % (i + 3) for i in range(12))
    tail = b"\ntrailer << /Root 1 0 R >>\n%%EOF\n"
    return head + pages + rng.randbytes(size - len(head) - len(pages) - len(tail)) + tail


class DocState(TypedDict, total=False):
    pdf: bytes
    pages: int
    summary: str


def build_doc_graph(checkpointer):
    """Two nodes reading a PDF kept in state: the value the offload exists for."""
    from langgraph.graph import END, START, StateGraph

    def count_pages(state: DocState) -> dict:
        return {"pages": state["pdf"].count(b"/Type /Page >>")}

    def summarise(state: DocState) -> dict:
        return {"summary": f"{state['pages']} pages, {len(state['pdf'])} bytes"}

    builder = StateGraph(DocState)
    builder.add_node("count_pages", count_pages)
    builder.add_node("summarise", summarise)
    builder.add_edge(START, "count_pages")
    builder.add_edge("count_pages", "summarise")
    builder.add_edge("summarise", END)
    return builder.compile(checkpointer=checkpointer)


class OffloadStore:
    """One checkpoint store of a given backend, opened with any serializer, plus its GC target."""

    def __init__(self, kind: str, location: str) -> None:
        self.kind, self.location = kind, location
        self.target = StoreTarget(kind, location, name=f"{kind}-offload")

    @contextmanager
    def saver(self, serde):
        if self.kind == "sqlite":
            from langgraph.checkpoint.sqlite import SqliteSaver

            from include.checkpoint_core.sqlite_store import connect_sqlite

            with closing(connect_sqlite(self.location)) as conn:
                yield SqliteSaver(conn, serde=serde)
        else:
            from langgraph.checkpoint.postgres import PostgresSaver

            from include.checkpoint_core.postgres_store import open_postgres_pool

            with closing(open_postgres_pool(self.location)) as pool:
                yield PostgresSaver(pool, serde=serde)

    def offload_rows(self) -> int:
        """How many rows hold a reference instead of a value."""
        if self.kind == "sqlite":
            import sqlite3

            with closing(sqlite3.connect(self.location)) as conn:
                return sum(conn.execute(f"SELECT COUNT(*) FROM {t} WHERE type = 'offload'").fetchone()[0]
                           for t in ("checkpoints", "writes"))
        from include.checkpoint_core.postgres_store import postgres_connection

        with postgres_connection(self.location) as conn:
            return sum(conn.execute(f"SELECT COUNT(*) AS n FROM {t} WHERE type = 'offload'").fetchone()["n"]
                       for t in ("checkpoint_blobs", "checkpoint_writes"))

    def checkpoint_bytes(self, thread_id: str) -> dict[str, int]:
        """Stored bytes per checkpoint of a thread: its row, the blobs at its channel versions, its writes."""
        if self.kind == "sqlite":
            import sqlite3

            with closing(sqlite3.connect(self.location)) as conn:
                rows = conn.execute(
                    "SELECT c.checkpoint_id, length(c.checkpoint) + length(c.metadata) + coalesce("
                    "  (SELECT sum(length(w.value)) FROM writes w WHERE w.thread_id = c.thread_id"
                    "   AND w.checkpoint_ns = c.checkpoint_ns AND w.checkpoint_id = c.checkpoint_id), 0) "
                    "FROM checkpoints c WHERE c.thread_id = ?", (thread_id,)).fetchall()
            return dict(rows)
        from include.checkpoint_core.postgres_store import postgres_connection

        with postgres_connection(self.location) as conn:
            rows = conn.execute(
                """SELECT c.checkpoint_id,
                          octet_length(c.checkpoint::text) + octet_length(c.metadata::text)
                          + coalesce((SELECT sum(octet_length(b.blob))
                                      FROM jsonb_each_text(c.checkpoint -> 'channel_versions') v
                                      JOIN checkpoint_blobs b ON b.thread_id = c.thread_id
                                       AND b.checkpoint_ns = c.checkpoint_ns AND b.channel = v.key
                                       AND b.version = v.value), 0)
                          + coalesce((SELECT sum(octet_length(w.blob)) FROM checkpoint_writes w
                                      WHERE w.thread_id = c.thread_id AND w.checkpoint_ns = c.checkpoint_ns
                                        AND w.checkpoint_id = c.checkpoint_id), 0) AS bytes
                   FROM checkpoints c WHERE c.thread_id = %s""", (thread_id,)).fetchall()
            return {r["checkpoint_id"]: int(r["bytes"]) for r in rows}

    def thread_bytes(self, thread_id: str) -> int:
        """Every stored byte of a thread, in all of the backend's tables."""
        if self.kind == "sqlite":
            import sqlite3

            with closing(sqlite3.connect(self.location)) as conn:
                return conn.execute(
                    "SELECT (SELECT coalesce(sum(length(checkpoint) + length(metadata)), 0) FROM checkpoints"
                    " WHERE thread_id = ?) + (SELECT coalesce(sum(length(value)), 0) FROM writes WHERE thread_id = ?)",
                    (thread_id, thread_id)).fetchone()[0]
        from include.checkpoint_core.postgres_store import postgres_connection

        with postgres_connection(self.location) as conn:
            return int(conn.execute(
                """SELECT (SELECT coalesce(sum(octet_length(checkpoint::text) + octet_length(metadata::text)), 0)
                           FROM checkpoints WHERE thread_id = %(t)s)
                        + (SELECT coalesce(sum(octet_length(blob)), 0) FROM checkpoint_blobs WHERE thread_id = %(t)s)
                        + (SELECT coalesce(sum(octet_length(blob)), 0) FROM checkpoint_writes WHERE thread_id = %(t)s)
                          AS n""", {"t": thread_id}).fetchone()["n"])


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path) -> OffloadStore:
    """A fresh, set-up checkpoint store of each backend."""
    if request.param == "sqlite":
        from include.checkpoint_core.sqlite_store import setup_sqlite

        path = tmp_path / "offload.sqlite"
        setup_sqlite(path)
        return OffloadStore("sqlite", str(path))
    from include.checkpoint_core.postgres_store import setup_postgres

    dsn = request.getfixturevalue("pg_dsn")
    setup_postgres(dsn)
    return OffloadStore("postgres", dsn)


def fresh_serde(blobs, **kwargs) -> OffloadSerializer:
    """A serializer with an empty cache: reads really go to the blob store."""
    return OffloadSerializer(blobs=blobs, **kwargs)
