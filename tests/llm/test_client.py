"""LLMClient against the fake Groq server: completions, retries, what is never retried."""

from __future__ import annotations

import socket

import pytest

from rag_core.config import LLMSettings, RetryPolicy
from rag_core.errors import (
    ConfigurationError,
    LLMRequestRejectedError,
    LLMResponseError,
    LLMUnavailableError,
)
from rag_core.llm import (
    BreakerState,
    CallOutcome,
    CallReport,
    ChatMessage,
    LLMClient,
    parse_retry_after,
)
from rag_testing.fake_groq import (
    FakeGroqServer,
    chat_completion,
    error_response,
    invalid_json_content,
    malformed_body,
    rate_limited,
    slow,
)
from tests.llm.conftest import MakeBreaker, MakeClient, SleepRecorder

USER: list[ChatMessage] = [{"role": "user", "content": "What is the capital of France?"}]


def test_normal_completion_returns_text_and_usage(fake_groq: FakeGroqServer,
                                                   make_client: MakeClient) -> None:
    fake_groq.enqueue(chat_completion("Paris.", prompt_tokens=12, completion_tokens=3))
    client = make_client()

    completion = client.complete(USER)

    assert completion.text == "Paris."
    assert (completion.prompt_tokens, completion.completion_tokens,
            completion.total_tokens) == (12, 3, 15)
    assert completion.model == "llama-3.1-8b-instant"
    assert completion.attempts == 1 and completion.retries == 0
    assert completion.latency_ms > 0
    assert completion.finish_reason == "stop"
    assert completion.breaker_state is BreakerState.CLOSED
    [request] = fake_groq.requests
    assert request.path == "/openai/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer test-key"
    assert request.body["model"] == "llama-3.1-8b-instant"
    assert request.messages == USER
    assert request.response_format is None
    assert request.body["temperature"] == 0.0
    assert request.max_tokens == 1024


def test_json_mode_sends_response_format_and_checks_output(fake_groq: FakeGroqServer,
                                                           make_client: MakeClient) -> None:
    fake_groq.enqueue(chat_completion('{"answer": "Paris"}'))
    client = make_client()

    completion = client.complete(USER, response_format_json=True, max_tokens=64)

    assert completion.text == '{"answer": "Paris"}'
    [request] = fake_groq.requests
    assert request.response_format == {"type": "json_object"}
    assert request.max_tokens == 64


def test_partial_json_output_is_a_response_error_not_retried(
        fake_groq: FakeGroqServer, make_client: MakeClient, make_breaker: MakeBreaker) -> None:
    fake_groq.enqueue(invalid_json_content('{"answer": "Par'))
    breaker = make_breaker()
    client = make_client(breaker=breaker)

    with pytest.raises(LLMResponseError) as caught:
        client.complete(USER, response_format_json=True)

    assert caught.value.raw_text == '{"answer": "Par'
    assert "not valid JSON" in caught.value.reason
    assert fake_groq.request_count == 1
    # The service answered: the breaker counts a success, not a failure.
    snapshot = breaker.snapshot()
    assert (snapshot.calls, snapshot.failures) == (1, 0)
    report = client.last_report
    assert report is not None and report.outcome is CallOutcome.BAD_RESPONSE


def test_json_that_is_not_an_object_is_rejected(fake_groq: FakeGroqServer,
                                                make_client: MakeClient) -> None:
    fake_groq.enqueue(chat_completion("[1, 2]"))
    with pytest.raises(LLMResponseError, match="not an object"):
        make_client().complete(USER, response_format_json=True)


def test_malformed_envelope_is_a_response_error_and_a_breaker_failure(
        fake_groq: FakeGroqServer, make_client: MakeClient, make_breaker: MakeBreaker) -> None:
    fake_groq.enqueue(malformed_body())
    breaker = make_breaker()
    client = make_client(breaker=breaker)

    with pytest.raises(LLMResponseError) as caught:
        client.complete(USER)

    assert "malformed response body" in caught.value.reason
    assert caught.value.raw_text.startswith('{"id": "chatcmpl-broken"')
    assert fake_groq.request_count == 1
    snapshot = breaker.snapshot()
    assert (snapshot.calls, snapshot.failures) == (1, 1)


