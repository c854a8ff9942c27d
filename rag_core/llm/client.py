"""The one way rag_core calls the LLM: the groq SDK behind our retries and a shared breaker.

Who retries
-----------
The SDK retries twice by default (and also on 408/409 and whenever the server sends
``x-should-retry: true``). Two retry layers would multiply attempts (3 x 3 = 9 requests per
call) and hide them from the breaker and the audit log, so the SDK is built with
``max_retries=0`` and tenacity applies :class:`~rag_core.config.RetryPolicy`: at most
``attempts`` HTTP attempts, retrying only 429, 5xx, timeouts and connection errors (never
400/401/403/404/422: the same request would fail the same way), waiting the ``Retry-After``
header's seconds when the server sends one (capped), exponential backoff with jitter
otherwise.

What the breaker counts
-----------------------
One outcome per *call* (as the seed plan does), not per HTTP attempt: a call that succeeds
on its second attempt served its user, and a single slow call must not count three times
towards the minimum volume. A call counts as a failure when the service failed it: retries
exhausted (:class:`LLMUnavailableError`), a broken response envelope, or an unexpected error.
A request the API rejected (4xx other than 429) and output that is not the JSON we asked for
count as successes: the service answered, and opening the breaker would not help. The permit
is taken once, before the first attempt; a call already in its retries when another process
opens the breaker finishes them. The half-open probe makes a single attempt, so "one probe"
is one request and a failing probe re-opens the breaker at once.

Seeing what happened
--------------------
Each :class:`Completion` carries ``attempts``, ``retries`` and ``breaker_state`` (the state
when the call was admitted: ``closed``, ``half_open`` for the probe, ``unknown`` when Redis
was unreachable). For failures too, every call (refused, failed or successful) produces a
:class:`CallReport`, handed to the ``on_call`` hook and kept as :attr:`LLMClient.last_report`
(per thread) — the audit log's source. Both types live in :mod:`rag_core.llm.calls`. The
report also feeds the metrics and the call's span (:mod:`rag_core.llm.call_telemetry`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, cast

import groq
import httpx
from groq.types.chat import ChatCompletion, ChatCompletionMessageParam
from tenacity import RetryCallState, RetryError, Retrying, retry_if_exception, stop_after_attempt

from rag_core.config import LLMSettings, RetryPolicy
from rag_core.errors import (
    CircuitOpenError,
    ConfigurationError,
    LLMError,
    LLMRequestRejectedError,
    LLMResponseError,
    LLMUnavailableError,
    truncate,
)
from rag_core.llm.breaker_state import BreakerState, CircuitBreaker, Permit
from rag_core.llm.call_telemetry import call_span, observe_call
from rag_core.llm.calls import CallOutcome, CallReport, ChatMessage, Completion

__all__ = [
    "LLMClient",
    "is_transient",
    "parse_retry_after",
]

log = logging.getLogger(__name__)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header in its seconds form, else ``None``.

    The HTTP-date form is ignored on purpose (it depends on clocks agreeing; Groq sends
    seconds) and so are negative, infinite and non-numeric values: the normal backoff
    applies then.
    """
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def is_transient(exc: BaseException) -> bool:
    """Whether a failed attempt is worth retrying: 429, 5xx, timeouts, connection errors."""
    if isinstance(exc, groq.APIStatusError):
        return exc.status_code == 429 or exc.status_code >= 500
    return isinstance(exc, groq.APIConnectionError)  # APITimeoutError is a subclass


@dataclass
class _CallState:
    """Mutable bookkeeping of one call, read by the report even when the call fails."""

    attempts: int = 0
    waits: list[float] = field(default_factory=list)
    status_code: int | None = None


