"""Fixtures of the LLM tests: a fake Groq server, an injectable clock, breakers and clients.

Breakers use the session's real Redis (``redis_client`` from ``tests/conftest.py``); each test
gets breaker names of its own and the factory deletes their keys afterwards, so tests never
see each other's windows and never flush anybody else's keys.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from rag_core.config import BreakerPolicy, LLMSettings, RetryPolicy
from rag_core.llm import LLMClient, RedisCircuitBreaker
from rag_core.redis.client import fail_fast_redis
from rag_core.redis.embedded import EmbeddedRedis
from rag_testing.fake_groq import FakeGroqServer


class FakeClock:
    """Epoch seconds that only move when a test says so (thread-safe)."""

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds


class SleepRecorder:
    """A ``sleep`` that records the requested waits instead of waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture()
def fake_groq() -> Iterator[FakeGroqServer]:
    with FakeGroqServer() as server:
        yield server


@pytest.fixture()
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture()
def sleeper() -> SleepRecorder:
    return SleepRecorder()


@pytest.fixture()
def breaker_name() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


MakeBreaker = Callable[..., RedisCircuitBreaker]
MakeClient = Callable[..., LLMClient]


@pytest.fixture(scope="session")
def breaker_redis(redis_server: EmbeddedRedis) -> Iterator[redis.Redis]:
    """A client as production gives the breaker: no redis-py retries (timeouts kept loose
    enough for a loaded CI machine)."""
    client = fail_fast_redis(redis_server.url(), socket_timeout_s=2, connect_timeout_s=2)
    yield client
    client.close()


@pytest.fixture()
def make_breaker(redis_client: redis.Redis, breaker_redis: redis.Redis, breaker_name: str,
                 clock: FakeClock) -> Iterator[MakeBreaker]:
    """Factory of breakers on the test Redis; defaults: this test's name, clock and policy."""
    created: list[RedisCircuitBreaker] = []

    def factory(name: str | None = None, policy: BreakerPolicy | None = None,
                client: redis.Redis | None = None, **kwargs: Any) -> RedisCircuitBreaker:
        kwargs.setdefault("clock", clock)
        breaker = RedisCircuitBreaker(name or breaker_name, client or breaker_redis,
                                      policy or BreakerPolicy(), **kwargs)
        created.append(breaker)
        return breaker

    yield factory
    for breaker in created:
        redis_client.delete(breaker.state_key, breaker.window_key, breaker.probes_key)


@pytest.fixture()
def make_client(fake_groq: FakeGroqServer, make_breaker: MakeBreaker,
                sleeper: SleepRecorder) -> Iterator[MakeClient]:
    """Factory of LLM clients pointed at the fake server, sleeping through ``sleeper``."""
    created: list[LLMClient] = []

    def factory(*, breaker: RedisCircuitBreaker | None = None, retry: RetryPolicy | None = None,
                timeout_s: float = 5.0, base_url: str | None = None,
                **kwargs: Any) -> LLMClient:
        kwargs.setdefault("sleep", sleeper)
        config = LLMSettings(base_url=base_url or fake_groq.base_url, api_key="test-key",
                           timeout_s=timeout_s)
        client = LLMClient(config, breaker=breaker or make_breaker(),
                           retry=retry or RetryPolicy(), **kwargs)
        created.append(client)
        return client

    yield factory
    for client in created:
        client.close()