def test_non_json_body_is_a_response_error(fake_groq: FakeGroqServer,
                                           make_client: MakeClient) -> None:
    # The SDK returns the body text (a str, not a ChatCompletion) for a non-JSON content type.
    from rag_testing.fake_groq import FakeResponse
    fake_groq.enqueue(FakeResponse(200, b"<html>gateway</html>", content_type="text/html"))
    with pytest.raises(LLMResponseError) as caught:
        make_client().complete(USER)
    assert caught.value.raw_text == "<html>gateway</html>"


def test_transient_failures_then_success_waits_as_told(
        fake_groq: FakeGroqServer, make_client: MakeClient, sleeper: SleepRecorder) -> None:
    fake_groq.enqueue(error_response(500), rate_limited(retry_after=1),
                      chat_completion("ok"))
    reports: list[CallReport] = []
    client = make_client(on_call=reports.append)

    completion = client.complete(USER)

    assert completion.text == "ok"
    assert completion.attempts == 3 and completion.retries == 2
    assert fake_groq.request_count == 3
    first_wait, second_wait = sleeper.waits
    assert 0.25 <= first_wait <= 0.5  # 0.5 s backoff, jittered within its upper half
    assert second_wait == 1.0  # Retry-After: 1
    [report] = reports
    assert report.outcome is CallOutcome.OK
    assert report.attempts == 3 and report.retries == 2
    assert report.waits_s == (first_wait, second_wait)
    assert report.status_code == 200
    assert report.breaker_state is BreakerState.CLOSED
    # Every attempt is a fresh request as far as the SDK knows: its own retries are off.
    assert [r.headers.get("x-stainless-retry-count") for r in fake_groq.requests] == ["0"] * 3


def test_retry_after_is_respected_as_seen_by_the_server(fake_groq: FakeGroqServer,
                                                        make_client: MakeClient) -> None:
    import time
    fake_groq.enqueue(rate_limited(retry_after=1), chat_completion("ok"))
    client = make_client(sleep=time.sleep)

    assert client.complete(USER).attempts == 2

    first, second = fake_groq.requests
    assert second.received_at - first.received_at >= 0.95


def test_retry_after_is_capped(fake_groq: FakeGroqServer, make_client: MakeClient,
                               sleeper: SleepRecorder) -> None:
    fake_groq.enqueue(error_response(503, retry_after=120), chat_completion("ok"))
    client = make_client(retry=RetryPolicy(max_retry_after_s=2))

    assert client.complete(USER).attempts == 2
    assert sleeper.waits == [2.0]


def test_retry_after_ignored_when_not_honoured(fake_groq: FakeGroqServer,
                                               make_client: MakeClient,
                                               sleeper: SleepRecorder) -> None:
    fake_groq.enqueue(rate_limited(retry_after=7), chat_completion("ok"))
    client = make_client(retry=RetryPolicy(honour_retry_after=False, jitter=False))

    client.complete(USER)
    assert sleeper.waits == [0.5]


