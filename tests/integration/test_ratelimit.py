"""The per-tenant token bucket on a real Redis: burst, refill, isolation, RetryInfo/QuotaFailure, and fail-open."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from server.core.errors import ResourceExhausted
from server.core.ratelimit import Limit, RateLimiter


@pytest.fixture
async def limiter(redis_url: str) -> AsyncIterator[RateLimiter]:
    limiter = RateLimiter(
        redis_url, {"write": Limit(rate=5, burst=3), "read": Limit(rate=0, burst=1)}, prefix=f"t-{uuid.uuid4().hex}"
    )
    yield limiter
    await limiter.close()


async def test_a_burst_is_allowed_then_refused_with_when_to_retry(limiter: RateLimiter) -> None:
    for _ in range(3):
        await limiter.take("acme", "write")
    with pytest.raises(ResourceExhausted) as exc:
        await limiter.take("acme", "write")
    assert exc.value.reason == "RATE_LIMITED"
    assert exc.value.retry_after is not None and 0 < exc.value.retry_after <= 0.2  # one token back at 5/s
    assert exc.value.quota_violations == [("tenant:acme", "write calls: 5/s, burst 3")]

    await asyncio.sleep(exc.value.retry_after + 0.02)
    await limiter.take("acme", "write")  # refilled


async def test_tenants_and_classes_have_buckets_of_their_own(limiter: RateLimiter) -> None:
    for _ in range(3):
        await limiter.take("acme", "write")
    with pytest.raises(ResourceExhausted):
        await limiter.take("acme", "write")
    await limiter.take("rival", "write")  # another tenant is not slowed down
    for _ in range(50):
        await limiter.take("acme", "read")  # rate 0: reads are not limited here


async def test_buckets_are_shared_by_every_limiter_on_the_same_redis(redis_url: str) -> None:
    prefix = f"t-{uuid.uuid4().hex}"
    limits = {"write": Limit(rate=1, burst=2)}
    first, second = RateLimiter(redis_url, limits, prefix=prefix), RateLimiter(redis_url, limits, prefix=prefix)
    try:
        await first.take("acme", "write")
        await second.take("acme", "write")
        with pytest.raises(ResourceExhausted):  # two replicas, one bucket
            await first.take("acme", "write")
    finally:
        await first.close()
        await second.close()


async def test_an_unreachable_redis_lets_calls_through() -> None:
    limiter = RateLimiter("redis://127.0.0.1:1/0", {"write": Limit(rate=1, burst=1)})
    try:
        for _ in range(3):
            await limiter.take("acme", "write")
    finally:
        await limiter.close()
