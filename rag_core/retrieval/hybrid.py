"""Hybrid retrieval: dense (pgvector) and full-text (PostgreSQL tsvector) rankings fused by
weighted reciprocal-rank fusion (Cormack, Clarke & Büttcher, SIGIR 2009).

Each list contributes ``weight / (rrf_k + rank)`` (rank 1-based) for every chunk it ranks;
a chunk's fused score is the sum over the lists, and chunks are returned by fused score
(ties: the better dense rank, then the better text rank, then the lower chunk id). The
constant, each list's weight and each search's depth are ``Settings.hybrid``
(:class:`rag_core.config.HybridPolicy`, ``RAG_HYBRID__*``); a list of weight 0 is not
searched at all. Written out rather than taken from a library: it is twenty lines, and
ranx's fusion (a benchmark dependency, not the library's) works on id-score maps without
the ranks' tie order the answer needs.

Both searches run in tenant sessions and through functions that refuse foreign tenants
(``rag.search_chunks``, ``rag.search_chunks_text``); the rows of the text search get the same
per-row tenant check as the vector store's. Every returned chunk carries its true cosine
distance to the question (fetched for chunks that only the text search found), so
``RetrievedChunk.score`` keeps its meaning (cosine similarity) and the "weak" flag uses it;
the fused scores are in ``HybridRetrieval.fused``.

:meth:`HybridRetriever.candidates` and :func:`fuse` are the two halves of ``retrieve``: an
evaluation can fetch the candidates once, deep, and fuse them under many parameters
(``evaluations/retrieval/fusion_grid.py``); both searches return prefixes of their deeper
results (exact or ordered by rank, then chunk id), so a cut list is what a shallower search
would have returned.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt
from pgvector import Vector

from rag_core.common.telemetry import Stage, stage
from rag_core.common.tenancy import TenantId, parse_tenant_id
from rag_core.config import HybridPolicy
from rag_core.db.pool import Database
from rag_core.embeddings.base import Embedder
from rag_core.retrieval.embedding_cache import QueryEmbeddingCache
from rag_core.retrieval.retriever import Retrieval, embed_question
from rag_core.retrieval.vector_store import RetrievedChunk, VectorStore, verify_rows_belong_to

DEFAULT_RRF_K = HybridPolicy().rrf_k
TextMatch = Literal["any", "all", "websearch"]

_TEXT_SEARCH = """
SELECT chunk_id, document_id, tenant_id, ordinal, text, rank
  FROM rag.search_chunks_text(%(tenant)s, %(query)s, %(k)s, %(match)s)
"""

# Cosine distance of chunks found only by the text search (same tenant session; explicit
# tenant filter on both tables, as everywhere).
_DISTANCES = """
SELECT c.chunk_id, c.tenant_id, (e.embedding <=> %(query)s) AS distance
  FROM rag.chunks c JOIN rag.chunk_embeddings e ON e.chunk_id = c.chunk_id
 WHERE c.tenant_id = %(tenant)s AND e.tenant_id = %(tenant)s AND e.model_key = %(model)s
   AND c.chunk_id = ANY(%(ids)s)
