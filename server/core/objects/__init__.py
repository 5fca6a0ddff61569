"""Object storage for uploads and exports: one interface, an S3 backend and a local-directory backend.

Both backends pass the same contract suite (tests/integration/test_object_store_contract.py).
"""

from server.core.objects.base import (
    DEFAULT_PART_SIZE,
    MAX_HANDLE_LENGTH,
    MAX_PARTS,
    MIN_PART_SIZE,
    READ_CHUNK_SIZE,
    ObjectInfo,
    ObjectStore,
    PartInfo,
    check_key,
)
from server.core.objects.factory import open_object_store
from server.core.objects.local import LocalObjectStore
from server.core.objects.s3 import S3ObjectStore

__all__ = [
    "DEFAULT_PART_SIZE",
    "MAX_HANDLE_LENGTH",
    "MAX_PARTS",
    "MIN_PART_SIZE",
    "READ_CHUNK_SIZE",
    "LocalObjectStore",
    "ObjectInfo",
    "ObjectStore",
    "PartInfo",
    "S3ObjectStore",
    "check_key",
    "open_object_store",
]
