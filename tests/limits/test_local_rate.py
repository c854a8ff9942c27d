"""The per-process sliding window that stands in for Redis during an outage."""

from __future__ import annotations

import threading

import pytest

from rag_core.common.tenancy import new_tenant_id
from rag_core.config import RateLimitPolicy
from rag_core.errors import InvalidTenantIdError, RateLimitExceededError
from rag_core.limits.local_rate import LocalRateLimiter
from tests.limits.conftest import FakeClock


def _limiter(clock: FakeClock, limit: int = 3, window_s: float = 60.0,
             overrides: dict[str, RateLimitPolicy] | None = None) -> LocalRateLimiter:
    default = RateLimitPolicy(requests_per_minute=limit, window_s=window_s)
    chosen = overrides or {}
    return LocalRateLimiter(lambda tenant: chosen.get(tenant, default), clock=clock)


def test_admits_exactly_the_limit_then_refuses_until_the_oldest_entry_leaves() -> None:
    clock = FakeClock()
    limiter = _limiter(clock, limit=3, window_s=60)
    tenant = new_tenant_id()
    counts = []
    for _ in range(3):
        counts.append(limiter.admit(tenant).count)
        clock.advance(10)
    assert counts == [1, 2, 3]
    with pytest.raises(RateLimitExceededError) as refused:
        limiter.admit(tenant)
    # entries at 0, 10, 20 s; now 30 s: the first leaves the window at 60 s
    assert refused.value.retry_after_s == pytest.approx(30.0)
    assert (refused.value.tenant_id, refused.value.limit) == (tenant, 3)
    assert refused.value.code == "rate_limited"
    assert limiter.in_window(tenant) == 3  # a refusal is not recorded
    clock.advance(30)  # exactly the window after the first entry: it has left
    assert limiter.admit(tenant).count == 3
    with pytest.raises(RateLimitExceededError):
        limiter.admit(tenant)


def test_tenants_are_independent_and_follow_their_own_policy() -> None:
    clock = FakeClock()
    small, large = new_tenant_id(), new_tenant_id()
    limiter = _limiter(clock, limit=1,
                       overrides={large: RateLimitPolicy(requests_per_minute=4)})
    limiter.admit(small)
    with pytest.raises(RateLimitExceededError):
        limiter.admit(small)
    assert [limiter.admit(large).count for _ in range(4)] == [1, 2, 3, 4]
    with pytest.raises(RateLimitExceededError):
        limiter.admit(large)


def test_recorded_admissions_count_against_the_window_and_stay_bounded() -> None:
    clock = FakeClock()
    limiter = _limiter(clock, limit=3)
    tenant = new_tenant_id()
    for _ in range(10):  # Redis admitted them (or more, across processes): at most the limit
        limiter.record(tenant)
    assert limiter.in_window(tenant) == 3
    with pytest.raises(RateLimitExceededError):
        limiter.admit(tenant)
    clock.advance(61)
    assert limiter.tenants() == 0  # an emptied window is dropped
    assert limiter.admit(tenant).count == 1


def test_threads_sharing_one_limiter_get_exactly_the_limit() -> None:
    limiter = _limiter(FakeClock(), limit=100)
    tenant = new_tenant_id()
    admitted: list[int] = []
    refused: list[int] = []
    start = threading.Barrier(8)

    def worker() -> None:
        start.wait()
        for _ in range(50):
            try:
                admitted.append(limiter.admit(tenant).count)
            except RateLimitExceededError:
                refused.append(1)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(admitted) == 100 and len(refused) == 300
    assert sorted(admitted) == list(range(1, 101))  # every count handed out exactly once


def test_an_invalid_tenant_is_refused_by_name() -> None:
    limiter = _limiter(FakeClock())
    for bad in ("tn_123", "*", ""):
        with pytest.raises(InvalidTenantIdError):
            limiter.admit(bad)
        with pytest.raises(InvalidTenantIdError):
            limiter.record(bad)
