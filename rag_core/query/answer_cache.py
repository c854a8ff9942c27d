"""The answer cache: Redis, tenant-scoped keys, a miss whenever Redis is down or slow.

Key: tenant + the tenant's cache epoch + sha256(normalised question) + a digest of everything
that changes an answer (retrieval settings, model, prompt version) + the tenant's corpus
version, which every ingestion that changes the tenant's data bumps: a stale answer is never
served after new documents land, without any scan-and-delete invalidation. The epoch (drawn
when the tenant row is created, :mod:`rag_core.db.cache_epochs`) keeps a tenant id that was
deleted and created again from reading what the old tenant left; without an epoch (no such
tenant, database trouble) the cache is neither read nor written.

What Redis returns is data from outside the process (another version, a hand edit, a torn
write): it is validated against :class:`CachedAnswer` before use. A payload that does not
parse or has the wrong shape is a miss, is deleted, and is counted (outcome ``invalid``).

A Redis error (refused, timeout) goes to the outage policy (:mod:`rag_core.common.outage`,
control ``answer_cache``): failing open, it is a miss (reads) or ignored (writes).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import redis
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rag_core.common.hashing import digest, normalize_question
from rag_core.common.metrics import CACHE_LOOKUPS
from rag_core.common.outage import DEFAULT_OUTAGES, Control, Outages
from rag_core.common.tenancy import TenantId, parse_tenant_id
from rag_core.db.cache_epochs import EpochSource

_log = logging.getLogger(__name__)

_STRICT = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False, frozen=True)


class CachedSource(BaseModel):
    """One source of a cached answer (the fields of ``rag_core.query.service.Source``)."""

    model_config = _STRICT

    chunk_id: int
    document_id: int
    score: float
    excerpt: str


class CachedAnswer(BaseModel):
    """The shape a cached answer must have to be served."""

    model_config = _STRICT

    answer: str = Field(min_length=1)
    citations: list[int]
    model: str | None
    sources: list[CachedSource]


@dataclass(frozen=True)
class AnswerKey:
    tenant_id: TenantId
    question_hash: str
    config_digest: str
    corpus_version: int
    prefix: str = "rag"
    epoch: str | None = None  # None: the tenant has no epoch; nothing is read or written

    def redis_key(self) -> str:
        return (f"{self.prefix}:{self.tenant_id}:answer:e{self.epoch}:v{self.corpus_version}:"
                f"{self.config_digest[:16]}:{self.question_hash}")


class AnswerCache:
    """Cached answers (JSON payloads) per tenant, question, configuration and corpus version."""

    def __init__(self, client: redis.Redis, *, epochs: EpochSource, ttl_s: int = 3600,
                 prefix: str = "rag", outages: Outages = DEFAULT_OUTAGES) -> None:
        self._client = client
        self._epochs = epochs
        self.ttl_s = ttl_s
        self.prefix = prefix
        self._outages = outages

    def key(self, tenant_id: TenantId | str, question: str, corpus_version: int,
            **config: Any) -> AnswerKey:
        tenant = parse_tenant_id(tenant_id)
        return AnswerKey(tenant, digest(normalize_question(question)), digest(config),
                         corpus_version, self.prefix, self._epochs(tenant))

    def get(self, key: AnswerKey) -> dict[str, Any] | None:
        """The cached answer as plain data (``CachedAnswer``'s fields), or None."""
        if key.epoch is None:
            CACHE_LOOKUPS.labels("answer", "no_epoch").inc()
            return None
        name = key.redis_key()
        try:
            raw = self._client.get(name)
        except redis.RedisError as exc:
            self._outages.carry_on_or_raise(Control.ANSWER_CACHE, "get", exc)
            return None
        if raw is None:
            CACHE_LOOKUPS.labels("answer", "miss").inc()
            return None
        try:
            cached = CachedAnswer.model_validate_json(raw)
        except (ValidationError, ValueError, RecursionError) as exc:
            self._discard(name, exc)
            return None
        CACHE_LOOKUPS.labels("answer", "hit").inc()
        return cached.model_dump()

    def put(self, key: AnswerKey, payload: dict[str, Any]) -> None:
        if key.epoch is None:
            return
        try:
            body = CachedAnswer.model_validate(payload).model_dump_json()
        except ValidationError as exc:
            # Would be refused on the way back: not worth the memory.
            _log.warning("answer not cached: its payload is not a CachedAnswer (%s)",
                         exc.errors()[0]["msg"])
            return
        try:
            self._client.set(key.redis_key(), body, ex=self.ttl_s)
        except redis.RedisError as exc:
            self._outages.carry_on_or_raise(Control.ANSWER_CACHE, "put", exc)

    def _discard(self, name: str, exc: Exception) -> None:
        CACHE_LOOKUPS.labels("answer", "invalid").inc()
        _log.warning("cached answer %s is invalid (%s): deleted, treated as a miss", name,
                     type(exc).__name__)
        try:
            self._client.delete(name)
        except redis.RedisError as error:
            self._outages.carry_on_or_raise(Control.ANSWER_CACHE, "delete", error)
