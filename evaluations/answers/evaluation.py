"""``rag eval answers``: answer quality of the real query path on a BEIR dataset's claims.

1. The corpus is ingested into an evaluation tenant (or ``tenant=`` reuses one kept by an
   earlier ``rag eval retrieval|answers --keep-tenant``), as ``rag eval retrieval`` does
   (:mod:`evaluations.common.tenant_runs`).
2. Every judged query of the split is asked through the platform's :class:`QueryService`
   (``ask_many``, groups of 25, ≤5 questions per LLM call): PII redaction, retrieval (dense
   or hybrid), the answerer — the LLM batch answerer with its prompt version when
   ``RAG_LLM_API_KEY`` is set, else the extractive answerer (the offline baseline) — and an
   audit row per claim, exactly as a tenant's question. Three things are set for the run:
   its variant is pinned (retrieval mode, prompt version, embedding key: no feature flag may
   switch the evaluated tenant half-way), the answer cache is bypassed (a cached answer
   would score an earlier run) and so are the tenant's rate limit and token quota (a
   300-claim run is not a tenant's traffic; 60 requests a minute would refuse most of it).
3. The answerer is wrapped to record the passages it received for each claim: those are the
   retrieved contexts that are scored, exactly the text the answerer saw (redacted when
   ``RAG_REDACT_PASSAGES`` is on). Retrieved and cited chunks are mapped to the corpus' own
   document ids for the qrels.
4. :mod:`evaluations.answers.scoring` computes ragas' metrics (offline always, LLM-judged
   with a judge, :mod:`evaluations.answers.judge`); the run is recorded in
   ``rag.benchmark_runs`` (``benchmark='answers'``, ``mode`` the retrieval mode, ``config``
   with the settings the ``benchmark_history`` mart reads, ``metrics`` name → score,
   ``per_query`` each claim's scores and documents) and the tenant deleted unless kept.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from evaluations.answers.judge import JudgeSettings, Sleep
from evaluations.answers.results import AnswerEvalResult, AnswerRunSettings
from evaluations.answers.scoring import ClaimSample, Scores, score_claims, scored_answer
from evaluations.common.beir import BeirDataset, iter_jsonl, load_beir, queries_path
from evaluations.common.reports import git_commit
from evaluations.common.tenant_runs import (
    ProgressCallback,
    check_schema,
    evaluation_tenant,
    ingest_corpus,
    record_run,
)
from rag_core.answering import AnswerResult, ExtractiveAnswerer, Passage, QuestionContext
from rag_core.answering.types import CallGate
from rag_core.common.tenancy import TenantId
from rag_core.composition import Platform
from rag_core.config import Settings
from rag_core.db.connection import resolve_targets
from rag_core.db.pool import Database
from rag_core.embeddings.base import Embedder
from rag_core.errors import ConfigurationError
from rag_core.ingestion.chunking import normalize
from rag_core.llm.prompts import PROMPT_VERSION, PROMPT_VERSIONS
from rag_core.query.service import QueryAnswer
from rag_core.query.variants import RetrieverLike, Variant, Variants

__all__ = ["GROUP_SIZE", "MODES", "run_answer_eval"]

MODES: tuple[str, ...] = ("dense", "hybrid")
GROUP_SIZE = 25  # claims per ask_many call (as a batch run's group)
_T = TypeVar("_T")


def run_answer_eval(settings: Settings, db: Database, embedder: Embedder, dataset_dir: Path,
                    split: str = "test", *, mode: str | None = None, k: int | None = None,
                    limit_queries: int | None = None, prompt_version: str | None = None,
                    keep_tenant: bool = False, tenant: TenantId | str | None = None,
                    judge: JudgeSettings | None = None, record: bool = True,
                    progress: ProgressCallback | None = None,
                    judge_sleep: Sleep = asyncio.sleep) -> AnswerEvalResult:
    """Ask ``dataset_dir``'s claims through the query path, score the answers, record the
    run. ``mode`` and ``k`` default to the settings' (``RAG_RETRIEVAL_MODE``,
    ``RAG_RETRIEVAL_K``), ``prompt_version`` to the product's current one."""
    mode = mode or settings.retrieval_mode
    k = k or settings.retrieval_k
    if mode not in MODES:
        raise ConfigurationError("--mode", mode, f"one of {', '.join(MODES)}")
    if not 1 <= k <= 100:
        raise ConfigurationError("--k", k, "chunks per claim, 1 to 100 (RAG_RETRIEVAL_K)")
    if prompt_version is not None and prompt_version not in PROMPT_VERSIONS:
        raise ConfigurationError("--prompt-version", prompt_version,
                                 f"one of {', '.join(PROMPT_VERSIONS)}")
    if judge is not None and judge.configured and not judge.model:
        raise ConfigurationError("--judge-model", None, "a judge needs a model "
                                                        "(RAG_EVAL__JUDGE_MODEL)")
    started_at = datetime.now(UTC)
    started = time.perf_counter()
    commit = git_commit()  # the code that runs: read before a long run, not after it
    dataset = load_beir(Path(dataset_dir), split).limited(limit_queries)
    references = _reference_answers(dataset)
    run_settings = settings.model_copy(update={"retrieval_mode": mode, "retrieval_k": k})
    admin_url = resolve_targets(settings).admin_url
    check_schema(admin_url, record=record, hybrid=mode == "hybrid")
    with evaluation_tenant(admin_url, tenant, keep_tenant=keep_tenant,
                           display_name=f"answer eval {dataset.name}/{split}") as chosen, \
            Platform(run_settings, database=db, embedder=embedder,
                     start_services=False) as platform:
        if prompt_version is not None and platform.llm_client is None:
            raise ConfigurationError("--prompt-version", prompt_version,
                                     "the extractive answerer sends no prompt (no LLM is "
                                     "configured: RAG_LLM_API_KEY)")
        ingested = ingest_corpus(platform, chosen.tenant_id, dataset.corpus_path, progress)
        asking = time.perf_counter()
        asked = _ask(platform, chosen.tenant_id, dataset,
                     Variant(mode, prompt_version or PROMPT_VERSION,
                             run_settings.embedding_model_key), progress)
        answer_s = time.perf_counter() - asking
        claims = _samples(dataset, asked, ingested.doc_ids, references)
        scoring = time.perf_counter()
        scores = _run_async(score_claims(claims, embedder, judge=judge,
                                         judge_sleep=judge_sleep))
        score_s = time.perf_counter() - scoring
        first = next(iter(asked.results.values()), None)
        run = AnswerRunSettings(
            prompt_version=first.prompt_version if first else prompt_version or PROMPT_VERSION,
            model=first.model if first else platform.query_service.config.model,
            answerer="extractive" if isinstance(platform.answerer, ExtractiveAnswerer)
            else "llm",
            retrieval_mode=mode, embedding_model_key=run_settings.embedding_model_key,
            embedding_model=f"{embedder.model_id}@{embedder.model_version}",
            dataset=dataset.name, split=dataset.split, queries=len(dataset.queries), k=k,
            redact_passages=run_settings.redact_passages,
            judge_model=judge.model if judge is not None and judge.configured else None,
            judge_requests_per_minute=judge.requests_per_minute
            if judge is not None and judge.configured else None)
    present = set(ingested.doc_ids.values())
    judged = {d for docs in dataset.qrels.values() for d, g in docs.items() if g >= 1}
    errors: dict[str, int] = {}
    for answer in asked.answers:
        if answer.error_code is not None:
            errors[answer.error_code.value] = errors.get(answer.error_code.value, 0) + 1
    result = AnswerEvalResult(
        settings=run, scores=scores,
        answered=sum(1 for a in asked.answers if a.answer and a.error_code is None),
        errors=errors, docs=len(ingested.doc_ids),
        judged_docs_not_ingested=len(judged - present),
        # claims are asked GROUP_SIZE at a time: a rate, not a per-question latency
        timings={"ingest_s": round(ingested.ingest_s, 3), "answer_s": round(answer_s, 3),
                 "claims_per_s": round(len(asked.answers) / answer_s, 2) if answer_s else 0.0,
                 "score_s": round(score_s, 3),
                 "total_s": round(time.perf_counter() - started, 3)},
        tenant_id=chosen.tenant_id, tenant_kept=chosen.kept, git_commit=commit,
        started_at=started_at.isoformat(), dataset_dir=str(dataset.root),
        per_query=_per_query(claims, scores, asked))
    if record:
        result = replace(result, run_id=_record(admin_url, result))
    return result


