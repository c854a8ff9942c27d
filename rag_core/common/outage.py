"""The one outage policy at run time: what each Redis-backed control does when Redis fails.

Caches, the rate limiter, the token quota, the LLM-call slots and the circuit breaker all
depend on Redis. When a Redis call fails, each of them calls :meth:`Outages.handle` with its
:class:`Control` and the error, instead of deciding for itself: the configured
:class:`~rag_core.config.OutagePolicy` says whether the control carries on without Redis
(fail open), carries on with a per-process stand-in (local fallback: the rate limit) or
refuses the work (fail closed), and every case is counted in one metric,
``rag_redis_outage_total{control, operation, mode}``, and logged once per occurrence.

An outage has a start: the first failure this process saw for a control, kept until a Redis
call of that control succeeds again (:meth:`Outages.recovered`, which the limits report; the
caches, slots and breaker do not, since nothing depends on how long their outage lasts). The
token quota's grace period is measured from it, so "fail open for a minute" means a minute
of outage, not a minute per request; ``mode`` in the metric is what was decided
(``fail_closed`` once the grace period is over).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from enum import StrEnum

from prometheus_client import Counter

from rag_core.common.metrics import REGISTRY
from rag_core.config import OutageMode, OutagePolicy

_log = logging.getLogger(__name__)

REDIS_OUTAGES = Counter(
    "rag_redis_outage",
    "Redis failures met by a control, by what the outage policy made of them.",
    ["control", "operation", "mode"], registry=REGISTRY)

_DECISIONS = {OutageMode.FAIL_OPEN: "carrying on without it",
              OutageMode.LOCAL_FALLBACK: "enforcing it in this process",
              OutageMode.FAIL_CLOSED: "refusing"}


class Control(StrEnum):
    """The Redis-backed controls (the fields of :class:`~rag_core.config.OutagePolicy`)."""

    ANSWER_CACHE = "answer_cache"
    EMBEDDING_CACHE = "embedding_cache"
    RATE_LIMIT = "rate_limit"
    TOKEN_QUOTA = "token_quota"
    LLM_SLOTS = "llm_slots"
    BREAKER = "breaker"


class Outages:
    """Applies an :class:`OutagePolicy`; shared by every control of a process.

    ``clock`` (monotonic seconds) measures how long an outage has lasted; tests pass their
    own to cross the grace period without waiting for it.
    """

    def __init__(self, policy: OutagePolicy | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy or OutagePolicy()
        self.clock = clock
        self._down_since: dict[Control, float] = {}
        self._lock = threading.Lock()

    def mode(self, control: Control) -> OutageMode:
        """The configured mode of ``control`` (before any grace period runs out)."""
        mode: OutageMode = getattr(self.policy, control.value)
        return mode

    def down_for(self, control: Control) -> float | None:
        """Seconds since the first failure of the current outage of ``control``, or None."""
        with self._lock:
            since = self._down_since.get(control)
        return None if since is None else self.clock() - since

    def decide(self, control: Control) -> OutageMode:
        """What ``control`` does now, Redis being down: its mode, or fail closed once the
        token quota's grace period is over. Starts the outage's clock if it is not running."""
        now = self.clock()
        with self._lock:
            since = self._down_since.setdefault(control, now)
        mode = self.mode(control)
        if control is Control.TOKEN_QUOTA and mode is OutageMode.FAIL_OPEN \
                and now - since > self.policy.token_quota_grace_s:
            return OutageMode.FAIL_CLOSED
        return mode

    def handle(self, control: Control, operation: str, error: BaseException) -> bool:
        """Count and log a Redis failure; True when the control should carry on (without
        Redis, or with its local fallback). A caller that gets False refuses the work with
        its own typed error."""
        mode = self.decide(control)
        REDIS_OUTAGES.labels(control.value, operation, mode.value).inc()
        _log.warning("%s %s: Redis failed (%s); %s", control.value, operation, error,
                     _DECISIONS[mode])
        return mode is not OutageMode.FAIL_CLOSED

    def recovered(self, control: Control) -> float | None:
        """Redis answered ``control`` again: end its outage. Returns how long the outage had
        lasted, or None when there was none (the common case costs one dict lookup)."""
        if control not in self._down_since:
            return None
        with self._lock:
            since = self._down_since.pop(control, None)
        if since is None:
            return None
        lasted = self.clock() - since
        _log.warning("%s: Redis answers again after %.1f s", control.value, lasted)
        return lasted

    def carry_on_or_raise(self, control: Control, operation: str, error: BaseException) -> None:
        """:meth:`handle`, then re-raise ``error`` unless the control fails open."""
        if not self.handle(control, operation, error):
            raise error


def outage_count(control: Control, operation: str | None = None,
                 mode: OutageMode | None = None) -> float:
    """How many outages ``control`` met in this process (for reports and tests)."""
    total = 0.0
    for metric in REDIS_OUTAGES.collect():
        for sample in metric.samples:
            labels = sample.labels
            if sample.name.endswith("_total") and labels["control"] == control.value and (
                    operation is None or labels["operation"] == operation) and (
                    mode is None or labels["mode"] == mode.value):
                total += sample.value
    return total


#: The policy when none is configured: caches, LLM slots and the breaker fail open, the rate
#: limit falls back to a per-process window, the token quota fails open for a grace period.
DEFAULT_OUTAGES = Outages()
