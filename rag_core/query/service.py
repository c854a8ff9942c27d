"""The query path: rate limit → PII redaction → answer cache → retrieval → token quota →
batched LLM answers (≤5 questions per call) → quota settlement → cache → audit.

Every question gets exactly one audit row (kind ``query`` for a single question,
``sub_query`` under one ``batch`` row for a batch), whatever happened to it: cache hit,
rate-limited, over quota, LLM failure. Redis trouble goes to the outage policy
(:mod:`rag_core.common.outage`): by default the caches are bypassed and the limits fail open
(all counted); database trouble spools the audit rows. Codes are :class:`ErrorCode` members.
"""

from __future__ import annotations

import contextvars
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Any, TypeVar

import psycopg

from rag_core.answering import Passage, QuestionContext, answer_all
from rag_core.codes import PUBLIC_MESSAGES, ErrorCategory, ErrorCode
from rag_core.common.metrics import QUESTIONS
from rag_core.common.telemetry import Stage, request_span, stage
from rag_core.common.tenancy import TenantId, parse_tenant_id
from rag_core.db.cache_epochs import CacheEpochs
from rag_core.db.pool import Database
from rag_core.errors import (
    CrossTenantLeakError,
    InputTooLargeError,
    InvalidQuestionError,
    InvalidQuestionIdsError,
    LimitError,
    RagCoreError,
    UnknownTenantError,
    unstorable_text,
)
from rag_core.limits.concurrency import ConcurrencySlots, LocalSlots
from rag_core.limits.guarded import GuardedQuota, GuardedRateLimiter
from rag_core.limits.settlement import SettlementReport
from rag_core.pii import redact
from rag_core.query.answer_cache import AnswerCache
from rag_core.query.audit import AuditSink
from rag_core.query.passages import redact_retrieval
from rag_core.query.service_audit import audit_records
from rag_core.query.service_types import Pending, QueryAnswer, QueryConfig, Source
from rag_core.query.sessions import hash_session_id
from rag_core.query.variants import Route, Variants
from rag_core.retrieval.retriever import Retriever

__all__ = ["QueryAnswer", "QueryConfig", "QueryService", "Source"]

_log = logging.getLogger(__name__)
_T = TypeVar("_T")


def _is_outage(exc: BaseException) -> bool:
    """A dependency is down (its questions can be retried later), not bad input or a bug."""
    if isinstance(exc, RagCoreError):
        return exc.code.category is ErrorCategory.UNAVAILABLE
    return isinstance(exc, psycopg.Error)


