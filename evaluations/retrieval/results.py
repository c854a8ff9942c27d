"""The typed result of ``rag eval retrieval``. :meth:`RetrievalEvalResult.as_dict` is the
``--json`` object (and what ``rag.benchmark_runs`` records): its keys are a contract."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from evaluations.common.metrics import METRICS


@dataclass(frozen=True)
class RetrievalTimings:
    ingest_s: float
    search_s: float
    query_ms_p50: float
    query_ms_p95: float
    eval_s: float
    total_s: float | None = None  # known once the tenant is cleaned up

    def as_dict(self) -> dict[str, float]:
        data = {"ingest_s": self.ingest_s, "search_s": self.search_s,
                "query_ms_p50": self.query_ms_p50, "query_ms_p95": self.query_ms_p95,
                "eval_s": self.eval_s}
        if self.total_s is not None:
            data["total_s"] = self.total_s
        return data


@dataclass(frozen=True)
class RetrievalRunConfig:
    """What the run used: retrieval, model, chunking and search settings."""

    k: int
    queries_limited_to: int
    mode: str
    document_score: str
    embedding_backend: str
    model_id: str
    model_version: str
    model_key: str
    chunk_max_tokens: int
    chunk_overlap_tokens: int
    chunk_max_title_tokens: int
    exact_search_max_rows: int
    hnsw_ef_search: int
    ingest_workers: int
    rrf_k: int | None = None  # hybrid only, like the ones below
    text_candidates: int | None = None
    text_match: str | None = None
    dense_candidates: int | None = None
    dense_weight: float | None = None
    text_weight: float | None = None

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "k": self.k, "queries_limited_to": self.queries_limited_to, "mode": self.mode,
            "document_score": self.document_score,
            "embedding_backend": self.embedding_backend, "model_id": self.model_id,
            "model_version": self.model_version, "model_key": self.model_key,
            "chunk_max_tokens": self.chunk_max_tokens,
            "chunk_overlap_tokens": self.chunk_overlap_tokens,
            "chunk_max_title_tokens": self.chunk_max_title_tokens,
            "exact_search_max_rows": self.exact_search_max_rows,
            "hnsw_ef_search": self.hnsw_ef_search, "ingest_workers": self.ingest_workers,
        }
        if self.mode == "hybrid":
            data |= {"rrf_k": self.rrf_k, "text_candidates": self.text_candidates,
                     "text_match": self.text_match, "dense_candidates": self.dense_candidates,
                     "dense_weight": self.dense_weight, "text_weight": self.text_weight}
        return data


@dataclass(frozen=True)
class RetrievalEvalResult:
    """One evaluation run. ``metrics`` are the means over the evaluated queries (rounded to
    5 digits); ``per_query`` is recorded in the database but not part of ``as_dict``."""

    dataset: str
    dataset_dir: str
    split: str
    mode: str
    k: int
    metrics: dict[str, float]
    queries: int
    queries_without_results: int
    queries_skipped_no_relevant: int
    docs: int
    chunks: int
    ingested_now: int
    rejected: int
    failed: int
    judged_docs_not_ingested: int
    docs_per_query: float
    short_results: int
    plans: dict[str, int]
    timings: RetrievalTimings
    config: RetrievalRunConfig
    tenant_id: str
    tenant_kept: bool
    git_commit: str | None
    started_at: str
    run_id: int | None = None
    per_query: dict[str, dict[str, float]] = field(default_factory=dict, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": True, "dataset": self.dataset, "dataset_dir": self.dataset_dir,
            "split": self.split, "mode": self.mode, "k": self.k,
            **{m: self.metrics[m] for m in METRICS if m in self.metrics},
            "queries": self.queries,
            "queries_without_results": self.queries_without_results,
            "queries_skipped_no_relevant": self.queries_skipped_no_relevant,
            "docs": self.docs, "chunks": self.chunks, "ingested_now": self.ingested_now,
            "rejected": self.rejected, "failed": self.failed,
            "judged_docs_not_ingested": self.judged_docs_not_ingested,
            "docs_per_query": self.docs_per_query, "short_results": self.short_results,
            "plans": dict(self.plans), "timings": self.timings.as_dict(),
            "config": self.config.as_dict(), "tenant_id": self.tenant_id,
            "tenant_kept": self.tenant_kept, "git_commit": self.git_commit,
            "started_at": self.started_at, "run_id": self.run_id,
        }
