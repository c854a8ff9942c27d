"""``rag eval fusion-grid`` and ``rag eval hybrid-latency``: tuning hybrid retrieval's fusion
(``Settings.hybrid``) on a BEIR split in a tenant that already holds the corpus (one kept by
``rag eval retrieval --keep-tenant``).

**The grid.** Each query's two candidate lists are fetched once, as deep as the deepest grid
point, by the product's own :meth:`HybridRetriever.candidates`; every grid point (RRF
constant, depth per side, dense and text weights) is then the product's own :func:`fuse` of
those lists cut to its depth, scored like ``rag eval retrieval`` (a document's score is its
best chunk's, ``evaluations.common.metrics``). Both searches return prefixes of their deeper
results (exact search for a tenant this size, text ranked by rank then chunk id), so a point
equals a ``rag eval retrieval --mode hybrid`` run under the same ``RAG_HYBRID__*`` whenever
its depth is at least ``k`` (the retriever fetches ``max(k, depth)``); a point of smaller
depth is what a query with fewer chunks asked (the query path's ``k`` is 5) would rank.
Fetching once is the point of the module: a full evaluation per point would search every
query again for each of a dozen settings. Each point is a row of ``rag.benchmark_runs``
(``benchmark = 'retrieval-fusion-grid'``).

**Latency.** Dense and hybrid p95 measured in one process, interleaved (each query through
both retrievers, the order alternating per round), so whatever else loads the machine loads
both alike; the ratio of the two p95s is the number to read, with the load average beside it.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import psycopg

from evaluations.common.beir import BeirDataset, load_beir
from evaluations.common.metrics import METRICS, evaluate_run
from evaluations.common.reports import cpu_model, git_commit
from evaluations.common.stats import percentile
from evaluations.common.tenant_runs import ProgressCallback, document_ids, record_run
from evaluations.retrieval.evaluation import documents_from_chunks
from rag_core.common.tenancy import TenantId, parse_tenant_id
from rag_core.composition import Platform
from rag_core.config import HybridPolicy, Settings
from rag_core.db import tenant_admin
from rag_core.db.connection import resolve_targets
from rag_core.db.pool import Database
from rag_core.embeddings.base import Embedder
from rag_core.errors import BenchmarkError, UnknownTenantError
from rag_core.retrieval.hybrid import (
    Candidates,
    HybridRetrieval,
    HybridRetriever,
    fuse,
    reciprocal_rank_fusion,
)
from rag_core.retrieval.retriever import Retriever

__all__ = ["GridPoint", "GridRow", "LatencyResult", "grid_points", "interleaved_latency",
           "run_fusion_grid"]

Unit = Literal["chunk", "document"]

@dataclass(frozen=True)
class GridPoint:
    rrf_k: int
    depth: int  # candidates per side
    dense_weight: float
    text_weight: float
    # "chunk": the product's fusion (chunks fused, a document scored by its best chunk);
    # "document": a lever measured here only, each list first reduced to documents (a
    # document at the rank of its best chunk), then the documents fused.
    unit: Unit = "chunk"

    def policy(self) -> HybridPolicy:
        return HybridPolicy(rrf_k=self.rrf_k, dense_candidates=self.depth,
                            text_candidates=self.depth, dense_weight=self.dense_weight,
                            text_weight=self.text_weight)

    @property
    def label(self) -> str:
        if self.text_weight == 0:
            return f"dense only, depth {self.depth}"
        if self.dense_weight == 0:
            return f"text only, depth {self.depth}"
        return (f"rrf_k {self.rrf_k}, depth {self.depth}, weights "
                f"{self.dense_weight:g}/{self.text_weight:g}"
                + (", fused per document" if self.unit == "document" else ""))


@dataclass(frozen=True)
class GridRow:
    point: GridPoint
    metrics: dict[str, float]
    queries: int
    docs_per_query: float
    run_id: int | None

    def as_dict(self) -> dict[str, Any]:
        p = self.point
        return {"label": p.label, "rrf_k": p.rrf_k, "depth": p.depth,
                "dense_weight": p.dense_weight, "text_weight": p.text_weight, "unit": p.unit,
                **{m: round(self.metrics[m], 5) for m in METRICS}, "queries": self.queries,
                "docs_per_query": self.docs_per_query, "run_id": self.run_id}


def grid_points(rrf_ks: Sequence[int] = (10, 60), depths: Sequence[int] = (50, 100, 200),
                text_weights: Sequence[float] = (0.5, 1.0, 1.5),
                units: Sequence[Unit] = ("chunk",), *,
                references: bool = True) -> list[GridPoint]:
    """Every combination (dense weight 1, the text weight varied: only the ratio matters
    for the order), plus dense only and text only at depth 100 as references."""
    points = [GridPoint(k, d, 1.0, w, u) for u, k, d, w in
              itertools.product(units, rrf_ks, depths, text_weights)]
    if references:
        points += [GridPoint(60, 100, 1.0, 0.0), GridPoint(60, 100, 0.0, 1.0)]
    return points


def run_fusion_grid(settings: Settings, db: Database, embedder: Embedder, dataset_dir: Path,
                    split: str, tenant: TenantId | str, points: Sequence[GridPoint], *,
                    k: int = 100, limit_queries: int | None = None, record: bool = True,
                    progress: ProgressCallback | None = None) -> list[GridRow]:
    """Score every grid point on ``split`` in ``tenant`` (see the module docstring)."""
    if not points:
        raise BenchmarkError("the grid has no points", value=0)
    if not 1 <= k <= 1000:
        raise BenchmarkError(f"k must be between 1 and 1000, got {k}", value=k)
    started_at = datetime.now(UTC)
    commit = git_commit()
    dataset = load_beir(Path(dataset_dir), split).limited(limit_queries)
    tenant = _existing_tenant(settings, tenant)
    platform = Platform(settings, database=db, embedder=embedder, start_services=False)
    doc_ids = document_ids(db, tenant)
    if not doc_ids:
        raise BenchmarkError(f"tenant {tenant} holds no documents: evaluate it once with "
                             "`rag eval retrieval --keep-tenant`", value=tenant)
    deepest = max(max(p.depth for p in points), k)
    retriever = HybridRetriever(embedder, platform.vector_store, db, None, k=k)
    fetched: dict[str, Candidates] = {}
    for done, (query_id, text) in enumerate(dataset.queries.items(), start=1):
        fetched[query_id] = retriever.candidates(tenant, text, deepest, deepest)
        if progress is not None:
            progress("search", done, len(dataset.queries))
    rows: list[GridRow] = []
    for done, point in enumerate(points, start=1):
        policy = point.policy()
        run: dict[str, dict[str, float]] = {}
        for query_id, candidates in fetched.items():
            if point.unit == "document":
                run[query_id] = _fuse_documents(candidates, k, point, doc_ids)
                continue
            chunks, hits = fuse(candidates, k, policy, dense_depth=point.depth,
                                text_depth=point.depth)
            run[query_id] = documents_from_chunks(
                HybridRetrieval(chunks, False, 0.0, 0.0, False, fused=hits), doc_ids)
        evaluation = evaluate_run(dataset.qrels, run, METRICS)
        docs_per_query = round(sum(len(r) for r in run.values()) / max(len(run), 1), 2)
        run_id = _record(settings, dataset, point, k, evaluation.metrics, docs_per_query,
                         evaluation.per_query, tenant, commit, started_at) if record else None
        rows.append(GridRow(point, evaluation.metrics, evaluation.queries, docs_per_query,
                            run_id))
        if progress is not None:
            progress("grid", done, len(points))
    return rows


@dataclass(frozen=True)
class LatencyResult:
    queries: int
    rounds: int
    k: int
    dense_p50_ms: float
    dense_p95_ms: float
    hybrid_p50_ms: float
    hybrid_p95_ms: float
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    cpu: str
    policy: dict[str, Any]

    @property
    def p95_ratio(self) -> float:
        return self.hybrid_p95_ms / self.dense_p95_ms if self.dense_p95_ms else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {"queries": self.queries, "rounds": self.rounds, "k": self.k,
                "dense_p50_ms": round(self.dense_p50_ms, 2),
                "dense_p95_ms": round(self.dense_p95_ms, 2),
                "hybrid_p50_ms": round(self.hybrid_p50_ms, 2),
                "hybrid_p95_ms": round(self.hybrid_p95_ms, 2),
                "p95_ratio": round(self.p95_ratio, 3),
                "load_before": list(self.load_before), "load_after": list(self.load_after),
                "cpu": self.cpu, "hybrid": self.policy}


def interleaved_latency(settings: Settings, db: Database, embedder: Embedder,
                        dataset_dir: Path, split: str, tenant: TenantId | str, *,
                        rounds: int = 3, k: int = 100, limit_queries: int | None = 100,
                        progress: ProgressCallback | None = None) -> LatencyResult:
    """p50/p95 of dense and hybrid (``Settings.hybrid``) retrieval of the split's queries,
    interleaved per query, ``rounds`` times; no cache (each question is embedded anew)."""
    if rounds < 1:
        raise BenchmarkError(f"rounds must be at least 1, got {rounds}", value=rounds)
    dataset = load_beir(Path(dataset_dir), split).limited(limit_queries)
    tenant = _existing_tenant(settings, tenant)
    platform = Platform(settings, database=db, embedder=embedder, start_services=False)
    store = platform.vector_store
    dense = Retriever(embedder, store, None, k=k, weak_score_below=settings.weak_score_below)
    hybrid = HybridRetriever(embedder, store, db, None, k=k,
                             weak_score_below=settings.weak_score_below,
                             policy=settings.hybrid)
    retrievers: dict[str, Retriever | HybridRetriever] = {"dense": dense, "hybrid": hybrid}
    for retriever in retrievers.values():
        retriever.retrieve(tenant, "warm-up query", k)
    times: dict[str, list[float]] = {"dense": [], "hybrid": []}
    load_before = os.getloadavg()
    total = rounds * len(dataset.queries)
    done = 0
    for round_no in range(rounds):
        order = ("dense", "hybrid") if round_no % 2 == 0 else ("hybrid", "dense")
        for text in dataset.queries.values():
            for mode in order:
                began = time.perf_counter()
                retrievers[mode].retrieve(tenant, text, k)
                times[mode].append((time.perf_counter() - began) * 1000)
            done += 1
            if progress is not None:
                progress("latency", done, total)
    return LatencyResult(
        len(dataset.queries), rounds, k, percentile(times["dense"], 50),
        percentile(times["dense"], 95), percentile(times["hybrid"], 50),
        percentile(times["hybrid"], 95), load_before, os.getloadavg(), cpu_model(),
        settings.hybrid.model_dump())


def _fuse_documents(candidates: Candidates, k: int, point: GridPoint,
                    doc_ids: dict[int, str]) -> dict[str, float]:
    """The lever ``unit="document"``: each list cut to the point's depth and reduced to its
    documents (best chunk first), the documents fused, the top ``k`` kept."""
    def documents(ranking: list[int]) -> list[int]:
        return [candidates.chunks[c].document_id for c in ranking[:point.depth]
                if c in candidates.chunks]
    fused = reciprocal_rank_fusion([documents(candidates.dense), documents(candidates.text)],
                                   point.rrf_k, [point.dense_weight, point.text_weight])
    return {doc_ids[d]: score for d, score in fused[:k]}


def _existing_tenant(settings: Settings, tenant: TenantId | str) -> TenantId:
    tenant = parse_tenant_id(tenant)
    with psycopg.connect(resolve_targets(settings).admin_url, autocommit=True) as conn:
        if not tenant_admin.tenant_exists(conn, tenant):
            raise UnknownTenantError(tenant)
    return tenant


def _record(settings: Settings, dataset: BeirDataset, point: GridPoint, k: int,
            metrics: dict[str, float], docs_per_query: float,
            per_query: dict[str, dict[str, float]], tenant: TenantId, commit: str | None,
            started_at: datetime) -> int:
    config = {"k": k, "dataset_dir": str(dataset.root), "tenant_id": tenant,
              "queries": len(dataset.queries), "model_key": settings.embedding_model_key,
              "embedding_backend": settings.embedding_backend,
              "chunk_max_tokens": settings.chunk_max_tokens,
              "chunk_overlap_tokens": settings.chunk_overlap_tokens,
              "text_match": "any"} | point.policy().model_dump()
    return record_run(resolve_targets(settings).admin_url, benchmark="retrieval-fusion-grid",
                      dataset=dataset.name, split=dataset.split, mode="hybrid", config=config,
                      metrics={m: round(metrics[m], 5) for m in METRICS}
                      | {"docs_per_query": docs_per_query},
                      timings={}, per_query=per_query, git_commit=commit,
                      started_at=started_at)
