"""The Redis circuit breaker: failure rate over a window, open period, one probe, sharing.

Breaker decisions run on an injected clock (``FakeClock``): the 60 s open period passes with
``clock.advance(60)``, no test sleeps for it.
"""

from __future__ import annotations

import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from rag_core.common.metrics import REGISTRY
from rag_core.config import BreakerPolicy, RetryPolicy
from rag_core.errors import CircuitOpenError, ConfigurationError, LLMUnavailableError
from rag_core.llm import (
    BreakerState,
    ChatMessage,
    Permit,
    RedisCircuitBreaker,
)
from rag_core.llm.breaker import BREAKER_BYPASSED
from rag_core.redis.client import fail_fast_redis
from rag_core.redis.embedded import EmbeddedRedis
from rag_testing.fake_groq import FakeGroqServer, chat_completion, error_response, held
from tests.llm.conftest import FakeClock, MakeBreaker, MakeClient

USER: list[ChatMessage] = [{"role": "user", "content": "ping"}]
ONE_ATTEMPT = RetryPolicy(attempts=1)


def run_calls(client_complete: object, fake: FakeGroqServer, outcomes: str) -> None:
    """Make one call per character: ``s`` succeeds, ``f`` fails (HTTP 500)."""
    for outcome in outcomes:
        fake.enqueue(chat_completion("ok") if outcome == "s" else error_response(500))
        try:
            client_complete(USER)  # type: ignore[operator]
        except LLMUnavailableError:
            assert outcome == "f"


def trip(breaker_client: object, fake: FakeGroqServer) -> None:
    run_calls(breaker_client, fake, "fsfsfsfsfs")


# --- opening -------------------------------------------------------------------------------
@pytest.mark.parametrize("outcomes", ["fsfsfsfsfs", "fffffsssss", "sssssfffff"])
def test_half_of_ten_failures_opens_and_then_no_request_is_sent(
        outcomes: str, fake_groq: FakeGroqServer, make_client: MakeClient,
        make_breaker: MakeBreaker) -> None:
    breaker = make_breaker(policy=BreakerPolicy(minimum_calls=10, failure_rate_threshold=0.5))
    client = make_client(breaker=breaker, retry=ONE_ATTEMPT)

    run_calls(client.complete, fake_groq, outcomes)

    assert breaker.snapshot().state is BreakerState.OPEN
    sent = fake_groq.request_count
    with pytest.raises(CircuitOpenError) as caught:
        client.complete(USER)
    assert fake_groq.request_count == sent  # refused without any request
    assert caught.value.name == breaker.name
    assert 59 < caught.value.retry_after_s <= 60
    report = client.last_report
    assert report is not None and report.breaker_state is BreakerState.OPEN
    assert report.attempts == 0


def test_four_failures_of_ten_do_not_open(fake_groq: FakeGroqServer, make_client: MakeClient,
                                          make_breaker: MakeBreaker) -> None:
    breaker = make_breaker()
    client = make_client(breaker=breaker, retry=ONE_ATTEMPT)

    run_calls(client.complete, fake_groq, "ffffssssss")

    snapshot = breaker.snapshot()
    assert snapshot.state is BreakerState.CLOSED
    assert (snapshot.calls, snapshot.failures) == (10, 4)
    assert client.complete(USER).text == "echo: ping"


def test_fewer_than_minimum_calls_never_open(fake_groq: FakeGroqServer,
                                             make_client: MakeClient,
                                             make_breaker: MakeBreaker) -> None:
    breaker = make_breaker()
    client = make_client(breaker=breaker, retry=ONE_ATTEMPT)

    run_calls(client.complete, fake_groq, "f" * 9)

    snapshot = breaker.snapshot()
    assert snapshot.state is BreakerState.CLOSED
    assert (snapshot.calls, snapshot.failures) == (9, 9)