# --- asking the claims -------------------------------------------------------------------
@dataclass
class _Asked:
    answers: list[QueryAnswer] = field(default_factory=list)
    passages: dict[str, list[Passage]] = field(default_factory=dict)  # claim id -> passages
    results: dict[str, AnswerResult] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _RecordingAnswerer:
    """The variant's answerer, recording what it was given and what it answered."""

    def __init__(self, inner: Any, asked: _Asked) -> None:
        self._inner = inner
        self._asked = asked

    @property
    def max_batch_size(self) -> int:
        return int(self._inner.max_batch_size)

    def answer_batch(self, items: Sequence[QuestionContext], *,
                     call_gate: CallGate | None = None) -> list[AnswerResult]:
        results: list[AnswerResult] = self._inner.answer_batch(items, call_gate=call_gate)
        with self._asked.lock:
            for item in items:
                self._asked.passages[item.question_id] = list(item.passages)
            for result in results:
                self._asked.results[result.question_id] = result
        return results


class _PinnedRoutes:
    """The platform's routes (one retriever per mode and key, one answerer per prompt
    version), with the answerer recorded."""

    def __init__(self, platform: Platform, asked: _Asked) -> None:
        self._routes = platform.routes
        self._asked = asked

    def retriever(self, variant: Variant) -> RetrieverLike:
        return self._routes.retriever(variant)

    def answerer(self, variant: Variant) -> Any:
        return _RecordingAnswerer(self._routes.answerer(variant), self._asked)

    def embedding_label(self, variant: Variant) -> str:
        return self._routes.embedding_label(variant)


