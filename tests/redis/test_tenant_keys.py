"""Deleting a tenant purges its Redis keys in every database, and a tenant id created again
never reads what the old tenant left, even when the purge could not run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import psycopg
import redis

from rag_core.common.tenancy import TenantId, new_tenant_id
from rag_core.composition import Platform
from rag_core.config import RateLimitPolicy
from rag_core.db import tenant_admin
from rag_core.limits.quota import TokenQuota
from rag_core.limits.rate import RateLimiter
from rag_core.query.answer_cache import AnswerCache
from rag_core.redis.tenant_keys import TenantKeys
from rag_core.retrieval.embedding_cache import QueryEmbeddingCache
from tests.redis.conftest import raw_keys

Connection = psycopg.Connection[tuple[Any, ...]]
ANSWER = {"answer": "Yes [1].", "citations": [1], "model": "m", "sources": []}


def _fill(platform: Platform, tenant: TenantId) -> tuple[AnswerCache, QueryEmbeddingCache]:
    """One key of every family: answer, query embedding, rate window, quota."""
    answers = AnswerCache(platform.redis, epochs=platform.cache_epochs)
    vectors = QueryEmbeddingCache(platform.redis, "model", "1", dimension=4,
                                  epochs=platform.cache_epochs)
    answers.put(answers.key(tenant, "q", 0), ANSWER)
    vectors.put(tenant, "q", np.ones(4, dtype=np.float32))
    RateLimiter(platform.redis_control, RateLimitPolicy()).admit(tenant)
    TokenQuota(platform.redis_control, RateLimitPolicy()).reserve(tenant, 10)
    return answers, vectors


def test_deleting_a_tenant_purges_its_keys_in_every_database(
        platform: Platform, owner: Connection,
        fixed_tenant: Callable[[str], TenantId]) -> None:
    tenant, neighbour = fixed_tenant(new_tenant_id()), fixed_tenant(new_tenant_id())
    _fill(platform, tenant)
    _fill(platform, neighbour)
    pattern = f"rag:*{tenant}*"
    cache_keys = raw_keys(platform.redis, pattern)
    control_keys = raw_keys(platform.redis_control, pattern)
    assert {k.split(b":")[2] for k in cache_keys} == {b"answer", b"qemb"}
    assert {k.split(b":")[1] for k in control_keys} == {b"rl", b"quota"}
    neighbours = platform.tenant_keys.find(neighbour)

    deletion = tenant_admin.delete_tenant(owner, tenant, redis_keys=platform.tenant_keys)

    assert deletion.existed and deletion.purge is not None and deletion.purge.complete
    assert deletion.purge.keys_deleted == len(cache_keys) + len(control_keys)
    assert platform.tenant_keys.find(tenant) == []
    assert sorted(platform.tenant_keys.find(neighbour)) == sorted(neighbours)
    # Re-run (the row is gone): nothing left to do, and no error.
    again = tenant_admin.delete_tenant(owner, tenant, redis_keys=platform.tenant_keys)
    assert not again.existed and again.purge is not None and again.purge.keys_deleted == 0


def test_a_tenant_created_again_never_sees_the_old_cache_even_if_keys_survive(
        platform: Platform, owner: Connection,
        fixed_tenant: Callable[[str], TenantId]) -> None:
    tenant = fixed_tenant(new_tenant_id())
    answers, vectors = _fill(platform, tenant)
    old_answer_key = answers.key(tenant, "q", 0)
    assert answers.get(old_answer_key) == ANSWER
    assert vectors.get(tenant, "q") is not None
    surviving = raw_keys(platform.redis, f"rag:{tenant}:*")

    # Redis away at deletion time: the purge fails, the keys survive.
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    deletion = tenant_admin.delete_tenant(owner, tenant, redis_keys=TenantKeys([dead]))
    assert deletion.existed and deletion.purge is not None and not deletion.purge.complete
    assert "ConnectionError" in (deletion.purge.error or "")
    assert raw_keys(platform.redis, f"rag:{tenant}:*") == surviving

    fixed_tenant(tenant)  # the same id, created again
    assert answers.get(answers.key(tenant, "q", 0)) is None
    assert vectors.get(tenant, "q") is None
    assert answers.get(old_answer_key) == ANSWER  # the old entry is there, just unreachable
    assert set(surviving) <= set(raw_keys(platform.redis, f"rag:{tenant}:*"))
