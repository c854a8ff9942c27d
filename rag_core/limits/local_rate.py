"""The request limit of one process, in memory: the stand-in while Redis is unreachable.

The same policy as :class:`~rag_core.limits.rate.RateLimiter` (a sliding window of
``requests_per_minute`` requests per ``window_s`` per tenant, refused requests not recorded,
``retry_after_s`` when the oldest entry leaves the window), kept in a deque of monotonic
timestamps per tenant under one lock, so every thread of the process shares it.

It only knows this process's requests: with N processes a tenant may get up to N times its
limit while Redis is down (instead of no limit at all). To start an outage from the
process's real recent history rather than an empty window, the guarded limiter
(:mod:`rag_core.limits.guarded`) :meth:`records <LocalRateLimiter.record>` every request
Redis admitted. Memory is bounded by the active tenants: a tenant's deque never holds more
than its limit, and :meth:`LocalRateLimiter.tenants` drops the tenants whose window emptied.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from rag_core.common.tenancy import TenantId, parse_tenant_id
from rag_core.config import RateLimitPolicy
from rag_core.errors import RateLimitExceededError
from rag_core.limits.rate import Admission

__all__ = ["LocalRateLimiter"]

_MIN_RETRY_S = 1e-6  # a refusal always asks for a positive wait, as the Redis script does


class LocalRateLimiter:
    """A per-process sliding window per tenant (see the module docstring)."""

    def __init__(self, policy_for: Callable[[str], RateLimitPolicy], *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._policy_for = policy_for
        self._clock = clock
        self._windows: dict[TenantId, deque[float]] = {}
        self._lock = threading.Lock()

    def _trimmed(self, tenant: TenantId, window_s: float, now: float) -> deque[float]:
        entries = self._windows.setdefault(tenant, deque())
        while entries and entries[0] <= now - window_s:
            entries.popleft()
        return entries

    def admit(self, tenant_id: str) -> Admission:
        """Admit one request of ``tenant_id`` or raise ``RateLimitExceededError``."""
        tenant = parse_tenant_id(tenant_id)
        policy = self._policy_for(tenant)
        limit = policy.requests_per_minute
        with self._lock:
            now = self._clock()
            entries = self._trimmed(tenant, policy.window_s, now)
            if len(entries) < limit:
                entries.append(now)
                return Admission(tenant, len(entries), limit)
            retry = max(entries[0] + policy.window_s - now, _MIN_RETRY_S)
        raise RateLimitExceededError(tenant, limit, retry)

    def record(self, tenant_id: str) -> None:
        """Note a request that Redis admitted (the window to fall back on)."""
        tenant = parse_tenant_id(tenant_id)
        policy = self._policy_for(tenant)
        with self._lock:
            now = self._clock()
            entries = self._trimmed(tenant, policy.window_s, now)
            entries.append(now)
            while len(entries) > policy.requests_per_minute:
                entries.popleft()

    def in_window(self, tenant_id: str) -> int:
        """Requests of ``tenant_id`` in the current window (reports and tests)."""
        tenant = parse_tenant_id(tenant_id)
        policy = self._policy_for(tenant)
        with self._lock:
            count = len(self._trimmed(tenant, policy.window_s, self._clock()))
            if not count:
                del self._windows[tenant]
        return count

    def tenants(self) -> int:
        """Tenants with a non-empty window (memory stays bounded by active tenants)."""
        with self._lock:
            now = self._clock()
            for tenant in list(self._windows):
                entries = self._windows[tenant]
                while entries and entries[0] <= now - self._policy_for(tenant).window_s:
                    entries.popleft()
                if not entries:
                    del self._windows[tenant]
            return len(self._windows)
