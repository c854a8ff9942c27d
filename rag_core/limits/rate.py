"""Per-tenant request rate limits: a sliding window, enforced atomically in Redis.

**Sliding-window request limit** (``RateLimiter.admit``): a sorted set per tenant,
``rag:rl:{<tenant>}:req``, holds one member per admitted request scored by its time in
microseconds. One script call trims the entries older than the window, counts the rest and
either admits (adds the request) or refuses; a refusal raises ``RateLimitExceededError``
whose ``retry_after_s`` is when the oldest entry in the window leaves it. Refused requests
are not recorded, so a client hammering a full window does not extend its own ban.

**Clock.** Every time used here is the Redis server's clock (``TIME``), never the caller's:
hosts with skewed clocks still share one window. The rate-limit script reads ``TIME``
itself. The sliding window expires shortly after its last entry.

The daily token quota is :mod:`rag_core.limits.quota`; what both share (keys with the tenant
as a hash tag, policies per tenant, Redis failures as ``RateLimitBackendError``) is
:mod:`rag_core.limits.backend`.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass

import redis

from rag_core.common.tenancy import TenantId, parse_tenant_id
from rag_core.config import RateLimitPolicy
from rag_core.errors import RateLimitBackendError, RateLimitExceededError
from rag_core.limits.backend import US_PER_S, RedisBacked

__all__ = ["Admission", "RateLimiter"]


@dataclass(frozen=True)
class Admission:
    """An admitted request: ``count`` requests (this one included) are in the window."""

    tenant_id: TenantId
    count: int
    limit: int

    @property
    def remaining(self) -> int:
        return max(self.limit - self.count, 0)


# KEYS[1] window zset. ARGV: limit, window_us, member.
# Returns {admitted (0/1), count in window, retry_after_us}.
_SLIDING_WINDOW_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
if count < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000) + 1000)
  return {1, count + 1, 0}
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local retry = window
if oldest[2] then
  retry = tonumber(oldest[2]) + window - now
end
if retry < 1 then retry = 1 end
return {0, count, retry}
"""


class RateLimiter(RedisBacked):
    """Sliding-window request limit per tenant (see the module docstring)."""

    def __init__(self, client: redis.Redis, policy: RateLimitPolicy | None = None,
                 overrides: Mapping[str, RateLimitPolicy] | None = None) -> None:
        super().__init__(client, policy, overrides)
        self._script = client.register_script(_SLIDING_WINDOW_LUA)

    def window_key(self, tenant_id: str) -> str:
        tenant = parse_tenant_id(tenant_id)
        return f"{self.policy_for(tenant).key_prefix}:rl:{{{tenant}}}:req"

    def admit(self, tenant_id: str) -> Admission:
        """Admit one request of ``tenant_id`` or raise ``RateLimitExceededError``."""
        tenant = parse_tenant_id(tenant_id)
        policy = self.policy_for(tenant)
        window_us = max(round(policy.window_s * US_PER_S), 1)
        admitted, count, retry_us = self._run(
            self._script, "admit", tenant, [self.window_key(tenant)],
            [policy.requests_per_minute, window_us, secrets.token_hex(12)],
        )
        if not admitted:
            raise RateLimitExceededError(tenant, policy.requests_per_minute,
                                         retry_us / US_PER_S)
        return Admission(tenant, count, policy.requests_per_minute)

    def reset(self, tenant_id: str) -> None:
        """Forget the tenant's window (administration and tests)."""
        tenant = parse_tenant_id(tenant_id)
        try:
            self._redis.delete(self.window_key(tenant))
        except redis.RedisError as exc:
            raise RateLimitBackendError("reset", tenant, str(exc)) from exc
