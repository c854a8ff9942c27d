"""Exceptions of the LLM path, a branch of :class:`rag_core.errors.RagCoreError`.

Callers catch :class:`LLMError` for "the model gave us no usable answer" and a subclass when
they act differently: :class:`CircuitOpenError` means *no request was sent* (fail fast, maybe
serve a fallback), :class:`LLMUnavailableError` means requests were sent and all failed
transiently, :class:`LLMRequestRejectedError` means the request itself is wrong (retrying is
pointless), :class:`LLMResponseError` means the answer arrived but cannot be used. Each error
carries the offending value as attributes and in its message; groq's own exceptions never
leave :mod:`rag_core.llm` (the original is kept as ``__cause__``).
"""

from __future__ import annotations

from rag_core.errors import RagCoreError

__all__ = [
    "RAW_TEXT_LIMIT",
    "CircuitOpenError",
    "LLMError",
    "LLMRequestRejectedError",
    "LLMResponseError",
    "LLMUnavailableError",
]

#: Raw model output and error bodies are cut to this many characters in errors: enough to see
#: what went wrong in a log line, not so much that a runaway answer floods the log.
RAW_TEXT_LIMIT = 500


def truncate(text: str, limit: int = RAW_TEXT_LIMIT) -> str:
    """``text`` cut to ``limit`` characters, marked with the original length when cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text)} chars]"


class LLMError(RagCoreError):
    """Base of every error raised by :mod:`rag_core.llm`."""


class LLMUnavailableError(LLMError):
    """Every attempt failed with a transient error (429, 5xx, timeout, connection error).

    ``attempts`` is the number of HTTP attempts made; ``last_status`` is the HTTP status of
    the last attempt (``None`` for a timeout or connection error); ``last_error`` describes
    the last failure and the original exception is chained as ``__cause__``.
    """

    def __init__(self, *, model: str, attempts: int, last_status: int | None,
                 last_error: str) -> None:
        self.model = model
        self.attempts = attempts
        self.last_status = last_status
        self.last_error = last_error
        status = f"HTTP {last_status}" if last_status is not None else "no HTTP status"
        super().__init__(
            f"LLM {model!r} unavailable after {attempts} attempt(s); last failure: "
            f"{status}: {last_error}"
        )


class LLMRequestRejectedError(LLMError):
    """The API refused the request itself (400, 401, 403, 404, 422, ...): never retried."""

    def __init__(self, *, model: str, status_code: int, body: str) -> None:
        self.model = model
        self.status_code = status_code
        self.body = truncate(body)
        super().__init__(f"LLM {model!r} rejected the request with HTTP {status_code}: "
                         f"{self.body}")


class CircuitOpenError(LLMError):
    """The circuit breaker ``name`` is open: the call was refused without any request.

    ``retry_after_s`` is how long the breaker stays open (or, while a half-open probe is in
    flight, an upper bound: the probe's lease), so a caller can tell its own caller when to
    come back.
    """

    def __init__(self, name: str, retry_after_s: float, state: str = "open") -> None:
        self.name = name
        self.retry_after_s = max(0.0, retry_after_s)
        self.state = state
        super().__init__(
            f"circuit breaker {name!r} is {state}: call refused without a request; "
            f"retry after {self.retry_after_s:.1f}s"
        )


class LLMResponseError(LLMError):
    """The response arrived but is unusable: a broken envelope or output that is not JSON.

    ``raw_text`` is the offending text (the HTTP body for a broken envelope, the message
    content for bad output), truncated to :data:`RAW_TEXT_LIMIT` characters.
    """

    def __init__(self, *, model: str, reason: str, raw_text: str) -> None:
        self.model = model
        self.reason = reason
        self.raw_text = truncate(raw_text)
        super().__init__(f"LLM {model!r} returned an unusable response ({reason}): "
                         f"{self.raw_text!r}")