class LLMClient:
    """Chat completions through groq with retries, a shared breaker and a report per call.

    Thread-safe: one instance serves every thread of a process (the SDK's httpx client pools
    connections). Close it (or use it as a context manager) to release the pool.

    ``sleep`` and ``rng`` are injectable so tests can observe the requested backoff waits
    without waiting; ``http_client`` lets a caller tune the httpx pool (its own timeout is
    replaced by ``config.timeout_s``).
    """

    def __init__(
        self,
        config: LLMSettings,
        *,
        breaker: CircuitBreaker,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        on_call: Callable[[CallReport], None] | None = None,
        http_client: httpx.Client | None = None,
    ) -> None:
        self.config = config
        self.retry_policy = retry or RetryPolicy()
        self.breaker = breaker
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._on_call = on_call
        self._local = threading.local()
        api_key = config.api_key.get_secret_value() if config.api_key is not None else None
        try:
            self._client = groq.Groq(api_key=api_key, base_url=config.base_url, max_retries=0,
                                     timeout=config.timeout_s, http_client=http_client)
        except groq.GroqError as exc:
            raise ConfigurationError("llm.api_key", None,
                                     f"no API key given and GROQ_API_KEY is not set ({exc})"
                                     ) from exc

    # --- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        """Close the SDK's HTTP connection pool."""
        self._client.close()

    def __enter__(self) -> LLMClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def last_report(self) -> CallReport | None:
        """The report of this thread's most recent call through this client."""
        report: CallReport | None = getattr(self._local, "report", None)
        return report

    # --- the call ----------------------------------------------------------------------------
    def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        response_format_json: bool = False,
        max_tokens: int | None = None,
    ) -> Completion:
        """One chat completion, retried and guarded by the breaker.

        With ``response_format_json`` the API is asked for a JSON object
        (``response_format={"type": "json_object"}``) and the returned text is checked to be
        one. Raises :class:`CircuitOpenError` (no request sent), :class:`LLMUnavailableError`
        (transient failures exhausted the attempts), :class:`LLMRequestRejectedError` (a 4xx
        that retrying cannot fix) or :class:`LLMResponseError` (unusable response).
        """
        with call_span(self.config.model, json_output=response_format_json,
                       max_tokens=max_tokens if max_tokens is not None else self.config.max_tokens,
                       temperature=self.config.temperature):
            return self._complete(messages, response_format_json, max_tokens)

    def _complete(self, messages: Sequence[ChatMessage], response_format_json: bool,
                  max_tokens: int | None) -> Completion:
        started = time.monotonic()
        model = self.config.model
        try:
            permit = self.breaker.acquire()
        except CircuitOpenError as exc:
            self._report(CallReport(
                breaker=self.breaker.name, breaker_state=BreakerState(exc.state),
                breaker_state_after=None, outcome=CallOutcome.CIRCUIT_OPEN, model=model,
                attempts=0, waits_s=(), latency_ms=_ms_since(started), status_code=None,
                error=str(exc), completion=None))
            raise
        state = _CallState()
        outcome = CallOutcome.ERROR
        service_ok = False
        completion: Completion | None = None
        error: str | None = None
        state_after: BreakerState | None = None
        try:
            raw = self._send(messages, response_format_json, max_tokens, permit, state)
            text, parsed = self._read_envelope(raw, model)
            service_ok = True  # the service answered; what follows judges the content
            if response_format_json:
                _check_json_object(text, model)
            completion = _completion(parsed, text, state.attempts, _ms_since(started),
                                     permit.state, model)
            outcome = CallOutcome.OK
            return completion
        except LLMUnavailableError as exc:
            outcome, error = CallOutcome.UNAVAILABLE, str(exc)
            raise
        except LLMRequestRejectedError as exc:
            outcome, error, service_ok = CallOutcome.REJECTED, str(exc), True
            raise
        except LLMResponseError as exc:
            outcome, error = CallOutcome.BAD_RESPONSE, str(exc)
            raise
        except BaseException as exc:
            error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            state_after = self.breaker.record(permit, success=service_ok)
            self._report(CallReport(
                breaker=self.breaker.name, breaker_state=permit.state,
                breaker_state_after=state_after, outcome=outcome, model=model,
                attempts=state.attempts, waits_s=tuple(state.waits),
                latency_ms=_ms_since(started), status_code=state.status_code, error=error,
                completion=completion))

    # --- internals ---------------------------------------------------------------------------
    def _send(self, messages: Sequence[ChatMessage], response_format_json: bool,
              max_tokens: int | None, permit: Permit,
              state: _CallState) -> groq.APIResponse[ChatCompletion]:
        config = self.config
        kwargs: dict[str, Any] = {
            "model": config.model,
            "messages": cast(Iterable[ChatCompletionMessageParam], list(messages)),
            "temperature": config.temperature,
            "max_completion_tokens": max_tokens if max_tokens is not None else config.max_tokens,
        }
        if response_format_json:
            kwargs["response_format"] = {"type": "json_object"}
        create = self._client.chat.completions.with_raw_response.create

        def attempt() -> groq.APIResponse[ChatCompletion]:
            state.attempts += 1
            try:
                response = create(**kwargs)
            except groq.APIStatusError as exc:
                state.status_code = exc.status_code
                raise
            except groq.APIConnectionError:
                state.status_code = None
                raise
            state.status_code = response.http_response.status_code
            return response

        def sleep(seconds: float) -> None:
            state.waits.append(seconds)
            self._sleep(seconds)

        retrying = Retrying(
            # The probe decides the breaker with one request; retrying it would only delay
            # the verdict while every other caller is being refused.
            stop=stop_after_attempt(1 if permit.is_probe else self.retry_policy.attempts),
            wait=self._wait_s,
            retry=retry_if_exception(is_transient),
            sleep=sleep,
            before_sleep=self._log_retry,
            reraise=False,
        )
        try:
            return retrying(attempt)
        except RetryError as exc:
            last = exc.last_attempt.exception()
            status = last.status_code if isinstance(last, groq.APIStatusError) else None
            raise LLMUnavailableError(model=config.model, attempts=state.attempts,
                                      last_status=status, last_error=_describe(last)) from last
        except groq.APIStatusError as exc:
            raise LLMRequestRejectedError(model=config.model, status_code=exc.status_code,
                                          body=_body_text(exc)) from exc
        except groq.GroqError as exc:
            raise LLMError(f"LLM {config.model!r} call failed: {_describe(exc)}") from exc

    def _wait_s(self, retry_state: RetryCallState) -> float:
        """Seconds before the next attempt: Retry-After if the server set one, else backoff."""
        policy = self.retry_policy
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        if policy.honour_retry_after and isinstance(exc, groq.APIStatusError):
            retry_after = parse_retry_after(exc.response.headers.get("retry-after"))
            if retry_after is not None:
                return min(retry_after, policy.max_retry_after_s)
        exponent = retry_state.attempt_number - 1
        base = min(policy.max_backoff_s, policy.initial_backoff_s * 2.0 ** min(exponent, 60))
        return self._rng.uniform(base / 2, base) if policy.jitter else base

    def _log_retry(self, retry_state: RetryCallState) -> None:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        log.info("LLM attempt %d failed (%s); retrying in %.2fs", retry_state.attempt_number,
                 _describe(exc), retry_state.upcoming_sleep)

    @staticmethod
    def _read_envelope(raw: groq.APIResponse[ChatCompletion],
                       model: str) -> tuple[str, ChatCompletion]:
        """The message text and parsed envelope, or :class:`LLMResponseError` (broken body)."""
        body = raw.http_response.text
        try:
            parsed = raw.parse()
            text = parsed.choices[0].message.content
            usage = parsed.usage
            usage_ok = usage is not None and all(
                isinstance(getattr(usage, name, None), int)
                for name in ("prompt_tokens", "completion_tokens", "total_tokens"))
        except (ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
            raise LLMResponseError(model=model, reason=f"malformed response body "
                                   f"({type(exc).__name__})", raw_text=body) from exc
        if not isinstance(text, str):
            raise LLMResponseError(model=model, reason="response has no message content",
                                   raw_text=body)
        if not usage_ok:
            raise LLMResponseError(model=model, reason="response has no token usage",
                                   raw_text=body)
        return text, parsed

    def _report(self, report: CallReport) -> None:
        self._local.report = report
        observe_call(report)
        if self._on_call is None:
            return
        try:
            self._on_call(report)
        except Exception:
            # The completion is paid for: a broken audit sink must not throw it away. The
            # sink owns its own durability (spooling); we make the failure loud.
            log.exception("on_call hook failed for an LLM call on breaker %r", report.breaker)


def _completion(parsed: ChatCompletion, text: str, attempts: int, latency_ms: float,
                breaker_state: BreakerState, fallback_model: str) -> Completion:
    usage = parsed.usage
    assert usage is not None  # checked by _read_envelope
    return Completion(
        text=text, prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens, model=parsed.model or fallback_model,
        attempts=attempts, latency_ms=latency_ms,
        finish_reason=getattr(parsed.choices[0], "finish_reason", None),
        response_id=parsed.id, breaker_state=breaker_state)


def _check_json_object(text: str, model: str) -> None:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise LLMResponseError(model=model, reason=f"output is not valid JSON ({exc})",
                               raw_text=text) from exc
    if not isinstance(value, dict):
        raise LLMResponseError(model=model, reason="output is JSON but not an object",
                               raw_text=text)


def _body_text(exc: groq.APIStatusError) -> str:
    with contextlib.suppress(Exception):
        return exc.response.text
    return str(exc.body)


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "no exception"
    if isinstance(exc, groq.APIStatusError):
        return f"{type(exc).__name__} HTTP {exc.status_code}: {truncate(_body_text(exc), 200)}"
    return f"{type(exc).__name__}: {exc}"


def _ms_since(started: float) -> float:
    return (time.monotonic() - started) * 1000.0
