"""The quota's usage fraction as a metric: observed at every reservation, admitted or
refused, with no tenant label (real Redis)."""

from __future__ import annotations

import pytest
import redis

from rag_core.common.metrics import REGISTRY
from rag_core.common.tenancy import new_tenant_id
from rag_core.config import RateLimitPolicy
from rag_core.errors import TokenQuotaExceededError
from rag_core.limits.quota import TokenQuota

METRIC = "rag_quota_usage_fraction"


def snapshot() -> dict[str, float]:
    """Count, sum and the buckets the alert and the dashboard read."""
    def get(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    return {"count": get(f"{METRIC}_count"), "sum": get(f"{METRIC}_sum"),
            "le_0.5": get(f"{METRIC}_bucket", le="0.5"),
            "le_0.8": get(f"{METRIC}_bucket", le="0.8"),
            "le_0.9": get(f"{METRIC}_bucket", le="0.9")}


def test_each_reservation_observes_the_usage_it_found(redis_client: redis.Redis) -> None:
    quota = TokenQuota(redis_client, RateLimitPolicy(tokens_per_day=1000))
    tenant = new_tenant_id()
    before = snapshot()
    first = quota.reserve(tenant, 500)  # 0.5 of the day's tokens, this reservation included
    quota.reserve(tenant, 350)  # 0.85: above the alert's 0.8
    with pytest.raises(TokenQuotaExceededError):
        quota.reserve(tenant, 200)  # refused: 0.85 already used and reserved
    quota.settle(first, 100)  # settling observes nothing; usage is now 0.45
    quota.reserve(tenant, 10)  # 0.46
    moved = {key: snapshot()[key] - before[key] for key in before}
    assert moved["count"] == 4
    assert moved["sum"] == pytest.approx(0.5 + 0.85 + 0.85 + 0.46)
    assert moved["le_0.5"] == 2  # the first and the last
    assert moved["le_0.8"] == 2  # "count - le_0.8" is what the alert counts: 2 above 80%
    assert moved["le_0.9"] == 4
    samples = [s for family in REGISTRY.collect() if family.name == METRIC
               for s in family.samples]
    assert samples and all(set(s.labels) <= {"le"} for s in samples)
