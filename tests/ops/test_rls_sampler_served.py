"""The RLS overhead sampler in a running service: the app's lifespan starts it, its samples
reach /metrics with no tenant in them, and shutting the service down releases its lock."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families

from rag_core.common.tenancy import TenantId
from rag_core.config import Settings
from rag_core.ops.rls_sampler import RlsSampler, lock_path
from rag_testing.api_server import ApiServer
from tests.api.conftest import (  # noqa: F401  (fixtures)
    api_settings,
    corpus_tenant,
    module_fake_llm,
    serve,
)


def samples(url: str) -> dict[str, float]:
    """The sampler's series as /metrics shows them: {sample name or outcome: value}."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "rag_rls_samples_total":
                found[sample.labels["outcome"]] = sample.value
            elif sample.name == "rag_rls_overhead_seconds_count":
                found["count"] = sample.value
    return found


def test_the_service_samples_the_rls_overhead_in_the_background(
        api_settings: Settings, corpus_tenant: TenantId,  # noqa: F811
        serve: Callable[..., ApiServer]) -> None:  # noqa: F811
    settings = api_settings.model_copy(update={"api": api_settings.api.model_copy(
        update={"rls_sample_interval_s": 0.1, "rls_sample_repeats": 1})})
    server = serve(settings)
    before = samples(server.url)
    deadline = time.monotonic() + 120
    now = before
    while now.get("ok", 0) < before.get("ok", 0) + 2 and time.monotonic() < deadline:
        time.sleep(0.1)
        now = samples(server.url)
    assert now.get("ok", 0) >= before.get("ok", 0) + 2, now
    assert now["count"] >= before.get("count", 0) + 2
    assert corpus_tenant not in httpx.get(f"{server.url}/metrics", timeout=30).text
    # The serving worker holds the database's sampling lock until it stops.
    probe = RlsSampler(lambda after: None, interval_s=60, lock_path=lock_path(settings))
    assert not probe.try_lock()
    server.stop()
    assert probe.try_lock()
    probe.close()
