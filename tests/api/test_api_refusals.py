"""Refusals over HTTP with their statuses and Retry-After: an LLM that keeps failing opens
the shared breaker (503 circuit_open with the breaker's own wait), a tenant past its rate
limit gets 429, and a question over the configured length is refused (413) and audited."""

from __future__ import annotations

import time
import uuid

import pytest

from rag_core.config import BreakerPolicy, RateLimitPolicy, RetryPolicy, Settings
from rag_testing.fake_groq import error_response
from tests.api.conftest import Api
from tests.api.test_api_http import assert_problem
from tests.query.conftest import audit_rows, last_audit_id

RATE_LIMIT = 6


def drain(api: Api, timeout_s: float = 30.0) -> None:
    """Wait until the service's audit writer holds no row (it writes every 50 ms here)."""
    deadline = time.monotonic() + timeout_s
    while api.platform.buffered_audit_log.pending() > 0:
        assert time.monotonic() < deadline, "the audit writer did not drain"
        time.sleep(0.05)
OPEN_S = 30.0


@pytest.fixture(scope="module")
def api_settings(api_settings: Settings) -> Settings:
    """A breaker that opens after two failed calls, no retries, and a small rate limit
    over a window longer than the module."""
    return api_settings.model_copy(update={
        "breaker": BreakerPolicy(minimum_calls=2, failure_rate_threshold=0.5, open_s=OPEN_S),
        "retry": RetryPolicy(attempts=1),
        "rate_limit": RateLimitPolicy(requests_per_minute=RATE_LIMIT, window_s=3600,
                                      tokens_per_day=100_000_000)})


def test_failing_llm_opens_the_breaker_then_the_rate_limit_refuses(api: Api) -> None:
    api.llm.enqueue(error_response(500), error_response(500))
    with api.client() as client:
        # Two failed calls (the question, then the question retried alone): 503, the
        # provider's trouble, and the breaker opens.
        failed = client.post("/v1/query", json={"question": f"q {uuid.uuid4().hex}"})
        body = assert_problem(failed, 503, str(failed.json()["code"]))
        assert body["code"] in ("llm_unavailable", "llm_error")
        assert "fake error" not in failed.text  # the provider's text stays in the log
        assert len(api.llm.requests) >= 2
        opened = client.post("/v1/query", json={"question": f"q {uuid.uuid4().hex}"})
        problem = assert_problem(opened, 503, "circuit_open")
        retry = float(problem["retry_after_s"])  # type: ignore[arg-type]
        assert 0 < retry <= OPEN_S
        assert 1 <= int(opened.headers["retry-after"]) <= OPEN_S
        seen = []
        for _ in range(RATE_LIMIT):
            seen.append(client.post("/v1/query", json={"question": "anything"}))
    limited = seen[-1]
    problem = assert_problem(limited, 429, "rate_limited")
    assert int(limited.headers["retry-after"]) >= 1
    assert float(problem["retry_after_s"]) > 0  # type: ignore[arg-type]


def test_a_question_over_the_limit_is_refused_with_its_field_and_audited(api: Api) -> None:
    limit = api.platform.settings.max_question_chars
    drain(api)
    before = last_audit_id(api.platform.database, api.tenant)
    with api.client() as client:
        refused = client.post("/v1/query", json={"question": "a" * (limit + 1)})
    problem = assert_problem(refused, 413, "input_too_large")
    assert problem["field"] == "question" and str(limit) in str(problem["detail"])
    drain(api)
    rows = audit_rows(api.platform.database, api.tenant, before)
    assert [r["error_code"] for r in rows] == ["input_too_large"]
