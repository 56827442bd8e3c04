"""OffloadSerializer on its own: references, content addressing, integrity, LangGraph's serde API."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest
from langgraph.checkpoint.serde.encrypted import EncryptedSerializer
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from include.checkpoint_core.errors import CheckpointStoreError
from include.checkpoint_core.offload import (
    OFFLOAD_TYPE,
    LocalBlobStore,
    MalformedOffloadReference,
    OffloadedBlobCorrupt,
    OffloadedBlobMissing,
    OffloadSerializer,
    S3BlobStore,
)
from tests.offload.conftest import CountingClient, fresh_serde, pdf_like

BIG = {"pdf": pdf_like(200_000), "name": "contract.pdf"}


def test_small_values_are_left_to_the_inner_serializer(s3_blobs):
    serde = OffloadSerializer(blobs=s3_blobs)
    for value in ({"a": 1}, "text", b"x" * (64 * 1024 - 16), None, [1, 2, 3]):
        assert serde.dumps_typed(value) == JsonPlusSerializer().dumps_typed(value)
    assert list(s3_blobs.list()) == []


def test_large_values_become_a_reference_to_a_content_addressed_object(s3_blobs, client, bucket):
    inner_type, inner_bytes = JsonPlusSerializer().dumps_typed(BIG)
    type_, data = OffloadSerializer(blobs=s3_blobs).dumps_typed(BIG)
    digest = hashlib.sha256(inner_bytes).hexdigest()
    assert type_ == OFFLOAD_TYPE and len(data) < 200
    assert json.loads(data) == {"sha256": digest, "size": len(inner_bytes), "type": inner_type}
    key = f"checkpoint-blobs/sha256/{digest[:2]}/{digest}"
    assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == inner_bytes
    assert fresh_serde(s3_blobs).loads_typed((type_, data)) == BIG


def test_the_threshold_is_a_strict_upper_bound(tmp_path):
    blobs = LocalBlobStore(tmp_path)
    inner_type, exact = JsonPlusSerializer().dumps_typed(b"y" * 1000)
    assert OffloadSerializer(blobs=blobs, threshold=len(exact)).dumps_typed(b"y" * 1000) == (inner_type, exact)
    assert OffloadSerializer(blobs=blobs, threshold=len(exact) - 1).dumps_typed(b"y" * 1000)[0] == OFFLOAD_TYPE
    with pytest.raises(ValueError):
        OffloadSerializer(blobs=blobs, threshold=-1)
    with pytest.raises(TypeError):
        OffloadSerializer(blobs="s3://bucket")


def test_an_object_that_exists_is_not_uploaded_again(client, bucket):
    counting = CountingClient(client)
    blobs = S3BlobStore(counting, bucket)
    first = fresh_serde(blobs).dumps_typed(BIG)
    assert counting.calls["put_object"] == 1
    # Another process (empty memory) finds the object with one HEAD and skips the upload.
    assert fresh_serde(blobs).dumps_typed(BIG) == first
    assert counting.calls["put_object"] == 1 and counting.calls["head_object"] == 2
    # The same process remembers it saw the object fresh: not even a HEAD.
    serde = fresh_serde(blobs)
    serde.dumps_typed(BIG), serde.dumps_typed(BIG)
    assert counting.calls["head_object"] == 3 and counting.calls["put_object"] == 1


def test_reusing_an_old_object_makes_it_young_again(client, bucket, tmp_path):
    """GC spares young objects; a re-used old one is renewed so a checkpoint in flight keeps it."""
    local = LocalBlobStore(tmp_path)
    type_, data = fresh_serde(local).dumps_typed(BIG)
    path = tmp_path / local.key_for(json.loads(data)["sha256"])
    old = (datetime.now(timezone.utc) - timedelta(hours=3)).timestamp()
    os.utime(path, (old, old))
    fresh_serde(local).dumps_typed(BIG)
    assert path.stat().st_mtime > old + 3600

    counting = CountingClient(client)
    s3 = S3BlobStore(counting, bucket)
    fresh_serde(s3).dumps_typed(BIG)
    fresh_serde(s3, refresh_after=timedelta(0)).dumps_typed(BIG)
    assert counting.calls["copy_object"] == 1 and counting.calls["put_object"] == 1
    assert fresh_serde(s3).loads_typed((type_, data)) == BIG  # the self-copy kept the bytes


def test_a_missing_object_is_named_by_key_and_sha256(s3_blobs, client, bucket):
    ref = OffloadSerializer(blobs=s3_blobs).dumps_typed(BIG)
    digest = json.loads(ref[1])["sha256"]
    key = s3_blobs.key_for(digest)
    client.delete_object(Bucket=bucket, Key=key)
    with pytest.raises(OffloadedBlobMissing) as caught:
        fresh_serde(s3_blobs).loads_typed(ref)
    err = caught.value
    assert isinstance(err, CheckpointStoreError) and not err.retryable
    assert (err.key, err.sha256) == (key, digest)
    assert key in str(err) and digest in str(err) and f"s3://{bucket}/checkpoint-blobs" in str(err)
    assert "grace_hours" in err.hint


@pytest.mark.parametrize("damage", ["other bytes", "one flipped byte", "truncated"])
def test_a_corrupted_object_fails_its_checksum(s3_blobs, client, bucket, damage):
    ref = OffloadSerializer(blobs=s3_blobs).dumps_typed(BIG)
    digest = json.loads(ref[1])["sha256"]
    key = s3_blobs.key_for(digest)
    original = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    bad = {
        "other bytes": b"not the checkpoint",
        "one flipped byte": original[:1000] + bytes([original[1000] ^ 1]) + original[1001:],
        "truncated": original[:-10],
    }[damage]
    client.put_object(Bucket=bucket, Key=key, Body=bad)
    with pytest.raises(OffloadedBlobCorrupt) as caught:
        fresh_serde(s3_blobs).loads_typed(ref)
    assert caught.value.key == key and digest in str(caught.value) and "sha256" in str(caught.value)
    assert not isinstance(caught.value, OffloadedBlobMissing)


@pytest.mark.parametrize("payload", [
    b"{not json",
    b'{"sha256": "../../../etc/passwd", "size": 1, "type": "msgpack"}',
    b'{"sha256": "' + b"A" * 64 + b'", "size": 1, "type": "msgpack"}',
    b'{"sha256": "' + b"0" * 64 + b'", "size": -1, "type": "msgpack"}',
    b'{"sha256": "' + b"0" * 64 + b'", "size": 1}',
])
def test_a_damaged_reference_never_reaches_the_store(tmp_path, payload):
    """Keys are built from a checked sha256 only: a forged reference cannot point elsewhere."""
    counting_store = LocalBlobStore(tmp_path)
    with pytest.raises(MalformedOffloadReference):
        fresh_serde(counting_store).loads_typed((OFFLOAD_TYPE, payload))


def test_rows_written_without_offload_still_read(s3_blobs):
    """Switching the serializer on for an existing store: old rows keep their own type."""
    plain = JsonPlusSerializer().dumps_typed(BIG)
    assert OffloadSerializer(blobs=s3_blobs).loads_typed(plain) == BIG


@dataclass
class Invoice:
    number: int


def test_with_allowlist_reaches_the_inner_serializer(s3_blobs):
    """LangGraph's strict-msgpack allowlist (saver.with_allowlist) must still apply through us."""
    from langgraph.checkpoint.memory import InMemorySaver

    strict = JsonPlusSerializer(allowed_msgpack_modules=None)
    serde = OffloadSerializer(strict, blobs=s3_blobs, threshold=0)
    ref = serde.dumps_typed(Invoice(7))
    assert ref[0] == OFFLOAD_TYPE
    assert fresh_serde(s3_blobs, inner=strict).loads_typed(ref) == {"number": 7}  # blocked, as strict mode does

    saver = InMemorySaver(serde=serde).with_allowlist([Invoice])
    assert isinstance(saver.serde, OffloadSerializer) and saver.serde is not serde
    assert saver.serde.blobs is s3_blobs and saver.serde.threshold == 0
    assert saver.serde.loads_typed(ref) == Invoice(7)
    assert serde.loads_typed(ref) == {"number": 7}  # the original is unchanged


