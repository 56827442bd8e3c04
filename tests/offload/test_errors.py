"""S3 failures turn into errors that say what to fix: bucket, credentials, permissions, network."""

from __future__ import annotations

import socket
import uuid

import boto3
import pytest

from include.checkpoint_core.errors import CheckpointStoreError
from include.checkpoint_core.offload import (
    BlobAccessDenied,
    BlobBucketMissing,
    BlobCredentialsRejected,
    BlobStoreUnreachable,
    InvalidBlobPrefix,
    LocalBlobStore,
    OffloadSerializer,
    S3BlobStore,
    collect_offloaded_garbage,
    validate_prefix,
)
from include.checkpoint_core.stores import StoreTarget
from tests.offload.conftest import moto_auth, pdf_like, s3_client

BIG = pdf_like(100_000)


def _ref(bucket_store) -> tuple[str, bytes]:
    return OffloadSerializer(blobs=bucket_store).dumps_typed(BIG)


def test_a_missing_bucket_is_named_on_write_read_check_and_gc(client, tmp_path):
    missing = f"no-such-{uuid.uuid4().hex[:8]}"
    blobs = S3BlobStore(client, missing)
    for action in (
        lambda: OffloadSerializer(blobs=blobs).dumps_typed(BIG),
        lambda: OffloadSerializer(blobs=blobs).loads_typed(_ref(LocalBlobStore(tmp_path))),
        blobs.check,
        lambda: list(blobs.list()),
    ):
        with pytest.raises(BlobBucketMissing) as caught:
            action()
        assert f"s3://{missing}/" in str(caught.value) and "Create the bucket" in caught.value.hint
        assert isinstance(caught.value, CheckpointStoreError) and not caught.value.retryable


def test_gc_on_a_missing_bucket_deletes_nothing_and_says_why(client, tmp_path):
    from include.checkpoint_core.sqlite_store import setup_sqlite

    setup_sqlite(tmp_path / "c.sqlite")
    with pytest.raises(BlobBucketMissing):
        collect_offloaded_garbage(StoreTarget("sqlite", str(tmp_path / "c.sqlite")), S3BlobStore(client, "absent-bkt"))


def test_bad_credentials_are_told_apart_from_missing_permissions(moto_s3, client, bucket, tmp_path):
    stored = _ref(S3BlobStore(client, bucket))  # written while credentials are not checked
    iam = boto3.client("iam", endpoint_url=moto_s3, region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    with moto_auth(moto_s3, free_requests=2):
        user = f"offload-{uuid.uuid4().hex[:6]}"
        iam.create_user(UserName=user)
        key = iam.create_access_key(UserName=user)["AccessKey"]
        cases = {
            "unknown key id": (s3_client(moto_s3, "AKIAUNKNOWNUNKNOWN00", "whatever"), BlobCredentialsRejected),
            "wrong secret": (s3_client(moto_s3, key["AccessKeyId"], "not-the-secret"), BlobCredentialsRejected),
            "no policy": (s3_client(moto_s3, key["AccessKeyId"], key["SecretAccessKey"]), BlobAccessDenied),
        }
        for name, (bad_client, expected) in cases.items():
            blobs = S3BlobStore(bad_client, bucket)
            with pytest.raises(expected) as on_write:
                OffloadSerializer(blobs=blobs).dumps_typed(pdf_like(100_000, seed=99))
            with pytest.raises(expected) as on_read:
                OffloadSerializer(blobs=blobs).loads_typed(stored)
            with pytest.raises(expected):
                blobs.check()
            for err in (on_write.value, on_read.value):
                assert f"s3://{bucket}/checkpoint-blobs/sha256/" in str(err), name
                assert "testing" not in str(err) and key["SecretAccessKey"] not in str(err)
            if expected is BlobCredentialsRejected:
                assert "access key" in on_write.value.hint
            else:
                assert "s3:PutObject" in on_write.value.hint and "s3:GetObject" in on_read.value.hint


def test_an_unreachable_endpoint_is_retryable():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dead = s3_client(f"http://127.0.0.1:{port}", retries={"max_attempts": 1}, connect_timeout=2)
    with pytest.raises(BlobStoreUnreachable) as caught:
        OffloadSerializer(blobs=S3BlobStore(dead, "any-bucket")).dumps_typed(BIG)
    assert caught.value.retryable and "endpoint_url" in caught.value.hint


@pytest.mark.parametrize("prefix", ["", "/abs", "a//b", "../up", "a/../b", "a/./b", "trailing/", "sp ace",
                                    "semi;colon", "uni\u00e9", "x" * 201, None])
def test_unsafe_prefixes_are_refused(prefix, client, tmp_path):
    with pytest.raises(InvalidBlobPrefix):
        validate_prefix(prefix)
    with pytest.raises(InvalidBlobPrefix):
        S3BlobStore(client, "bucket", prefix=prefix)
    with pytest.raises(InvalidBlobPrefix):
        LocalBlobStore(tmp_path, prefix=prefix)


@pytest.mark.parametrize("prefix", ["checkpoint-blobs", "prod/app_1/blobs.v2", "A9"])
def test_safe_prefixes_are_kept(prefix):
    assert validate_prefix(prefix) == prefix
