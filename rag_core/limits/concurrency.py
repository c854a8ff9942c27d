"""Limits on how many LLM calls run at once: in one process, and across every process.

:class:`ConcurrencySlots` is what :func:`rag_core.answering.answer_all` needs: a context
manager ``slot()`` held around each LLM call. Two implementations:

* :class:`LocalSlots` — a :class:`threading.BoundedSemaphore`; caps the threads of one
  process (share one instance between concurrent runs to cap them together).
* :class:`RedisSemaphore` — a counting semaphore in Redis shared by every process (API
  workers, Prefect workers) that uses the same Redis and name.

The Redis semaphore
-------------------
One sorted set per semaphore, ``rag:sem:{<name>}:holders``: one member per holder (a random
token), scored by the time its lease ends. Acquiring is one Lua script, atomic inside Redis:
evict members whose lease has ended, then add the token if fewer than ``limit`` remain. A
process that crashes while holding a slot therefore loses it after at most ``lease_s``
seconds, instead of holding it forever as an ``INCR``/``DECR`` counter would. While a
:meth:`RedisSemaphore.slot` is held a daemon thread renews the lease every ``lease_s / 3``
seconds, so a call longer than the lease (slow model, retries with backoff) keeps its slot;
only a holder that stopped running loses it. Times are the Redis server's clock (``TIME``
inside the scripts; Redis >= 5 allows writes after it), so hosts with skewed clocks agree on
expiry.

Waiting is polling (``poll_s``, with jitter so waiters do not stampede), not a queue: there
is no FIFO fairness between waiters, which is fine for a handful of workers sharing an LLM
quota. A waiter gives up after ``timeout_s`` with :class:`ConcurrencyLimitTimeoutError`.
Every process using a name must pass the same ``limit`` (each enforces the limit it was
given). Redis errors become :class:`ConcurrencyBackendError`; :class:`GuardedSlots` hands
them to the outage policy, which decides whether to run without the limit.

Waits are measured: every acquisition observes its wait in
``rag_concurrency_wait_seconds{limit}`` and one that found every slot taken counts in
``rag_concurrency_waits_total{limit}``; the label is a :class:`LocalSlots`' name (given in
code: ``llm_calls``, ``search``) or ``shared`` for a :class:`RedisSemaphore` (whose name
carries a model name, a configuration value the label need not repeat).

Why not Prefect global concurrency limits
-----------------------------------------
Prefect 3 has them (``prefect.concurrency.sync.concurrency("groq", occupy=1)``, with slot
leases), and flows should use them where a limit is about *flow runs*. They are not used
here because ``rag_core`` is the library under the API, the CLI and the flows and must not
import Prefect: an API worker answering a request has no flow run and may have no Prefect
server to talk to, and a limit enforced only inside flows would not see the API's calls.
The Redis here is already the platform's shared state (breaker, rate limits, caches). Flows
may add Prefect's limits on top of this one; the stricter of the two then applies.
"""

from __future__ import annotations

import logging
import random
import re
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

import redis

from rag_core.common.metrics import CONCURRENCY_WAIT_SECONDS, CONCURRENCY_WAITS
from rag_core.common.outage import DEFAULT_OUTAGES, Control, Outages
from rag_core.errors import ConcurrencyBackendError, ConcurrencyLimitTimeoutError

__all__ = [
    "ConcurrencySlots",
    "GuardedSlots",
    "LocalSlots",
    "RedisSemaphore",
]

log = logging.getLogger(__name__)

_NAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")
_SHARED = "shared"  # the metrics label of every RedisSemaphore


def _waited(limit: str, seconds: float, *, blocked: bool) -> None:
    """Record one acquisition's wait (``blocked``: no slot was free when it asked)."""
    CONCURRENCY_WAIT_SECONDS.labels(limit).observe(seconds)
    if blocked:
        CONCURRENCY_WAITS.labels(limit).inc()


# --- the protocol and the local implementation ---------------------------------------------
class ConcurrencySlots(Protocol):
    """Something that hands out a bounded number of slots; hold one per LLM call."""

    def slot(self) -> AbstractContextManager[None]:
        """Block until a slot is free and hold it for the ``with`` block.

        Raises :class:`ConcurrencyLimitTimeoutError` when no slot frees up in time.
        """
        ...


