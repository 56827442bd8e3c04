"""Where checkpoint-ops keeps things outside the stores: a store's backup folder, the app's offload
bucket, the tiering archive. One home, so operators import down to it and never each other.

The bucket-like places are named by one URL form, in a Variable or a param:
``s3://<aws conn id>@<bucket>/<prefix>`` (through the amazon provider's S3Hook) or ``file:///path``.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from include.checkpoint_core.errors import CheckpointStoreError

OFFLOAD_VARIABLE = "checkpoint_blob_offload_url"
ARCHIVE_VARIABLE = "checkpoint_archive_url"


class LocationInvalid(CheckpointStoreError):
    hint = "Fix the value named (a Variable or a param), then run again: a retry would read the same value."


@dataclass(frozen=True)
class Place:
    scheme: str  # "s3" or "file"
    path: str  # the bucket for s3, the folder for file
    prefix: str = ""
    conn_id: str = "aws_default"

    def s3_client(self):
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        return S3Hook(aws_conn_id=self.conn_id).get_conn()


def parse_place(url: str, what: str, default_prefix: str) -> Place:
    parts = urlsplit(url.strip())
    if parts.scheme == "file":
        return Place("file", parts.path)
    if parts.scheme not in ("s3", "s3a") or not parts.hostname:
        raise LocationInvalid(f"{what} must look like s3://<aws conn id>@<bucket>/<prefix> or file:///path, not {url!r}.")
    return Place("s3", parts.hostname, parts.path.strip("/") or default_prefix, parts.username or "aws_default")


def configured(variable: str, override: str | None = None) -> str | None:
    """The override when given, else the Variable, else None."""
    from airflow.sdk import Variable

    return (override or "").strip() or Variable.get(variable, default=None) or None


def backup_folder(conn_id: str):
    """``<artifacts root>/backups/<conn id>``: local by default, S3 through ``checkpoint_artifacts``."""
    from checkpoint_ops.artifacts import checked_artifacts_root, safe_key

    return checked_artifacts_root() / "backups" / safe_key(conn_id)


def offload_blob_store():
    """The app's offload bucket from the Variable ``checkpoint_blob_offload_url``, or None when unset."""
    from include.checkpoint_core.offload import LocalBlobStore, S3BlobStore

    url = configured(OFFLOAD_VARIABLE)
    if url is None:
        return None
    place = parse_place(url, OFFLOAD_VARIABLE, "checkpoint-blobs")
    if place.scheme == "file":
        return LocalBlobStore(place.path)
    return S3BlobStore(place.s3_client(), place.path, place.prefix)


def archive_store(url: str | None = None):
    """The tiering archive from ``url`` (the run's param) or the Variable ``checkpoint_archive_url``;
    None when neither is set. An S3 bucket is checked first: a missing one fails here."""
    from include.checkpoint_core.tiering.archive import LocalArchive, S3Archive

    url = configured(ARCHIVE_VARIABLE, url)
    if url is None:
        return None
    place = parse_place(url, f"archive {url!r}", "checkpoint-archive")
    if place.scheme == "file":
        return LocalArchive(place.path)
    store = S3Archive(place.s3_client(), place.path, place.prefix)
    store.check()
    return store