class QueryService:
    def __init__(self, db: Database, retriever: Retriever, answerer: Any, *,
                 config: QueryConfig, answer_cache: AnswerCache | None,
                 rate_limiter: GuardedRateLimiter | None, quota: GuardedQuota | None,
                 audit: AuditSink, session_key: bytes,
                 llm_slots: ConcurrencySlots | None = None,
                 tenant_states: CacheEpochs | None = None,
                 trace_key: bytes | None = None, variants: Variants | None = None) -> None:
        self.db = db
        self.tenant_states = tenant_states if tenant_states is not None else CacheEpochs(db)
        self.retriever = retriever
        self.answerer = answerer
        self.config = config
        self.cache = answer_cache
        self.rate_limiter = rate_limiter
        self.quota = quota
        self.audit = audit
        self._session_key = session_key
        self._llm_slots = llm_slots
        self._search_slots = LocalSlots(config.max_concurrent_searches, name="search")
        self._trace_key = trace_key  # the tenant's hash on spans; None: no tenant at all
        # Feature flags: which retrieval, prompt and embedding a tenant's questions get, and
        # the cohort its audit rows record. None: the configuration above for everyone.
        self.variants = variants

    # --- public API ------------------------------------------------------------------------
    def settle_outage(self) -> SettlementReport | None:
        """Charge the quota now for what this process answered while Redis was away (the
        quota also does it by itself once Redis answers); None without a quota."""
        return None if self.quota is None else self.quota.settle_outage()

    def ask(self, tenant_id: TenantId | str, question: str,
            session_id: str | None = None) -> QueryAnswer:
        return self.ask_many(tenant_id, [question], session_id=session_id)[0]

    def ask_many(self, tenant_id: TenantId | str, questions: Sequence[str], *,
                 session_id: str | None = None,
                 question_ids: Sequence[str] | None = None,
                 keep_going: bool = False,
                 parent_request_id: str | None = None) -> list[QueryAnswer]:
        """Answer ``questions`` (one audit row each). A failure of the whole call raises;
        with ``keep_going`` an outage of a dependency (the database restarting, say) instead
        fails the call's questions with its code and returns them, so a batch run goes on
        with its next group rather than leaving the rest of its file unasked.
        ``parent_request_id`` (a batch job's id) is the parent of this call's top audit row
        (its batch row, or its one query row). Traced as one span (the caller's request
        span when there is one) over the stages' spans."""
        tenant = parse_tenant_id(tenant_id)  # without a tenant there is nowhere to audit
        with request_span("rag.query", tenant, self._trace_key, questions=len(questions)):
            return self._ask_many(tenant, questions, session_id, question_ids, keep_going,
                                  parent_request_id)

    def _ask_many(self, tenant: TenantId, questions: Sequence[str], session_id: str | None,
                  question_ids: Sequence[str] | None, keep_going: bool,
                  parent_request_id: str | None) -> list[QueryAnswer]:
        started = time.perf_counter()
        ids = list(question_ids) if question_ids is not None else \
            [f"q{i + 1}" for i in range(len(questions))]
        # One audit row per question whatever happens below (refused input, a database
        # error, a blocked cross-tenant row): the rows are written in the `finally`.
        row_ids = ids if len(ids) == len(questions) else \
            [f"q{i + 1}" for i in range(len(questions))]
        pending = [Pending(QueryAnswer(str(uuid.uuid4()), qid, question, None), "", started)
                   for qid, question in zip(row_ids, questions, strict=True)]
        batch_id = str(uuid.uuid4()) if len(questions) > 1 else None
        session_hash: str | None = None
        route: Route | None = None  # until resolved, failures are audited under the defaults
        try:
            # Checked before any work: a forged session id costs nothing downstream.
            session_hash = hash_session_id(session_id, self._session_key) if session_id \
                else None
            if len(ids) != len(questions) or len(set(ids)) != len(ids) \
                    or any(not str(qid).strip() for qid in ids):
                raise InvalidQuestionIdsError(ids, len(questions))
            self._check_sizes(questions)
            route = self.route(tenant)
            self._run(tenant, pending, route)
        except BaseException as exc:
            self._fail_unanswered(tenant, pending, exc)
            if not (keep_going and _is_outage(exc)):
                raise
        finally:
            for item in pending:
                item.answer.latency_ms["total"] = round(
                    (time.perf_counter() - item.started) * 1000, 3)
                code = item.answer.error_code
                QUESTIONS.labels("ok" if code is None else code.value).inc()
            self._audit(tenant, pending, batch_id, session_hash, parent_request_id, route)
        return [p.answer for p in pending]

    def route(self, tenant: TenantId) -> Route:
        """The configuration, retriever and answerer ``tenant``'s questions run with now."""
        if self.variants is None:
            return Route(self.config, self.retriever, self.answerer)
        return self.variants.route(tenant, self.config)

    def _run(self, tenant: TenantId, pending: list[Pending], route: Route) -> None:
        for item in pending:
            self._admit(tenant, item)
        with stage(Stage.TENANT_STATE):
            corpus_version = self._corpus_version(tenant)
        live = [p for p in pending if p.answer.error_code is None]
        for item in live:
            self._lookup_cache(tenant, item, corpus_version, route.config)
        to_retrieve = [p for p in live if not p.answer.cache_hit]
        self._retrieve(tenant, to_retrieve, route)
        to_answer = [p for p in to_retrieve if p.answer.error_code is None]
        for item in to_answer:
            self._reserve(tenant, item)
        to_answer = [p for p in to_answer if p.answer.error_code is None]
        self._answer(to_answer, route)
        for item in to_answer:
            self._settle(item)

    @staticmethod
    def _fail_unanswered(tenant: TenantId, pending: list[Pending], exc: BaseException) -> None:
        """Give every question still without an outcome the error's typed code (its message
        only for our own errors: a driver's or provider's text goes to the log)."""
        if isinstance(exc, RagCoreError):
            code, message = exc.code, str(exc)
        elif isinstance(exc, psycopg.Error):
            code, message = ErrorCode.DATABASE_ERROR, "the database failed the query"
        else:
            code, message = ErrorCode.INTERNAL_ERROR, f"unexpected {type(exc).__name__}"
        if isinstance(exc, CrossTenantLeakError):
            _log.error("security event: %s (tenant %s); the query is refused and audited",
                       exc, tenant)
        for item in pending:
            if item.answer.error_code is None and item.answer.answer is None:
                item.answer.error_code, item.answer.error = code, message

    def _check_sizes(self, questions: Sequence[str]) -> None:
        limits = self.config
        if len(questions) > limits.max_batch_questions:
            raise InputTooLargeError("the batch", len(questions), limits.max_batch_questions,
                                     "questions", "RAG_MAX_BATCH_QUESTIONS")
        for number, question in enumerate(questions, start=1):
            problem = unstorable_text(question)
            if problem is not None:
                raise InvalidQuestionError(number, problem)
            if len(question) > limits.max_question_chars:
                raise InputTooLargeError(f"question {number}", len(question),
                                         limits.max_question_chars, "characters",
                                         "RAG_MAX_QUESTION_CHARS")

    # --- stages ------------------------------------------------------------------------------
    def _admit(self, tenant: TenantId, item: Pending) -> None:
        with stage(Stage.REDACT):
            item.redacted = redact(item.answer.question).text
        item.admitted = True
        if self.rate_limiter is not None:
            limiter = self.rate_limiter
            with stage(Stage.RATE_LIMIT):
                self._limited(item, lambda: limiter.admit(tenant))

    @staticmethod
    def _limited(item: Pending, check: Callable[[], _T]) -> _T | None:
        """Run a limit check; a refusal fails the question with the error's code (a Redis
        outage is the guards' business: rag_core.limits.guarded applies the outage policy).
        Returns what the check returned, or None."""
        try:
            return check()
        except LimitError as exc:
            item.answer.error_code, item.answer.error = exc.code, str(exc)
            item.answer.retry_after_s = getattr(exc, "retry_after_s", None)
        return None

    def _corpus_version(self, tenant: TenantId) -> int:
        """The tenant's corpus version; a tenant that does not exist (deleted, or never
        created) fails closed with ``unknown_tenant`` instead of being answered as empty."""
        state = self.tenant_states.state(tenant)
        if state is None:
            raise UnknownTenantError(tenant)
        return state.corpus_version

    @staticmethod
    def _cache_config(c: QueryConfig) -> dict[str, Any]:
        return {"k": c.k, "model": c.model, "prompt": c.prompt_version,
                "embedding": c.embedding_model, "redact_passages": c.redact_passages,
                "retrieval": c.retrieval_mode}

    def _lookup_cache(self, tenant: TenantId, item: Pending, corpus_version: int,
                      config: QueryConfig) -> None:
        if self.cache is None:
            return
        started = time.perf_counter()
        with stage(Stage.CACHE, operation="get") as span:
            item.cache_key = self.cache.key(tenant, item.redacted, corpus_version,
                                            **self._cache_config(config))
            cached = self.cache.get(item.cache_key)
            span.set_attribute("rag.cache.hit", cached is not None)
        item.answer.latency_ms["cache"] = round((time.perf_counter() - started) * 1000, 3)
        if cached is not None:
            answer = item.answer
            answer.answer, answer.citations = cached["answer"], cached["citations"]
            answer.sources = [Source(**s) for s in cached["sources"]]
            answer.model, answer.cache_hit = cached["model"], True

    def _retrieve(self, tenant: TenantId, items: list[Pending], route: Route) -> None:
        if not items:
            return
        config, retriever = route.config, route.retriever

        def one(item: Pending) -> None:
            with self._search_slots.slot():
                item.retrieval = retriever.retrieve(tenant, item.redacted, config.k)
            if config.redact_passages:  # before anything reads a passage
                with stage(Stage.REDACT_PASSAGES):
                    item.retrieval, redact_ms = redact_retrieval(item.retrieval)
                item.answer.latency_ms["redact_passages"] = round(redact_ms, 3)
            retrieval = item.retrieval
            item.answer.latency_ms["embed"] = round(retrieval.embed_ms, 3)
            item.answer.latency_ms["search"] = round(retrieval.search_ms, 3)
            item.answer.sources = [Source(c.chunk_id, c.document_id, round(c.score, 6),
                                          c.text[:300]) for c in retrieval.chunks]
            if not retrieval.chunks:
                item.answer.error_code = ErrorCode.NO_DOCUMENTS
                item.answer.error = "the tenant has no documents to answer from"

        workers = min(len(items), config.max_concurrent_searches)
        if workers == 1:
            for item in items:
                one(item)
            return
        # Each search runs in a copy of this context, so its spans keep the request's parent.
        context = contextvars.copy_context()
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="search") as pool:
            list(pool.map(lambda item: context.copy().run(one, item), items))

    def _reserve(self, tenant: TenantId, item: Pending) -> None:
        if self.quota is None or item.retrieval is None:
            return
        context_chars = sum(len(c.text) for c in item.retrieval.chunks) + len(item.redacted)
        estimate = context_chars // 4 + 300  # ~4 characters a token, plus the answer
        quota = self.quota
        with stage(Stage.QUOTA, operation="reserve"):
            item.reservation = self._limited(item, lambda: quota.reserve(tenant, estimate))

    def _answer(self, items: list[Pending], route: Route) -> None:
        if not items:
            return
        config = route.config
        contexts = [QuestionContext(
            question_id=item.answer.question_id, question=item.redacted,
            passages=[Passage(c.chunk_id, c.text) for c in item.retrieval.chunks])
            for item in items if item.retrieval is not None]
        started = time.perf_counter()
        with stage(Stage.LLM, questions=len(contexts), model=config.model) as span:
            results = answer_all(contexts, route.answerer, batch_size=config.batch_size,
                                 max_concurrent_llm_calls=config.max_concurrent_llm_calls,
                                 slots=self._llm_slots)
            span.set_attributes({  # the questions' share of the calls (see the call spans)
                "gen_ai.usage.input_tokens": sum(r.prompt_tokens for r in results),
                "gen_ai.usage.output_tokens": sum(r.completion_tokens for r in results)})
        elapsed = round((time.perf_counter() - started) * 1000, 3)
        for item, result in zip(items, results, strict=True):
            item.result = result
            answer = item.answer
            answer.answer, answer.citations = result.answer, list(result.citations)
            answer.prompt_tokens, answer.completion_tokens = (result.prompt_tokens,
                                                              result.completion_tokens)
            answer.model = result.model
            answer.error_code, answer.error = result.error_code, result.error
            if result.error_code in PUBLIC_MESSAGES:
                # The detail may quote the provider or the model: logged, not returned.
                _log.warning("question %s: %s: %s", answer.request_id, result.error_code,
                             result.error)
                answer.error = PUBLIC_MESSAGES[result.error_code]
            answer.latency_ms["llm"] = round(result.latency_ms, 3)
            answer.latency_ms["answer_stage"] = elapsed

    def _settle(self, item: Pending) -> None:
        answer = item.answer
        if self.quota is not None and item.reservation is not None:
            # Redis away: the debt goes into the audit row, to be charged from it later.
            with stage(Stage.QUOTA, operation="settle"):
                item.quota_debt = self.quota.settle(
                    item.reservation, answer.prompt_tokens + answer.completion_tokens)
        if self.cache is not None and item.cache_key is not None and answer.answer \
                and answer.error_code is None:
            with stage(Stage.CACHE, operation="put"):
                self.cache.put(item.cache_key, {
                    "answer": answer.answer, "citations": answer.citations,
                    "model": answer.model, "sources": [asdict(s) for s in answer.sources]})

    def _audit(self, tenant: TenantId, items: list[Pending], batch_id: str | None,
               session_hash: str | None, parent: str | None, route: Route | None) -> None:
        config = self.config if route is None else route.config
        records = audit_records(tenant, items, config, batch_id=batch_id,
                                session_hash=session_hash, parent=parent)
        with stage(Stage.AUDIT, rows=len(records)):
            self.audit.write(records)
