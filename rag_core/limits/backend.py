"""What the request limit and the token quota share: per-tenant policies and Redis scripts.

Both limits (:mod:`rag_core.limits.rate`, :mod:`rag_core.limits.quota`) are keyed by tenant
and implemented as one Lua script per operation, so that any number of processes (API
workers, Prefect workers) sharing a Redis agree: every check-and-update is atomic inside
Redis.

**Keys.** All keys start with ``policy.key_prefix`` (default ``rag``) and put the tenant id in
braces, a Redis Cluster hash tag: all keys of one tenant live in one slot, so multi-key
scripts also work on a cluster. Tenant ids are validated with ``parse_tenant_id`` before any
key is built.

Redis failures are translated to ``RateLimitBackendError``; whether to fail open or closed
when Redis is down is the outage policy's decision (:mod:`rag_core.common.outage`), applied
by the query service.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import redis
from redis.commands.core import Script

from rag_core.common.tenancy import TenantId, parse_tenant_id
from rag_core.config import RateLimitPolicy
from rag_core.errors import RateLimitBackendError

__all__ = ["US_PER_S", "RedisBacked"]

US_PER_S = 1_000_000


def _ints(reply: Any) -> list[int]:
    return [int(item) for item in cast(list[Any], reply)]


class RedisBacked:
    """A Redis client, the default policy and per-tenant overrides, and a script runner."""

    def __init__(self, client: redis.Redis, policy: RateLimitPolicy | None,
                 overrides: Mapping[str, RateLimitPolicy] | None) -> None:
        self._redis = client
        self.policy = policy or RateLimitPolicy()
        self._overrides = {parse_tenant_id(t): p for t, p in (overrides or {}).items()}

    def policy_for(self, tenant_id: str) -> RateLimitPolicy:
        """The policy of ``tenant_id`` (its override, else the default policy)."""
        return self._overrides.get(parse_tenant_id(tenant_id), self.policy)

    def _run(self, script: Script, operation: str, tenant: TenantId, keys: list[str],
             args: list[int | float | str]) -> list[int]:
        try:
            return _ints(script(keys=keys, args=args, client=self._redis))
        except redis.RedisError as exc:
            reason = f"{type(exc).__name__}: {exc}"
            raise RateLimitBackendError(operation, tenant, reason) from exc