def test_exponential_backoff_is_capped_and_attempts_are_bounded(
        fake_groq: FakeGroqServer, make_client: MakeClient, sleeper: SleepRecorder) -> None:
    fake_groq.set_default(lambda request: error_response(502))
    client = make_client(retry=RetryPolicy(attempts=5, initial_backoff_s=1, max_backoff_s=3,
                                           jitter=False))

    with pytest.raises(LLMUnavailableError) as caught:
        client.complete(USER)

    assert caught.value.attempts == 5
    assert caught.value.last_status == 502
    assert fake_groq.request_count == 5
    assert sleeper.waits == [1.0, 2.0, 3.0, 3.0]


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_client_errors_are_never_retried(status: int, fake_groq: FakeGroqServer,
                                         make_client: MakeClient, make_breaker: MakeBreaker,
                                         sleeper: SleepRecorder) -> None:
    fake_groq.enqueue(error_response(status, "bad request body"))
    breaker = make_breaker()
    client = make_client(breaker=breaker)

    with pytest.raises(LLMRequestRejectedError) as caught:
        client.complete(USER)

    assert caught.value.status_code == status
    assert "bad request body" in caught.value.body
    assert fake_groq.request_count == 1
    assert sleeper.waits == []
    # A rejected request says nothing about the service's health.
    assert breaker.snapshot().failures == 0
    report = client.last_report
    assert report is not None
    assert (report.outcome, report.attempts, report.status_code) == (
        CallOutcome.REJECTED, 1, status)


def test_timeouts_are_retried(fake_groq: FakeGroqServer, make_client: MakeClient) -> None:
    fake_groq.enqueue(slow(chat_completion("late"), 3), slow(chat_completion("late"), 3),
                      chat_completion("in time"))
    client = make_client(timeout_s=0.3)

    completion = client.complete(USER)

    assert completion.text == "in time"
    assert completion.attempts == 3
    assert fake_groq.request_count == 3


def test_three_timeouts_make_the_llm_unavailable(fake_groq: FakeGroqServer,
                                                 make_client: MakeClient,
                                                 make_breaker: MakeBreaker) -> None:
    fake_groq.set_default(lambda request: slow(chat_completion("late"), 3))
    breaker = make_breaker()
    client = make_client(timeout_s=0.2, breaker=breaker)

    with pytest.raises(LLMUnavailableError) as caught:
        client.complete(USER)

    assert caught.value.attempts == 3
    assert caught.value.last_status is None
    assert "APITimeoutError" in caught.value.last_error
    assert fake_groq.request_count == 3
    # One call, one failure: the breaker counts calls, not attempts.
    snapshot = breaker.snapshot()
    assert (snapshot.calls, snapshot.failures) == (1, 1)


def test_connection_errors_are_retried(make_client: MakeClient,
                                       sleeper: SleepRecorder) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    client = make_client(base_url=f"http://127.0.0.1:{closed_port}")

    with pytest.raises(LLMUnavailableError) as caught:
        client.complete(USER)

    assert caught.value.attempts == 3
    assert "APIConnectionError" in caught.value.last_error
    assert len(sleeper.waits) == 2


def test_sdk_does_not_retry_on_its_own(fake_groq: FakeGroqServer,
                                       make_client: MakeClient) -> None:
    fake_groq.set_default(lambda request: error_response(500))
    client = make_client(retry=RetryPolicy(attempts=1))

    with pytest.raises(LLMUnavailableError):
        client.complete(USER)
    assert fake_groq.request_count == 1


def test_a_failing_hook_does_not_lose_the_completion(fake_groq: FakeGroqServer,
                                                     make_client: MakeClient) -> None:
    def broken_hook(report: CallReport) -> None:
        raise RuntimeError("audit sink down")

    client = make_client(on_call=broken_hook)
    assert client.complete(USER).text == "echo: What is the capital of France?"


def test_missing_api_key_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch,
                                                  make_breaker: MakeBreaker) -> None:
    monkeypatch.delenv("GROQ_API_KEY", raising=False)
    with pytest.raises(ConfigurationError) as caught:
        LLMClient(LLMSettings(base_url="http://127.0.0.1:9"), breaker=make_breaker())
    assert caught.value.setting == "llm.api_key"


@pytest.mark.parametrize(("header", "expected"), [
    ("1", 1.0), ("0.5", 0.5), (" 2 ", 2.0), ("-1", None), ("soon", None), ("inf", None),
    ("Wed, 21 Oct 2015 07:28:00 GMT", None), (None, None),
])
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header) == expected
