"""``rag eval retrieval``: retrieval quality of the real product path on a BEIR dataset.

1. The corpus is ingested into a fresh tenant through ``run_ingestion`` (validation,
   chunking, embedding, COPY: exactly what ``rag ingest`` does, with the configured
   settings).
2. Every judged query of the split goes through the real retriever: ``Retriever`` over the
   ``VectorStore`` (``mode="dense"``) or ``HybridRetriever`` (``mode="hybrid"``: dense +
   PostgreSQL full text, weighted RRF under ``Settings.hybrid``, ``RAG_HYBRID__*``). The
   top ``k`` (default 100) *chunks* become documents: a document's score is its best chunk's
   score (cosine similarity for dense, the fused RRF score for hybrid), each document once.
   A query may therefore rank fewer than ``k`` documents (``docs_per_query``).
   ``document_score="first_chunk"`` scores a document by its first chunk only (ordinal 0:
   title plus the start of the text, cut at the model window), which is what MTEB embeds
   for a document (``title + " " + text`` truncated at 256 tokens). With it the platform
   must reproduce the model's published SciFact nDCG@10: a check that storage and search
   lose nothing. Pass a large ``k`` (e.g. 1000) with it, since the other chunks retrieved
   are dropped.
3. nDCG@10, Recall@10, Recall@100 and MRR@10 are computed by ``evaluations.common.metrics``
   (trec_eval/pytrec_eval definitions, as BEIR and MTEB report them).
4. The run is recorded in ``rag.benchmark_runs`` (config, metrics, per-query values,
   timings, git commit) and the tenant is deleted (unless ``keep_tenant``).

``tenant=`` evaluates in an existing tenant instead (never deleted), e.g. one kept by an
earlier run: the corpus is ingested again, which skips every document already stored
unchanged (no embedding), so a second mode costs no second ingestion. Every current document
of that tenant takes part, so it should hold the corpus and nothing else.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from evaluations.common.beir import BeirDataset, load_beir
from evaluations.common.metrics import METRICS, evaluate_run
from evaluations.common.reports import git_commit
from evaluations.common.stats import median, percentile
from evaluations.common.tenant_runs import (
    check_schema,
    chunk_count,
    evaluation_tenant,
    ingest_corpus,
    record_run,
)
from evaluations.retrieval.results import (
    RetrievalEvalResult,
    RetrievalRunConfig,
    RetrievalTimings,
)
from rag_core.common.tenancy import TenantId
from rag_core.composition import Platform
from rag_core.config import Settings
from rag_core.db.connection import resolve_targets
from rag_core.db.pool import Database
from rag_core.embeddings.base import Embedder
from rag_core.errors import BenchmarkError
from rag_core.retrieval.hybrid import HybridRetrieval, HybridRetriever
from rag_core.retrieval.retriever import Retrieval, Retriever

__all__ = ["DOCUMENT_SCORES", "MODES", "documents_from_chunks", "run_retrieval_eval"]

Mode = Literal["dense", "hybrid"]
MODES: tuple[str, ...] = ("dense", "hybrid")
DocumentScore = Literal["best_chunk", "first_chunk"]
DOCUMENT_SCORES: tuple[str, ...] = ("best_chunk", "first_chunk")
ProgressCallback = Callable[[str, int, int], None]  # (stage, done, total)



def run_retrieval_eval(settings: Settings, db: Database, embedder: Embedder,
                       dataset_dir: Path, split: str = "test", mode: Mode = "dense",
                       k: int = 100, limit_queries: int | None = None, *,
                       keep_tenant: bool = False, tenant: TenantId | str | None = None,
                       record: bool = True, document_score: DocumentScore = "best_chunk",
                       progress: ProgressCallback | None = None) -> RetrievalEvalResult:
    """Ingest ``dataset_dir``'s corpus into a fresh tenant (or ``tenant``), run the split's
    queries, score them and record the run."""
    if mode not in MODES:
        raise BenchmarkError(f"mode must be one of {MODES}, got {mode!r}", value=mode)
    if document_score not in DOCUMENT_SCORES:
        raise BenchmarkError(f"document_score must be one of {DOCUMENT_SCORES}, "
                             f"got {document_score!r}", value=document_score)
    if not 1 <= k <= 1000:
        raise BenchmarkError(f"k must be between 1 and 1000, got {k}", value=k)
    started_at = datetime.now(UTC)
    started = time.perf_counter()
    commit = git_commit()  # the code that runs: read before a long run, not after it
    dataset = load_beir(Path(dataset_dir), split).limited(limit_queries)
    admin_url = resolve_targets(settings).admin_url
    check_schema(admin_url, record=record, hybrid=mode == "hybrid")
    with evaluation_tenant(admin_url, tenant, keep_tenant=keep_tenant,
                           display_name=f"retrieval eval {dataset.name}/{split}") as chosen:
        result = _evaluate(settings, db, embedder, dataset, chosen.tenant_id, mode, k,
                           document_score, progress)
    result = replace(result, tenant_id=chosen.tenant_id, tenant_kept=chosen.kept,
                     git_commit=commit, started_at=started_at.isoformat(),
                     timings=replace(result.timings,
                                     total_s=round(time.perf_counter() - started, 3)))
    if record:
        result = replace(result, run_id=_record(admin_url, dataset, result, started_at))
    return result


def _evaluate(settings: Settings, db: Database, embedder: Embedder, dataset: BeirDataset,
              tenant: TenantId, mode: Mode, k: int, document_score: DocumentScore,
              progress: ProgressCallback | None) -> RetrievalEvalResult:
    platform = Platform(settings, database=db, embedder=embedder, start_services=False)
    store = platform.vector_store
    policy = platform.worker_policy
    ingested = ingest_corpus(platform, tenant, dataset.corpus_path, progress)
    ingest_s, summary, doc_ids = ingested.ingest_s, ingested.summary, ingested.doc_ids
    present = set(doc_ids.values())
    judged = {d for docs in dataset.qrels.values() for d, g in docs.items() if g >= 1}

    retriever: Retriever | HybridRetriever
    if mode == "dense":
        retriever = Retriever(embedder, store, None, k=k,
                              weak_score_below=settings.weak_score_below)
    else:
        retriever = HybridRetriever(embedder, store, db, None, k=k,
                                    weak_score_below=settings.weak_score_below,
                                    policy=settings.hybrid)
    retriever.retrieve(tenant, "warm-up query", k)  # first-call costs out of the timings

    run: dict[str, dict[str, float]] = {}
    latencies: list[float] = []
    plans: Counter[str] = Counter()
    short = 0
    search_started = time.perf_counter()
    for done, (query_id, text) in enumerate(dataset.queries.items(), start=1):
        began = time.perf_counter()
        retrieval = retriever.retrieve(tenant, text, k)
        latencies.append((time.perf_counter() - began) * 1000)
        run[query_id] = documents_from_chunks(retrieval, doc_ids,
                                              first_chunk_only=document_score == "first_chunk")
        plans.update({_plan(retrieval)})
        short += len(retrieval.chunks) < k
        if progress is not None:
            progress("search", done, len(dataset.queries))
    search_s = time.perf_counter() - search_started

    scoring_started = time.perf_counter()
    evaluation = evaluate_run(dataset.qrels, run, METRICS)
    eval_s = time.perf_counter() - scoring_started
    hybrid = mode == "hybrid"
    fusion = settings.hybrid
    config = RetrievalRunConfig(
        k=k, queries_limited_to=len(dataset.queries), mode=mode, document_score=document_score,
        embedding_backend=embedder.backend, model_id=embedder.model_id,
        model_version=embedder.model_version, model_key=store.model_key,
        chunk_max_tokens=policy.chunking.max_tokens,
        chunk_overlap_tokens=policy.chunking.overlap_tokens,
        chunk_max_title_tokens=policy.chunking.max_title_tokens,
        exact_search_max_rows=settings.exact_search_max_rows,
        hnsw_ef_search=settings.hnsw_ef_search, ingest_workers=settings.ingest_workers,
        rrf_k=fusion.rrf_k if hybrid else None,
        text_candidates=max(k, fusion.text_candidates) if hybrid else None,
        text_match="any" if hybrid else None,
        dense_candidates=max(k, fusion.dense_candidates) if hybrid else None,
        dense_weight=fusion.dense_weight if hybrid else None,
        text_weight=fusion.text_weight if hybrid else None)
    timings = RetrievalTimings(
        ingest_s=round(ingest_s, 3), search_s=round(search_s, 3),
        query_ms_p50=round(median(latencies), 2) if latencies else 0.0,
        query_ms_p95=round(percentile(latencies, 95), 2) if latencies else 0.0,
        eval_s=round(eval_s, 3))
    return RetrievalEvalResult(
        dataset=dataset.name, dataset_dir=str(dataset.root), split=dataset.split, mode=mode,
        k=k, metrics={m: round(evaluation.metrics[m], 5) for m in METRICS},
        queries=evaluation.queries,
        queries_without_results=len(evaluation.missing_from_run),
        queries_skipped_no_relevant=len(evaluation.skipped_no_relevant),
        docs=len(doc_ids), chunks=chunk_count(db, tenant), ingested_now=summary.ingested,
        rejected=summary.rejected, failed=summary.failed,
        judged_docs_not_ingested=len(judged - present),
        docs_per_query=round(statistics.mean(len(r) for r in run.values()), 2)
        if run else 0.0,
        short_results=short, plans=dict(plans), timings=timings, config=config,
        tenant_id=tenant, tenant_kept=False, git_commit=None, started_at="",
        per_query=evaluation.per_query)


def documents_from_chunks(retrieval: Retrieval, doc_ids: dict[int, str], *,
                          first_chunk_only: bool = False) -> dict[str, float]:
    """Chunks (best first) → {document id: its best chunk's score}.

    The score is the cosine similarity for a dense retrieval and the fused RRF score for a
    hybrid one (the order the retriever returned). ``first_chunk_only``: only chunks with
    ordinal 0 count (a document is scored by its first window, as MTEB truncates it).
    """
    scores = [h.score for h in retrieval.fused] if isinstance(retrieval, HybridRetrieval) \
        else [c.score for c in retrieval.chunks]
    documents: dict[str, float] = {}
    for chunk, score in zip(retrieval.chunks, scores, strict=True):
        if first_chunk_only and chunk.ordinal != 0:
            continue
        doc = doc_ids[chunk.document_id]
        if doc not in documents or score > documents[doc]:
            documents[doc] = score
    return documents


def _plan(retrieval: Retrieval) -> str:
    plans = {c.plan for c in retrieval.chunks if c.plan != "text"}
    return ",".join(sorted(plans)) or "none"


def _record(admin_url: str, dataset: BeirDataset, result: RetrievalEvalResult,
            started_at: datetime) -> int:
    data = result.as_dict()
    metrics = {m: data[m] for m in METRICS} | {
        key: data[key] for key in ("queries", "queries_without_results", "docs", "chunks",
                                   "rejected", "failed", "judged_docs_not_ingested",
                                   "docs_per_query", "short_results", "plans")}
    return record_run(admin_url, benchmark="retrieval", dataset=dataset.name,
                      split=dataset.split, mode=result.mode,
                      config=data["config"] | {"dataset_dir": str(dataset.root)},
                      metrics=metrics, timings=data["timings"], per_query=result.per_query,
                      git_commit=result.git_commit, started_at=started_at)
