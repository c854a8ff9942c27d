"""What one LLM call and the breaker show to metrics and traces.

Each call of :meth:`~rag_core.llm.client.LLMClient.complete` runs inside :func:`call_span`,
a client span named ``chat <model>`` with OpenTelemetry's ``gen_ai.*`` attributes (what
Langfuse and other LLM-observability backends read: model, token counts, finish reason),
and ends in :func:`observe_call` with its :class:`~rag_core.llm.calls.CallReport`: one
count by outcome, its retries, its tokens and duration, and the same facts on the span.
Never the prompt or the output: they hold the (redacted) question and passages, which no
trace backend is trusted with.

The breaker (:mod:`rag_core.llm.breaker`) sets the gauge ``rag_breaker_state`` (0 closed,
1 half-open, 2 open) whenever it learns its state, and adds each open period's length to
``rag_breaker_open_seconds_total`` once a probe ends it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import trace

from rag_core.common.metrics import (
    BREAKER_OPEN_SECONDS,
    BREAKER_STATE,
    LLM_CALL_SECONDS,
    LLM_CALLS,
    LLM_RETRIES,
    LLM_TOKENS,
)
from rag_core.common.tracing import open_span
from rag_core.llm.breaker_state import BreakerState
from rag_core.llm.calls import CallReport

__all__ = ["BREAKER_STATE_VALUES", "call_span", "count_open_period", "observe_call",
           "show_breaker_state"]

#: The gauge's value of each state a breaker can be known to be in.
BREAKER_STATE_VALUES = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1,
                        BreakerState.OPEN: 2}
_SYSTEM = "groq"  # the SDK in use; the endpoint may be any OpenAI-compatible service


@contextmanager
def call_span(model: str, *, max_tokens: int, temperature: float,
              json_output: bool) -> Iterator[trace.Span]:
    """The span of one LLM call (retries included), current for the ``with`` block."""
    with open_span(
            f"chat {model}", kind=trace.SpanKind.CLIENT,
            attributes={"gen_ai.operation.name": "chat", "gen_ai.system": _SYSTEM,
                        "gen_ai.request.model": model,
                        "gen_ai.request.max_tokens": max_tokens,
                        "gen_ai.request.temperature": temperature,
                        "gen_ai.output.type": "json" if json_output else "text"}) as span:
        yield span


def observe_call(report: CallReport) -> None:
    """Count the call and describe it on the current span (the call's own; a failed call
    raises through it, which marks it with the error's code)."""
    LLM_CALLS.labels(report.outcome.value).inc()
    if report.retries:
        LLM_RETRIES.inc(report.retries)
    LLM_CALL_SECONDS.observe(report.latency_ms / 1000.0)
    span = trace.get_current_span()
    span.set_attributes({"rag.llm.outcome": report.outcome.value,
                         "rag.llm.attempts": report.attempts,
                         "rag.llm.retries": report.retries,
                         "rag.breaker.state": report.breaker_state.value})
    if report.status_code is not None:
        span.set_attribute("http.response.status_code", report.status_code)
    completion = report.completion
    if completion is not None:
        LLM_TOKENS.labels("prompt").inc(completion.prompt_tokens)
        LLM_TOKENS.labels("completion").inc(completion.completion_tokens)
        span.set_attributes({"gen_ai.response.model": completion.model,
                             "gen_ai.usage.input_tokens": completion.prompt_tokens,
                             "gen_ai.usage.output_tokens": completion.completion_tokens})
        if completion.response_id is not None:
            span.set_attribute("gen_ai.response.id", completion.response_id)
        if completion.finish_reason is not None:
            span.set_attribute("gen_ai.response.finish_reasons", [completion.finish_reason])


def show_breaker_state(breaker: str, state: BreakerState) -> None:
    """Set the breaker's gauge; ``unknown`` (Redis unreachable) leaves the last reading."""
    value = BREAKER_STATE_VALUES.get(state)
    if value is not None:
        BREAKER_STATE.labels(breaker).set(value)


def count_open_period(breaker: str, opened_at: float, now: float) -> None:
    """Add one open period (from ``opened_at`` to ``now``, breaker clock) to the total; a
    period with no recorded start (a breaker opened by an older version) adds nothing."""
    if opened_at > 0 and now > opened_at:
        BREAKER_OPEN_SECONDS.labels(breaker).inc(now - opened_at)
