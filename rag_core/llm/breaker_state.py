"""What the client and the breaker agree on: breaker states, permits and the protocol.

:class:`~rag_core.llm.client.LLMClient` needs only the :class:`CircuitBreaker` protocol and
the :class:`Permit` it hands out, not the Redis implementation
(:class:`~rag_core.llm.breaker.RedisCircuitBreaker`); the states also label every
:class:`~rag_core.llm.calls.CallReport`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

__all__ = ["BreakerSnapshot", "BreakerState", "CircuitBreaker", "Permit"]


class BreakerState(StrEnum):
    """State of a breaker as seen by one call."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    #: Redis was unreachable: the call was let through without a decision.
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Permit:
    """Leave to make one call, returned by :meth:`CircuitBreaker.acquire`.

    ``state`` is the breaker state when the call was admitted (``half_open`` means this call
    is a probe); the audit log records it. Hand the permit back to ``record``.
    """

    breaker: str
    state: BreakerState
    probe_token: str | None = None

    @property
    def is_probe(self) -> bool:
        """True when this call is the half-open probe whose outcome decides the breaker."""
        return self.probe_token is not None


@dataclass(frozen=True)
class BreakerSnapshot:
    """A read-only view of a breaker, for dashboards, ``rag doctor`` and tests."""

    name: str
    state: BreakerState
    open_until: float | None
    calls: int
    failures: int
    probes_in_flight: int

    @property
    def failure_rate(self) -> float:
        """Failures over calls in the current window (0 when there were no calls)."""
        return self.failures / self.calls if self.calls else 0.0


class CircuitBreaker(Protocol):
    """What :class:`~rag_core.llm.client.LLMClient` needs from a breaker."""

    @property
    def name(self) -> str:
        """The breaker's name, shown in errors and metrics."""
        ...

    def acquire(self) -> Permit:
        """A permit for one call, or :class:`CircuitOpenError` when the call must not run."""
        ...

    def record(self, permit: Permit, *, success: bool) -> BreakerState:
        """Record the outcome of a call admitted with ``permit``; returns the state after."""
        ...
