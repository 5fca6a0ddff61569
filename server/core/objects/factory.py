"""Builds the object store that the settings ask for."""

from __future__ import annotations

from server.core.objects.base import ObjectStore
from server.core.objects.breaker import CircuitBreaker, GuardedObjectStore
from server.core.objects.local import LocalObjectStore
from server.core.objects.s3 import S3ObjectStore
from server.core.settings import ObjectStoreKind, Settings


def open_object_store(settings: Settings) -> ObjectStore:
    """The configured store, not yet checked: call `await store.ensure_ready()` at start-up.

    S3 is reached through a circuit breaker (`breaker.py`); the local directory needs none.
    """
    if settings.object_store is ObjectStoreKind.S3:
        s3 = S3ObjectStore(
            endpoint=settings.s3_endpoint,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key.get_secret_value(),
            bucket=settings.s3_bucket,
            region=settings.s3_region,
            secure=settings.s3_secure,
        )
        breaker = CircuitBreaker(failures=settings.s3_breaker_failures, reset_seconds=settings.s3_breaker_reset_seconds)
        return GuardedObjectStore(s3, breaker)
    return LocalObjectStore(settings.local_object_dir)
