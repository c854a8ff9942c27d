"""The answer cache: Redis, tenant-scoped keys, a miss whenever Redis is down or slow.

Key: tenant + sha256(normalised question) + a digest of everything that changes an answer
(retrieval settings, model, prompt version) + the tenant's corpus version, which every
ingestion that changes the tenant's data bumps: a stale answer is never served after new
documents land, without any scan-and-delete invalidation.

A Redis error (refused, timeout) goes to the outage policy (:mod:`rag_core.common.outage`,
control ``answer_cache``): failing open, it is a miss (reads) or ignored (writes).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import redis

from rag_core.common.hashing import digest, normalize_question
from rag_core.common.metrics import CACHE_LOOKUPS
from rag_core.common.outage import DEFAULT_OUTAGES, Control, Outages
from rag_core.common.tenancy import TenantId, parse_tenant_id


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

    def __init__(self, client: redis.Redis, ttl_s: int = 3600, prefix: str = "rag",
                 outages: Outages = DEFAULT_OUTAGES) -> None:
        self._client = client
        self.ttl_s = ttl_s
        self.prefix = prefix
        self._outages = outages

    def key(self, tenant_id: TenantId | str, question: str, corpus_version: int,
            **config: Any) -> AnswerKey:
        tenant = parse_tenant_id(tenant_id)
        return AnswerKey(tenant, digest(normalize_question(question)), digest(config),
                         corpus_version, self.prefix)

    def get(self, key: AnswerKey) -> dict[str, Any] | None:
        try:
            raw = self._client.get(key.redis_key())
        except redis.RedisError as exc:
            self._outages.carry_on_or_raise(Control.ANSWER_CACHE, "get", exc)
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
            self._outages.carry_on_or_raise(Control.ANSWER_CACHE, "put", exc)