class LocalSlots:
    """``n`` slots shared by the threads of this process.

    ``timeout_s`` ``None`` waits forever (local holders always finish their call); a number
    makes :meth:`slot` raise :class:`ConcurrencyLimitTimeoutError` after that long.
    """

    def __init__(self, n: int, *, name: str = "local", timeout_s: float | None = None) -> None:
        if n < 1:
            raise ValueError(f"LocalSlots needs at least 1 slot, got {n}")
        if timeout_s is not None and timeout_s < 0:
            raise ValueError(f"timeout_s must be >= 0, got {timeout_s}")
        self.limit = n
        self.name = name
        self.timeout_s = timeout_s
        self._semaphore = threading.BoundedSemaphore(n)

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one of the ``n`` slots for the ``with`` block."""
        started = time.monotonic()
        blocked = not self._semaphore.acquire(blocking=False)
        if blocked and not self._semaphore.acquire(timeout=self.timeout_s):
            _waited(self.name, time.monotonic() - started, blocked=True)
            raise ConcurrencyLimitTimeoutError(self.name, self.limit,
                                               time.monotonic() - started)
        _waited(self.name, time.monotonic() - started, blocked=blocked)
        try:
            yield
        finally:
            self._semaphore.release()


# --- Redis ---------------------------------------------------------------------------------
# Scores are epoch seconds of the Redis server (TIME), printed with 17 significant digits.
_NOW_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local function fmt(x) return string.format('%.17g', x) end
"""

_ACQUIRE_LUA = _NOW_LUA + """
-- KEYS: holders. ARGV: limit, lease_s, token. Returns {1, holders} or {0, ms until the
-- earliest lease ends}.
local limit = tonumber(ARGV[1])
local lease = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', fmt(now))
local n = redis.call('ZCARD', KEYS[1])
if n < limit then
  redis.call('ZADD', KEYS[1], fmt(now + lease), ARGV[3])
  -- the key only needs to outlive its longest lease; never shorten another holder's
  local want = math.ceil(lease * 1000) + 1000
  if redis.call('PTTL', KEYS[1]) < want then
    redis.call('PEXPIRE', KEYS[1], want)
  end
  return {1, n + 1}
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {0, math.max(0, math.ceil((tonumber(first[2]) - now) * 1000))}
"""

_RENEW_LUA = _NOW_LUA + """
-- KEYS: holders. ARGV: lease_s, token. Returns 1 if renewed, 0 if the lease was already lost.
local lease = tonumber(ARGV[1])
local score = redis.call('ZSCORE', KEYS[1], ARGV[2])
if not score then
  return 0
end
if tonumber(score) <= now then
  redis.call('ZREM', KEYS[1], ARGV[2])
  return 0
end
redis.call('ZADD', KEYS[1], 'XX', fmt(now + lease), ARGV[2])
local want = math.ceil(lease * 1000) + 1000
if redis.call('PTTL', KEYS[1]) < want then
  redis.call('PEXPIRE', KEYS[1], want)
end
return 1
"""

_COUNT_LUA = _NOW_LUA + """
-- KEYS: holders. Live holders (leases not yet ended).
return redis.call('ZCOUNT', KEYS[1], '(' .. fmt(now), '+inf')
"""


