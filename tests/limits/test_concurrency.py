"""LocalSlots and the Redis semaphore, against the session's real Redis."""

from __future__ import annotations

import secrets
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import pytest
import redis

from rag_core.errors import RagCoreError
from rag_core.limits.concurrency import (
    ConcurrencyBackendError,
    ConcurrencyLimitTimeoutError,
    LocalSlots,
    RedisSemaphore,
)
from rag_core.redis.client import fail_fast_redis
from rag_core.redis.embedded import EmbeddedRedis
from tests.conftest import REPO_ROOT  # the checkout (a child's cwd: `tests/redis` shadows redis)

MakeSemaphore = Callable[..., RedisSemaphore]


@pytest.fixture()
def make_semaphore(redis_client: redis.Redis) -> Iterator[MakeSemaphore]:
    """Semaphores with names of their own; their keys are deleted after the test."""
    created: list[RedisSemaphore] = []

    def factory(limit: int, **kwargs: Any) -> RedisSemaphore:
        semaphore = RedisSemaphore(redis_client, f"test-sem-{uuid.uuid4().hex[:10]}", limit,
                                   **kwargs)
        created.append(semaphore)
        return semaphore

    yield factory
    for semaphore in created:
        redis_client.delete(semaphore.key)


class PeakCounter:
    """How many threads are inside a section at once, and the most there ever were."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = 0
        self.peak = 0

    def __enter__(self) -> None:
        with self._lock:
            self.now += 1
            self.peak = max(self.peak, self.now)

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.now -= 1


def hammer(slot_factory: Callable[[], AbstractContextManager[object]], threads: int, rounds: int,
           hold_s: float, check: Callable[[], None] | None = None) -> PeakCounter:
    counter = PeakCounter()
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(rounds):
                with slot_factory(), counter:
                    if check is not None:
                        check()
                    time.sleep(hold_s)
        except BaseException as exc:
            errors.append(exc)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(60)
    assert not errors, errors
    return counter


# --- LocalSlots ----------------------------------------------------------------------------
def test_local_slots_cap_threads_and_time_out_with_a_named_error() -> None:
    slots = LocalSlots(2, name="local-llm", timeout_s=5)
    counter = hammer(slots.slot, threads=8, rounds=5, hold_s=0.01)
    assert counter.peak == 2

    impatient = LocalSlots(1, name="local-llm", timeout_s=0.05)
    with impatient.slot(), pytest.raises(ConcurrencyLimitTimeoutError) as info, \
            impatient.slot():
        pass
    assert (info.value.name, info.value.limit) == ("local-llm", 1)
    assert info.value.waited_s >= 0.04
    with impatient.slot():  # released after the failure
        pass
    with pytest.raises(ValueError):
        LocalSlots(0)


# --- RedisSemaphore ------------------------------------------------------------------------
def test_redis_semaphore_respects_its_limit_under_eight_threads(
        make_semaphore: MakeSemaphore) -> None:
    semaphore = make_semaphore(3, poll_s=0.005, timeout_s=30)
    seen: list[int] = []

    def check() -> None:
        seen.append(semaphore.holders())

    counter = hammer(semaphore.slot, threads=8, rounds=6, hold_s=0.02, check=check)
    assert counter.peak == 3  # reached, never exceeded
    assert max(seen) <= 3
    assert semaphore.holders() == 0


def test_two_instances_with_one_name_share_the_slots(make_semaphore: MakeSemaphore,
                                                      redis_client: redis.Redis) -> None:
    first = make_semaphore(2)
    second = RedisSemaphore(redis_client, first.name, 2)
    a = first.try_acquire()
    b = second.try_acquire()
    assert a is not None and b is not None
    assert first.try_acquire() is None and second.try_acquire() is None
    second.release(a)  # any instance may release a token
    assert first.try_acquire() is not None


def test_an_expired_lease_is_reclaimed(make_semaphore: MakeSemaphore) -> None:
    semaphore = make_semaphore(1, lease_s=0.3, poll_s=0.01)
    semaphore.acquire()  # and never released: the holder "crashed"
    assert semaphore.try_acquire() is None
    token = semaphore.acquire(timeout_s=5)  # succeeds once the dead holder's lease ends
    assert semaphore.holders() == 1
    semaphore.release(token)
    assert semaphore.holders() == 0


def test_a_killed_process_loses_its_slot_after_the_lease(
        make_semaphore: MakeSemaphore, redis_server: EmbeddedRedis) -> None:
    semaphore = make_semaphore(1, lease_s=0.5, poll_s=0.02)
    script = (
        "import sys, time, redis\n"
        "from rag_core.limits.concurrency import RedisSemaphore\n"
        "sem = RedisSemaphore(redis.Redis.from_url(sys.argv[1]), sys.argv[2], 1, lease_s=0.5)\n"
        "with sem.slot():\n"
        "    print('held', flush=True)\n"
        "    time.sleep(60)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script, redis_server.url(), semaphore.name],
                             cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        time.sleep(0.8)  # longer than the lease: the child's heartbeat keeps renewing it
        assert semaphore.try_acquire() is None
        child.kill()
        child.wait(10)
        token = semaphore.acquire(timeout_s=5)
        semaphore.release(token)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
        if child.stdout is not None:
            child.stdout.close()


def test_a_held_slot_is_renewed_beyond_its_lease(make_semaphore: MakeSemaphore) -> None:
    semaphore = make_semaphore(1, lease_s=0.3, poll_s=0.01)
    with semaphore.slot():
        time.sleep(0.9)  # three leases
        assert semaphore.try_acquire() is None
        assert semaphore.holders() == 1
    assert semaphore.holders() == 0


def test_a_lost_lease_is_not_renewed(make_semaphore: MakeSemaphore) -> None:
    semaphore = make_semaphore(1, lease_s=0.2)
    token = semaphore.acquire()
    time.sleep(0.3)
    assert semaphore.renew(token) is False
    other = semaphore.acquire(timeout_s=1)
    assert semaphore.renew(other) is True


def test_waiting_too_long_raises_the_named_timeout_error(make_semaphore: MakeSemaphore) -> None:
    semaphore = make_semaphore(2, timeout_s=0.2, poll_s=0.02)
    held = [semaphore.acquire(), semaphore.acquire()]
    with pytest.raises(ConcurrencyLimitTimeoutError) as info, semaphore.slot():
        pass
    error = info.value
    assert isinstance(error, RagCoreError)
    assert (error.name, error.limit) == (semaphore.name, 2)
    assert error.waited_s >= 0.2
    assert semaphore.name in str(error) and "2 slots" in str(error)
    for token in held:
        semaphore.release(token)
    with semaphore.slot():
        assert semaphore.holders() == 1


def test_redis_down_is_a_named_backend_error() -> None:
    dead = fail_fast_redis("redis://127.0.0.1:1/0", connect_timeout_s=0.2)
    semaphore = RedisSemaphore(dead, "test-dead", 1, timeout_s=0.1)
    with pytest.raises(ConcurrencyBackendError) as info, semaphore.slot():
        pass
    assert info.value.operation == "acquire"
    dead.close()


@pytest.mark.parametrize("kwargs", [
    {"name": "bad name", "limit": 1}, {"name": "x", "limit": 0},
    {"name": "x", "limit": 1, "lease_s": 0}, {"name": "x", "limit": 1, "timeout_s": -1},
])
def test_invalid_settings_are_refused(redis_client: redis.Redis,
                                      kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RedisSemaphore(redis_client, **kwargs)  # type: ignore[arg-type]


def test_guarded_slots_hold_a_shared_slot_and_follow_the_outage_policy(
        redis_client: redis.Redis) -> None:
    from rag_core.common.outage import Control, Outages, outage_count
    from rag_core.config import OutageMode, OutagePolicy
    from rag_core.errors import ConcurrencyBackendError
    from rag_core.limits.concurrency import GuardedSlots

    live = RedisSemaphore(redis_client, f"failopen-{secrets.token_hex(4)}", 1, timeout_s=1)
    with GuardedSlots(live).slot():
        assert live.holders() == 1
    assert live.holders() == 0

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    dead = RedisSemaphore(fail_fast_redis(f"redis://127.0.0.1:{closed_port}/0"), "dead", 1)
    before = outage_count(Control.LLM_SLOTS, "acquire")
    ran = False
    with GuardedSlots(dead).slot():  # the default policy: fail open
        ran = True
    assert ran
    assert outage_count(Control.LLM_SLOTS, "acquire") == before + 1

    closed = Outages(OutagePolicy(llm_slots=OutageMode.FAIL_CLOSED))
    with pytest.raises(ConcurrencyBackendError), GuardedSlots(dead, closed).slot():
        pytest.fail("a fail-closed slot must not run its call without Redis")
    assert outage_count(Control.LLM_SLOTS, "acquire") == before + 2
