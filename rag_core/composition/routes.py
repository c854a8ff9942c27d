"""The objects each query variant runs with (:class:`~rag_core.query.variants.VariantRoutes`
for a :class:`~rag_core.composition.Platform`): one retriever per (retrieval mode,
embedding model) and one answerer per prompt version, built on first use and kept.

The platform's default variant gets the platform's own objects (its retriever, query
embedding cache and answerer), so a process with no flag builds nothing more. Another
embedding model key is found, in order, among the embedders registered with
:meth:`QueryRoutes.register_embedder` (a benchmark's or a test's), then in
``RAG_EMBEDDING_VARIANTS`` (key -> backend); anything else is
:class:`~rag_core.errors.UnknownEmbeddingModelError`, which fails the question with that
code rather than silently answering from the default model.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from rag_core.answering import LLMBatchAnswerer
from rag_core.embeddings.base import Embedder
from rag_core.embeddings.registry import load_embedder
from rag_core.errors import UnknownEmbeddingModelError
from rag_core.llm.prompts import PROMPT_VERSION, PROMPT_VERSIONS
from rag_core.query.variants import RetrieverLike, Variant
from rag_core.retrieval.embedding_cache import QueryEmbeddingCache
from rag_core.retrieval.hybrid import HybridRetriever
from rag_core.retrieval.retriever import Retriever
from rag_core.retrieval.vector_store import VectorStore

if TYPE_CHECKING:
    from rag_core.composition import Platform

__all__ = ["QueryRoutes"]


class QueryRoutes:
    def __init__(self, platform: Platform) -> None:
        self._platform = platform
        self._lock = threading.Lock()
        self._embedders: dict[str, Embedder] = {}
        self._retrievers: dict[tuple[str, str], RetrieverLike] = {}
        self._answerers: dict[str, Any] = {}

    def register_embedder(self, model_key: str, embedder: Embedder) -> None:
        """Queries for ``model_key``'s vectors are embedded by ``embedder``."""
        with self._lock:
            self._embedders[model_key] = embedder
            self._retrievers = {k: r for k, r in self._retrievers.items() if k[1] != model_key}

    def variant_values(self, setting: str) -> list[str]:
        """What a flag's variant may set ``setting`` to here (asked when a flag is created):
        the prompt versions this version sends, the embedding models registered."""
        if setting == "prompt_version":
            return list(PROMPT_VERSIONS)
        with self._platform.admin_connection() as conn:
            return [str(r[0]) for r in conn.execute(
                "SELECT model_key FROM rag.embedding_models ORDER BY model_key").fetchall()]

    def embedder(self, model_key: str) -> Embedder:
        platform = self._platform
        settings = platform.settings
        if model_key == settings.embedding_model_key:
            return platform.embedder
        registered = self._embedders.get(model_key)
        if registered is not None:
            return registered
        backend = settings.embedding_variants.get(model_key)
        if backend is None:
            raise UnknownEmbeddingModelError(model_key, "has no embedder for its queries in "
                                                        "this process (RAG_EMBEDDING_VARIANTS)")
        return load_embedder(backend, state_dir=settings.state_dir)

    def embedding_label(self, variant: Variant) -> str:
        embedder = self.embedder(variant.embedding_model_key)
        return f"{embedder.model_id}@{embedder.model_version}"

    def retriever(self, variant: Variant) -> RetrieverLike:
        key = (variant.retrieval_mode, variant.embedding_model_key)
        with self._lock:
            retriever = self._retrievers.get(key)
        if retriever is None:
            retriever = self._build_retriever(*key)
            with self._lock:
                retriever = self._retrievers.setdefault(key, retriever)
        return retriever

    def answerer(self, variant: Variant) -> Any:
        platform = self._platform
        if platform.llm_client is None or variant.prompt_version == PROMPT_VERSION:
            return platform.answerer  # the extractive answerer has no prompt to vary
        with self._lock:
            answerer = self._answerers.get(variant.prompt_version)
            if answerer is None:
                answerer = LLMBatchAnswerer(platform.llm_client,
                                            max_batch_size=platform.settings.batch_size,
                                            prompt_version=variant.prompt_version)
                self._answerers[variant.prompt_version] = answerer
        return answerer

    def _build_retriever(self, mode: str, model_key: str) -> RetrieverLike:
        platform = self._platform
        settings = platform.settings
        default = model_key == settings.embedding_model_key
        if default and mode == "dense":
            return platform.retriever
        embedder = self.embedder(model_key)
        store = platform.vector_store if default else \
            VectorStore(platform.database, settings, model_key=model_key)
        cache = platform.query_embedding_cache if default else QueryEmbeddingCache(
            platform.redis, embedder.model_id, embedder.model_version,
            dimension=embedder.dimension, epochs=platform.cache_epochs,
            prefix=settings.redis_key_prefix, outages=platform.outages)
        if mode == "hybrid":
            return HybridRetriever(embedder, store, platform.database, cache,
                                   k=settings.retrieval_k,
                                   weak_score_below=settings.weak_score_below,
                                   policy=settings.hybrid)
        return Retriever(embedder, store, cache, k=settings.retrieval_k,
                         weak_score_below=settings.weak_score_below)
