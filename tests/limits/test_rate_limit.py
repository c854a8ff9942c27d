"""Rate limits and token quotas against the suite's real Redis (no mocks)."""

from __future__ import annotations

import threading
import time

import pydantic
import pytest
import redis

from rag_core.common.tenancy import new_tenant_id
from rag_core.config import RateLimitPolicy
from rag_core.errors import (
    InvalidTenantIdError,
    InvalidTokenCountError,
    RagCoreError,
    RateLimitBackendError,
    RateLimitExceededError,
    TokenQuotaExceededError,
)
from rag_core.limits.quota import TokenQuota
from rag_core.limits.rate import RateLimiter


def _dead_client() -> redis.Redis:
    """A client of a port nobody listens on (port 1 is privileged and unused)."""
    return redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2,
                       socket_timeout=0.2)


# --- sliding window ------------------------------------------------------------------------
def test_admits_exactly_limit_then_refuses_with_retry_after(redis_client: redis.Redis) -> None:
    limiter = RateLimiter(redis_client, RateLimitPolicy(requests_per_minute=5))
    tenant = new_tenant_id()
    admissions = [limiter.admit(tenant) for _ in range(5)]
    assert [a.count for a in admissions] == [1, 2, 3, 4, 5]
    assert admissions[-1].remaining == 0
    with pytest.raises(RateLimitExceededError) as caught:
        limiter.admit(tenant)
    err = caught.value
    assert isinstance(err, RagCoreError)
    assert err.tenant_id == tenant
    assert err.limit == 5
    assert 0 < err.retry_after_s <= 60
    assert tenant in str(err)
    # refusals are not recorded: the window still holds exactly the 5 admitted requests
    assert redis_client.zcard(limiter.window_key(tenant)) == 5


def test_key_is_namespaced_tenant_scoped_and_expires(redis_client: redis.Redis) -> None:
    limiter = RateLimiter(redis_client)
    tenant = new_tenant_id()
    limiter.admit(tenant)
    key = limiter.window_key(tenant)
    assert key == f"rag:rl:{{{tenant}}}:req"
    ttl = redis_client.pttl(key)
    assert 60_000 < ttl <= 61_000 + 100


def test_retry_after_comes_from_the_oldest_entry(redis_client: redis.Redis) -> None:
    limiter = RateLimiter(redis_client, RateLimitPolicy(requests_per_minute=2, window_s=2.0))
    tenant = new_tenant_id()
    limiter.admit(tenant)
    time.sleep(0.5)
    limiter.admit(tenant)
    with pytest.raises(RateLimitExceededError) as caught:
        limiter.admit(tenant)
    # the oldest entry is >= 0.5 s old, so it leaves the 2 s window in <= 1.5 s (not 2 s)
    assert 0.5 < caught.value.retry_after_s <= 1.51


def test_concurrent_attempts_admit_exactly_the_limit(redis_client: redis.Redis) -> None:
    limiter = RateLimiter(redis_client, RateLimitPolicy(requests_per_minute=100))
    tenant = new_tenant_id()
    admitted: list[int] = []
    refused: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def worker() -> None:
        start.wait()
        for _ in range(50):
            try:
                limiter.admit(tenant)
            except RateLimitExceededError:
                with lock:
                    refused.append(1)
            else:
                with lock:
                    admitted.append(1)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(admitted) == 100
    assert len(refused) == 300
    assert redis_client.zcard(limiter.window_key(tenant)) == 100


def test_tenants_are_independent(redis_client: redis.Redis) -> None:
    limiter = RateLimiter(redis_client, RateLimitPolicy(requests_per_minute=3))
    first, second = new_tenant_id(), new_tenant_id()
    for _ in range(3):
        limiter.admit(first)
    with pytest.raises(RateLimitExceededError):
        limiter.admit(first)
    assert [limiter.admit(second).count for _ in range(3)] == [1, 2, 3]
    with pytest.raises(RateLimitExceededError):
        limiter.admit(second)


def test_requests_are_admitted_again_after_the_window(redis_client: redis.Redis) -> None:
    limiter = RateLimiter(redis_client, RateLimitPolicy(requests_per_minute=3, window_s=0.5))
    tenant = new_tenant_id()
    for _ in range(3):
        limiter.admit(tenant)
    with pytest.raises(RateLimitExceededError) as caught:
        limiter.admit(tenant)
    assert 0 < caught.value.retry_after_s <= 0.5
    time.sleep(caught.value.retry_after_s + 0.05)
    assert limiter.admit(tenant).count == 1  # the old entries were trimmed


