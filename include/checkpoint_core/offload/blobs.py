"""Where offloaded values live: a content-addressed object store, S3 or a local directory.

Keys are ``<prefix>/sha256/<hh>/<hex>`` and are built only from a sha256 digest, never from
thread ids or any other user input, so a checkpoint cannot steer a read or a delete outside
the prefix. Objects are immutable: the same bytes always land on the same key, which is what
makes skipping an upload and garbage-collecting by reference safe.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator, Protocol, runtime_checkable

from include.checkpoint_core.offload.errors import BlobBucketMissing, InvalidBlobPrefix, classify_s3_error

DEFAULT_PREFIX = "checkpoint-blobs"
_PREFIX_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*")
_HEX_RE = re.compile(r"[0-9a-f]{64}")
DELETE_BATCH = 1000  # S3's DeleteObjects limit


def validate_prefix(prefix: str) -> str:
    """Refuse prefixes that could escape a directory or confuse S3 (``..``, ``//``, spaces, '/x')."""
    if not isinstance(prefix, str) or len(prefix) > 200 or not _PREFIX_RE.fullmatch(prefix):
        raise InvalidBlobPrefix(f"invalid blob prefix {prefix!r}.")
    return prefix


def is_sha256_hex(value: object) -> bool:
    return isinstance(value, str) and _HEX_RE.fullmatch(value) is not None


@dataclass(frozen=True)
class BlobInfo:
    key: str
    size: int
    last_modified: datetime  # timezone-aware; garbage collection's age test


@runtime_checkable
class BlobStore(Protocol):
    """What the serializer and the garbage collector need from an object store."""

    prefix: str

    def describe(self) -> str:
        """Where the store is, for messages (``s3://bucket/prefix``)."""

    def key_for(self, sha256: str) -> str: ...

    def sha256_of(self, key: str) -> str | None:
        """The digest a key was built from; None for a key this layout did not make."""

    def stat(self, key: str) -> BlobInfo | None:
        """The object's size and age; None when it is absent or its presence cannot be told."""

    def put(self, key: str, data: bytes) -> None: ...

    def touch(self, key: str) -> None:
        """Make an existing object young again, so garbage collection's grace period covers a re-use."""

    def get(self, key: str) -> bytes | None:
        """The object's bytes; None when it does not exist."""

    def list(self) -> Iterator[BlobInfo]:
        """Every object under the prefix (foreign keys included; callers filter with ``sha256_of``)."""

    def delete(self, keys: Iterable[str]) -> int:
        """Delete these keys; returns how many were deleted."""


class _Layout:
    """The key layout shared by every store."""

    prefix: str

    def _init_layout(self, prefix: str) -> None:
        self.prefix = validate_prefix(prefix)
        self._key_re = re.compile(re.escape(self.prefix) + r"/sha256/([0-9a-f]{2})/([0-9a-f]{64})")

    def key_for(self, sha256: str) -> str:
        if not is_sha256_hex(sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        return f"{self.prefix}/sha256/{sha256[:2]}/{sha256}"

    def sha256_of(self, key: str) -> str | None:
        m = self._key_re.fullmatch(key)
        return m.group(2) if m and m.group(2).startswith(m.group(1)) else None

    def _checked(self, key: str) -> str:
        if self.sha256_of(key) is None:
            raise ValueError(f"{key!r} is not a key of this blob store")
        return key


class S3BlobStore(_Layout):
    """Blobs in an S3 bucket through a boto3 client (``S3Hook(conn_id).get_conn()`` on Airflow)."""

    list_page_size = 1000  # S3's maximum keys per ListObjectsV2 page
    delete_batch = DELETE_BATCH

    def __init__(self, client, bucket: str, prefix: str = DEFAULT_PREFIX) -> None:
        if not isinstance(bucket, str) or not bucket:
            raise BlobBucketMissing("S3BlobStore was given no bucket name.",
                                    hint="Pass the bucket the app's blobs go to.")
        self._init_layout(prefix)
        self.client, self.bucket = client, bucket

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def _where(self, key: str | None = None) -> str:
        return f"s3://{self.bucket}/{key or self.prefix + '/'}"

    def _reraise(self, exc: Exception, key: str | None, doing: str):
        mapped = classify_s3_error(exc, where=self._where(key), doing=doing)
        if mapped is exc:
            raise exc
        raise mapped from exc

    def _call(self, doing: str, key: str | None, fn, **kwargs):
        try:
            return fn(**kwargs)
        except Exception as exc:
            self._reraise(exc, key, doing)

    @staticmethod
    def _status(exc: Exception) -> str:
        response = getattr(exc, "response", None) or {}
        return str(response.get("Error", {}).get("Code", ""))

    def check(self) -> None:
        """Fail early, with the right error, when the bucket is missing or the identity cannot use it.

        ListObjectsV2 rather than HeadBucket: a HEAD answer has no body, so it cannot tell
        a bad key from a missing permission.
        """
        self._call("listing", None, self.client.list_objects_v2, Bucket=self.bucket, Prefix=self.prefix + "/",
                   MaxKeys=1)

    def stat(self, key: str) -> BlobInfo | None:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._checked(key))
        except Exception as exc:
            # HEAD has no body, so S3 can only say 404 or 403. 403 is also what a missing key
            # gives an identity without s3:ListBucket: report "unknown" and let the (idempotent)
            # upload that follows fail with S3's real reason if the credentials are the problem.
            if self._status(exc) in ("404", "NoSuchKey", "403"):
                return None
            self._reraise(exc, key, "checking")
        return BlobInfo(key, int(head["ContentLength"]), _aware(head["LastModified"]))

    def put(self, key: str, data: bytes) -> None:
        self._call("uploading", key, self.client.put_object, Bucket=self.bucket, Key=self._checked(key), Body=data,
                   ContentType="application/octet-stream")

    def touch(self, key: str) -> None:
        # A server-side self-copy is the one S3 call that renews LastModified without re-sending the bytes.
        self._call("refreshing", key, self.client.copy_object, Bucket=self.bucket, Key=self._checked(key),
                   CopySource={"Bucket": self.bucket, "Key": key}, MetadataDirective="REPLACE",
                   Metadata={"touched": datetime.now(timezone.utc).isoformat(timespec="seconds")},
                   ContentType="application/octet-stream")

    def get(self, key: str) -> bytes | None:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._checked(key))
        except Exception as exc:
            if self._status(exc) in ("NoSuchKey", "404"):
                return None
            self._reraise(exc, key, "downloading")
        body = response["Body"]
        try:
            return self._call("downloading", key, body.read)
        finally:
            body.close()

    def list(self) -> Iterator[BlobInfo]:
        paginator = self.client.get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + "/",
                                   PaginationConfig={"PageSize": self.list_page_size})
        iterator = iter(pages)
        while True:
            page = self._next_page(iterator)
            if page is None:
                return
            for obj in page.get("Contents", []):
                yield BlobInfo(obj["Key"], int(obj["Size"]), _aware(obj["LastModified"]))

    def _next_page(self, iterator):
        try:
            return next(iterator)
        except StopIteration:
            return None
        except Exception as exc:
            self._reraise(exc, None, "listing")

    def delete(self, keys: Iterable[str]) -> int:
        batch, deleted = [], 0
        for key in keys:
            batch.append({"Key": self._checked(key)})
            if len(batch) >= self.delete_batch:
                deleted += self._delete_batch(batch)
                batch = []
        if batch:
            deleted += self._delete_batch(batch)
        return deleted

    def _delete_batch(self, batch: list[dict]) -> int:
        response = self._call("deleting from", None, self.client.delete_objects, Bucket=self.bucket,
                              Delete={"Objects": batch, "Quiet": True})
        errors = response.get("Errors") or []
        if errors:
            first = errors[0]
            fake = _client_error(first.get("Code", ""), first.get("Message", ""), "DeleteObjects")
            raise classify_s3_error(fake, where=self._where(first.get("Key")),
                                    doing=f"deleting ({len(errors)} of {len(batch)} failed)")
        return len(batch)


