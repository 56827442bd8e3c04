"""The archive tier: one checksummed object per thread, in S3 or a local folder.

An object is every row of a thread (all namespaces, checkpoints, blobs, writes with ``task_path``
and ``idx``) as gzip'd msgpack, bytes untouched. Its key holds the SHA-256 of its content, and the
tier directory records the same digest, so a rehydration can tell a missing object from a corrupt
one and says which. ``S3Archive`` takes any boto3 S3 client (``S3Hook(...).get_conn()`` in
Airflow), so the core never imports Airflow.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import ormsgpack

from include.checkpoint_core.errors import CheckpointStoreError
from include.checkpoint_core.tiering.rows import BlobRow, CheckpointRow, ThreadRows, WriteRow

FORMAT = "checkpoint-ops-thread/1"


class ArchiveError(CheckpointStoreError):
    """The archive cannot serve a thread; the message names the object and what to do."""


class ArchiveMissing(ArchiveError):
    pass


class ArchiveCorrupt(ArchiveError):
    pass


class ArchiveUnavailable(ArchiveError):
    pass


class ArchiveStore(Protocol):
    def put(self, key: str, data: bytes) -> None: ...
    def get(self, key: str) -> bytes: ...
    def delete(self, key: str) -> None: ...
    def describe(self) -> str: ...


def encode(rows: ThreadRows) -> bytes:
    doc = {
        "format": FORMAT,
        "thread_id": rows.thread_id,
        "checkpoints": [[c.ns, c.checkpoint_id, c.parent_id, c.type, c.checkpoint, c.metadata] for c in rows.checkpoints],
        "blobs": [[b.ns, b.channel, b.version, b.type, b.blob] for b in rows.blobs],
        "writes": [[w.ns, w.checkpoint_id, w.task_id, w.task_path, w.idx, w.channel, w.type, w.blob]
                   for w in rows.writes],
    }
    return gzip.compress(ormsgpack.packb(doc), compresslevel=6, mtime=0)


def decode(data: bytes, *, where: str = "archive object") -> ThreadRows:
    try:
        doc = ormsgpack.unpackb(gzip.decompress(data))
    except (OSError, EOFError, ValueError, ormsgpack.MsgpackDecodeError) as exc:
        raise ArchiveCorrupt(f"{where} is not a checkpoint-ops thread archive ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ArchiveCorrupt(f"{where} has format {doc.get('format') if isinstance(doc, dict) else None!r}, "
                             f"expected {FORMAT!r}")
    return ThreadRows(
        doc["thread_id"],
        [CheckpointRow(ns, cid, parent, cp, md, type_) for ns, cid, parent, type_, cp, md in doc["checkpoints"]],
        [BlobRow(*b) for b in doc["blobs"]],
        [WriteRow(*w) for w in doc["writes"]],
    )


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def object_key(thread_id: str, digest: str) -> str:
    """Content-addressed: a re-archived thread with other content never overwrites the old object."""
    return f"threads/{quote(thread_id, safe='')}/{digest}.msgpack.gz"


def fetch(store: ArchiveStore, thread_id: str, key: str, digest: str) -> ThreadRows:
    """The thread's rows from its object, checked against the digest the directory recorded."""
    where = f"{store.describe()}/{key}"
    data = store.get(key)
    if sha256(data) != digest:
        raise ArchiveCorrupt(f"thread {thread_id!r}: {where} does not match its recorded SHA-256 {digest[:12]}... "
                             "(the object was changed or truncated). The thread is left archived; restore the "
                             "object from the bucket's versioning or a backup, then rehydrate again.")
    rows = decode(data, where=where)
    if rows.thread_id != thread_id:
        raise ArchiveCorrupt(f"{where} holds thread {rows.thread_id!r}, not {thread_id!r}")
    return rows


def manifest(entries: list[dict[str, Any]]) -> bytes:
    return json.dumps({"format": FORMAT, "threads": entries}, indent=1, sort_keys=True).encode()


class LocalArchive:
    """A folder as the archive (development, or a mounted volume)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def describe(self) -> str:
        return str(self.root)

    def put(self, key: str, data: bytes) -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".part")
        tmp.write_bytes(data)
        tmp.replace(path)

    def get(self, key: str) -> bytes:
        try:
            return (self.root / key).read_bytes()
        except FileNotFoundError as exc:
            raise ArchiveMissing(f"archive object {self.root / key} is missing; the thread is left archived. "
                                 "Restore the object from a backup, then rehydrate again.") from exc

    def delete(self, key: str) -> None:
        (self.root / key).unlink(missing_ok=True)


class S3Archive:
    """A bucket (and prefix) as the archive, through a boto3 S3 client."""

    def __init__(self, client: Any, bucket: str, prefix: str = "checkpoint-archive") -> None:
        self.client, self.bucket, self.prefix = client, bucket, prefix.strip("/")

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _explain(self, exc: Exception, key: str) -> ArchiveError:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
        if code in ("NoSuchBucket",):
            return ArchiveUnavailable(f"bucket {self.bucket!r} does not exist: create it, or point the archive "
                                      "param at an existing bucket")
        if code in ("NoSuchKey", "404"):
            return ArchiveMissing(f"archive object s3://{self.bucket}/{self._key(key)} is missing; the thread is "
                                  "left archived. Restore the object (bucket versioning or a backup), then rehydrate.")
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return ArchiveUnavailable(f"S3 refused access to bucket {self.bucket!r} ({code}): check the AWS "
                                      "connection's credentials and the bucket policy")
        return ArchiveUnavailable(f"S3 bucket {self.bucket!r}: {code or type(exc).__name__}: {exc}")

    def check(self) -> None:
        """Fail before any move when the bucket cannot be reached."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception as exc:  # botocore's ClientError / EndpointConnectionError
            if getattr(exc, "response", {}).get("Error", {}).get("Code") in ("404", "NoSuchBucket"):
                raise ArchiveUnavailable(f"bucket {self.bucket!r} does not exist: create it, or point the archive "
                                         "param at an existing bucket") from exc
            raise self._explain(exc, "") from exc

    def put(self, key: str, data: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data,
                                   ChecksumAlgorithm="SHA256")
        except Exception as exc:
            raise self._explain(exc, key) from exc

    def get(self, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except Exception as exc:
            raise self._explain(exc, key) from exc

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:
            raise self._explain(exc, key) from exc
