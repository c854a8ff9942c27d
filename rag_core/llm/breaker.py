"""A circuit breaker whose state lives in Redis, so every worker process shares one breaker.

Why our own and not a library
-----------------------------
``pybreaker`` is the well-kept Python breaker with a Redis storage, but it is not installed in
this project and its semantics do not fit: it opens after ``fail_max`` *consecutive* failures,
whereas the seed plan wants a failure *rate* (>= 50% of the calls in a 60 s sliding window,
with a minimum volume of 10 calls). Its Redis storage also reads and writes state with
separate commands (no atomic half-open probe slot), so two processes can both probe. The
breaker here is ~one screen of Lua, every transition atomic inside Redis.

Semantics
---------
- **closed**: calls pass. Each call's outcome goes into per-second buckets (a Redis hash,
  fields ``t:<second>`` / ``f:<second>``; buckets older than ``window_s`` are pruned on write).
  After *every* recorded outcome (success or failure, so the order of outcomes does not
  matter) the script checks: ``calls >= minimum_calls`` and
  ``failures / calls >= failure_rate_threshold`` -> **open**.
- **open** until ``open_until = opened_at + open_s``: calls are refused with
  :class:`~rag_core.llm.errors.CircuitOpenError` without any request. Outcomes of calls that
  were admitted before it opened are ignored.
- **half-open** (open and ``open_until`` has passed): ``half_open_max_calls`` probe slots
  (one by default) are claimed atomically; every other caller gets ``CircuitOpenError``. A
  probe's success closes the breaker and clears the window; its failure re-opens it for
  another ``open_s``. A probe slot is a lease (``probe_lease_s``): if the probing process
  dies, another caller may probe once the lease ends.

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
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import redis
from prometheus_client import Counter
from redis.retry import Retry

from rag_core.errors import ConfigurationError
from rag_core.llm.errors import CircuitOpenError
from rag_core.llm.policy import BreakerPolicy
from rag_core.metrics import REGISTRY
from rag_core.redis_client import fail_fast_redis

__all__ = [
    "BREAKER_BYPASSED",
    "BREAKER_REDIS_ERRORS",
    "BREAKER_REJECTED",
    "BREAKER_TRANSITIONS",
    "BreakerSnapshot",
    "BreakerState",
    "CircuitBreaker",
    "Permit",
    "RedisCircuitBreaker",
    "fail_fast_redis",
]

log = logging.getLogger(__name__)

BREAKER_BYPASSED = Counter(
    "rag_llm_breaker_bypassed",
    "LLM calls let through without a breaker decision because Redis was unreachable.",
    ["breaker"], registry=REGISTRY,
)
BREAKER_REDIS_ERRORS = Counter(
    "rag_llm_breaker_redis_errors",
    "Redis errors met by the circuit breaker (each one degrades to fail-open).",
    ["breaker", "operation"], registry=REGISTRY,
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


_ACQUIRE_LUA = """
-- KEYS: state, probes. ARGV: now, probe_lease_s, half_open_max_calls, token
local now = tonumber(ARGV[1])
local st = redis.call('HMGET', KEYS[1], 'state', 'open_until')
if st[1] ~= 'open' then
  return {'closed', '0'}
end
local open_until = tonumber(st[2]) or 0
if now < open_until then
  return {'open', string.format('%.17g', open_until - now)}
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[2]) < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[2], string.format('%.17g', now + tonumber(ARGV[2])), ARGV[4])
  return {'half_open', '0'}
end
local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
return {'probing', string.format('%.17g', tonumber(first[2]) - now)}
"""

_RECORD_LUA = """
-- KEYS: state, window, probes.
-- ARGV: now, ok (1|0), probe token or '', window_s, minimum_calls, threshold_ppm, open_s,
--       window_ttl_s
local now = tonumber(ARGV[1])
local ok = ARGV[2] == '1'
local token = ARGV[3]
local open_s = tonumber(ARGV[7])
local function fmt(x) return string.format('%.17g', x) end
local st = redis.call('HMGET', KEYS[1], 'state', 'open_until')
local function trip(reason)
  redis.call('HSET', KEYS[1], 'state', 'open', 'open_until', fmt(now + open_s),
             'opened_at', fmt(now), 'reason', reason)
  redis.call('HINCRBY', KEYS[1], 'trips', 1)
  redis.call('DEL', KEYS[2], KEYS[3])
end
if st[1] == 'open' then
  if token == '' then
    return {'open', 'ignored', '0', '0'}
  end
  redis.call('ZREM', KEYS[3], token)
  if now < (tonumber(st[2]) or 0) then
    -- another probe already re-opened the breaker: this late outcome decides nothing
    return {'open', 'ignored', '0', '0'}
  end
  if ok then
    redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
    return {'closed', 'probe_succeeded', '0', '0'}
  end
  trip('probe failed')
  return {'open', 'probe_failed', '0', '0'}
end
local window_s = tonumber(ARGV[4])
local sec = math.floor(now)
redis.call('HINCRBY', KEYS[2], 't:' .. sec, 1)
if not ok then
  redis.call('HINCRBY', KEYS[2], 'f:' .. sec, 1)