class RedisSemaphore:
    """A counting semaphore of ``limit`` slots named ``name``, shared through Redis.

    ``lease_s`` bounds how long a crashed holder keeps its slot (a live holder renews it);
    ``poll_s`` is the wait between attempts while all slots are taken; ``timeout_s`` is how
    long :meth:`acquire` / :meth:`slot` wait before raising
    :class:`ConcurrencyLimitTimeoutError`. Thread-safe; cheap to build.
    """

    def __init__(self, client: redis.Redis, name: str, limit: int, lease_s: float = 60,
                 poll_s: float = 0.05, timeout_s: float = 30, *,
                 key_prefix: str = "rag:sem") -> None:
        if not _NAME_RE.fullmatch(name):
            raise ValueError(f"semaphore name {name!r} is invalid: use 1-100 characters from "
                             "A-Z a-z 0-9 _ . : -")
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        if lease_s <= 0 or poll_s <= 0 or timeout_s < 0:
            raise ValueError(f"need lease_s > 0, poll_s > 0, timeout_s >= 0; got "
                             f"lease_s={lease_s}, poll_s={poll_s}, timeout_s={timeout_s}")
        self.name = name
        self.limit = limit
        self.lease_s = float(lease_s)
        self.poll_s = float(poll_s)
        self.timeout_s = float(timeout_s)
        self.key = f"{key_prefix}:{{{name}}}:holders"
        self._redis = client
        self._acquire_script = client.register_script(_ACQUIRE_LUA)
        self._renew_script = client.register_script(_RENEW_LUA)
        self._count_script = client.register_script(_COUNT_LUA)
        self._rng = random.Random()

    # --- low level: a token per held slot --------------------------------------------------
    def try_acquire(self) -> str | None:
        """Take a slot now if one is free: its token, else ``None``. No lease renewal."""
        token = secrets.token_hex(16)
        granted, _ = self._try(token)
        return token if granted else None

    def acquire(self, timeout_s: float | None = None) -> str:
        """Wait for a slot (up to ``timeout_s``, default the instance's) and return its token.

        The slot is held until :meth:`release` or until its lease ends; nothing renews it
        (use :meth:`slot` for a renewed slot).
        """
        limit_s = self.timeout_s if timeout_s is None else timeout_s
        token = secrets.token_hex(16)
        started = time.monotonic()
        blocked = False
        while True:
            granted, wait_ms = self._try(token)
            waited = time.monotonic() - started
            if granted:
                _waited(_SHARED, waited, blocked=blocked)
                return token
            blocked = True
            remaining = limit_s - waited
            if remaining <= 0:
                _waited(_SHARED, waited, blocked=True)
                raise ConcurrencyLimitTimeoutError(self.name, self.limit, waited)
            # Poll, but not past the deadline, and wake when the earliest lease ends if
            # that comes sooner (a crashed holder's slot is then free to take).
            pause = min(self.poll_s * self._rng.uniform(0.5, 1.5), remaining,
                        max(wait_ms / 1000.0, 0.001))
            time.sleep(pause)

    def release(self, token: str) -> None:
        """Give the slot back (a no-op if its lease already ended)."""
        try:
            self._redis.zrem(self.key, token)
        except (redis.RedisError, OSError) as exc:
            # The lease ends the slot anyway; failing the caller's finished call helps nobody.
            log.warning("semaphore %r: could not release a slot (%s); it frees itself when "
                        "its lease ends in <= %.0fs", self.name, exc, self.lease_s)

    def renew(self, token: str) -> bool:
        """Extend the slot's lease by ``lease_s`` from now; ``False`` if it was already lost."""
        try:
            return bool(self._renew_script(keys=[self.key], args=[self.lease_s, token]))
        except (redis.RedisError, OSError) as exc:
            raise ConcurrencyBackendError(self.name, "renew", str(exc)) from exc

    def holders(self) -> int:
        """Slots held right now (leases not yet ended)."""
        try:
            return int(self._count_script(keys=[self.key]))
        except (redis.RedisError, OSError) as exc:
            raise ConcurrencyBackendError(self.name, "count", str(exc)) from exc

    # --- the context manager -------------------------------------------------------------
    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold a slot for the ``with`` block, renewing its lease while the block runs."""
        token = self.acquire()
        stop = threading.Event()
        keeper = threading.Thread(target=self._keep_alive, args=(token, stop), daemon=True,
                                  name=f"semaphore-lease-{self.name}")
        keeper.start()
        try:
            yield
        finally:
            stop.set()
            keeper.join()
            self.release(token)

    # --- internals -------------------------------------------------------------------------
    def _try(self, token: str) -> tuple[bool, float]:
        try:
            reply = self._acquire_script(keys=[self.key],
                                         args=[self.limit, self.lease_s, token])
        except (redis.RedisError, OSError) as exc:
            raise ConcurrencyBackendError(self.name, "acquire", str(exc)) from exc
        return int(reply[0]) == 1, float(reply[1])

    def _keep_alive(self, token: str, stop: threading.Event) -> None:
        while not stop.wait(self.lease_s / 3):
            try:
                if not self.renew(token):
                    log.warning("semaphore %r: a slot's lease ended while its call was still "
                                "running (process paused for > %.0fs?); the limit may be "
                                "exceeded until that call ends", self.name, self.lease_s)
                    return
            except ConcurrencyBackendError as exc:
                log.warning("%s; will retry at the next renewal", exc)


class GuardedSlots:
    """Cross-process slots whose Redis outages go to the outage policy (``llm_slots``).

    Failing open (the default), a ``ConcurrencyBackendError`` on acquire lets the call run
    without a shared slot (the per-process cap still holds) and is counted; failing closed,
    the error is raised. A timeout (the limit really is full) is never masked.
    """

    def __init__(self, inner: RedisSemaphore, outages: Outages = DEFAULT_OUTAGES) -> None:
        self.inner = inner
        self._outages = outages

    @contextmanager
    def slot(self) -> Iterator[None]:
        try:
            held = self.inner.slot()
            held.__enter__()
        except ConcurrencyBackendError as exc:
            self._outages.carry_on_or_raise(Control.LLM_SLOTS, "acquire", exc)
            yield
            return
        try:
            yield
        except BaseException as exc:
            if not held.__exit__(type(exc), exc, exc.__traceback__):
                raise
        else:
            held.__exit__(None, None, None)