class XorCipher:
    """A toy cipher (CipherProtocol): enough to show the object store only sees ciphertext."""

    def encrypt(self, plaintext: bytes) -> tuple[str, bytes]:
        return "xor", bytes(b ^ 0x5A for b in plaintext)

    def decrypt(self, ciphername: str, ciphertext: bytes) -> bytes:
        assert ciphername == "xor"
        return bytes(b ^ 0x5A for b in ciphertext)


def test_an_encrypting_inner_serializer_keeps_objects_encrypted(s3_blobs, client, bucket):
    serde = OffloadSerializer(EncryptedSerializer(XorCipher(), JsonPlusSerializer(allowed_msgpack_modules=None)),
                              blobs=s3_blobs)
    type_, data = serde.dumps_typed(BIG)
    ref = json.loads(data)
    assert type_ == OFFLOAD_TYPE and ref["type"] == "msgpack+xor"
    stored = client.get_object(Bucket=bucket, Key=s3_blobs.key_for(ref["sha256"]))["Body"].read()
    assert b"contract.pdf" not in stored and b"%PDF" not in stored
    assert OffloadSerializer(EncryptedSerializer(XorCipher()), blobs=s3_blobs).loads_typed((type_, data)) == BIG
    # And the allowlist still reaches the JsonPlusSerializer two levels down.
    clone = serde.with_msgpack_allowlist([Invoice])
    assert isinstance(clone.inner, EncryptedSerializer) and clone.inner.serde is not serde.inner.serde