def _ask(platform: Platform, tenant: TenantId, dataset: BeirDataset, variant: Variant,
         progress: ProgressCallback | None) -> _Asked:
    asked = _Asked()
    service = platform.query_service
    service.variants = Variants(lambda: (), _PinnedRoutes(platform, asked), variant)
    service.cache = None
    service.rate_limiter = None
    service.quota = None
    claims = list(dataset.queries.items())
    for offset in range(0, len(claims), GROUP_SIZE):
        group = claims[offset:offset + GROUP_SIZE]
        asked.answers += service.ask_many(tenant, [text for _, text in group],
                                          question_ids=[qid for qid, _ in group],
                                          keep_going=True)
        if progress is not None:
            progress("answers", len(asked.answers), len(claims))
    return asked


# --- samples and records -----------------------------------------------------------------
def _reference_answers(dataset: BeirDataset) -> dict[str, str]:
    """Reference answers some datasets carry per query (``reference`` or ``answer``)."""
    found: dict[str, str] = {}
    for obj in iter_jsonl(queries_path(dataset.root)):
        query_id = str(obj.get("_id", ""))
        value = obj.get("reference", obj.get("answer"))
        if query_id in dataset.queries and isinstance(value, str) and value.strip():
            found[query_id] = value
    return found


def _relevant_texts(dataset: BeirDataset, wanted: set[str]) -> dict[str, str]:
    """The corpus' text of each ``wanted`` document: title, newline, body (a chunk's shape)."""
    texts: dict[str, str] = {}
    for obj in iter_jsonl(dataset.corpus_path):
        doc_id = str(obj.get("_id", ""))
        if doc_id in wanted:
            title = normalize(str(obj.get("title") or ""))
            body = normalize(str(obj.get("text") or ""))
            texts[doc_id] = f"{title}\n{body}" if title else body
    return texts


def _samples(dataset: BeirDataset, asked: _Asked, doc_ids: dict[int, str],
             references: dict[str, str]) -> list[ClaimSample]:
    relevant = {q: [d for d, g in docs.items() if g >= 1] for q, docs in dataset.qrels.items()}
    texts = _relevant_texts(dataset, {d for docs in relevant.values() for d in docs})
    claims = []
    for answer in asked.answers:
        claim_id = answer.question_id
        chunk_docs = {s.chunk_id: doc_ids.get(s.document_id, str(s.document_id))
                      for s in answer.sources}
        passages = asked.passages.get(claim_id, [])
        cited = list(dict.fromkeys(chunk_docs[c] for c in answer.citations if c in chunk_docs))
        claims.append(ClaimSample(
            claim_id=claim_id, claim=dataset.queries[claim_id],
            response=scored_answer(answer.answer) if answer.error_code is None else None,
            retrieved_ids=[chunk_docs[s.chunk_id] for s in answer.sources],
            retrieved_contexts=[p.text for p in passages], cited_ids=cited,
            relevant_ids=relevant.get(claim_id, []),
            reference_contexts=[texts[d] for d in relevant.get(claim_id, []) if d in texts],
            reference=references.get(claim_id)))
    return claims


def _per_query(claims: list[ClaimSample], scores: Scores,
               asked: _Asked) -> dict[str, dict[str, Any]]:
    codes = {a.question_id: a.error_code.value if a.error_code else None
             for a in asked.answers}
    return {c.claim_id: {"scores": scores.per_claim.get(c.claim_id, {}),
                         "retrieved": c.retrieved_ids, "cited": c.cited_ids,
                         "relevant": c.relevant_ids, "answer": c.response,
                         "error_code": codes.get(c.claim_id)} for c in claims}


def _record(admin_url: str, result: AnswerEvalResult) -> int:
    run = result.settings
    config = run.as_dict() | {"dataset_dir": result.dataset_dir, "counts": result.counts(),
                              "failed_metrics": result.scores.failed,
                              "skipped_metrics": dict(result.scores.skipped)}
    if result.scores.judge is not None:
        config["judge_calls"] = result.scores.judge.as_dict()
    return record_run(admin_url, benchmark="answers", dataset=run.dataset, split=run.split,
                      mode=run.retrieval_mode, config=config, metrics=result.scores.metrics,
                      timings=result.timings, per_query=result.per_query,
                      git_commit=result.git_commit,
                      started_at=datetime.fromisoformat(result.started_at))


def _run_async(coro: Coroutine[Any, Any, _T]) -> _T:
    """``asyncio.run`` — in a thread of its own when this thread already runs a loop (a
    caller inside async code, e.g. some flow runners)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()

