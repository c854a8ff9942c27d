"""Errors of the LLM path: the model gave no usable answer, and why."""

from __future__ import annotations

from rag_core.codes import ErrorCode
from rag_core.errors.base import RagCoreError, truncate


class LLMError(RagCoreError):
    """The model gave no usable answer. Subclasses say why; groq's own exceptions never leave
    ``rag_core.llm`` (the original is kept as ``__cause__``)."""

    code = ErrorCode.LLM_ERROR


class LLMUnavailableError(LLMError):
    """Every attempt failed with a transient error (429, 5xx, timeout, connection error).

    ``attempts`` is the number of HTTP attempts made; ``last_status`` is the HTTP status of
    the last attempt (``None`` for a timeout or connection error).
    """

    code = ErrorCode.LLM_UNAVAILABLE

    def __init__(self, *, model: str, attempts: int, last_status: int | None,
                 last_error: str) -> None:
        self.model = model
        self.attempts = attempts
        self.last_status = last_status
        self.last_error = last_error
        status = f"HTTP {last_status}" if last_status is not None else "no HTTP status"
        super().__init__(f"LLM {model!r} unavailable after {attempts} attempt(s); last "
                         f"failure: {status}: {last_error}")


class LLMRequestRejectedError(LLMError):
    """The API refused the request itself (400, 401, 403, 404, 422, ...): never retried."""

    code = ErrorCode.REQUEST_REJECTED

    def __init__(self, *, model: str, status_code: int, body: str) -> None:
        self.model = model
        self.status_code = status_code
        self.body = truncate(body)
        super().__init__(f"LLM {model!r} rejected the request with HTTP {status_code}: "
                         f"{self.body}")


class CircuitOpenError(LLMError):
    """The circuit breaker ``name`` is open: the call was refused without any request.

    ``retry_after_s`` is how long the breaker stays open (or, while a half-open probe is in
    flight, an upper bound: the probe's lease).
    """

    code = ErrorCode.CIRCUIT_OPEN

    def __init__(self, name: str, retry_after_s: float, state: str = "open") -> None:
        self.name = name
        self.retry_after_s = max(0.0, retry_after_s)
        self.state = state
        super().__init__(f"circuit breaker {name!r} is {state}: call refused without a "
                         f"request; retry after {self.retry_after_s:.1f}s")


class LLMResponseError(LLMError):
    """The response arrived but is unusable: a broken envelope or output that is not JSON.

    ``raw_text`` is the offending text, truncated to :data:`RAW_TEXT_LIMIT` characters.
    """

    code = ErrorCode.BAD_RESPONSE

    def __init__(self, *, model: str, reason: str, raw_text: str) -> None:
        self.model = model
        self.reason = reason
        self.raw_text = truncate(raw_text)
        super().__init__(f"LLM {model!r} returned an unusable response ({reason}): "
                         f"{self.raw_text!r}")
