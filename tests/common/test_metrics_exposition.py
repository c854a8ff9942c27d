"""Metrics as a Prometheus server scrapes them: bounded labels (never a tenant id or a
question), the sum over worker processes in multiprocess mode, and the query path's
histograms and counters moving when real questions are answered (real PostgreSQL, Redis and
embeddings; the fake Groq server over real HTTP)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from rag_core.codes import ErrorCode
from rag_core.common import metrics
from rag_core.common.metrics import REGISTRY, Stage, render_metrics
from rag_core.common.tenancy import TenantId
from rag_core.config import BreakerPolicy, LLMSettings, RateLimitPolicy, RetryPolicy
from rag_core.errors import CircuitOpenError
from rag_core.query.service import QueryService
from rag_testing.fake_groq import FakeGroqServer, error_response
from tests.conftest import REPO_ROOT
from tests.llm.conftest import FakeClock, MakeBreaker

QUESTIONS = [
    "What is the effect of vitamin D on bone density?",
    "Does smoking increase the risk of lung cancer?",
    "How do T cells recognise antigens?",
]

# Every label a rag_* metric may have, and the values the enum-like ones may take.
ALLOWED_LABELS = {"route", "method", "status", "stage", "cache", "outcome", "kind", "limit",
                  "reason", "breaker", "control", "operation", "mode", "to", "le"}
STAGES = {s.value for s in Stage}
CODES = {c.value for c in ErrorCode}


def value(name: str, **labels: str) -> float:
    """A sample of this process's registry (0 when it was never set)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def llm(fake: FakeGroqServer, **overrides: Any) -> dict[str, Any]:
    return {"llm": LLMSettings(api_key=SecretStr("test-key"), base_url=fake.base_url,
                               timeout_s=5.0), **overrides}