def test_outcomes_older_than_the_window_are_forgotten(make_breaker: MakeBreaker,
                                                      clock: FakeClock) -> None:
    breaker = make_breaker(policy=BreakerPolicy(window_s=60))
    for _ in range(9):
        breaker.record(breaker.acquire(), success=False)
    clock.advance(61)
    # Nine old failures are out of the window: this failure is 1 of 1, below the volume.
    assert breaker.record(breaker.acquire(), success=False) is BreakerState.CLOSED
    snapshot = breaker.snapshot()
    assert (snapshot.calls, snapshot.failures) == (1, 1)


def test_threshold_is_exact_at_thirty_percent(make_breaker: MakeBreaker) -> None:
    # 0.3 * 10 is 3.0000000000000004 in floating point; 3 of 10 must still trip.
    breaker = make_breaker(policy=BreakerPolicy(failure_rate_threshold=0.3))
    for success in [True] * 7 + [False] * 2:
        breaker.record(breaker.acquire(), success=success)
    assert breaker.record(breaker.acquire(), success=False) is BreakerState.OPEN


def test_retries_count_once_per_call(fake_groq: FakeGroqServer, make_client: MakeClient,
                                     make_breaker: MakeBreaker) -> None:
    breaker = make_breaker()
    client = make_client(breaker=breaker)  # 3 attempts per call
    fake_groq.set_default(lambda request: error_response(503))

    for _ in range(3):
        with pytest.raises(LLMUnavailableError):
            client.complete(USER)

    assert fake_groq.request_count == 9
    snapshot = breaker.snapshot()
    assert (snapshot.state, snapshot.calls, snapshot.failures) == (BreakerState.CLOSED, 3, 3)


# --- half-open -----------------------------------------------------------------------------
def test_after_open_period_exactly_one_probe_goes_through_and_its_success_closes(
        fake_groq: FakeGroqServer, make_client: MakeClient, make_breaker: MakeBreaker,
        clock: FakeClock) -> None:
    breaker = make_breaker()
    client = make_client(breaker=breaker, retry=ONE_ATTEMPT)
    trip(client.complete, fake_groq)
    with pytest.raises(CircuitOpenError):
        client.complete(USER)

    clock.advance(60)
    assert breaker.snapshot().state is BreakerState.HALF_OPEN
    release = threading.Event()
    fake_groq.enqueue(held(chat_completion("probe ok"), release))
    sent = fake_groq.request_count
    with ThreadPoolExecutor(max_workers=1) as pool:
        probe = pool.submit(client.complete, USER)
        assert fake_groq.wait_for(lambda f: f.in_flight == 1)
        # A second caller while the probe is in flight: refused, no request.
        with pytest.raises(CircuitOpenError) as caught:
            client.complete(USER)
        assert caught.value.state == "half_open"
        assert fake_groq.request_count == sent + 1
        release.set()
        completion = probe.result(timeout=10)

    assert completion.text == "probe ok"
    assert completion.breaker_state is BreakerState.HALF_OPEN
    report = client.last_report
    assert report is not None
    assert breaker.snapshot().state is BreakerState.CLOSED
    assert client.complete(USER).breaker_state is BreakerState.CLOSED


def test_concurrent_callers_in_half_open_get_exactly_one_probe(
        make_breaker: MakeBreaker, clock: FakeClock) -> None:
    breaker = make_breaker()
    for _ in range(10):
        breaker.record(breaker.acquire(), success=False)
    clock.advance(60)
    barrier = threading.Barrier(8)

    def contender() -> Permit | CircuitOpenError:
        barrier.wait()
        try:
            return breaker.acquire()
        except CircuitOpenError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: contender(), range(8)))

    permits = [r for r in results if isinstance(r, Permit)]
    assert len(permits) == 1 and permits[0].is_probe
    assert sum(isinstance(r, CircuitOpenError) for r in results) == 7


