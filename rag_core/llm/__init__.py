"""The LLM path: the groq client behind retries and a circuit breaker shared through Redis.

Typical use::

    breaker = RedisCircuitBreaker("groq", redis_client, BreakerPolicy())
    with LLMClient(LLMSettings(api_key=...), breaker=breaker) as llm:
        completion = llm.complete([{"role": "user", "content": "hi"}],
                                  response_format_json=False)

Its settings (:class:`~rag_core.config.LLMSettings`, ``RetryPolicy``, ``BreakerPolicy``)
live in :mod:`rag_core.config` and its errors in :mod:`rag_core.errors`. See
:mod:`rag_core.llm.client` for who retries and what the breaker counts, and
:mod:`rag_core.llm.breaker` for the breaker's semantics, its clock and its Redis-down
behaviour; the types they speak are in :mod:`rag_core.llm.calls` and
:mod:`rag_core.llm.breaker_state`.
"""

from rag_core.llm.breaker import RedisCircuitBreaker
from rag_core.llm.breaker_state import BreakerSnapshot, BreakerState, CircuitBreaker, Permit
from rag_core.llm.calls import CallOutcome, CallReport, ChatMessage, Completion
from rag_core.llm.client import LLMClient, is_transient, parse_retry_after

__all__ = [
    "BreakerSnapshot",
    "BreakerState",
    "CallOutcome",
    "CallReport",
    "ChatMessage",
    "CircuitBreaker",
    "Completion",
    "LLMClient",
    "Permit",
    "RedisCircuitBreaker",
    "is_transient",
    "parse_retry_after",
]
