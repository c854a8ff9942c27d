"""The composition root: the one place that builds the platform's long-lived objects.

The CLI, every Prefect flow, the benchmarks and the test fixtures get the database pool, the
Redis client, the embedder, the retriever, the answerer, the query service and the
ingestion runner from a :class:`Platform`, so each is assembled one way only. Objects are
built on first use (a command that only migrates never loads a model) and closed together
by :meth:`Platform.close` (or the ``with`` block), in reverse order of creation; objects
passed in from outside (``database=``, ``embedder=``) are used, never closed.

Typical use::

    with Platform(get_settings()) as platform:
        answer = platform.query_service.ask(tenant, "Does vitamin D help?")
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from functools import cached_property
from types import TracebackType
from typing import Any

import psycopg
import redis
from redis import Redis as RedisClient

from rag_core.answering import EXTRACTIVE_MODEL, ExtractiveAnswerer, LLMBatchAnswerer
from rag_core.common.outage import Outages
from rag_core.composition.keys import audit_hash_key, session_key
from rag_core.composition.routes import QueryRoutes
from rag_core.config import Settings
from rag_core.config.rollout import RolloutPolicy
from rag_core.db.api_keys import ApiKeys, CachedKeyResolver
from rag_core.db.cache_epochs import CacheEpochs
from rag_core.db.connection import admin_connection
from rag_core.db.feature_flags import CachedFlags, FlagStore
from rag_core.db.pool import Database
from rag_core.embeddings.base import Embedder
from rag_core.embeddings.registry import load_embedder
from rag_core.errors import RagCoreError
from rag_core.ingestion.chunking import ChunkingPolicy
from rag_core.ingestion.runner import IngestionRunner
from rag_core.ingestion.sources import SourceLimits
from rag_core.ingestion.worker import WorkerPolicy
from rag_core.limits.concurrency import GuardedSlots, RedisSemaphore
from rag_core.limits.guarded import GuardedQuota, GuardedRateLimiter
from rag_core.limits.quota import TokenQuota
from rag_core.limits.rate import RateLimiter
from rag_core.llm.breaker import RedisCircuitBreaker
from rag_core.llm.client import LLMClient
from rag_core.llm.prompts import PROMPT_VERSION
from rag_core.ops import services
from rag_core.ops.rollout.controller import Rollouts
from rag_core.query.answer_cache import AnswerCache
from rag_core.query.audit import AuditLog
from rag_core.query.audit_writer import BufferedAuditLog
from rag_core.query.batch_jobs import BatchJobs
from rag_core.query.batch_run import BatchFiles
from rag_core.query.batch_worker import BatchWorker, default_owner
from rag_core.query.service import QueryConfig, QueryService
from rag_core.query.variants import Variant, Variants
from rag_core.redis import urls as redis_urls
from rag_core.redis.client import redis_from_settings
from rag_core.redis.tenant_keys import TenantKeys
from rag_core.retrieval.embedding_cache import QueryEmbeddingCache
from rag_core.retrieval.hybrid import HybridRetriever
from rag_core.retrieval.retriever import Retriever
from rag_core.retrieval.vector_store import VectorStore

__all__ = ["EXTRACTIVE_MODEL", "Platform", "audit_hash_key", "session_key"]

Connection = psycopg.Connection[tuple[Any, ...]]

_log = logging.getLogger(__name__)


class Platform:
    """Every long-lived object of one process, built from ``settings`` on first use.

    ``start_services`` starts the embedded PostgreSQL and Redis when the settings call for
    them (a no-op for external servers). ``database``, ``embedder`` and ``redis_url`` let a
    caller share objects it owns (tests share one pool per session); ``redis_url`` is the
    caches' server and ``redis_control_url`` the controls' (default: ``redis_url``'s server
    at database ``redis_control_db``, see :mod:`rag_core.redis.urls`). ``serving`` marks
    the HTTP service's process: it may keep tenant state for a bounded time (see
    :attr:`cache_epochs`) so a cached answer needs no database round trip.
    """

    def __init__(self, settings: Settings, *, start_services: bool = True,
                 database: Database | None = None, embedder: Embedder | None = None,
                 redis_url: str | None = None, redis_control_url: str | None = None,
                 serving: bool = False) -> None:
        self.settings = settings
        self.serving = serving
        self.outages = Outages(settings.outage)
        self._start_services = start_services
        self._given_database = database
        self._given_embedder = embedder
        self._redis_url = redis_url
        self._redis_control_url = redis_control_url
        self._closers: list[Any] = []
        self._services_started = False

    # --- lifetime ------------------------------------------------------------------------
    def __enter__(self) -> Platform:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close what this platform opened, newest first (safe to call twice)."""
        while self._closers:
            closer = self._closers.pop()
            with contextlib.suppress(Exception):
                closer.close()

    def ensure_services(self) -> None:
        """Start the embedded servers the settings call for (idempotent)."""
        if self._start_services and not self._services_started:
            services.start_services(self.settings)
            self._services_started = True

    # --- adapters --------------------------------------------------------------------------
    @cached_property
    def database(self) -> Database:
        """The pool of application-role connections."""
        if self._given_database is not None:
            return self._given_database
        self.ensure_services()
        database = services.open_database(self.settings)
        self._closers.append(database)
        return database

    @contextlib.contextmanager
    def admin_connection(self) -> Iterator[Connection]:
        """An autocommit connection as the admin (migrations, tenant administration).
        Refused in a ``runtime_only`` process: ``database`` needs only the application URL."""
        self.ensure_services()
        with admin_connection(self.settings) as conn:
            yield conn

    @cached_property
    def redis(self) -> redis.Redis:
        """The caches' fail-fast Redis client (tight timeouts, no client-side retries)."""
        if self._redis_url is None:
            self.ensure_services()
        client = redis_from_settings(self.settings,
                                     self._redis_url or redis_urls.cache_url(self.settings))
        self._closers.append(client)
        return client

    @cached_property
    def redis_control(self) -> RedisClient:  # `redis` is a property in here
        """The controls' client (rate limits, quota, breaker, LLM slots): a database that is
        never evicted, apart from the caches (:mod:`rag_core.redis.urls`)."""
        url = self._redis_control_url
        if url is None:
            if self._redis_url is None:
                self.ensure_services()
            url = redis_urls.control_url(self.settings, self._redis_url)
        client = redis_from_settings(self.settings, url)
        self._closers.append(client)
        return client

    @cached_property
    def tenant_keys(self) -> TenantKeys:
        """Every tenant-scoped Redis key, in the caches' and the controls' databases."""
        return TenantKeys([self.redis, self.redis_control], self.settings.redis_key_prefix)

    @cached_property
    def api_keys(self) -> ApiKeys:
        """Tenants' API keys: issued, rotated and revoked through the admin connection
        (refused in a runtime-only process), resolved as the application role."""
        return ApiKeys(lambda: self.database, admin=self.admin_connection)

    @cached_property
    def key_resolver(self) -> CachedKeyResolver:
        """API keys resolved to tenants, kept ``RAG_API__API_KEY_CACHE_TTL_S`` in memory:
        what the HTTP service asks on every request."""
        return CachedKeyResolver(self.api_keys, ttl_s=self.settings.api.api_key_cache_ttl_s)

    @cached_property
    def embedder(self) -> Embedder:
        """The configured embedding backend (cached per process by its registry)."""
        if self._given_embedder is not None:
            return self._given_embedder
        return load_embedder(self.settings.embedding_backend, state_dir=self.settings.state_dir)

    @cached_property
    def vector_store(self) -> VectorStore:
        return VectorStore(self.database, self.settings,
                           model_key=self.settings.embedding_model_key)

    # --- feature flags ---------------------------------------------------------------------
    @cached_property
    def flags(self) -> FlagStore:
        """Feature flags: read as the application role, changed as the admin."""
        return FlagStore(lambda: self.database, admin=self.admin_connection,
                         allowed_values=self.routes.variant_values)

    @cached_property
    def routes(self) -> QueryRoutes:
        """The retriever and answerer of each query variant (built on first use)."""
        return QueryRoutes(self)

    @cached_property
    def variants(self) -> Variants:
        """What each tenant's questions run with under the flags, read at most once per
        ``RAG_FLAG_CACHE_TTL_S`` (no database round trip per request)."""
        s = self.settings
        flags = CachedFlags(self.flags, ttl_s=s.flag_cache_ttl_s)
        return Variants(flags.current, self.routes,
                        Variant(s.retrieval_mode, PROMPT_VERSION, s.embedding_model_key))

    def rollouts(self, policy: RolloutPolicy | None = None, *,
                 actor: str = "rag rollout") -> Rollouts:
        """The canary controller of the flags (``policy``: the settings' by default)."""
        return Rollouts(self.flags, self.admin_connection,
                        policy=policy or self.settings.rollout,
                        tokens_per_day=self.settings.rate_limit.tokens_per_day, actor=actor)

    # --- retrieval and ingestion -----------------------------------------------------------
    @cached_property
    def query_embedding_cache(self) -> QueryEmbeddingCache:
        return QueryEmbeddingCache(self.redis, self.embedder.model_id,
                                   self.embedder.model_version,
                                   dimension=self.embedder.dimension, epochs=self.cache_epochs,
                                   prefix=self.settings.redis_key_prefix, outages=self.outages)

    @cached_property
    def cache_epochs(self) -> CacheEpochs:
        """Each tenant's cache epoch and corpus version: read from the database on every
        lookup, or at most once per ``RAG_API__TENANT_STATE_TTL_S`` in a serving process
        (see :mod:`rag_core.db.cache_epochs`)."""
        ttl = self.settings.api.tenant_state_ttl_s if self.serving else 0.0
        return CacheEpochs(self.database, ttl_s=ttl)

    @cached_property
    def retriever(self) -> Retriever:
        return Retriever(self.embedder, self.vector_store, self.query_embedding_cache,
                         k=self.settings.retrieval_k,
                         weak_score_below=self.settings.weak_score_below)

    def hybrid_retriever(self, **options: Any) -> HybridRetriever:
        """Dense + full-text retrieval fused by RRF under ``Settings.hybrid`` (``options``
        go to the retriever and override it)."""
        options.setdefault("policy", self.settings.hybrid)
        return HybridRetriever(self.embedder, self.vector_store, self.database,
                               self.query_embedding_cache, **options)

    @cached_property
    def worker_policy(self) -> WorkerPolicy:
        s = self.settings
        return WorkerPolicy(
            claim_batch=s.ingest_claim_batch, embed_batch_size=s.embed_batch_size,
            chunking=ChunkingPolicy(max_tokens=s.chunk_max_tokens,
                                    overlap_tokens=s.chunk_overlap_tokens),
            max_item_attempts=s.ingest_max_item_attempts,
            source_limits=SourceLimits(
                max_file_bytes=s.ingest_max_file_bytes,
                max_decompressed_bytes=s.ingest_max_decompressed_bytes,
                max_compression_ratio=s.ingest_max_compression_ratio,
                max_json_depth=s.ingest_max_json_depth))

    @cached_property
    def ingestion(self) -> IngestionRunner:
        return IngestionRunner(self.database, self.embedder, self.vector_store,
                               self.worker_policy, default_workers=self.settings.ingest_workers,
                               source_roots=self.settings.source_roots)

    @cached_property
    def batch_files(self) -> BatchFiles:
        """Questions and answers files named by flows (and the API): confined to the roots."""
        s = self.settings
        return BatchFiles(s.questions_roots, s.outputs_dir, max_questions=s.max_batch_questions)

    @cached_property
    def batch_jobs(self) -> BatchJobs:
        """Batch jobs of the HTTP service in PostgreSQL (questions stored redacted)."""
        s = self.settings
        return BatchJobs(self.database,
                         max_questions=min(s.api.max_batch_questions, s.max_batch_questions),
                         max_question_chars=s.max_question_chars)

    @cached_property
    def batch_worker(self) -> BatchWorker:
        """This process's background runner of batch jobs (started by its caller; stopped
        by ``close``): groups of ``RAG_BATCH_SIZE`` questions, so events follow each call."""
        s = self.settings
        worker = BatchWorker(self.batch_jobs, self.query_service, owner=default_owner(),
                             poll_interval_s=s.api.batch_poll_interval_s,
                             lease_s=s.api.batch_lease_s, group_size=s.batch_size)
        self._closers.append(worker)
        return worker

    # --- answering and the query path ------------------------------------------------------
    @cached_property
    def llm_client(self) -> LLMClient | None:
        """The LLM client behind the shared breaker, or None without an API key."""
        llm = self.settings.llm
        if not llm.configured:
            return None
        # One breaker per model endpoint, shared by every process that calls it.
        breaker = RedisCircuitBreaker(f"llm:{llm.model}", self.redis_control,
                                      self.settings.breaker,
                                      key_prefix=f"{self.settings.redis_key_prefix}:breaker",
                                      outages=self.outages)
        client = LLMClient(llm, breaker=breaker, retry=self.settings.retry)
        self._closers.append(client)
        return client

    @cached_property
    def answerer(self) -> LLMBatchAnswerer | ExtractiveAnswerer:
        """The LLM batch answerer when an API key is configured, else the extractive one."""
        if self.llm_client is None:
            return ExtractiveAnswerer()
        return LLMBatchAnswerer(self.llm_client, max_batch_size=self.settings.batch_size)

    @cached_property
    def query_service(self) -> QueryService:
        s = self.settings
        prefix = s.redis_key_prefix
        limits = s.rate_limit.model_copy(update={"key_prefix": prefix})
        embedder = self.embedder
        config = QueryConfig(
            k=s.retrieval_k, batch_size=s.batch_size,
            max_concurrent_llm_calls=s.max_concurrent_llm_calls,
            max_concurrent_searches=s.max_concurrent_searches,
            model=s.llm.model if s.llm.configured else EXTRACTIVE_MODEL,
            prompt_version=PROMPT_VERSION,
            embedding_model=f"{embedder.model_id}@{embedder.model_version}",
            retrieval_mode=s.retrieval_mode, max_question_chars=s.max_question_chars,
            max_batch_questions=s.max_batch_questions,
            redact_passages=s.redact_passages)
        # The LLM-call cap holds across every process sharing this Redis (Prefect workers
        # included), not only within one.
        llm_slots = GuardedSlots(RedisSemaphore(
            self.redis_control, f"llm:{s.llm.model}", s.max_concurrent_llm_calls,
            key_prefix=f"{prefix}:sem"), self.outages) if s.llm.configured else None
        service = QueryService(
            self.database, self.retriever, self.answerer, config=config,
            answer_cache=AnswerCache(self.redis, epochs=self.cache_epochs,
                                     ttl_s=s.answer_cache_ttl_s, prefix=prefix,
                                     outages=self.outages),
            rate_limiter=GuardedRateLimiter(RateLimiter(self.redis_control, limits),
                                            self.outages),
            quota=self.token_quota,
            # Serving: audited behind a buffer, no database round trip per request.
            audit=self.buffered_audit_log if self.serving else self.audit_log,
            session_key=session_key(s), llm_slots=llm_slots, tenant_states=self.cache_epochs,
            trace_key=audit_hash_key(s),  # the tenant's hash on spans: the audit log's key
            variants=self.variants)
        self._flush_audit_spool()
        return service

    @cached_property
    def token_quota(self) -> GuardedQuota:
        """The daily token quota under the outage policy; it settles from the audit log what
        it let through while Redis was away (also ``rag quota settle``)."""
        limits = self.settings.rate_limit.model_copy(
            update={"key_prefix": self.settings.redis_key_prefix})
        return GuardedQuota(TokenQuota(self.redis_control, limits), self.outages,
                            db=self.database)

    # --- the audit log and its spool -------------------------------------------------------
    @cached_property
    def audit_log(self) -> AuditLog:
        s = self.settings
        return AuditLog(self.database, s.audit_spool_dir or s.state_dir / "spool",
                        store_question=s.audit_question_storage, hash_key=audit_hash_key(s))

    @cached_property
    def buffered_audit_log(self) -> BufferedAuditLog:
        """The write-behind audit sink of a serving process: rows spooled on write, inserted
        by a writer thread (``RAG_API__AUDIT_FLUSH_*``), no database round trip per request;
        its final flush runs when the platform closes."""
        api = self.settings.api
        writer = BufferedAuditLog(self.audit_log, flush_interval_s=api.audit_flush_interval_s,
                                  flush_rows=api.audit_flush_rows)
        self._closers.append(writer)
        return writer

    def _flush_audit_spool(self) -> None:
        """Write what an earlier process (or this machine's last outage) left in the spool,
        once per process that writes audit rows. A database still away costs a log line and
        keeps the spool; it never stops the process that came to answer questions."""
        try:
            report = self.audit_log.flush_spool()
        except (RagCoreError, psycopg.Error, OSError) as exc:
            _log.warning("audit spool not flushed at start (%s); it is kept for later", exc)
            return
        if report.flushed or report.quarantined:
            _log.info("audit spool flushed at start: %s", report.as_dict())
