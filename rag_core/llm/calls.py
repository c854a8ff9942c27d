"""What one LLM call takes and gives: chat messages, completions and call reports.

Callers (the answerer, the audit log) read :class:`Completion` and :class:`CallReport`
without depending on the client (:mod:`rag_core.llm.client`) that produces them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, TypedDict

from rag_core.codes import ErrorCode
from rag_core.llm.breaker_state import BreakerState

__all__ = ["CallOutcome", "CallReport", "ChatMessage", "Completion"]


class ChatMessage(TypedDict):
    """One chat message, as the OpenAI-style API takes it."""

    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True)
class Completion:
    """A successful chat completion and what it cost.

    ``attempts`` counts HTTP attempts (1 = no retry); ``latency_ms`` is the whole call as its
    caller waited for it, retries and backoff included; ``breaker_state`` is the breaker's
    state when the call was admitted.
    """

    text: str
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    model: str
    attempts: int
    latency_ms: float
    finish_reason: str | None = None
    response_id: str | None = None
    breaker_state: BreakerState = BreakerState.CLOSED

    @property
    def retries(self) -> int:
        """Attempts after the first one."""
        return self.attempts - 1


class CallOutcome(StrEnum):
    """How one call ended, for the audit log: ``ok`` or the call's :class:`ErrorCode`."""

    OK = "ok"
    CIRCUIT_OPEN = ErrorCode.CIRCUIT_OPEN.value
    UNAVAILABLE = ErrorCode.LLM_UNAVAILABLE.value
    REJECTED = ErrorCode.REQUEST_REJECTED.value
    BAD_RESPONSE = ErrorCode.BAD_RESPONSE.value
    ERROR = ErrorCode.LLM_ERROR.value


@dataclass(frozen=True)
class CallReport:
    """Everything the audit log needs about one call, successful or not.

    ``breaker_state`` is the state the call met (``open``/``half_open`` when it was refused);
    ``breaker_state_after`` is the state after its outcome was recorded (``None`` when it was
    refused and nothing was recorded). ``waits_s`` are the backoff waits requested between
    attempts, in order.
    """

    breaker: str
    breaker_state: BreakerState
    breaker_state_after: BreakerState | None
    outcome: CallOutcome
    model: str
    attempts: int
    waits_s: tuple[float, ...]
    latency_ms: float
    status_code: int | None
    error: str | None
    completion: Completion | None

    @property
    def retries(self) -> int:
        """Attempts after the first one (0 when no request was sent)."""
        return max(0, self.attempts - 1)
