"""A circuit breaker whose state lives in Redis, so every worker process shares one breaker.

Why our own and not a library
-----------------------------
``pybreaker`` is the well-kept Python breaker with a Redis storage, but it is not installed in
this project and its semantics do not fit: it opens after ``fail_max`` *consecutive* failures,
whereas the seed plan wants a failure *rate* (>= 50% of the calls in a 60 s sliding window,
with a minimum volume of 10 calls). Its Redis storage also reads and writes state with
separate commands (no atomic half-open probe slot), so two processes can both probe. The
breaker here is ~one screen of Lua (:mod:`rag_core.llm.breaker_scripts`), every transition
atomic inside Redis; its states and permits are in :mod:`rag_core.llm.breaker_state`.

Semantics
---------
- **closed**: calls pass. Each call's outcome goes into per-second buckets (a Redis hash,
  fields ``t:<second>`` / ``f:<second>``; buckets older than ``window_s`` are pruned on write).
  After *every* recorded outcome (success or failure, so the order of outcomes does not
  matter) the script checks: ``calls >= minimum_calls`` and
  ``failures / calls >= failure_rate_threshold`` -> **open**.
- **open** until ``open_until = opened_at + open_s``: calls are refused with
  :class:`~rag_core.errors.CircuitOpenError` without any request. Outcomes of calls that
  were admitted before it opened are ignored.
- **half-open** (open and ``open_until`` has passed): ``half_open_max_calls`` probe slots
  (one by default) are claimed atomically; every other caller gets ``CircuitOpenError``. A
  probe's success closes the breaker and clears the window; its failure re-opens it for
  another ``open_s``. A probe slot is a lease (``probe_lease_s``): if the probing process
  dies, another caller may probe once the lease ends.

Every decision this process meets sets the gauge ``rag_breaker_state{breaker}`` (0 closed,
1 half-open, 2 open), and the process whose probe ends an open period adds its length to
``rag_breaker_open_seconds_total`` (:mod:`rag_core.llm.call_telemetry`).

Keys are ``rag:breaker:{<name>}:state`` (hash), ``...:window`` (hash) and ``...:probes``
(sorted set of probe tokens scored by lease end). The braces are a Redis Cluster hash tag: the
three keys of one breaker share a slot, which multi-key Lua scripts require.

Time
----
All breaker decisions use the injected ``clock`` (default :func:`time.time`), passed into the
scripts as an argument; Redis server time is never used, so tests can move time forward
without sleeping. The probe lease is therefore a sorted-set score in ``clock`` time rather than
``SET NX PX`` (which would run on the Redis server's clock). In production every process uses
``time.time``: hosts must be NTP-synchronised, and a skew of a second is small against 60 s
windows. Redis key TTLs (real time) only garbage-collect idle windows and never decide state.

Redis down
----------
The breaker protects the product from a failing LLM; it must not become a second single
point of failure. If Redis cannot be reached (connection refused, socket timeout, any
``RedisError``), :meth:`RedisCircuitBreaker.acquire` lets the call through with a permit in
state ``unknown`` (fail *open for traffic*), counts it in ``rag_llm_breaker_bypassed_total``
and :attr:`RedisCircuitBreaker.bypassed_calls`, and logs one warning. For ``redis_backoff_s``
(1 s) after an error Redis is not tried again, so an outage costs each call nothing rather
than a socket timeout. The caller's Redis client sets the socket timeouts: give it tight ones
(``Settings.redis_socket_timeout_s``) and *no redis-py retries*: a redis-py 8.1 client built
with ``redis.Redis(host=..., port=...)`` retries 10 times with exponential backoff by
default, which turned one refused connection into a 3-4 s stall here (``from_url`` clients
did not retry). :func:`fail_fast_redis` builds a suitable client; the breaker logs a warning
when it is handed one that retries.
"""

from __future__ import annotations

import logging
import math
import re
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from prometheus_client import Counter
from redis.retry import Retry

from rag_core.common.metrics import REGISTRY
from rag_core.common.outage import DEFAULT_OUTAGES, Control, Outages
from rag_core.config import BreakerPolicy, OutageMode
from rag_core.errors import CircuitOpenError, ConfigurationError
from rag_core.llm.breaker_scripts import ACQUIRE_LUA, RECORD_LUA
from rag_core.llm.breaker_state import BreakerSnapshot, BreakerState, Permit
from rag_core.llm.call_telemetry import count_open_period, show_breaker_state
from rag_core.redis.client import fail_fast_redis

__all__ = [
    "BREAKER_BYPASSED",
    "BREAKER_REJECTED",
    "BREAKER_TRANSITIONS",
    "RedisCircuitBreaker",
    "fail_fast_redis",
]

log = logging.getLogger(__name__)

