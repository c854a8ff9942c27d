"""Faults of the running service: ``rag serve --workers 2`` as a child process, real HTTP.

* Redis killed during a load run: every request keeps getting 200 under the outage policy
  (cached answers miss and are answered again, the rate limit falls back per process,
  /readyz says Redis is down and stays 200), and after Redis is back the service goes on,
  caching again. The service gets Redis servers of its OWN (the suite's shared ones under
  .rag/test are never stopped).
* A worker killed while it runs a batch: the other worker keeps answering, uvicorn replaces
  the dead one, and once the lease has passed the batch is resumed and finished with every
  question answered exactly once.

Every wait polls with a deadline; nothing sleeps to prove a point.
"""

from __future__ import annotations

import itertools
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from rag_core.common.tenancy import TenantId
from rag_core.composition import Platform
from rag_core.config import Settings
from rag_core.db.connection import resolve_targets
from rag_core.db.pool import Database
from rag_core.redis.embedded import EmbeddedRedis, RedisServer
from rag_testing.fake_groq import FakeGroqServer, answering_after, answering_responder
from rag_testing.serve_process import ServeProcess
from tests.conftest import cli_environment

T = TypeVar("T")
LLM_CALL_S = 0.4  # the slow fake LLM of the batch test: a group is still running when killed


def _poll(check: Callable[[], T | None], *, timeout_s: float, what: str,
          interval_s: float = 0.05) -> T:
    """``check()``'s first truthy result, polled until the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        time.sleep(interval_s)


def _service_env(settings: Settings, llm: FakeGroqServer, tmp_path: Path, *,
                 redis_url: str, control_url: str, **extra: str) -> dict[str, str]:
    """The child's environment: the suite's database, the given Redis servers, the fake
    LLM, a key prefix and an audit spool of its own, limits no test reaches."""
    return cli_environment(
        RAG_STATE_DIR=str(settings.state_dir), RAG_EMBEDDED_DATABASE=settings.embedded_database,
        REDIS_URL=redis_url, RAG_REDIS_CONTROL_URL=control_url,
        RAG_REDIS_KEY_PREFIX=f"t{secrets.token_hex(4)}",
        RAG_AUDIT_SPOOL_DIR=str(tmp_path / "spool"),
        RAG_LLM_API_KEY="gsk_test", RAG_LLM_BASE_URL=llm.base_url,
        RAG_RATE_LIMIT__REQUESTS_PER_MINUTE="100000",
        RAG_RATE_LIMIT__TOKENS_PER_DAY="100000000",
        RAG_API__BATCH_POLL_INTERVAL_S="0.1", RAG_API__AUDIT_FLUSH_INTERVAL_S="0.05", **extra)


@pytest.fixture()
def api_key(settings: Settings, db: Database, corpus_tenant: TenantId) -> str:
    """A live key of the corpus tenant, issued the product's way."""
    platform = Platform(settings, database=db, start_services=False)
    return platform.api_keys.create(corpus_tenant, "faults").key


@pytest.fixture()
def fake_llm() -> Iterator[FakeGroqServer]:
    with FakeGroqServer(default=answering_responder) as server:
        yield server


def _ask(client: httpx.Client, key: str, question: str) -> httpx.Response:
    return client.post("/v1/query", json={"question": question},
                       headers={"Authorization": f"Bearer {key}"})