def test_failed_probe_reopens_for_another_open_period(
        fake_groq: FakeGroqServer, make_client: MakeClient, make_breaker: MakeBreaker,
        clock: FakeClock) -> None:
    breaker = make_breaker()
    client = make_client(breaker=breaker)  # 3 attempts, but a probe makes only one
    fake_groq.set_default(lambda request: error_response(500))
    for _ in range(10):
        with pytest.raises(LLMUnavailableError):
            client.complete(USER)
    assert breaker.snapshot().state is BreakerState.OPEN

    clock.advance(60)
    sent = fake_groq.request_count
    with pytest.raises(LLMUnavailableError) as caught:
        client.complete(USER)
    assert caught.value.attempts == 1
    assert fake_groq.request_count == sent + 1

    snapshot = breaker.snapshot()
    assert snapshot.state is BreakerState.OPEN
    assert snapshot.open_until == pytest.approx(clock() + 60, abs=0.01)
    with pytest.raises(CircuitOpenError):
        client.complete(USER)
    clock.advance(59)
    with pytest.raises(CircuitOpenError):
        client.complete(USER)
    assert fake_groq.request_count == sent + 1

    clock.advance(1)
    fake_groq.set_default(lambda request: chat_completion("recovered"))
    assert client.complete(USER).text == "recovered"
    assert breaker.snapshot().state is BreakerState.CLOSED


def test_a_lost_probe_frees_its_slot_after_the_lease(make_breaker: MakeBreaker,
                                                     clock: FakeClock) -> None:
    breaker = make_breaker(policy=BreakerPolicy(probe_lease_s=30))
    for _ in range(10):
        breaker.record(breaker.acquire(), success=False)
    clock.advance(60)
    lost = breaker.acquire()  # a worker that takes the probe and dies
    assert lost.is_probe
    with pytest.raises(CircuitOpenError) as caught:
        breaker.acquire()
    assert caught.value.retry_after_s == pytest.approx(30, abs=0.01)

    clock.advance(30)
    replacement = breaker.acquire()
    assert replacement.is_probe
    assert breaker.record(replacement, success=True) is BreakerState.CLOSED
    # The dead worker's late verdict (if it ever comes) is an ordinary outcome now.
    assert breaker.record(lost, success=False) is BreakerState.CLOSED


def test_several_probe_slots_when_configured(make_breaker: MakeBreaker,
                                             clock: FakeClock) -> None:
    breaker = make_breaker(policy=BreakerPolicy(half_open_max_calls=2))
    for _ in range(10):
        breaker.record(breaker.acquire(), success=False)
    clock.advance(60)
    first, second = breaker.acquire(), breaker.acquire()
    assert first.is_probe and second.is_probe
    with pytest.raises(CircuitOpenError):
        breaker.acquire()


def test_outcomes_of_calls_admitted_before_opening_are_ignored(
        make_breaker: MakeBreaker) -> None:
    breaker = make_breaker()
    in_flight = breaker.acquire()
    for _ in range(10):
        breaker.record(breaker.acquire(), success=False)
    assert breaker.record(in_flight, success=True) is BreakerState.OPEN


# --- sharing -------------------------------------------------------------------------------
def test_state_is_shared_between_processes(fake_groq: FakeGroqServer, make_client: MakeClient,
                                           make_breaker: MakeBreaker, redis_client: redis.Redis,
                                           redis_server: EmbeddedRedis, breaker_name: str,
                                           clock: FakeClock) -> None:
    # Two "processes": separate Redis connections, breakers and LLM clients, one name.
    other_redis = redis.Redis.from_url(redis_server.url())
    try:
        breaker_a = make_breaker(breaker_name)
        breaker_b = make_breaker(breaker_name, client=other_redis)
        client_a = make_client(breaker=breaker_a, retry=ONE_ATTEMPT)
        client_b = make_client(breaker=breaker_b, retry=ONE_ATTEMPT)

        run_calls(client_a.complete, fake_groq, "fffff")
        run_calls(client_b.complete, fake_groq, "sssss")  # B's successes complete A's volume

        sent = fake_groq.request_count
        with pytest.raises(CircuitOpenError):
            client_a.complete(USER)
        with pytest.raises(CircuitOpenError):
            client_b.complete(USER)
        assert fake_groq.request_count == sent

        clock.advance(60)
        assert client_b.complete(USER).breaker_state is BreakerState.HALF_OPEN
        assert breaker_a.snapshot().state is BreakerState.CLOSED
        assert client_a.complete(USER).breaker_state is BreakerState.CLOSED
    finally:
        other_redis.close()