BREAKER_BYPASSED = Counter(
    "rag_llm_breaker_bypassed",
    "LLM calls let through without a breaker decision because Redis was unreachable.",
    ["breaker"], registry=REGISTRY,
)
BREAKER_REJECTED = Counter(
    "rag_llm_breaker_rejected",
    "LLM calls refused without a request because the circuit breaker was open.",
    ["breaker"], registry=REGISTRY,
)
BREAKER_TRANSITIONS = Counter(
    "rag_llm_breaker_transitions",
    "Circuit breaker state changes caused by this process (to=open|closed).",
    ["breaker", "to"], registry=REGISTRY,
)

_NAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")
# Thresholds are compared in integer parts-per-million inside Lua: 0.3 * 10 is
# 3.0000000000000004 in floating point, and "3 of 10 failed" must trip a 30% threshold.
_PPM = 1_000_000


def _client_retries(client: redis.Redis) -> int:
    get_retry = getattr(client, "get_retry", None)
    retry = get_retry() if callable(get_retry) else None
    return int(retry.get_retries()) if isinstance(retry, Retry) else 0


def _text(value: Any) -> str:
    """A Redis reply as ``str`` whether or not the client decodes responses."""
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisCircuitBreaker:
    """The shared breaker ``name``, stored in the Redis behind ``client``.

    Instances are cheap and thread-safe; every process (and thread) that builds one with the
    same name and Redis shares the same breaker. ``clock`` returns epoch seconds and must be
    the same kind of clock in every process sharing the breaker (see the module docstring).
    """

    def __init__(
        self,
        name: str,
        client: redis.Redis,
        policy: BreakerPolicy | None = None,
        *,
        clock: Callable[[], float] = time.time,
        key_prefix: str = "rag:breaker",
        redis_backoff_s: float = 1.0,
        outages: Outages = DEFAULT_OUTAGES,
    ) -> None:
        if not _NAME_RE.fullmatch(name):
            raise ConfigurationError("breaker name", name,
                                     "use 1-100 characters from A-Z a-z 0-9 _ . : -")
        self._name = name
        self._redis = client
        self.policy = policy or BreakerPolicy()
        self._clock = clock
        self._redis_backoff_s = redis_backoff_s
        self._outages = outages
        base = f"{key_prefix}:{{{name}}}"
        self.state_key = f"{base}:state"
        self.window_key = f"{base}:window"
        self.probes_key = f"{base}:probes"
        if _client_retries(client) > 0:
            log.warning("circuit breaker %r: its Redis client retries failed commands (%d "
                        "retries); an unreachable Redis will stall LLM calls for seconds "
                        "before the breaker fails open. Use rag_core.llm.breaker."
                        "fail_fast_redis() or pass retry=Retry(NoBackoff(), 0).",
                        name, _client_retries(client))
        self._acquire_script = client.register_script(ACQUIRE_LUA)
        self._record_script = client.register_script(RECORD_LUA)
        self._lock = threading.Lock()
        self._redis_down_until = 0.0  # time.monotonic(): local, not breaker time
        self._bypassed = 0
        self._redis_errors = 0

    @property
    def name(self) -> str:
        """The breaker's name (shared by every instance that uses it)."""
        return self._name

    @property
    def bypassed_calls(self) -> int:
        """Calls this instance let through without a decision because Redis was down.

        Also counted in ``rag_llm_breaker_bypassed_total``; calls refused instead (the
        outage policy failing closed) are not among them.
        """
        return self._bypassed

    @property
    def redis_errors(self) -> int:
        """Redis errors this instance met.

        Each one was handed to the outage policy, which decides whether the calls meanwhile
        fail open (``bypassed_calls``) or closed.
        """
        return self._redis_errors

    # --- the call path ---------------------------------------------------------------------
    def acquire(self) -> Permit:
        """Admit one call, or raise :class:`CircuitOpenError` (no request must be sent).

        In the half-open state exactly ``half_open_max_calls`` callers across all processes
        get a probe permit; the others are refused. Redis trouble admits the call (state
        ``unknown``): losing the breaker is better than losing every LLM call.
        """
        if self._redis_is_backing_off():
            return self._bypass_or_refuse()
        token = secrets.token_hex(8)
        policy = self.policy
        try:
            reply = self._acquire_script(
                keys=[self.state_key, self.probes_key],
                args=[repr(self._clock()), repr(policy.effective_probe_lease_s),
                      policy.half_open_max_calls, token],
            )
        except (redis.RedisError, OSError) as exc:
            self._redis_failed("acquire", exc)
            return self._bypass_or_refuse()
        state, wait = _text(reply[0]), float(_text(reply[1]))
        if state == "closed":
            show_breaker_state(self._name, BreakerState.CLOSED)
            return Permit(self._name, BreakerState.CLOSED)
        if state == "half_open":
            show_breaker_state(self._name, BreakerState.HALF_OPEN)
            return Permit(self._name, BreakerState.HALF_OPEN, probe_token=token)
        BREAKER_REJECTED.labels(self._name).inc()
        shown = BreakerState.OPEN if state == "open" else BreakerState.HALF_OPEN
        show_breaker_state(self._name, shown)
        raise CircuitOpenError(self._name, wait, state=shown.value)

    def record(self, permit: Permit, *, success: bool) -> BreakerState:
        """Record the outcome of the call admitted by ``permit``; returns the state after it.

        Never raises for Redis trouble: the outcome is then dropped (counted and logged),
        and ``unknown`` is returned.
        """
        if self._redis_is_backing_off():
            return BreakerState.UNKNOWN
        policy = self.policy
        now = self._clock()
        try:
            reply = self._record_script(
                keys=[self.state_key, self.window_key, self.probes_key],
                args=[repr(now), "1" if success else "0", permit.probe_token or "",
                      policy.window_s, policy.minimum_calls,
                      round(policy.failure_rate_threshold * _PPM), repr(policy.open_s),
                      2 * policy.window_s + 60],
            )
        except (redis.RedisError, OSError) as exc:
            self._redis_failed("record", exc)
            return BreakerState.UNKNOWN
        state, event = _text(reply[0]), _text(reply[1])
        if event == "tripped":
            BREAKER_TRANSITIONS.labels(self._name, "open").inc()
            log.warning("circuit breaker %r opened (%s; window %s calls, %s failures)",
                        self._name, event, _text(reply[2]), _text(reply[3]))
        elif event == "probe_failed":
            BREAKER_TRANSITIONS.labels(self._name, "open").inc()
            count_open_period(self._name, float(_text(reply[2])), now)
            log.warning("circuit breaker %r opened again (its probe failed)", self._name)
        elif event == "probe_succeeded":
            BREAKER_TRANSITIONS.labels(self._name, "closed").inc()
            count_open_period(self._name, float(_text(reply[2])), now)
            log.info("circuit breaker %r closed after a successful probe", self._name)
        show_breaker_state(self._name, BreakerState(state))
        return BreakerState(state)

    # --- inspection and administration ---------------------------------------------------
    def snapshot(self) -> BreakerSnapshot:
        """The breaker as Redis holds it now (``unknown`` if Redis cannot be read)."""
        now = self._clock()
        try:
            pipe = self._redis.pipeline(transaction=True)
            pipe.hgetall(self.state_key)
            pipe.hgetall(self.window_key)
            pipe.zcount(self.probes_key, f"({now!r}", "+inf")
            state_raw, window_raw, probes = pipe.execute()
        except (redis.RedisError, OSError) as exc:
            self._redis_failed("snapshot", exc)
            return BreakerSnapshot(self._name, BreakerState.UNKNOWN, None, 0, 0, 0)
        fields = {_text(k): _text(v) for k, v in state_raw.items()}
        oldest = math.floor(now) - self.policy.window_s + 1
        calls = failures = 0
        for key, value in window_raw.items():
            field = _text(key)
            if int(field[2:]) < oldest:
                continue
            if field.startswith("t:"):
                calls += int(value)
            else:
                failures += int(value)
        if fields.get("state") != "open":
            show_breaker_state(self._name, BreakerState.CLOSED)
            return BreakerSnapshot(self._name, BreakerState.CLOSED, None, calls, failures, 0)
        open_until = float(fields["open_until"])
        state = BreakerState.OPEN if now < open_until else BreakerState.HALF_OPEN
        show_breaker_state(self._name, state)
        return BreakerSnapshot(self._name, state, open_until, 0, 0, int(probes))

    def reset(self) -> None:
        """Forget everything about this breaker (closed, empty window). An operator tool."""
        self._redis.delete(self.state_key, self.window_key, self.probes_key)

    # --- Redis trouble -----------------------------------------------------------------------
    def _redis_is_backing_off(self) -> bool:
        return time.monotonic() < self._redis_down_until

    def _redis_failed(self, operation: str, exc: BaseException) -> None:
        # Counted and logged by the outage policy; Redis is then left alone for a moment.
        self._outages.handle(Control.BREAKER, operation, exc)
        with self._lock:
            self._redis_errors += 1
            self._redis_down_until = time.monotonic() + self._redis_backoff_s

    def _bypass_or_refuse(self) -> Permit:
        """Without Redis there is no decision: let the call through, or (failing closed)
        refuse it as if the breaker were open."""
        if self._outages.mode(Control.BREAKER) is OutageMode.FAIL_CLOSED:
            BREAKER_REJECTED.labels(self._name).inc()
            raise CircuitOpenError(self._name, self._redis_backoff_s,
                                   state=BreakerState.UNKNOWN.value)
        BREAKER_BYPASSED.labels(self._name).inc()
        with self._lock:
            self._bypassed += 1
        return Permit(self._name, BreakerState.UNKNOWN)
