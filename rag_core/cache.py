"""Redis caches with tenant-scoped keys that degrade to "miss" when Redis is down or slow.

Answer cache key: tenant + sha256(normalised question) + a digest of everything that
changes an answer (retrieval settings, model, prompt version) + the tenant's corpus version,
which every ingestion that changes the tenant's data bumps: a stale answer is never served
after new documents land, without any scan-and-delete invalidation.

Query-embedding cache key: tenant + model id + model version + sha256(normalised text). It
is tenant-scoped too, although embeddings do not depend on the tenant: a shared entry would
let one tenant learn by timing whether another asked the same question.

Every Redis error (refused, timeout) is counted in ``rag_cache_bypassed`` and treated as a
miss (reads) or ignored (writes): a query never fails because its cache is unavailable.
"""

from __future__ import annotations

import hashlib
import json
import logging
import unicodedata
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import redis
from prometheus_client import Counter

from rag_core.metrics import REGISTRY
from rag_core.tenancy import TenantId, parse_tenant_id

_log = logging.getLogger(__name__)

CACHE_BYPASSED = Counter("rag_cache_bypassed", "Cache operations skipped because Redis failed.",
                         ["cache", "operation"], registry=REGISTRY)
CACHE_LOOKUPS = Counter("rag_cache_lookups", "Cache lookups by outcome.", ["cache", "outcome"],
                        registry=REGISTRY)


def normalize_question(text: str) -> str:
    """Case-folded, NFKC, whitespace-collapsed: trivially different spellings share a key."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class AnswerKey:
    tenant_id: TenantId
    question_hash: str
    config_digest: str
    corpus_version: int
    prefix: str = "rag"

    def redis_key(self) -> str:
        return (f"{self.prefix}:{self.tenant_id}:answer:v{self.corpus_version}:"
                f"{self.config_digest[:16]}:{self.question_hash}")


class AnswerCache:
    """Cached answers (JSON payloads) per tenant, question, configuration and corpus version."""

    def __init__(self, client: redis.Redis, ttl_s: int = 3600, prefix: str = "rag") -> None:
        self._client = client
        self.ttl_s = ttl_s
        self.prefix = prefix

    def key(self, tenant_id: TenantId | str, question: str, corpus_version: int,
            **config: Any) -> AnswerKey:
        tenant = parse_tenant_id(tenant_id)
        return AnswerKey(tenant, digest(normalize_question(question)), digest(config),
                         corpus_version, self.prefix)

    def get(self, key: AnswerKey) -> dict[str, Any] | None:
        try:
            raw = self._client.get(key.redis_key())
        except redis.RedisError as exc:
            self._bypassed("get", exc)
            return None
        CACHE_LOOKUPS.labels("answer", "hit" if raw is not None else "miss").inc()
        if raw is None:
            return None
        value: dict[str, Any] = json.loads(raw)
        return value

    def put(self, key: AnswerKey, payload: dict[str, Any]) -> None:
        try:
            self._client.set(key.redis_key(), json.dumps(payload), ex=self.ttl_s)
        except redis.RedisError as exc:
            self._bypassed("put", exc)

    @staticmethod
    def _bypassed(operation: str, exc: Exception) -> None:
        CACHE_BYPASSED.labels("answer", operation).inc()
        _log.warning("answer cache %s bypassed: %s", operation, exc)


class QueryEmbeddingCache:
    """Query vectors per tenant and exact model, as raw float32 bytes."""

    def __init__(self, client: redis.Redis, model_id: str, model_version: str,
                 ttl_s: int = 7 * 24 * 3600, prefix: str = "rag") -> None:
        self._client = client
        self._model = digest(model_id, model_version)[:16]
        self.ttl_s = ttl_s
        self.prefix = prefix

    def _key(self, tenant: TenantId, text: str) -> str:
        return f"{self.prefix}:{tenant}:qemb:{self._model}:{digest(normalize_question(text))}"

    def get(self, tenant_id: TenantId | str, text: str) -> npt.NDArray[np.float32] | None:
        tenant = parse_tenant_id(tenant_id)
        try:
            raw = self._client.get(self._key(tenant, text))
        except redis.RedisError as exc:
            CACHE_BYPASSED.labels("query_embedding", "get").inc()
            _log.warning("query embedding cache bypassed: %s", exc)
            return None
        CACHE_LOOKUPS.labels("query_embedding", "hit" if raw is not None else "miss").inc()
        if not isinstance(raw, bytes):
            return None  # a client with decode_responses=True cannot hold vectors
        return np.frombuffer(raw, dtype=np.float32).copy()

    def put(self, tenant_id: TenantId | str, text: str,
            vector: npt.NDArray[np.float32]) -> None:
        tenant = parse_tenant_id(tenant_id)
        try:
            self._client.set(self._key(tenant, text),
                             np.asarray(vector, dtype=np.float32).tobytes(), ex=self.ttl_s)
        except redis.RedisError:
            CACHE_BYPASSED.labels("query_embedding", "put").inc()