"""


@dataclass(frozen=True)
class TextHit:
    chunk_id: int
    document_id: int
    tenant_id: TenantId
    ordinal: int
    text: str
    rank_score: float  # ts_rank of the chunk's tsvector for the query


@dataclass(frozen=True)
class FusedHit:
    chunk_id: int
    score: float  # the RRF score
    dense_rank: int | None  # 1-based rank in the dense list, None if absent
    text_rank: int | None  # 1-based rank in the text list, None if absent


@dataclass(frozen=True)
class HybridRetrieval(Retrieval):
    """A ``Retrieval`` whose chunks are in fused order; ``fused[i]`` belongs to ``chunks[i]``."""

    fused: list[FusedHit] = field(default_factory=list)
    dense_count: int = 0
    text_count: int = 0


@dataclass(frozen=True)
class Candidates:
    """What the two searches found for one question, before fusion: the dense and text
    rankings (chunk ids, best first) and every candidate with its cosine distance (a
    text-only chunk without a vector of the store's model is absent from ``chunks``)."""

    dense: list[int]
    text: list[int]
    chunks: dict[int, RetrievedChunk]
    embedding_cache_hit: bool = False
    timings: dict[str, float] = field(default_factory=dict)


def reciprocal_rank_fusion(rankings: Sequence[Sequence[int]], rrf_k: int = DEFAULT_RRF_K,
                           weights: Sequence[float] | None = None) -> list[tuple[int, float]]:
    """Fuse best-first id lists: ``score(id) = sum over lists of weight / (rrf_k + rank)``.

    ``weights`` (default: 1 each) has one entry per list; a list of weight 0 is left out
    entirely. Returns ``(id, score)`` best first; ties go to the id with the better rank in
    the earliest list that ranks it differently, then to the lower id. An id repeated within
    a list counts at its first (best) position only.
    """
    if rrf_k < 0:
        raise ValueError(f"rrf_k must be >= 0, got {rrf_k}")
    weights = [1.0] * len(rankings) if weights is None else list(weights)
    if len(weights) != len(rankings) or any(w < 0 for w in weights):
        raise ValueError(f"need one weight >= 0 per ranking, got {weights}")
    scores: dict[int, float] = {}
    positions: dict[int, list[float]] = {}
    for list_no, (ranking, weight) in enumerate(zip(rankings, weights, strict=True)):
        if weight == 0:
            continue
        seen: set[int] = set()
        for rank, item in enumerate(ranking, start=1):
            if item in seen:
                continue
            seen.add(item)
            scores[item] = scores.get(item, 0.0) + weight / (rrf_k + rank)
            positions.setdefault(item, [float("inf")] * len(rankings))[list_no] = rank
    return sorted(scores.items(), key=lambda kv: (-kv[1], positions[kv[0]], kv[0]))


def fuse(candidates: Candidates, k: int, policy: HybridPolicy, *,
         dense_depth: int | None = None,
         text_depth: int | None = None) -> tuple[list[RetrievedChunk], list[FusedHit]]:
    """The top ``k`` chunks of ``candidates`` under ``policy`` (weights, RRF constant), each
    list first cut to its depth (default: all of it), with their fused scores and ranks."""
    dense = candidates.dense[:dense_depth]
    text = candidates.text[:text_depth]
    fused = [(chunk_id, score) for chunk_id, score in reciprocal_rank_fusion(
        [dense, text], policy.rrf_k, [policy.dense_weight, policy.text_weight])
        if chunk_id in candidates.chunks][:k]
    dense_rank = {c: i for i, c in enumerate(dense, start=1)}
    text_rank = {c: i for i, c in enumerate(text, start=1)}
    return ([candidates.chunks[chunk_id] for chunk_id, _ in fused],
            [FusedHit(chunk_id, score, dense_rank.get(chunk_id), text_rank.get(chunk_id))
             for chunk_id, score in fused])


class HybridRetriever:
    """Dense + full-text retrieval of a tenant's chunks, fused by weighted RRF.

    ``retrieve`` has the shape of ``Retriever.retrieve``. The dense search fetches
    ``max(k, policy.dense_candidates)`` chunks, the text search ``max(k,
    policy.text_candidates)``, before fusion. ``rrf_k`` and ``candidates`` (both depths), when
    given, override the policy's.
    """

    def __init__(self, embedder: Embedder, store: VectorStore, db: Database,
                 cache: QueryEmbeddingCache | None = None, *, k: int = 5,
                 weak_score_below: float = 0.3, policy: HybridPolicy | None = None,
                 rrf_k: int | None = None, candidates: int | None = None,
                 text_match: TextMatch = "any") -> None:
        overrides: dict[str, int] = {}
        if rrf_k is not None:
            if rrf_k < 0:
                raise ValueError(f"rrf_k must be >= 0, got {rrf_k}")
            overrides["rrf_k"] = rrf_k
        if candidates is not None:
            overrides |= {"dense_candidates": candidates, "text_candidates": candidates}
        base = policy or HybridPolicy()
        self.policy = HybridPolicy(**(base.model_dump() | overrides)) if overrides else base
        self.embedder = embedder
        self.store = store
        self.db = db
        self.cache = cache
        self.k = k
        self.weak_score_below = weak_score_below
        self.text_match: TextMatch = text_match

    @property
    def rrf_k(self) -> int:
        return self.policy.rrf_k

    def retrieve(self, tenant_id: TenantId | str, question: str,
                 k: int | None = None) -> HybridRetrieval:
        k = k or self.k
        tenant = parse_tenant_id(tenant_id)
        started = time.perf_counter()
        vector, hit = embed_question(self.embedder, self.cache, tenant, question)
        # The retrieve stage as dense retrieval times it: after the embedding, to the chunks.
        with stage(Stage.RETRIEVE, k=k, mode="hybrid") as span:
            found = self._searched(tenant, question, vector, hit, started,
                                   max(k, self.policy.dense_candidates),
                                   max(k, self.policy.text_candidates))
            chunks, hits = fuse(found, k, self.policy)
            span.set_attribute("rag.retrieve.chunks", len(chunks))
        fused_done = time.perf_counter()
        weak = not chunks or max(c.score for c in chunks) < self.weak_score_below
        timings = found.timings | {
            "fuse_ms": (fused_done - started) * 1000 - sum(found.timings.values())}
        return HybridRetrieval(chunks=chunks, embedding_cache_hit=found.embedding_cache_hit,
                               embed_ms=timings["embed_ms"],
                               search_ms=(fused_done - started) * 1000 - timings["embed_ms"],
                               weak=weak, timings=timings, fused=hits,
                               dense_count=len(found.dense), text_count=len(found.text))

    def candidates(self, tenant_id: TenantId | str, question: str, dense_depth: int,
                   text_depth: int) -> Candidates:
        """Both searches for ``question`` (a list of weight 0 is not searched), at most 1000
        chunks each, and the cosine distance of every chunk only the text search found."""
        tenant = parse_tenant_id(tenant_id)
        started = time.perf_counter()
        vector, hit = embed_question(self.embedder, self.cache, tenant, question)
        return self._searched(tenant, question, vector, hit, started, dense_depth, text_depth)

    def _searched(self, tenant: TenantId, question: str, vector: npt.NDArray[np.float32],
                  hit: bool, started: float, dense_depth: int, text_depth: int) -> Candidates:
        embedded = time.perf_counter()
        dense = self.store.search(tenant, vector, min(dense_depth, 1000)) \
            if self.policy.dense_weight > 0 else []
        dense_done = time.perf_counter()
        text = self.text_search(tenant, question, min(text_depth, 1000)) \
            if self.policy.text_weight > 0 else []
        text_done = time.perf_counter()
        by_id = {c.chunk_id: c for c in dense}
        # Chunks only the text search found get their cosine distance too. A chunk without
        # a vector for this store's model cannot be scored and is left out.
        text_only = [h for h in text if h.chunk_id not in by_id]
        distances = self._distances(tenant, vector, [h.chunk_id for h in text_only])
        for h in text_only:
            if h.chunk_id in distances:
                by_id[h.chunk_id] = RetrievedChunk(h.chunk_id, h.document_id, h.tenant_id,
                                                   h.ordinal, h.text, distances[h.chunk_id],
                                                   "text")
        return Candidates([c.chunk_id for c in dense], [h.chunk_id for h in text], by_id, hit,
                          {"embed_ms": (embedded - started) * 1000,
                           "dense_ms": (dense_done - embedded) * 1000,
                           "text_ms": (text_done - dense_done) * 1000})

    def text_search(self, tenant_id: TenantId | str, question: str,
                    k: int = 10) -> list[TextHit]:
        """The tenant's ``k`` chunks best matching ``question`` by full-text rank."""
        tenant = parse_tenant_id(tenant_id)
        with self.db.tenant_session(tenant) as conn:
            rows = conn.execute(_TEXT_SEARCH, {"tenant": tenant, "query": question, "k": k,
                                               "match": self.text_match}).fetchall()
        verify_rows_belong_to(tenant, rows, tenant_column=2, id_column=0)
        return [TextHit(int(r[0]), int(r[1]), TenantId(r[2]), int(r[3]), str(r[4]), float(r[5]))
                for r in rows]

    def _distances(self, tenant: TenantId, vector: npt.NDArray[np.float32],
                   chunk_ids: list[int]) -> dict[int, float]:
        if not chunk_ids:
            return {}
        with self.db.tenant_session(tenant) as conn:
            rows = conn.execute(_DISTANCES, {
                "query": Vector(np.asarray(vector, dtype=np.float32)), "tenant": tenant,
                "model": self.store.model_key, "ids": chunk_ids}).fetchall()
        verify_rows_belong_to(tenant, rows, tenant_column=1, id_column=0)
        return {int(r[0]): float(r[2]) for r in rows}
