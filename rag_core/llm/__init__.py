"""The LLM path: the groq client behind retries and a circuit breaker shared through Redis.

Typical use::

    breaker = RedisCircuitBreaker("groq", redis_client, BreakerPolicy())
    with LLMClient(LLMConfig(api_key=...), breaker=breaker) as llm:
        completion = llm.complete([{"role": "user", "content": "hi"}],
                                  response_format_json=False)

See :mod:`rag_core.llm.client` for who retries and what the breaker counts, and
:mod:`rag_core.llm.breaker` for the breaker's semantics, its clock and its Redis-down
behaviour.
"""

from rag_core.llm.breaker import (
    BreakerSnapshot,
    BreakerState,
    CircuitBreaker,
    Permit,
    RedisCircuitBreaker,
)
from rag_core.llm.client import (
    CallOutcome,
    CallReport,
    ChatMessage,
    Completion,
    LLMClient,
    is_transient,
    parse_retry_after,
)
from rag_core.llm.errors import (
    CircuitOpenError,
    LLMError,
    LLMRequestRejectedError,
    LLMResponseError,
    LLMUnavailableError,
)
from rag_core.llm.policy import BreakerPolicy, LLMConfig, RetryPolicy

__all__ = [
    "BreakerPolicy",
    "BreakerSnapshot",
    "BreakerState",
    "CallOutcome",
    "CallReport",
    "ChatMessage",
    "CircuitBreaker",
    "CircuitOpenError",
    "Completion",
    "LLMClient",
    "LLMConfig",
    "LLMError",
    "LLMRequestRejectedError",
    "LLMResponseError",
    "LLMUnavailableError",
    "Permit",
    "RedisCircuitBreaker",
    "RetryPolicy",
    "is_transient",
    "parse_retry_after",
]