def _metric(url: str, name: str, **labels: str) -> float:
    """A counter's value in /metrics (summed over workers and the labels not given)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples
               if sample.name == name
               and all(sample.labels.get(k) == v for k, v in labels.items()))


def _audited(settings: Settings, request_ids: list[str]) -> set[str]:
    with psycopg.connect(resolve_targets(settings).admin_url, autocommit=True) as conn:
        rows = conn.execute("SELECT request_id::text FROM rag.audit_log "
                            "WHERE request_id = ANY(%s::uuid[])", [request_ids]).fetchall()
    return {row[0] for row in rows}


# --- Redis killed under load ----------------------------------------------------------------
@dataclass(frozen=True)
class Outcome:
    started: float
    ended: float
    warm: bool
    status: int | None  # None: no HTTP response at all
    cache_hit: bool | None
    request_id: str | None
    detail: str


class Driver:
    """A few threads asking questions without pause, half of them warmed (cached) ones and
    half never asked before, recording every outcome."""

    def __init__(self, url: str, key: str, warm: list[str], threads: int = 3) -> None:
        self.url, self.key, self.warm = url, key, warm
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._counter = itertools.count()
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True)
                         for n in range(threads)]

    def __enter__(self) -> Driver:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def since(self, moment: float) -> list[Outcome]:
        with self._lock:
            return [o for o in self.outcomes if o.started > moment]

    def _run(self, number: int) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self._stop.is_set():
                count = next(self._counter)
                warm = count % 2 == 0
                question = (self.warm[count % len(self.warm)] if warm else
                            f"Thread {number} asks {count}: what do T cells recognise?")
                started = time.monotonic()
                try:
                    response = _ask(client, self.key, question)
                    status: int | None = response.status_code
                    body: dict[str, Any] = response.json() if status == 200 else {}
                    detail = "" if status == 200 else response.text[:300]
                except httpx.HTTPError as exc:
                    status, body, detail = None, {}, repr(exc)
                outcome = Outcome(started, time.monotonic(), warm, status,
                                  body.get("cache_hit"), body.get("request_id"), detail)
                with self._lock:
                    self.outcomes.append(outcome)


def _kill(server: RedisServer) -> None:
    pid = server.status().pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    _poll(lambda: not server.status().running, timeout_s=10, what="redis-server gone")


def _ready_checks(url: str) -> dict[str, Any]:
    ready = httpx.get(f"{url}/readyz", timeout=10)
    assert ready.status_code == 200, ready.text  # Redis down is reported, never not-ready
    assert ready.json()["status"] == "ready"
    checks: dict[str, Any] = ready.json()["checks"]
    return checks


def test_killing_redis_during_a_load_run_fails_no_request(
        settings: Settings, corpus_tenant: TenantId, api_key: str, fake_llm: FakeGroqServer,
        tmp_path: Path) -> None:
    own_redis = EmbeddedRedis(tmp_path / "redis-state")  # never the suite's shared Redis
    own_redis.start()
    try:
        env = _service_env(settings, fake_llm, tmp_path, redis_url=own_redis.url(),
                           control_url=own_redis.control_url())
        with ServeProcess(env, workers=2) as service, \
                httpx.Client(base_url=service.url, timeout=30) as client:
            warm = [f"Warm question {i} {secrets.token_hex(3)}: is vitamin D linked to bones?"
                    for i in range(4)]
            for question in warm:
                assert _ask(client, api_key, question).status_code == 200
            assert all(_ask(client, api_key, q).json()["cache_hit"] for q in warm)
            fallbacks_before = _metric(service.url, "rag_redis_outage_total",
                                       control="rate_limit", mode="local_fallback")

            with Driver(service.url, api_key, warm) as driver:
                _poll(lambda: len(driver.since(0)) >= 20, timeout_s=120,
                      what="20 requests before the outage")
                _kill(own_redis.cache)
                _kill(own_redis.control)
                killed_at = time.monotonic()
                _poll(lambda: len(driver.since(killed_at)) >= 20, timeout_s=120,
                      what="20 requests during the outage")
                checks = _ready_checks(service.url)
                assert not checks["redis_cache"]["ok"] and not checks["redis_control"]["ok"]
                assert checks["database"]["ok"]
                assert _metric(service.url, "rag_redis_outage_total", control="rate_limit",
                               mode="local_fallback") > fallbacks_before

                own_redis.start()  # same port: the workers' clients reconnect
                restarted_at = time.monotonic()
                _poll(lambda: len(driver.since(restarted_at)) >= 20, timeout_s=120,
                      what="20 requests after Redis is back")

            failed = [o for o in driver.outcomes if o.status != 200]
            assert failed == [], failed[:5]
            during = [o for o in driver.outcomes
                      if o.started > killed_at and o.ended < restarted_at]
            warm_during = [o for o in during if o.warm]
            assert warm_during and not any(o.cache_hit for o in warm_during)
            assert {o.status for o in during} == {200}

            # Redis back: reported ready again, and answers are cached again.
            _poll(lambda: all(_ready_checks(service.url)[name]["ok"]
                              for name in ("redis_cache", "redis_control")),
                  timeout_s=30, what="/readyz reporting Redis ok again")
            fresh = f"After the outage {secrets.token_hex(3)}: what causes anaemia?"
            _poll(lambda: _ask(client, api_key, fresh).json()["cache_hit"], timeout_s=30,
                  what="a repeated question served from the cache again", interval_s=0.2)

        # Every answered request was audited, the outage's included.
        request_ids = [o.request_id for o in driver.outcomes if o.request_id]
        assert len(request_ids) == len(driver.outcomes)
        missing = set(request_ids) - _audited(settings, request_ids)
        assert missing == set()
    finally:
        own_redis.stop()


# --- a worker killed while it runs a batch -------------------------------------------------
def _job(settings: Settings, batch_id: str) -> tuple[str, str | None, int, int]:
    """(status, lease_owner, attempts, answer events) of a batch, read as the admin."""
    with psycopg.connect(resolve_targets(settings).admin_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT j.status, j.lease_owner, j.attempts, (SELECT count(*) FROM "
            "rag.batch_events e WHERE e.batch_id = j.batch_id AND e.kind = 'answer') "
            "FROM rag.batch_jobs j WHERE j.batch_id = %s", [batch_id]).fetchone()
    assert row is not None
    return str(row[0]), row[1], int(row[2]), int(row[3])


def _owner_pid(owner: str) -> int:
    """The pid in a lease owner ``hostname:pid:random``."""
    return int(owner.rsplit(":", 2)[1])


def test_killing_the_worker_running_a_batch_loses_no_request_and_no_question(
        settings: Settings, corpus_tenant: TenantId, api_key: str, fake_llm: FakeGroqServer,
        redis_server: EmbeddedRedis, tmp_path: Path) -> None:
    fake_llm.set_default(answering_after(LLM_CALL_S))
    env = _service_env(settings, fake_llm, tmp_path, redis_url=redis_server.url(),
                       control_url=redis_server.control_url(), RAG_BATCH_SIZE="5",
                       RAG_API__BATCH_LEASE_S="2")
    questions = [{"id": f"k{i}", "question": f"Kill test {secrets.token_hex(3)}: is gene {i} "
                                             "linked to cancer?"} for i in range(20)]
    with ServeProcess(env, workers=2) as service, \
            httpx.Client(base_url=service.url, timeout=30,
                         headers={"Authorization": f"Bearer {api_key}"}) as client:
        workers = service.worker_pids()
        assert len(workers) == 2
        created = client.post("/v1/batches", json={"questions": questions})
        assert created.status_code == 202, created.text
        batch_id = created.json()["batch_id"]

        def mid_job() -> str | None:
            """The lease owner once the job runs and its first group is recorded."""
            status, owner, _, answers = _job(settings, batch_id)
            return owner if status == "running" and answers >= 1 else None

        # The kill lands in the middle of the job: running, its first group recorded.
        owner = _poll(mid_job, timeout_s=120, what="the batch running, a group answered")
        victim = _owner_pid(owner)
        assert victim in workers
        os.kill(victim, signal.SIGKILL)
        assert _job(settings, batch_id)[0] == "running"  # the dead worker cannot finish it

        # The other worker keeps answering, on fresh connections (any that was the dead
        # worker's is gone with it).
        for i in range(5):
            response = httpx.post(f"{service.url}/v1/query", timeout=30,
                                  json={"question": f"While a worker is down {i}?"},
                                  headers={"Authorization": f"Bearer {api_key}"})
            assert response.status_code == 200, response.text
            assert response.json()["answer"]

        # uvicorn replaces the dead worker; the lease passes and a live worker finishes.
        def replaced() -> bool:
            pids = service.worker_pids()
            return len(pids) == 2 and victim not in pids

        def finished() -> dict[str, Any] | None:
            body: dict[str, Any] = client.get(f"/v1/batches/{batch_id}").json()
            return body if body["status"] in ("done", "failed") else None

        # The batch does not wait for the replacement: the lease passes and the live worker
        # takes it over.
        done = _poll(finished, timeout_s=180, what="the batch finished after the kill",
                     interval_s=0.2)
        assert done["status"] == "done", done
        # uvicorn notices a dead worker within its 0.5 s loop, unless the kill landed while
        # it was pinging that very worker: then only after the health-check timeout (120 s,
        # rag serve's; the parent holds both ends of the ping pipe, so no EOF tells it).
        _poll(replaced, timeout_s=200, what="uvicorn replacing the killed worker")
        state = client.get(f"/v1/batches/{batch_id}", params={"answers": "true"}).json()
        answered = [a["question_id"] for a in state["answers"]]
        assert sorted(answered) == sorted(q["id"] for q in questions)  # each exactly once
        assert all(a["answer"] and a["error_code"] is None for a in state["answers"])
        assert state["summary"]["questions"] == 20 and state["summary"]["answered"] == 20
        _, owner_after, attempts, events = _job(settings, batch_id)
        assert (owner_after, events) == (None, 20)
        assert attempts >= 2  # claimed again after the kill
        assert len(service.wait_serving(2, timeout_s=180)) == 2  # both serve again
