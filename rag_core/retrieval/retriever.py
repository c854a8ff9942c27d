"""The retriever: question → query vector (cached) → the tenant's nearest chunks.

Thin by design (haystack's habit): embedding and storage live elsewhere. A similarity
threshold only flags weak matches (``RetrievedChunk.score`` stays available to callers);
it never silently empties the result when the tenant has documents. The question's vector
and the search are the query path's ``embed`` and ``retrieve`` stages (a histogram sample
and a span each, :mod:`rag_core.common.telemetry`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from rag_core.common.telemetry import Stage, stage
from rag_core.common.tenancy import TenantId, parse_tenant_id
from rag_core.embeddings.base import Embedder
from rag_core.retrieval.embedding_cache import QueryEmbeddingCache
from rag_core.retrieval.vector_store import RetrievedChunk, VectorStore


@dataclass(frozen=True)
class Retrieval:
    chunks: list[RetrievedChunk]
    embedding_cache_hit: bool
    embed_ms: float
    search_ms: float
    weak: bool  # the best score is below the configured threshold
    timings: dict[str, float] = field(default_factory=dict)


def embed_question(embedder: Embedder, cache: QueryEmbeddingCache | None, tenant: TenantId,
                   question: str) -> tuple[npt.NDArray[np.float32], bool]:
    """The question's vector (from the tenant's query-embedding cache when present) and
    whether it was a cache hit; a miss is embedded and stored."""
    with stage(Stage.EMBED) as span:
        vector = cache.get(tenant, question) if cache else None
        span.set_attribute("rag.embed.cache_hit", vector is not None)
        if vector is not None:
            return vector, True
        vector = embedder.embed_queries([question])[0]
        if cache:
            cache.put(tenant, question, vector)
        return vector, False


class Retriever:
    def __init__(self, embedder: Embedder, store: VectorStore,
                 cache: QueryEmbeddingCache | None = None, *, k: int = 5,
                 weak_score_below: float = 0.3) -> None:
        self.embedder = embedder
        self.store = store
        self.cache = cache
        self.k = k
        self.weak_score_below = weak_score_below

    def retrieve(self, tenant_id: TenantId | str, question: str,
                 k: int | None = None) -> Retrieval:
        tenant = parse_tenant_id(tenant_id)
        started = time.perf_counter()
        vector, hit = embed_question(self.embedder, self.cache, tenant, question)
        embedded = time.perf_counter()
        with stage(Stage.RETRIEVE, k=k or self.k) as span:
            chunks = self.store.search(tenant, vector, k or self.k)
            span.set_attribute("rag.retrieve.chunks", len(chunks))
        searched = time.perf_counter()
        weak = not chunks or chunks[0].score < self.weak_score_below
        return Retrieval(chunks, hit, (embedded - started) * 1000, (searched - embedded) * 1000,
                         weak)
