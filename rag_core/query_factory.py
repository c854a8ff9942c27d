"""Assemble the query path from settings (shared by the CLI, the flows and the benchmark)."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import redis

from rag_core import services
from rag_core._proc import file_lock, write_atomic
from rag_core.audit import AuditLog
from rag_core.batching import ExtractiveAnswerer, LLMBatchAnswerer
from rag_core.cache import AnswerCache, QueryEmbeddingCache
from rag_core.concurrency import FailOpenSlots, RedisSemaphore
from rag_core.config import Settings
from rag_core.db.pool import Database
from rag_core.embeddings.base import Embedder
from rag_core.ingestion.factory import embedder_from, store_from
from rag_core.llm.breaker import RedisCircuitBreaker
from rag_core.llm.client import LLMClient
from rag_core.llm.policy import LLMConfig
from rag_core.llm.prompts import PROMPT_VERSION
from rag_core.query_service import QueryConfig, QueryService
from rag_core.rate_limit import RateLimiter, TokenQuota
from rag_core.redis_client import redis_from_settings
from rag_core.retrieval.retriever import Retriever

EXTRACTIVE_MODEL = "extractive-fallback"


def session_key(settings: Settings) -> bytes:
    """The HMAC key for session ids: configured, or created once in the state folder."""
    if settings.session_hash_key is not None:
        return settings.session_hash_key.get_secret_value().encode()
    path = settings.state_dir / "session_hash.key"
    if not path.exists():
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        with file_lock(settings.state_dir / ".session_key.lock"):
            if not path.exists():
                write_atomic(path, secrets.token_hex(32), mode=0o600)
    return path.read_text().strip().encode()


def build_answerer(settings: Settings, client: redis.Redis) -> tuple[Any, LLMClient | None]:
    """The LLM batch answerer when an API key is configured, else the extractive one."""
    if settings.llm_api_key is None:
        return ExtractiveAnswerer(), None
    # One breaker per model endpoint, shared by every process that calls it.
    breaker = RedisCircuitBreaker(f"llm:{settings.llm_model}", client, settings.breaker,
                                  key_prefix=f"{settings.redis_key_prefix}:breaker")
    llm = LLMClient(LLMConfig(base_url=settings.llm_base_url, api_key=settings.llm_api_key,
                              model=settings.llm_model, timeout_s=settings.llm_timeout_s,
                              max_tokens=settings.llm_max_tokens),
                    breaker=breaker, retry=settings.retry)
    return LLMBatchAnswerer(llm, max_batch_size=settings.batch_size), llm


def build_query_service(settings: Settings, db: Database, *,
                        embedder: Embedder | None = None,
                        redis_url: str | None = None) -> QueryService:
    embedder = embedder or embedder_from(settings)
    client = redis_from_settings(settings, redis_url or services.redis_url(settings))
    prefix = settings.redis_key_prefix
    limits = settings.rate_limit.model_copy(update={"key_prefix": prefix})
    answerer, _llm = build_answerer(settings, client)
    retriever = Retriever(embedder, store_from(settings, db),
                          QueryEmbeddingCache(client, embedder.model_id, embedder.model_version,
                                              prefix=prefix),
                          k=settings.retrieval_k, weak_score_below=settings.weak_score_below)
    config = QueryConfig(
        k=settings.retrieval_k, batch_size=settings.batch_size,
        max_concurrent_llm_calls=settings.max_concurrent_llm_calls,
        max_concurrent_searches=settings.max_concurrent_searches,
        model=settings.llm_model if settings.llm_api_key is not None else EXTRACTIVE_MODEL,
        prompt_version=PROMPT_VERSION,
        embedding_model=f"{embedder.model_id}@{embedder.model_version}")
    return QueryService(
        db, retriever, answerer, config=config,
        answer_cache=AnswerCache(client, ttl_s=settings.answer_cache_ttl_s, prefix=prefix),
        rate_limiter=RateLimiter(client, limits),
        quota=TokenQuota(client, limits),
        audit=AuditLog(db, Path(settings.state_dir) / "spool",
                       store_question=settings.audit_question_storage),
        session_key=session_key(settings),
        # The LLM-call cap holds across every process sharing this Redis (Prefect workers
        # included), not only within one.
        llm_slots=FailOpenSlots(RedisSemaphore(
            client, f"llm:{settings.llm_model}", settings.max_concurrent_llm_calls,
            key_prefix=f"{prefix}:sem")) if settings.llm_api_key is not None else None)