# --- Redis down ----------------------------------------------------------------------------
def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _unreachable_redis() -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=_closed_port(), socket_timeout=0.05,
                       socket_connect_timeout=0.05, retry=Retry(NoBackoff(), 0))


def test_redis_down_lets_calls_through_and_counts_it(fake_groq: FakeGroqServer,
                                                     make_client: MakeClient,
                                                     make_breaker: MakeBreaker) -> None:
    dead = _unreachable_redis()
    try:
        breaker = make_breaker(client=dead, redis_backoff_s=3600)
        client = make_client(breaker=breaker)
        before = REGISTRY.get_sample_value("rag_llm_breaker_bypassed_total",
                                           {"breaker": breaker.name}) or 0.0

        completions = [client.complete(USER) for _ in range(3)]

        assert [c.text for c in completions] == ["echo: ping"] * 3
        assert all(c.breaker_state is BreakerState.UNKNOWN for c in completions)
        assert fake_groq.request_count == 3
        assert breaker.bypassed_calls == 3
        # One connection error, then Redis is left alone for the back-off period.
        assert breaker.redis_errors == 1
        assert BREAKER_BYPASSED.labels(breaker.name)._value.get() - before == 3
        assert breaker.snapshot().state is BreakerState.UNKNOWN
    finally:
        dead.close()


def test_redis_down_without_backoff_tries_redis_every_time(make_breaker: MakeBreaker) -> None:
    dead = _unreachable_redis()
    try:
        breaker = make_breaker(client=dead, redis_backoff_s=0)
        for _ in range(2):
            permit = breaker.acquire()
            assert permit.state is BreakerState.UNKNOWN
            assert breaker.record(permit, success=False) is BreakerState.UNKNOWN
        assert (breaker.bypassed_calls, breaker.redis_errors) == (2, 4)
    finally:
        dead.close()


def test_fail_fast_client_degrades_without_retrying(make_breaker: MakeBreaker) -> None:
    dead = fail_fast_redis(f"redis://127.0.0.1:{_closed_port()}/0", socket_timeout_s=0.05,
                           connect_timeout_s=0.05)
    try:
        breaker = make_breaker(client=dead)
        assert breaker.acquire().state is BreakerState.UNKNOWN
        assert breaker.redis_errors == 1
    finally:
        dead.close()


def test_a_retrying_redis_client_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    # redis.Redis(host=..., port=...) retries 10 times with backoff by default (from_url
    # clients do not): a refused connection took ~3 s here instead of milliseconds.
    retrying = redis.Redis(host="127.0.0.1", port=_closed_port())
    try:
        with caplog.at_level("WARNING", logger="rag_core.llm.breaker"):
            RedisCircuitBreaker("warn-check", retrying)
        assert "retries failed commands" in caplog.text
    finally:
        retrying.close()


# --- configuration -------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["", "has space", "a{b}", "x" * 101])
def test_breaker_names_are_validated(name: str, redis_client: redis.Redis) -> None:
    with pytest.raises(ConfigurationError) as caught:
        RedisCircuitBreaker(name, redis_client)
    assert caught.value.value == name


def test_keys_are_namespaced(make_breaker: MakeBreaker, redis_client: redis.Redis) -> None:
    breaker = make_breaker("ns-check")
    assert breaker.state_key == "rag:breaker:{ns-check}:state"
    for _ in range(10):
        breaker.record(breaker.acquire(), success=False)
    assert redis_client.hget(breaker.state_key, "state") == b"open"
