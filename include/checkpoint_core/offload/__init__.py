"""Large checkpoint values in an object store, small references in the checkpoint store.

``OffloadSerializer`` wraps the app's serializer; ``S3BlobStore`` / ``LocalBlobStore`` hold
the values by sha256; ``collect_offloaded_garbage`` deletes the ones no checkpoint needs.
"""

from include.checkpoint_core.offload.blobs import (
    DEFAULT_PREFIX,
    BlobInfo,
    BlobStore,
    LocalBlobStore,
    S3BlobStore,
    validate_prefix,
)
from include.checkpoint_core.offload.errors import (
    BlobAccessDenied,
    BlobBucketMissing,
    BlobCredentialsRejected,
    BlobStoreFailed,
    BlobStoreUnavailable,
    BlobStoreUnreachable,
    InvalidBlobPrefix,
    MalformedOffloadReference,
    OffloadedBlobCorrupt,
    OffloadedBlobMissing,
    OffloadError,
    OffloadReferencesUnreadable,
)
from include.checkpoint_core.offload.gc import collect_offloaded_garbage, referenced_digests
from include.checkpoint_core.offload.serializer import (
    DEFAULT_THRESHOLD,
    OFFLOAD_TYPE,
    OffloadReference,
    OffloadSerializer,
    parse_reference,
)

__all__ = [
    "DEFAULT_PREFIX", "DEFAULT_THRESHOLD", "OFFLOAD_TYPE",
    "BlobInfo", "BlobStore", "LocalBlobStore", "S3BlobStore", "validate_prefix",
    "OffloadReference", "OffloadSerializer", "parse_reference",
    "collect_offloaded_garbage", "referenced_digests",
    "OffloadError", "InvalidBlobPrefix", "OffloadedBlobMissing", "OffloadedBlobCorrupt",
    "MalformedOffloadReference", "OffloadReferencesUnreadable", "BlobBucketMissing", "BlobAccessDenied",
    "BlobCredentialsRejected", "BlobStoreUnreachable", "BlobStoreUnavailable", "BlobStoreFailed",
]
