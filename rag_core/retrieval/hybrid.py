"""Hybrid retrieval: dense (pgvector) and full-text (PostgreSQL tsvector) rankings fused by
reciprocal-rank fusion (Cormack, Clarke & Büttcher, SIGIR 2009).

Each list contributes ``1 / (rrf_k + rank)`` (rank 1-based) for every chunk it ranks;
a chunk's fused score is the sum over the lists, and chunks are returned by fused score
(ties: the better dense rank, then the better text rank, then the lower chunk id).
``rrf_k = 60`` is the constant of the paper and the usual default.

Both searches run in tenant sessions and through functions that refuse foreign tenants
(``rag.search_chunks``, ``rag.search_chunks_text``); the rows of the text search get the same
per-row tenant check as the vector store's. Every returned chunk carries its true cosine
distance to the question (fetched for chunks that only the text search found), so
``RetrievedChunk.score`` keeps its meaning (cosine similarity) and the "weak" flag uses it;
the fused scores are in ``HybridRetrieval.fused``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt
from pgvector import Vector

from rag_core.common.tenancy import TenantId, parse_tenant_id
from rag_core.db.pool import Database
from rag_core.embeddings.base import Embedder
from rag_core.retrieval.embedding_cache import QueryEmbeddingCache
from rag_core.retrieval.retriever import Retrieval, embed_question
from rag_core.retrieval.vector_store import RetrievedChunk, VectorStore, verify_rows_belong_to

DEFAULT_RRF_K = 60
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


def reciprocal_rank_fusion(rankings: Sequence[Sequence[int]],
                           rrf_k: int = DEFAULT_RRF_K) -> list[tuple[int, float]]:
    """Fuse best-first id lists: ``score(id) = sum over lists of 1 / (rrf_k + rank)``.

    Returns ``(id, score)`` best first; ties go to the id with the better rank in the
    earliest list that ranks it differently, then to the lower id. An id repeated within a
    list counts at its first (best) position only.
    """
    if rrf_k < 0:
        raise ValueError(f"rrf_k must be >= 0, got {rrf_k}")
    scores: dict[int, float] = {}
    positions: dict[int, list[float]] = {}
    for list_no, ranking in enumerate(rankings):
        seen: set[int] = set()
        for rank, item in enumerate(ranking, start=1):
            if item in seen:
                continue
            seen.add(item)
            scores[item] = scores.get(item, 0.0) + 1.0 / (rrf_k + rank)
            positions.setdefault(item, [float("inf")] * len(rankings))[list_no] = rank
    return sorted(scores.items(), key=lambda kv: (-kv[1], positions[kv[0]], kv[0]))


class HybridRetriever:
    """Dense + full-text retrieval of a tenant's chunks, fused by RRF.

    ``retrieve`` has the shape of ``Retriever.retrieve``. Each search fetches
    ``max(k, candidates)`` chunks before fusion.
    """

    def __init__(self, embedder: Embedder, store: VectorStore, db: Database,
                 cache: QueryEmbeddingCache | None = None, *, k: int = 5,
                 weak_score_below: float = 0.3, rrf_k: int = DEFAULT_RRF_K,
                 candidates: int = 100, text_match: TextMatch = "any") -> None:
        if rrf_k < 0:
            raise ValueError(f"rrf_k must be >= 0, got {rrf_k}")
        self.embedder = embedder
        self.store = store
        self.db = db
        self.cache = cache
        self.k = k
        self.weak_score_below = weak_score_below
        self.rrf_k = rrf_k
        self.candidates = candidates
        self.text_match: TextMatch = text_match

    def retrieve(self, tenant_id: TenantId | str, question: str,
                 k: int | None = None) -> HybridRetrieval:
        tenant = parse_tenant_id(tenant_id)
        k = k or self.k
        depth = min(max(k, self.candidates), 1000)
        started = time.perf_counter()
        vector, hit = embed_question(self.embedder, self.cache, tenant, question)
        embedded = time.perf_counter()
        dense = self.store.search(tenant, vector, depth)
        dense_done = time.perf_counter()
        text = self.text_search(tenant, question, depth)
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
        fused = [(chunk_id, score) for chunk_id, score in reciprocal_rank_fusion(
            [[c.chunk_id for c in dense], [h.chunk_id for h in text]], self.rrf_k)
            if chunk_id in by_id][:k]
        dense_rank = {c.chunk_id: i for i, c in enumerate(dense, start=1)}
        text_rank = {h.chunk_id: i for i, h in enumerate(text, start=1)}
        chunks = [by_id[chunk_id] for chunk_id, _ in fused]
        hits = [FusedHit(chunk_id, score, dense_rank.get(chunk_id), text_rank.get(chunk_id))
                for chunk_id, score in fused]
        fused_done = time.perf_counter()
        weak = not chunks or max(c.score for c in chunks) < self.weak_score_below
        timings = {"embed_ms": (embedded - started) * 1000,
                   "dense_ms": (dense_done - embedded) * 1000,
                   "text_ms": (text_done - dense_done) * 1000,
                   "fuse_ms": (fused_done - text_done) * 1000}
        return HybridRetrieval(chunks=chunks, embedding_cache_hit=hit,
                               embed_ms=timings["embed_ms"],
                               search_ms=(fused_done - embedded) * 1000, weak=weak,
                               timings=timings, fused=hits, dense_count=len(dense),
                               text_count=len(text))

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