class LocalBlobStore(_Layout):
    """Blobs as files under a directory: development and tests, same layout as S3."""

    def __init__(self, path: str | os.PathLike, prefix: str = DEFAULT_PREFIX) -> None:
        self._init_layout(prefix)
        self.root = Path(path)

    def describe(self) -> str:
        return f"{self.root / self.prefix}"

    def _path(self, key: str) -> Path:
        return self.root / self._checked(key)

    def stat(self, key: str) -> BlobInfo | None:
        try:
            st = self._path(key).stat()
        except FileNotFoundError:
            return None
        return BlobInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, timezone.utc))

    def put(self, key: str, data: bytes) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename: a reader never sees half an object, even with concurrent writers.
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def touch(self, key: str) -> None:
        os.utime(self._path(key))

    def get(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    def list(self) -> Iterator[BlobInfo]:
        base = self.root / self.prefix
        if not base.is_dir():
            return
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                path = Path(dirpath) / name
                key = path.relative_to(self.root).as_posix()
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue
                yield BlobInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, timezone.utc))

    def delete(self, keys: Iterable[str]) -> int:
        deleted = 0
        for key in keys:
            try:
                self._path(key).unlink()
                deleted += 1
            except FileNotFoundError:
                pass
        return deleted


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _client_error(code: str, message: str, operation: str):
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": message}}, operation)
