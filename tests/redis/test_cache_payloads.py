"""Cached payloads are data from outside the process: validated before use, and a bad one is
a miss that is deleted and counted, never an exception or a wrong answer."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import redis

from rag_core.common.metrics import CACHE_LOOKUPS
from rag_core.common.tenancy import TenantId, new_tenant_id
from rag_core.db.cache_epochs import CacheEpochs
from rag_core.query.answer_cache import AnswerCache
from rag_core.retrieval.embedding_cache import QueryEmbeddingCache

GOOD_ANSWER = {"answer": "Yes [1].", "citations": [1], "model": "m",
               "sources": [{"chunk_id": 7, "document_id": 3, "score": 0.8, "excerpt": "x"}]}


def lookups(cache: str, outcome: str) -> float:
    for metric in CACHE_LOOKUPS.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and sample.labels == {"cache": cache,
                                                                    "outcome": outcome}:
                return float(sample.value)
    return 0.0


@pytest.mark.parametrize("raw", [
    b"not json",
    b"\xff\xfe",
    b'{"answer": "Yes", "citations": [1], "model": "m"}',                  # no sources
    b'{"answer": 42, "citations": [], "model": "m", "sources": []}',       # answer not text
    b'{"answer": "", "citations": [], "model": "m", "sources": []}',       # empty answer
    b'{"answer": "a", "citations": ["1"], "model": "m", "sources": []}',   # citation as text
    b'{"answer": "a", "citations": [], "model": "m", "sources": [{"chunk_id": 1}]}',
    b'{"answer": "a", "citations": [], "model": "m", "sources": [], "admin": true}',
    b"[" * 5000,
])
def test_a_corrupt_cached_answer_is_a_counted_miss_and_deleted(
        redis_client: redis.Redis, epochs: CacheEpochs,
        make_tenant: Callable[[], TenantId], raw: bytes) -> None:
    cache = AnswerCache(redis_client, epochs=epochs)
    key = cache.key(make_tenant(), "Does vitamin D help?", 1, k=5)
    cache.put(key, GOOD_ANSWER)
    assert cache.get(key) == GOOD_ANSWER
    redis_client.set(key.redis_key(), raw)
    before = lookups("answer", "invalid")
    assert cache.get(key) is None
    assert redis_client.exists(key.redis_key()) == 0
    assert lookups("answer", "invalid") == before + 1


def test_an_answer_of_the_wrong_shape_is_not_stored(
        redis_client: redis.Redis, epochs: CacheEpochs,
        make_tenant: Callable[[], TenantId]) -> None:
    cache = AnswerCache(redis_client, epochs=epochs)
    key = cache.key(make_tenant(), "q", 1)
    cache.put(key, {**GOOD_ANSWER, "citations": "1"})
    assert redis_client.exists(key.redis_key()) == 0


@pytest.mark.parametrize("raw", [
    np.ones(3, dtype=np.float32).tobytes(),                      # wrong dimension
    np.ones(5, dtype=np.float32).tobytes(),
    np.ones(4, dtype=np.float64).tobytes(),                      # float64: 8 floats' bytes
    np.array([1, np.nan, 0, 0], dtype=np.float32).tobytes(),     # not finite
    np.array([1, np.inf, 0, 0], dtype=np.float32).tobytes(),
    b"",
])
def test_a_corrupt_cached_vector_is_a_counted_miss_and_deleted(
        redis_client: redis.Redis, epochs: CacheEpochs,
        make_tenant: Callable[[], TenantId], raw: bytes) -> None:
    cache = QueryEmbeddingCache(redis_client, "model", "1", dimension=4, epochs=epochs)
    tenant = make_tenant()
    good = np.array([0.5, 0.5, 0.5, 0.5], dtype=np.float32)
    cache.put(tenant, "q", good)
    cached = cache.get(tenant, "q")
    assert cached is not None and np.array_equal(cached, good)
    (name,) = redis_client.scan_iter(match=f"rag:{tenant}:qemb:*", count=1000)
    redis_client.set(name, raw)
    before = lookups("query_embedding", "invalid")
    assert cache.get(tenant, "q") is None
    assert redis_client.exists(name) == 0
    assert lookups("query_embedding", "invalid") == before + 1


def test_a_vector_of_the_wrong_dimension_is_not_stored(
        redis_client: redis.Redis, epochs: CacheEpochs,
        make_tenant: Callable[[], TenantId]) -> None:
    cache = QueryEmbeddingCache(redis_client, "model", "1", dimension=4, epochs=epochs)
    tenant = make_tenant()
    cache.put(tenant, "q", np.ones(3, dtype=np.float32))
    assert list(redis_client.scan_iter(match=f"rag:{tenant}:qemb:*")) == []


def test_a_tenant_without_a_row_is_never_cached(redis_client: redis.Redis,
                                                epochs: CacheEpochs) -> None:
    """No row, no epoch: neither cache reads or writes (failing closed costs a miss)."""
    tenant = new_tenant_id()
    answers = AnswerCache(redis_client, epochs=epochs)
    vectors = QueryEmbeddingCache(redis_client, "model", "1", dimension=4, epochs=epochs)
    key = answers.key(tenant, "q", 0)
    answers.put(key, GOOD_ANSWER)
    vectors.put(tenant, "q", np.ones(4, dtype=np.float32))
    assert answers.get(key) is None and vectors.get(tenant, "q") is None
    assert list(redis_client.scan_iter(match=f"rag:*{tenant}*")) == []