def test_per_tenant_override(redis_client: redis.Redis) -> None:
    vip = new_tenant_id()
    limiter = RateLimiter(redis_client, RateLimitPolicy(requests_per_minute=1),
                          overrides={vip: RateLimitPolicy(requests_per_minute=3)})
    for _ in range(3):
        limiter.admit(vip)
    other = new_tenant_id()
    limiter.admit(other)
    with pytest.raises(RateLimitExceededError) as caught:
        limiter.admit(other)
    assert caught.value.limit == 1


def test_invalid_tenant_is_refused_before_redis() -> None:
    # a dead client proves no Redis call happens: the tenant check fails first
    limiter = RateLimiter(_dead_client())
    quota = TokenQuota(_dead_client())
    for bad in ["tn_123", "TN_" + "a" * 32, "tn_" + "a" * 32 + "\n", "*", ""]:
        with pytest.raises(InvalidTenantIdError):
            limiter.admit(bad)
        with pytest.raises(InvalidTenantIdError):
            quota.reserve(bad, 10)
        with pytest.raises(InvalidTenantIdError):
            quota.usage(bad)


def test_redis_failure_is_translated() -> None:
    tenant = new_tenant_id()
    with pytest.raises(RateLimitBackendError) as caught:
        RateLimiter(_dead_client()).admit(tenant)
    assert caught.value.tenant_id == tenant
    assert caught.value.operation == "admit"
    with pytest.raises(RateLimitBackendError):
        TokenQuota(_dead_client()).reserve(tenant, 1)


def test_policy_is_frozen_and_validated() -> None:
    policy = RateLimitPolicy()
    assert (policy.requests_per_minute, policy.tokens_per_day, policy.alert_fraction,
            policy.reservation_ttl_s, policy.window_s) == (60, 1_000_000, 0.8, 300, 60.0)
    with pytest.raises(pydantic.ValidationError):
        policy.requests_per_minute = 5  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError):
        RateLimitPolicy(requests_per_minute=0)
    with pytest.raises(pydantic.ValidationError):
        RateLimitPolicy(alert_fraction=1.5)
    with pytest.raises(pydantic.ValidationError):
        RateLimitPolicy(key_prefix="a b")


# --- token quota ---------------------------------------------------------------------------
def test_reserve_settle_math(redis_client: redis.Redis) -> None:
    quota = TokenQuota(redis_client, RateLimitPolicy(tokens_per_day=1000))
    tenant = new_tenant_id()
    fresh = quota.usage(tenant)
    assert (fresh.used, fresh.reserved, fresh.quota, fresh.fraction) == (0, 0, 1000, 0.0)

    first = quota.reserve(tenant, 300)
    assert first.estimated_tokens == 300
    usage = quota.usage(tenant)
    assert (usage.used, usage.reserved, usage.remaining) == (0, 300, 700)

    settled = quota.settle(first, 250)
    assert settled.applied and settled.reservation_was_open and settled.actual_tokens == 250
    usage = quota.usage(tenant)
    assert (usage.used, usage.reserved) == (250, 0)
    assert usage.fraction == pytest.approx(0.25)

    second = quota.reserve(tenant, 750)  # 250 + 750 == 1000: exactly the quota is allowed
    assert quota.usage(tenant).reserved == 750
    quota.settle(second, 100)
    usage = quota.usage(tenant)
    assert (usage.used, usage.reserved) == (350, 0)


def test_exhaustion_raises_with_fields(redis_client: redis.Redis) -> None:
    quota = TokenQuota(redis_client, RateLimitPolicy(tokens_per_day=1000))
    tenant = new_tenant_id()
    quota.settle(quota.reserve(tenant, 400), 400)
    quota.reserve(tenant, 500)  # held, not settled
    with pytest.raises(TokenQuotaExceededError) as caught:
        quota.reserve(tenant, 101)
    err = caught.value
    assert isinstance(err, RagCoreError)
    assert (err.tenant_id, err.quota, err.used, err.reserved, err.requested) == (
        tenant, 1000, 400, 500, 101)
    assert 0 < err.retry_after_s <= 86_400
    # the refused reservation did not change anything
    usage = quota.usage(tenant)
    assert (usage.used, usage.reserved) == (400, 500)
    assert quota.reserve(tenant, 100).estimated_tokens == 100  # exactly fills the quota


def test_settle_is_idempotent(redis_client: redis.Redis) -> None:
    quota = TokenQuota(redis_client, RateLimitPolicy(tokens_per_day=1000))
    tenant = new_tenant_id()
    reservation = quota.reserve(tenant, 200)
    assert quota.settle(reservation, 180).applied
    again = quota.settle(reservation, 180)
    assert not again.applied
    different = quota.settle(reservation, 999)  # a retry with another figure changes nothing
    assert not different.applied and different.actual_tokens == 180
    usage = quota.usage(tenant)
    assert (usage.used, usage.reserved) == (180, 0)