end
local oldest = sec - window_s + 1
local all = redis.call('HGETALL', KEYS[2])
local total, fails, stale = 0, 0, {}
for i = 1, #all, 2 do
  local field = all[i]
  local n = tonumber(all[i + 1])
  if tonumber(string.sub(field, 3)) < oldest then
    stale[#stale + 1] = field
  elseif string.sub(field, 1, 1) == 't' then
    total = total + n
  else
    fails = fails + n
  end
end
if #stale > 0 then
  redis.call('HDEL', KEYS[2], unpack(stale))
end
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[8]))
if total >= tonumber(ARGV[5]) and fails * 1000000 >= tonumber(ARGV[6]) * total then
  trip('failure rate ' .. fails .. '/' .. total)
  return {'open', 'tripped', tostring(total), tostring(fails)}
end
return {'closed', 'recorded', tostring(total), tostring(fails)}
"""


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
    ) -> None:
        if not _NAME_RE.fullmatch(name):
            raise ConfigurationError("breaker name", name,
                                     "use 1-100 characters from A-Z a-z 0-9 _ . : -")
        self._name = name
        self._redis = client
        self.policy = policy or BreakerPolicy()
        self._clock = clock
        self._redis_backoff_s = redis_backoff_s
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
        self._acquire_script = client.register_script(_ACQUIRE_LUA)
        self._record_script = client.register_script(_RECORD_LUA)
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
        """Calls this instance let through without a decision because Redis was down."""
        return self._bypassed

    @property
    def redis_errors(self) -> int:
        """Redis errors this instance met (each degraded to fail-open)."""
        return self._redis_errors

    # --- the call path ---------------------------------------------------------------------
    def acquire(self) -> Permit:
        """Admit one call, or raise :class:`CircuitOpenError` (no request must be sent).

        In the half-open state exactly ``half_open_max_calls`` callers across all processes
        get a probe permit; the others are refused. Redis trouble admits the call (state
        ``unknown``): losing the breaker is better than losing every LLM call.
        """
        if self._redis_is_backing_off():
            return self._bypass()
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
            return self._bypass()
        state, wait = _text(reply[0]), float(_text(reply[1]))
        if state == "closed":
            return Permit(self._name, BreakerState.CLOSED)
        if state == "half_open":
            return Permit(self._name, BreakerState.HALF_OPEN, probe_token=token)
        BREAKER_REJECTED.labels(self._name).inc()
        shown = BreakerState.OPEN if state == "open" else BreakerState.HALF_OPEN
        raise CircuitOpenError(self._name, wait, state=shown.value)

    def record(self, permit: Permit, *, success: bool) -> BreakerState:
        """Record the outcome of the call admitted by ``permit``; returns the state after it.

        Never raises for Redis trouble: the outcome is then dropped (counted and logged),
        and ``unknown`` is returned.
        """
        if self._redis_is_backing_off():
            return BreakerState.UNKNOWN
        policy = self.policy
        try:
            reply = self._record_script(
                keys=[self.state_key, self.window_key, self.probes_key],
                args=[repr(self._clock()), "1" if success else "0", permit.probe_token or "",
                      policy.window_s, policy.minimum_calls,
                      round(policy.failure_rate_threshold * _PPM), repr(policy.open_s),
                      2 * policy.window_s + 60],
            )
        except (redis.RedisError, OSError) as exc:
            self._redis_failed("record", exc)
            return BreakerState.UNKNOWN
        state, event = _text(reply[0]), _text(reply[1])
        if event in ("tripped", "probe_failed"):
            BREAKER_TRANSITIONS.labels(self._name, "open").inc()
            log.warning("circuit breaker %r opened (%s; window %s calls, %s failures)",
                        self._name, event, _text(reply[2]), _text(reply[3]))
        elif event == "probe_succeeded":
            BREAKER_TRANSITIONS.labels(self._name, "closed").inc()
            log.info("circuit breaker %r closed after a successful probe", self._name)
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
            return BreakerSnapshot(self._name, BreakerState.CLOSED, None, calls, failures, 0)
        open_until = float(fields["open_until"])
        state = BreakerState.OPEN if now < open_until else BreakerState.HALF_OPEN
        return BreakerSnapshot(self._name, state, open_until, 0, 0, int(probes))

    def reset(self) -> None:
        """Forget everything about this breaker (closed, empty window). An operator tool."""
        self._redis.delete(self.state_key, self.window_key, self.probes_key)

    # --- Redis trouble -----------------------------------------------------------------------
    def _redis_is_backing_off(self) -> bool:
        return time.monotonic() < self._redis_down_until

    def _redis_failed(self, operation: str, exc: BaseException) -> None:
        BREAKER_REDIS_ERRORS.labels(self._name, operation).inc()
        with self._lock:
            self._redis_errors += 1
            self._redis_down_until = time.monotonic() + self._redis_backoff_s
        log.warning("circuit breaker %r: Redis unreachable during %s (%s: %s); letting LLM "
                    "calls through without a breaker for %.1fs", self._name, operation,
                    type(exc).__name__, exc, self._redis_backoff_s)

    def _bypass(self) -> Permit:
        BREAKER_BYPASSED.labels(self._name).inc()
        with self._lock:
            self._bypassed += 1
        return Permit(self._name, BreakerState.UNKNOWN)
