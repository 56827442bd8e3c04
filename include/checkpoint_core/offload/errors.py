"""Errors of offloaded checkpoint values: what broke, and what the operator does next.

S3 answers with codes (``NoSuchBucket``, ``InvalidAccessKeyId``...) that mean nothing in a
LangGraph stack trace; ``classify_s3_error`` turns them into these, naming the bucket and the
key but never a credential.
"""

from __future__ import annotations

from include.checkpoint_core.errors import CheckpointStoreError


class OffloadError(CheckpointStoreError):
    """Base class: an offloaded value cannot be written, read or collected."""


class InvalidBlobPrefix(OffloadError):
    hint = "Use a prefix of letters, digits, '.', '_', '-' in '/'-separated parts (e.g. 'checkpoint-blobs/prod')."


class OffloadedBlobMissing(OffloadError):
    hint = (
        "The checkpoint points at an object that is not there. Check that the app's serializer uses the "
        "same bucket and prefix as when it was written; restore the object from bucket versioning or a "
        "backup; and keep the garbage collector's grace_hours above the app's longest write."
    )

    def __init__(self, message: str, *, key: str, sha256: str, hint: str | None = None) -> None:
        self.key, self.sha256 = key, sha256
        super().__init__(message, hint)


class OffloadedBlobCorrupt(OffloadError):
    hint = (
        "The object no longer holds the bytes that were uploaded (its sha256 differs). Restore the "
        "original version from bucket versioning or a backup; nothing in checkpoint-ops rewrites objects."
    )

    def __init__(self, message: str, *, key: str, sha256: str, hint: str | None = None) -> None:
        self.key, self.sha256 = key, sha256
        super().__init__(message, hint)


class MalformedOffloadReference(OffloadError):
    hint = "A checkpoint row of type 'offload' is damaged; restore the store's row from a backup."


class OffloadReferencesUnreadable(OffloadError):
    hint = (
        "Garbage collection needs to read every reference. Wrap the cipher inside the offload serializer "
        "(OffloadSerializer(inner=EncryptedSerializer(...))), not around it, so references stay readable."
    )


class BlobBucketMissing(OffloadError):
    hint = "Create the bucket, or fix the bucket name given to S3BlobStore (and the connection's region)."


class BlobAccessDenied(OffloadError):
    hint = (
        "Grant the connection's identity s3:GetObject, s3:PutObject and s3:ListBucket on the bucket and "
        "prefix (plus s3:DeleteObject for garbage collection)."
    )


class BlobCredentialsRejected(OffloadError):
    hint = "Check the aws connection's access key id and secret (or its role / session token); S3 rejected them."


class BlobStoreUnreachable(OffloadError):
    retryable = True
    hint = "Check the connection's endpoint_url / region and the network path to S3; the task retries."


class BlobStoreUnavailable(OffloadError):
    retryable = True
    hint = "S3 is throttling or failing for now; the task retries."


class BlobStoreFailed(OffloadError):
    hint = "S3 refused the request; the message has its code. Fix the cause and run again."


_CREDENTIAL_CODES = {
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
    "TokenRefreshRequired", "AuthFailure", "InvalidClientTokenId", "UnrecognizedClientException",
}
_DENIED_CODES = {"AccessDenied", "AllAccessDisabled", "403", "Forbidden"}
_TRANSIENT_CODES = {
    "SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed",
    "InternalError", "ServiceUnavailable", "503", "500",
}


def classify_s3_error(exc: Exception, *, where: str, doing: str) -> Exception:
    """The ``OffloadError`` for a botocore error raised while ``doing`` something at ``where``.

    ``where`` is ``s3://bucket/key``. Anything that is not a botocore error is returned as is.
    """
    try:
        from botocore import exceptions as bx
    except ImportError:  # pragma: no cover - only LocalBlobStore runs without botocore
        return exc
    if isinstance(exc, bx.ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        text = f"{doing} {where}: S3 answered {code or status} ({err.get('Message', '').rstrip('.')})."
        if code == "NoSuchBucket":
            return BlobBucketMissing(f"{doing} {where}: the bucket does not exist.")
        if code in _CREDENTIAL_CODES:
            return BlobCredentialsRejected(text)
        if code in _DENIED_CODES:
            return BlobAccessDenied(text)
        if code in _TRANSIENT_CODES or status >= 500:
            return BlobStoreUnavailable(text)
        return BlobStoreFailed(text)
    if isinstance(exc, (bx.NoCredentialsError, bx.PartialCredentialsError)):
        return BlobCredentialsRejected(f"{doing} {where}: no usable AWS credentials were found ({exc}).")
    if isinstance(exc, (bx.ConnectionError, bx.HTTPClientError)):
        return BlobStoreUnreachable(f"{doing} {where}: cannot reach S3 ({exc}).")
    return exc