def test_expired_reservations_are_released(redis_client: redis.Redis) -> None:
    quota = TokenQuota(redis_client,
                       RateLimitPolicy(tokens_per_day=1000, reservation_ttl_s=1.0))
    tenant = new_tenant_id()
    crashed = quota.reserve(tenant, 900)
    with pytest.raises(TokenQuotaExceededError):
        quota.reserve(tenant, 200)
    time.sleep(1.1)
    assert quota.usage(tenant).reserved == 0
    later = quota.reserve(tenant, 200)
    assert quota.usage(tenant).reserved == 200
    # the "crashed" worker comes back: its spent tokens are charged, the hold had lapsed
    late = quota.settle(crashed, 50)
    assert late.applied and not late.reservation_was_open
    usage = quota.usage(tenant)
    assert (usage.used, usage.reserved) == (50, 200)
    quota.settle(later, 200)
    assert quota.usage(tenant).used == 250


def test_alert_threshold_flips_above_80_percent(redis_client: redis.Redis) -> None:
    quota = TokenQuota(redis_client, RateLimitPolicy(tokens_per_day=1000))
    tenant = new_tenant_id()
    quota.settle(quota.reserve(tenant, 800), 800)
    at_threshold = quota.usage(tenant)
    assert at_threshold.fraction == pytest.approx(0.8)
    assert not at_threshold.above_alert_threshold
    held = quota.reserve(tenant, 1)  # open reservations count towards the fraction
    assert quota.usage(tenant).above_alert_threshold
    quota.settle(held, 1)
    usage = quota.usage(tenant)
    assert usage.used == 801 and usage.above_alert_threshold
    exported = usage.as_dict()
    assert exported["above_alert_threshold"] is True
    assert exported["fraction"] == pytest.approx(0.801)

    custom = TokenQuota(redis_client, RateLimitPolicy(tokens_per_day=1000, alert_fraction=0.5))
    other = new_tenant_id()
    custom.settle(custom.reserve(other, 501), 501)
    assert custom.usage(other).above_alert_threshold


def test_day_keys_are_tenant_scoped_and_expire(redis_client: redis.Redis) -> None:
    quota = TokenQuota(redis_client)
    tenant = new_tenant_id()
    reservation = quota.reserve(tenant, 10)
    now = quota.server_now(tenant)
    assert reservation.day == now.strftime("%Y%m%d")
    keys = quota.day_keys(tenant, reservation.day)
    assert all(key.startswith(f"rag:quota:{{{tenant}}}:{reservation.day}:") for key in keys)
    seconds_in_day_left = 86_400 - (now.hour * 3600 + now.minute * 60 + now.second)
    ttl = redis_client.ttl(keys[0])
    assert 86_400 < ttl <= seconds_in_day_left + 86_400 + 2
    quota.settle(reservation, 10)
    assert redis_client.ttl(keys[3]) > 86_400  # the settled ids expire with the day


def test_separate_tenants_have_separate_quotas(redis_client: redis.Redis) -> None:
    quota = TokenQuota(redis_client, RateLimitPolicy(tokens_per_day=100))
    first, second = new_tenant_id(), new_tenant_id()
    quota.reserve(first, 100)
    with pytest.raises(TokenQuotaExceededError):
        quota.reserve(first, 1)
    assert quota.reserve(second, 100).tenant_id == second


def test_concurrent_reservations_never_exceed_the_quota(redis_client: redis.Redis) -> None:
    quota = TokenQuota(redis_client, RateLimitPolicy(tokens_per_day=1000))
    tenant = new_tenant_id()
    granted: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(20):
            try:
                quota.reserve(tenant, 7)
            except TokenQuotaExceededError:
                continue
            with lock:
                granted.append(7)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(granted) == 994  # 142 reservations of 7; a 143rd would reach 1001
    assert quota.usage(tenant).reserved == 994


@pytest.mark.parametrize("bad", [-1, 1.5, True, "10", None])
def test_invalid_token_counts(redis_client: redis.Redis, bad: object) -> None:
    quota = TokenQuota(redis_client)
    tenant = new_tenant_id()
    with pytest.raises(InvalidTokenCountError) as caught:
        quota.reserve(tenant, bad)  # type: ignore[arg-type]
    assert caught.value.value == bad
    reservation = quota.reserve(tenant, 1)
    with pytest.raises(InvalidTokenCountError):
        quota.settle(reservation, bad)  # type: ignore[arg-type]
