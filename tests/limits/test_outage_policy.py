"""One outage policy for the limits: the rate limit falls back to a per-process window, the
token quota fails closed after its grace period, and what was spent while Redis was away is
charged from the audit log once it is back (exactly once).

The end-to-end test runs real questions (real PostgreSQL, real embeddings, a fake LLM over
HTTP) against its OWN embedded Redis, which it kills and restarts; the suite's shared Redis
is only used by the tests that never kill anything.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pydantic
import pytest
import redis
from pydantic import SecretStr

from rag_core.codes import ErrorCode
from rag_core.common.outage import Control, Outages, outage_count
from rag_core.common.tenancy import TenantId, new_tenant_id
from rag_core.composition import Platform
from rag_core.config import LLMSettings, OutageMode, OutagePolicy, RateLimitPolicy, Settings
from rag_core.db.pool import Database
from rag_core.embeddings.base import Embedder
from rag_core.errors import QuotaUnavailableError, RateLimitBackendError
from rag_core.limits.guarded import GuardedQuota, GuardedRateLimiter
from rag_core.limits.quota import TokenQuota
from rag_core.limits.rate import RateLimiter
from rag_core.redis.embedded import EmbeddedRedis
from rag_testing.fake_groq import (
    FakeGroqServer,
    FakeResponse,
    RecordedRequest,
    answering_responder,
)
from tests.conftest import REPO_ROOT, cli_environment
from tests.limits.conftest import FakeClock
from tests.query.conftest import audit_rows, last_audit_id


def _dead_client() -> redis.Redis:
    """A client of a port nobody listens on (port 1 is privileged and unused)."""
    return redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2,
                       socket_timeout=0.2)


# --- the policy object ---------------------------------------------------------------------
def test_defaults_fall_back_locally_for_the_rate_limit_and_keep_caches_open() -> None:
    policy = OutagePolicy()
    assert policy.rate_limit is OutageMode.LOCAL_FALLBACK
    assert policy.token_quota is OutageMode.FAIL_OPEN and policy.token_quota_grace_s == 60
    assert policy.answer_cache is OutageMode.FAIL_OPEN
    assert policy.embedding_cache is OutageMode.FAIL_OPEN
    with pytest.raises(pydantic.ValidationError, match="only rate_limit"):
        OutagePolicy(answer_cache=OutageMode.LOCAL_FALLBACK)
    with pytest.raises(pydantic.ValidationError):
        OutagePolicy(token_quota_grace_s=-1)


def test_the_quota_fails_open_for_its_grace_period_from_the_first_failure() -> None:
    clock = FakeClock()
    outages = Outages(OutagePolicy(token_quota_grace_s=30), clock=clock)
    error = RateLimitBackendError("reserve", new_tenant_id(), "down")
    closed_before = outage_count(Control.TOKEN_QUOTA, mode=OutageMode.FAIL_CLOSED)
    assert outages.handle(Control.TOKEN_QUOTA, "reserve", error)
    clock.advance(30)
    assert outages.handle(Control.TOKEN_QUOTA, "reserve", error)  # 30 s: still in grace
    assert outages.down_for(Control.TOKEN_QUOTA) == 30
    clock.advance(0.5)
    assert not outages.handle(Control.TOKEN_QUOTA, "reserve", error)
    assert outage_count(Control.TOKEN_QUOTA, mode=OutageMode.FAIL_CLOSED) == closed_before + 1
    # Redis answers again: the next outage gets a whole grace period of its own
    assert outages.recovered(Control.TOKEN_QUOTA) == 30.5
    assert outages.recovered(Control.TOKEN_QUOTA) is None
    clock.advance(1000)
    assert outages.handle(Control.TOKEN_QUOTA, "reserve", error)
    # the grace period is the quota's: other controls keep their mode however long it lasts
    assert outages.handle(Control.ANSWER_CACHE, "get", error)
    clock.advance(1000)
    assert outages.handle(Control.ANSWER_CACHE, "get", error)


def test_guarded_rate_limiter_follows_each_mode_when_redis_is_down() -> None:
    clock = FakeClock()
    tenant = new_tenant_id()
    limiter = RateLimiter(_dead_client(), RateLimitPolicy(requests_per_minute=2))
    fallbacks = outage_count(Control.RATE_LIMIT, "admit", OutageMode.LOCAL_FALLBACK)
    local = GuardedRateLimiter(limiter, Outages(clock=clock))
    assert [a.count for a in (local.admit(tenant), local.admit(tenant)) if a] == [1, 2]
    with pytest.raises(Exception) as refused:
        local.admit(tenant)
    assert getattr(refused.value, "code", None) == ErrorCode.RATE_LIMITED
    assert outage_count(Control.RATE_LIMIT, "admit", OutageMode.LOCAL_FALLBACK) == \
        fallbacks + 3
    fail_open = GuardedRateLimiter(limiter, Outages(
        OutagePolicy(rate_limit=OutageMode.FAIL_OPEN), clock=clock))
    assert all(fail_open.admit(tenant) is None for _ in range(5))
    closed = GuardedRateLimiter(limiter, Outages(
        OutagePolicy(rate_limit=OutageMode.FAIL_CLOSED), clock=clock))
    with pytest.raises(RateLimitBackendError):
        closed.admit(tenant)


def test_guarded_quota_reserves_provisionally_then_refuses_with_its_code() -> None:
    clock = FakeClock()
    tenant = new_tenant_id()
    quota = GuardedQuota(TokenQuota(_dead_client()),
                         Outages(OutagePolicy(token_quota_grace_s=10), clock=clock))
    provisional = quota.reserve(tenant, 500)
    assert provisional.tenant_id == tenant and provisional.estimated_tokens == 500
    debt = quota.settle(provisional, 420)
    assert debt == f"{provisional.day}:{provisional.reservation_id}"
    assert quota.owed_tenants() == [tenant]
    clock.advance(10.5)
    with pytest.raises(QuotaUnavailableError) as refused:
        quota.reserve(tenant, 500)
    error = refused.value
    assert error.code == ErrorCode.QUOTA_UNAVAILABLE and error.code.exit_code == 3
    assert (error.tenant_id, error.down_for_s, error.grace_s) == (tenant, 10.5, 10)
    assert tenant in str(error) and "10.5 s" in str(error)
    closed = GuardedQuota(TokenQuota(_dead_client()), Outages(
        OutagePolicy(token_quota=OutageMode.FAIL_CLOSED), clock=clock))
    with pytest.raises(QuotaUnavailableError) as at_once:
        closed.reserve(tenant, 1)
    assert at_once.value.grace_s == 0  # failing closed: no grace period at all


def test_charge_is_once_per_id_and_agrees_with_settle(redis_client: redis.Redis) -> None:
    quota = TokenQuota(redis_client, RateLimitPolicy(tokens_per_day=1000))
    tenant = new_tenant_id()
    day = quota.usage(tenant).day
    held = quota.reserve(tenant, 300)  # its settle "failed": the hold is still open
    settled = quota.reserve(tenant, 100)
    quota.settle(settled, 80)  # it reached Redis, though the caller may not know it
    charges = [(held.reservation_id, 250), (settled.reservation_id, 80),
               (secrets.token_hex(16), 40)]  # the last one: a provisional reservation
    assert quota.charge(tenant, day, charges) == (2, 290)
    usage = quota.usage(tenant)
    assert (usage.used, usage.reserved) == (80 + 250 + 40, 0)  # the hold was released
    assert quota.charge(tenant, day, charges) == (0, 0)  # twice: nothing changes
    assert quota.usage(tenant).used == 370
    assert not quota.settle(held, 250).applied  # nor does a late settle of the same id


# --- a Redis outage during real questions --------------------------------------------------
def _kill(server: EmbeddedRedis) -> None:
    pid = server.status().pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    while server.status().running:  # SIGKILL is delivered at once; wait for the exit
        time.sleep(0.01)


def _questions(prefix: str, count: int) -> list[str]:
    topics = ["vitamin D and bone density", "smoking and lung cancer", "T cell antigens",
              "antibiotic resistance", "obesity and diabetes", "aspirin and the heart",
              "microRNA gene regulation", "sleep and memory"]
    return [f"{prefix} {i}: what is known about {topics[i % len(topics)]}?"
            for i in range(count)]


def _tokens(rows: list[dict[str, Any]]) -> int:
    return sum(r["prompt_tokens"] + r["completion_tokens"] for r in rows)


def test_a_redis_outage_keeps_the_limits_and_is_settled_once_from_the_audit_log(
        settings: Settings, db: Database, embedder: Embedder, corpus_tenant: TenantId,
        fake_llm: FakeGroqServer, tmp_path: Path) -> None:
    own_redis = EmbeddedRedis(tmp_path / "redis-state")  # never the suite's shared Redis
    own_redis.start()
    clock = FakeClock()
    prefix = f"t{secrets.token_hex(4)}"
    service_settings = settings.model_copy(update={
        "state_dir": tmp_path / "state", "redis_key_prefix": prefix,
        "llm": LLMSettings(api_key=SecretStr("test-key"), base_url=fake_llm.base_url,
                           timeout_s=5.0),
        "rate_limit": RateLimitPolicy(requests_per_minute=20, window_s=600,
                                      tokens_per_day=100_000_000),
        "outage": OutagePolicy(token_quota_grace_s=30)})
    url = own_redis.url()
    platform = Platform(service_settings, database=db, embedder=embedder, redis_url=url)
    platform.outages = Outages(service_settings.outage, clock=clock)
    try:
        service = platform.query_service
        usage = platform.token_quota.inner.usage
        start = last_audit_id(db, corpus_tenant)

        # 1. Redis up: 5 questions, charged as usual.
        first = service.ask_many(corpus_tenant, _questions("A", 5))
        assert all(a.error_code is None for a in first)
        assert usage(corpus_tenant).used == sum(a.prompt_tokens + a.completion_tokens
                                                for a in first)

        # 2. Redis killed while the LLM answers: reserved before, not settled after.
        def kill_then_answer(request: RecordedRequest) -> FakeResponse:
            _kill(own_redis)
            fake_llm.set_default(answering_responder)
            return answering_responder(request)

        fake_llm.set_default(kill_then_answer)
        second = service.ask_many(corpus_tenant, _questions("B", 5))
        assert all(a.error_code is None and a.answer for a in second)

        # 3. Still down, within the grace period: 15 more. The local window remembers the
        # 10 requests Redis admitted, so of a limit of 20 it admits 10 and refuses 5.
        fallbacks = outage_count(Control.RATE_LIMIT, "admit", OutageMode.LOCAL_FALLBACK)
        third = service.ask_many(corpus_tenant, _questions("C", 15))
        codes = [a.error_code for a in third]
        assert codes == [None] * 10 + [ErrorCode.RATE_LIMITED] * 5
        assert all(0 < (a.retry_after_s or 0) <= 600 for a in third[10:])
        assert outage_count(Control.RATE_LIMIT, "admit", OutageMode.LOCAL_FALLBACK) == \
            fallbacks + 15

        # 4. Past the grace period (and past the window): admitted, then refused by the quota.
        clock.advance(601)
        calls = fake_llm.request_count
        fourth = service.ask_many(corpus_tenant, _questions("D", 3))
        assert [a.error_code for a in fourth] == [ErrorCode.QUOTA_UNAVAILABLE] * 3
        assert all("grace period" in (a.error or "") for a in fourth)
        assert fake_llm.request_count == calls  # no LLM call without a quota

        rows = [r for r in audit_rows(db, corpus_tenant, start) if r["kind"] == "sub_query"]
        assert len(rows) == 5 + 5 + 15 + 3  # every question audited, whatever happened
        by_code: dict[str | None, int] = {}
        for row in rows:
            by_code[row["error_code"]] = by_code.get(row["error_code"], 0) + 1
        assert by_code == {None: 20, "rate_limited": 5, "quota_unavailable": 3}
        owed = [r for r in rows if r["quota_debt"] is not None]
        assert len(owed) == 15  # B (settle failed) and C (provisional): answered, uncharged
        assert all(r["error_code"] is None and r["prompt_tokens"] > 0 for r in owed)
        owed_tokens = _tokens(owed)

        # 5. Redis is back (empty: the embedded one keeps nothing). The first reservation
        # notices and charges the debts from the audit log.
        own_redis.start()
        assert own_redis.url() == url  # same port: the platform's client reconnects
        fifth = service.ask_many(corpus_tenant, _questions("E", 2))
        assert all(a.error_code is None for a in fifth)
        fifth_tokens = sum(a.prompt_tokens + a.completion_tokens for a in fifth)
        assert usage(corpus_tenant).used == owed_tokens + fifth_tokens
        assert platform.token_quota.owed_tenants() == []

        # 6. Settling again, in this process or from the command line, changes nothing.
        again = service.settle_outage()
        assert again is not None and again.charged == 0
        env = cli_environment(
            RAG_STATE_DIR=str(settings.state_dir),
            RAG_EMBEDDED_DATABASE=settings.embedded_database,
            RAG_REDIS_URL=own_redis.url(), RAG_REDIS_KEY_PREFIX=prefix)
        cli = subprocess.run([sys.executable, "-m", "rag_core.cli", "quota", "settle",
                              "--tenant", corpus_tenant, "--json"], capture_output=True,
                             text=True, env=env, cwd=REPO_ROOT, timeout=300, check=False)
        assert cli.returncode == 0, cli.stderr
        report = json.loads(cli.stdout.strip().splitlines()[-1])
        assert (report["debts"], report["charged"], report["tokens_charged"]) == (15, 0, 0)
        assert usage(corpus_tenant).used == owed_tokens + fifth_tokens
    finally:
        platform.close()
        with contextlib.suppress(Exception):
            own_redis.stop()


def test_rag_quota_settle_charges_audited_debts_once_and_finds_the_tenants(
        settings: Settings, db: Database, make_tenant: Any, redis_server: EmbeddedRedis,
        tmp_path: Path) -> None:
    tenant = make_tenant()
    prefix = f"t{secrets.token_hex(4)}"
    platform = Platform(settings.model_copy(update={"redis_key_prefix": prefix}),
                        database=db, start_services=False, redis_url=redis_server.url())
    quota = platform.token_quota.inner
    day = quota.usage(tenant).day
    debts = [(secrets.token_hex(16), 100 + i, 7 * i) for i in range(3)]
    rows: list[tuple[str | None, int, int]] = [
        (f"{day}:{reservation_id}", prompt, completion)
        for reservation_id, prompt, completion in debts] + [(None, 999, 0)]  # last: no debt
    with db.tenant_session(tenant) as conn:  # audit rows as the query path writes them
        for debt, prompt, completion in rows:
            conn.execute("INSERT INTO rag.audit_log (tenant_id, request_id, kind, "
                         "prompt_tokens, completion_tokens, quota_debt) "
                         "VALUES (%s, gen_random_uuid(), 'query', %s, %s, %s)",
                         [tenant, prompt, completion, debt])
    owed = sum(prompt + completion for _, prompt, completion in debts)
    env = cli_environment(RAG_STATE_DIR=str(settings.state_dir),
                          RAG_EMBEDDED_DATABASE=settings.embedded_database,
                          RAG_REDIS_URL=redis_server.url(), RAG_REDIS_KEY_PREFIX=prefix)

    def rag(*args: str) -> dict[str, Any]:
        done = subprocess.run([sys.executable, "-m", "rag_core.cli", *args, "--json"],
                              capture_output=True, text=True, env=env, cwd=REPO_ROOT,
                              timeout=300, check=False)
        assert done.returncode == 0, done.stderr
        payload: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return payload

    first = rag("quota", "settle")  # no --tenant: found through the admin connection
    mine = [t for t in first["tenants"] if t["tenant_id"] == tenant]
    assert mine == [{"tenant_id": tenant, "debts": 3, "charged": 3, "tokens_charged": owed,
                     "skipped_old": 0}]
    assert rag("quota", "usage", "--tenant", tenant)["used"] == owed
    second = rag("quota", "settle", "--tenant", tenant)
    assert (second["debts"], second["charged"], second["tokens_charged"]) == (3, 0, 0)
    assert quota.usage(tenant).used == owed


def test_a_malformed_debt_is_refused_by_the_database(
        db: Database, make_tenant: Any) -> None:
    tenant = make_tenant()
    with pytest.raises(psycopg.errors.CheckViolation), db.tenant_session(tenant) as conn:
        conn.execute("INSERT INTO rag.audit_log (tenant_id, request_id, kind, quota_debt) "
                     "VALUES (%s, gen_random_uuid(), 'query', '2026:not-an-id')", [tenant])
