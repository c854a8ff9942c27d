"""The one outage policy at run time: what each Redis-backed control does when Redis fails.

Caches, the rate limiter, the token quota, the LLM-call slots and the circuit breaker all
depend on Redis. When a Redis call fails, each of them calls :meth:`Outages.handle` with its
:class:`Control` and the error, instead of deciding for itself: the configured
:class:`~rag_core.config.OutagePolicy` says whether the control carries on without Redis
(fail open) or refuses the work (fail closed), and every case is counted in one metric,
``rag_redis_outage_total{control, operation, mode}``, and logged once per occurrence.
"""

from __future__ import annotations

import logging
from enum import StrEnum

from prometheus_client import Counter

from rag_core.common.metrics import REGISTRY
from rag_core.config import OutageMode, OutagePolicy

_log = logging.getLogger(__name__)

REDIS_OUTAGES = Counter(
    "rag_redis_outage",
    "Redis failures met by a control, by what the outage policy made of them.",
    ["control", "operation", "mode"], registry=REGISTRY)


class Control(StrEnum):
    """The Redis-backed controls (the fields of :class:`~rag_core.config.OutagePolicy`)."""

    ANSWER_CACHE = "answer_cache"
    EMBEDDING_CACHE = "embedding_cache"
    RATE_LIMIT = "rate_limit"
    TOKEN_QUOTA = "token_quota"
    LLM_SLOTS = "llm_slots"
    BREAKER = "breaker"


class Outages:
    """Applies an :class:`OutagePolicy`; shared by every control of a process."""

    def __init__(self, policy: OutagePolicy | None = None) -> None:
        self.policy = policy or OutagePolicy()

    def mode(self, control: Control) -> OutageMode:
        mode: OutageMode = getattr(self.policy, control.value)
        return mode

    def handle(self, control: Control, operation: str, error: BaseException) -> bool:
        """Count and log a Redis failure; True when the control should carry on (fail open).

        A caller that gets False refuses the work with its own typed error.
        """
        mode = self.mode(control)
        REDIS_OUTAGES.labels(control.value, operation, mode.value).inc()
        _log.warning("%s %s: Redis failed (%s); %s", control.value, operation, error,
                     "carrying on without it" if mode is OutageMode.FAIL_OPEN else "refusing")
        return mode is OutageMode.FAIL_OPEN

    def carry_on_or_raise(self, control: Control, operation: str, error: BaseException) -> None:
        """:meth:`handle`, then re-raise ``error`` unless the control fails open."""
        if not self.handle(control, operation, error):
            raise error


def outage_count(control: Control, operation: str | None = None) -> float:
    """How many outages ``control`` met in this process (for reports and tests)."""
    total = 0.0
    for metric in REDIS_OUTAGES.collect():
        for sample in metric.samples:
            labels = sample.labels
            if sample.name.endswith("_total") and labels["control"] == control.value and (
                    operation is None or labels["operation"] == operation):
                total += sample.value
    return total


#: The policy when none is configured: every control fails open (the platform's behaviour
#: since the query path shipped; the hardening issue changes it in one place).
DEFAULT_OUTAGES = Outages()
