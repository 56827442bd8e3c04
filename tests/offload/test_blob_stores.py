"""S3BlobStore and LocalBlobStore honour one contract, so development on disk predicts S3."""

from __future__ import annotations

import hashlib

import pytest

from include.checkpoint_core.offload import BlobStore, LocalBlobStore, S3BlobStore


@pytest.fixture(params=["s3", "local"])
def blobs(request, tmp_path) -> BlobStore:
    if request.param == "local":
        return LocalBlobStore(tmp_path, prefix="dev/blobs")
    client, bucket = request.getfixturevalue("client"), request.getfixturevalue("bucket")
    return S3BlobStore(client, bucket, prefix="dev/blobs")


def test_the_blob_store_contract(blobs):
    assert isinstance(blobs, BlobStore)
    data = b"checkpoint bytes" * 100
    digest = hashlib.sha256(data).hexdigest()
    key = blobs.key_for(digest)
    assert key == f"dev/blobs/sha256/{digest[:2]}/{digest}" and blobs.sha256_of(key) == digest
    assert blobs.stat(key) is None and blobs.get(key) is None
    blobs.put(key, data)
    info = blobs.stat(key)
    assert info.size == len(data) and info.last_modified.tzinfo is not None
    assert blobs.get(key) == data
    blobs.touch(key)
    assert blobs.get(key) == data
    assert [(o.key, o.size) for o in blobs.list()] == [(key, len(data))]
    assert blobs.delete([key]) == 1
    assert blobs.get(key) is None and list(blobs.list()) == []


@pytest.mark.parametrize("key", ["dev/blobs/sha256/ab/" + "0" * 64, "dev/blobs/../../etc/passwd",
                                 "other/sha256/00/" + "0" * 64, "dev/blobs/sha256/00/" + "0" * 63])
def test_keys_outside_the_layout_are_refused(blobs, key):
    """Only keys built from a digest (and matching their fan-out directory) are read, written or deleted."""
    assert blobs.sha256_of(key) is None
    for action in (blobs.get, blobs.stat, lambda k: blobs.put(k, b"x"), lambda k: blobs.delete([k])):
        with pytest.raises(ValueError):
            action(key)
    with pytest.raises(ValueError):
        blobs.key_for("../" + "0" * 61)


def test_listing_pages_and_deletes_batch(client, bucket):
    """S3 pages listings and caps DeleteObjects at 1,000 keys; small limits exercise both paths."""
    from tests.offload.conftest import CountingClient

    counting = CountingClient(client)
    blobs = S3BlobStore(counting, bucket)
    blobs.list_page_size, blobs.delete_batch = 10, 10
    payloads = [str(i).encode() for i in range(25)]
    keys = [blobs.key_for(hashlib.sha256(p).hexdigest()) for p in payloads]
    for key, data in zip(keys, payloads):
        client.put_object(Bucket=bucket, Key=key, Body=data)
    assert sorted(o.key for o in blobs.list()) == sorted(keys)
    assert blobs.delete(keys) == 25 and counting.calls["delete_objects"] == 3
    assert list(blobs.list()) == []
