"""Per-tenant rate limits: a token bucket in Redis per tenant and method class, shared by every server replica.

Two classes: `write` (the RPCs that change something: Generate, Upload, Export,
CancelJob, DeleteDataset) and `read` (the rest). Each bucket holds up to
`burst` tokens and refills at `rate` per second; a call takes one. The bucket
lives in one Redis hash, updated by one Lua script (atomic, one round trip), and
expires once it would be full again, so idle tenants cost nothing.

If Redis cannot be reached the call is let through and a warning logged: a
limiter must not turn a Redis blip into an outage of reads that do not need it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from server.core.errors import ResourceExhausted

log = structlog.get_logger(__name__)

# KEYS[1]: the bucket. ARGV: rate per second, burst, now in ms. Returns {allowed, ms until one token is back}.
_BUCKET_SCRIPT = """
local rate, burst, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(state[1]), tonumber(state[2])
if tokens == nil then tokens, at = burst, now end
tokens = math.min(burst, tokens + math.max(0, now - at) * rate / 1000)
local allowed, wait = 0, 0
if tokens >= 1 then
  tokens, allowed = tokens - 1, 1
else
  wait = math.ceil((1 - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) * 1000 / rate) + 1000)
return {allowed, wait}
"""


@dataclass(frozen=True, slots=True)
class Limit:
    rate: float  # tokens per second; 0 turns the class's limit off
    burst: int


class RateLimiter:
    def __init__(self, redis_url: str, limits: dict[str, Limit], *, prefix: str = "datamill:ratelimit") -> None:
        self._redis: Any = aioredis.from_url(redis_url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._script = self._redis.register_script(_BUCKET_SCRIPT)
        self._limits, self._prefix = limits, prefix

    async def take(self, tenant: str, method_class: str) -> None:
        """Take one token of the tenant's bucket for `method_class`; ResourceExhausted if there is none."""
        limit = self._limits.get(method_class)
        if limit is None or limit.rate <= 0:
            return
        key = f"{self._prefix}:{tenant}:{method_class}"
        try:
            allowed, wait_ms = await self._script(keys=[key], args=[limit.rate, limit.burst, int(time.time() * 1000)])
        except (RedisError, OSError) as exc:
            log.warning("rate_limit_unchecked", error=str(exc), tenant=tenant, method_class=method_class)
            return
        if not int(allowed):
            raise ResourceExhausted(
                f"rate limit of {limit.rate:g} {method_class} calls per second (burst {limit.burst}) reached",
                reason="RATE_LIMITED",
                metadata={"tenant": tenant, "method_class": method_class},
                retry_after=max(int(wait_ms), 1) / 1000,
                quota_violations=[(f"tenant:{tenant}", f"{method_class} calls: {limit.rate:g}/s, burst {limit.burst}")],
            )

    async def close(self) -> None:
        await self._redis.aclose()