def parsed(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Exposition text as {(sample name, sorted labels): value}."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples}


def test_answering_moves_the_stage_histograms_and_the_llm_counters(
        make_service: Callable[..., QueryService], corpus_tenant: TenantId,
        fake_llm: FakeGroqServer) -> None:
    service = make_service(**llm(fake_llm))
    # One question through every stage: the cache and the quota are used twice (get then
    # put, reserve then settle), every other stage once.
    expected = {s: 1 for s in Stage} | {Stage.CACHE: 2, Stage.QUOTA: 2}
    before = {s: value("rag_stage_seconds_count", stage=s.value) for s in Stage}
    counters = {
        "calls": ("rag_llm_calls_total", {"outcome": "ok"}),
        "prompt": ("rag_llm_tokens_total", {"kind": "prompt"}),
        "completion": ("rag_llm_tokens_total", {"kind": "completion"}),
        "retries": ("rag_llm_retries_total", {}),
        "call_seconds": ("rag_llm_call_seconds_count", {}),
        "ok": ("rag_questions_total", {"outcome": "ok"}),
        "llm_slot": ("rag_concurrency_wait_seconds_count", {"limit": "llm_calls"}),
        "shared_slot": ("rag_concurrency_wait_seconds_count", {"limit": "shared"}),
        "search_slot": ("rag_concurrency_wait_seconds_count", {"limit": "search"}),
    }
    start = {key: value(name, **labels) for key, (name, labels) in counters.items()}

    answer = service.ask(corpus_tenant, "Which vitamin matters for bone density?")

    assert answer.error_code is None and answer.model != "extractive-fallback"
    assert answer.prompt_tokens > 0 and answer.completion_tokens > 0
    moved = {s: value("rag_stage_seconds_count", stage=s.value) - before[s] for s in Stage}
    assert moved == expected
    delta = {key: value(name, **labels) - start[key]
             for key, (name, labels) in counters.items()}
    # One question, one call: the call's usage is the answer's.
    assert delta == {"calls": 1, "prompt": answer.prompt_tokens,
                     "completion": answer.completion_tokens, "retries": 0,
                     "call_seconds": 1, "ok": 1, "llm_slot": 1, "shared_slot": 1,
                     "search_slot": 1}


def test_labels_stay_bounded_whatever_the_tenants_and_questions(
        make_service: Callable[..., QueryService], corpus_tenant: TenantId,
        make_tenant: Callable[[], TenantId], fake_llm: FakeGroqServer) -> None:
    tenants = [corpus_tenant, make_tenant(), make_tenant()]
    rejected = value("rag_limit_rejections_total", limit="rate", reason="rate_limited")
    answered = make_service(**llm(fake_llm))
    limited = make_service(rate_limit=RateLimitPolicy(requests_per_minute=1,
                                                      tokens_per_day=100_000_000))
    for tenant in tenants:
        answered.ask_many(tenant, QUESTIONS)  # the empty tenants: no_documents
        limited.ask(tenant, QUESTIONS[0])
        assert limited.ask(tenant, QUESTIONS[1]).error_code is ErrorCode.RATE_LIMITED
    assert value("rag_limit_rejections_total", limit="rate",
                 reason="rate_limited") - rejected == len(tenants)

    body, content_type = render_metrics()
    assert content_type.startswith("text/plain")
    text = body.decode()
    for secret in [*tenants, *QUESTIONS, *(q[:20] for q in QUESTIONS)]:
        assert secret not in text
    samples = [s for family in REGISTRY.collect() if family.name.startswith("rag_")
               for s in family.samples]
    assert samples
    for sample in samples:
        assert set(sample.labels) <= ALLOWED_LABELS, sample
        if "stage" in sample.labels:
            assert sample.labels["stage"] in STAGES
        if "reason" in sample.labels:
            assert sample.labels["reason"] in CODES
        if sample.name.startswith("rag_questions"):
            assert sample.labels["outcome"] in CODES | {"ok"}
    assert value("rag_questions_total", outcome="no_documents") >= 2 * len(QUESTIONS)


def test_the_breaker_gauge_shows_open_after_the_llm_fails_enough(
        make_service: Callable[..., QueryService], corpus_tenant: TenantId,
        fake_llm: FakeGroqServer) -> None:
    fake_llm.set_default(lambda request: error_response(500, "upstream down"))
    service = make_service(**llm(
        fake_llm, retry=RetryPolicy(attempts=2, initial_backoff_s=0, max_backoff_s=0,
                                    jitter=False),
        breaker=BreakerPolicy(minimum_calls=2, failure_rate_threshold=0.5)))
    breaker = f"llm:{LLMSettings().model}"
    failed = value("rag_llm_calls_total", outcome="llm_unavailable")
    refused = value("rag_llm_calls_total", outcome="circuit_open")
    retries = value("rag_llm_retries_total")
    answer = service.ask(corpus_tenant, QUESTIONS[0])
    assert answer.error_code is ErrorCode.LLM_UNAVAILABLE
    # The batch's call and the question's retry alone: enough failures to open it.
    calls = value("rag_llm_calls_total", outcome="llm_unavailable") - failed
    assert calls == 2
    assert value("rag_breaker_state", breaker=breaker) == 2  # open
    assert value("rag_llm_retries_total") - retries == calls  # two attempts a call
    assert fake_llm.request_count == 2 * calls
    assert service.ask(corpus_tenant, QUESTIONS[1]).error_code is ErrorCode.CIRCUIT_OPEN
    assert value("rag_llm_calls_total", outcome="circuit_open") - refused >= 1
    assert fake_llm.request_count == 2 * calls  # refused without a request
    assert value("rag_breaker_state", breaker=breaker) == 2


def test_time_open_is_counted_once_per_period_by_the_probe_that_ends_it(
        make_breaker: MakeBreaker, clock: FakeClock, breaker_name: str) -> None:
    breaker = make_breaker(policy=BreakerPolicy(minimum_calls=2, open_s=30))

    def open_seconds() -> float:
        return value("rag_breaker_open_seconds_total", breaker=breaker_name)

    def state() -> float:
        return value("rag_breaker_state", breaker=breaker_name)

    for _ in range(2):
        breaker.record(breaker.acquire(), success=False)
    assert state() == 2 and open_seconds() == 0
    clock.advance(31)
    probe = breaker.acquire()
    assert state() == 1  # half-open: this call is the probe
    clock.advance(4)
    breaker.record(probe, success=False)  # re-opened: the first period lasted 35 s
    assert state() == 2 and open_seconds() == pytest.approx(35)
    with pytest.raises(CircuitOpenError):
        breaker.acquire()
    clock.advance(40)
    breaker.record(breaker.acquire(), success=True)  # closed after another 40 s
    assert state() == 0 and open_seconds() == pytest.approx(75)
    breaker.snapshot()
    assert state() == 0


_CHILD = """
import json, os, sys
from rag_core.common import metrics
retries, state = int(sys.argv[1]), int(sys.argv[2])
metrics.LLM_RETRIES.inc(retries)
metrics.STAGE_SECONDS.labels("embed").observe(0.003)
metrics.LIMIT_REJECTIONS.labels("quota", "quota_exceeded").inc()
metrics.BREAKER_STATE.labels("llm:test").set(state)
metrics.HTTP_REQUESTS_IN_FLIGHT.inc()
print(json.dumps({"pid": os.getpid()}))
"""

_RENDER = """
import sys
from rag_core.common import metrics
body, content_type = metrics.render_metrics()
sys.stdout.write(body.decode())
"""


def _python(code: str, folder: Path, *args: str) -> str:
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(folder))
    done = subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120, check=True)
    return done.stdout


def test_multiprocess_mode_renders_the_sum_over_workers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "prometheus"
    folder.mkdir()
    first = json.loads(_python(_CHILD, folder, "3", "0"))["pid"]
    json.loads(_python(_CHILD, folder, "4", "2"))  # the later breaker reading

    totals = parsed(_python(_RENDER, folder).encode())
    assert totals[("rag_llm_retries_total", ())] == 7
    assert totals[("rag_stage_seconds_count", (("stage", "embed"),))] == 2
    assert totals[("rag_stage_seconds_sum", (("stage", "embed"),))] == pytest.approx(0.006)
    assert totals[("rag_limit_rejections_total",
                   (("limit", "quota"), ("reason", "quota_exceeded")))] == 2
    assert totals[("rag_breaker_state", (("breaker", "llm:test"),))] == 2  # most recent
    assert totals[("rag_http_requests_in_flight", ())] == 2
    assert not any(dict(labels).get("pid") for _, labels in totals)

    # A supervisor marks the first worker dead: its live gauges go, its counts stay.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(folder))
    metrics.mark_worker_dead(first)
    after = parsed(render_metrics()[0])
    assert after[("rag_http_requests_in_flight", ())] == 1
    assert after[("rag_llm_retries_total", ())] == 7
