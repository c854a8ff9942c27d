"""Errors of rate limits, token quotas and concurrency caps."""

from __future__ import annotations

from rag_core.codes import ErrorCode
from rag_core.errors.base import RagCoreError


class LimitError(RagCoreError):
    """A rate limit, token quota or concurrency cap refused or could not be checked."""


class RateLimitExceededError(LimitError):
    """The tenant has used up its requests for the current sliding window."""

    code = ErrorCode.RATE_LIMITED

    def __init__(self, tenant_id: str, limit: int, retry_after_s: float) -> None:
        self.tenant_id = tenant_id
        self.limit = limit
        self.retry_after_s = retry_after_s
        super().__init__(f"tenant {tenant_id} exceeded its rate limit of {limit} requests per "
                         f"window; retry after {retry_after_s:.3f} s")


class TokenQuotaExceededError(LimitError):
    """A token reservation would take the tenant over its daily quota."""

    code = ErrorCode.QUOTA_EXCEEDED

    def __init__(self, tenant_id: str, quota: int, used: int, requested: int,
                 retry_after_s: float, reserved: int = 0) -> None:
        self.tenant_id = tenant_id
        self.quota = quota
        self.used = used
        self.reserved = reserved
        self.requested = requested
        self.retry_after_s = retry_after_s
        super().__init__(
            f"tenant {tenant_id} cannot reserve {requested} tokens: {used} used and "
            f"{reserved} reserved of a daily quota of {quota}; the quota resets in "
            f"{retry_after_s:.0f} s (UTC midnight)"
        )


class RateLimitBackendError(LimitError):
    """Redis failed while enforcing a rate limit or quota (the outage policy decides)."""

    code = ErrorCode.LIMITS_UNAVAILABLE

    def __init__(self, operation: str, tenant_id: str, reason: str) -> None:
        self.operation = operation
        self.tenant_id = tenant_id
        super().__init__(f"rate-limit backend failed during {operation} for tenant "
                         f"{tenant_id}: {reason}")


class QuotaUnavailableError(LimitError):
    """Redis has been down longer than the token quota's grace period: reservations are
    refused (failing closed) until it answers again."""

    code = ErrorCode.QUOTA_UNAVAILABLE

    def __init__(self, tenant_id: str, down_for_s: float, grace_s: float) -> None:
        self.tenant_id = tenant_id
        self.down_for_s = down_for_s
        self.grace_s = grace_s
        # No point in an earlier retry: the quota comes back with Redis, whenever that is.
        self.retry_after_s: float | None = None
        super().__init__(f"the token quota of tenant {tenant_id} cannot be checked: Redis has "
                         f"been unreachable for {down_for_s:.1f} s, longer than the grace "
                         f"period of {grace_s:g} s (RAG_OUTAGE__TOKEN_QUOTA_GRACE_S)")


class ConcurrencyError(LimitError):
    """A concurrency slot could not be obtained."""

    code = ErrorCode.CONCURRENCY_UNAVAILABLE


class ConcurrencyLimitTimeoutError(ConcurrencyError):
    """Every slot of the limit ``name`` stayed taken for ``waited_s`` seconds."""

    code = ErrorCode.CONCURRENCY_TIMEOUT

    def __init__(self, name: str, limit: int, waited_s: float) -> None:
        self.name = name
        self.limit = limit
        self.waited_s = waited_s
        super().__init__(f"concurrency limit {name!r} ({limit} slots): no slot became free "
                         f"within {waited_s:.2f}s")


class ConcurrencyBackendError(ConcurrencyError):
    """The store behind the limit ``name`` (Redis) failed during ``operation``."""

    code = ErrorCode.CONCURRENCY_UNAVAILABLE

    def __init__(self, name: str, operation: str, reason: str) -> None:
        self.name = name
        self.operation = operation
        self.reason = reason
        super().__init__(f"concurrency limit {name!r}: {operation} failed: {reason}")
