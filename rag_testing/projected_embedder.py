"""A deliberately worse embedding version: a random projection of a real embedder's vectors.

For rollout tests that need a candidate embedding version whose retrieval is measurably
worse than the serving one while still being a real, deterministic embedder: the real
model's unit vectors are multiplied by a fixed Gaussian matrix (``dimension`` columns,
drawn from ``seed``) and normalised again. Johnson-Lindenstrauss keeps distances only
roughly at a few dozen dimensions, so neighbours get shuffled: what a quality gate must catch.

It reports its own ``model_version`` (the real one plus the projection's shape and seed),
so query-embedding caches and registered model labels never mix it with the real model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rag_core.embeddings.base import Embedder, FloatMatrix, TokenCounter

__all__ = ["RandomProjectionEmbedder"]


class RandomProjectionEmbedder:
    """``inner``'s vectors projected to ``dimension`` random directions (an Embedder)."""

    def __init__(self, inner: Embedder, dimension: int = 48, seed: int = 0) -> None:
        if not 1 <= dimension <= inner.dimension:
            raise ValueError(f"dimension must be in 1..{inner.dimension}, got {dimension}")
        self._inner = inner
        self._dimension = dimension
        self._seed = seed
        rng = np.random.default_rng(seed)
        self._matrix = rng.standard_normal((inner.dimension, dimension)).astype(np.float32)

    @property
    def model_id(self) -> str:
        return self._inner.model_id

    @property
    def model_version(self) -> str:
        return f"{self._inner.model_version}-rp{self._dimension}s{self._seed}"

    @property
    def backend(self) -> str:
        return f"{self._inner.backend}+random-projection"

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def max_tokens(self) -> int:
        return self._inner.max_tokens

    @property
    def tokenizer(self) -> TokenCounter:
        return self._inner.tokenizer

    def count_tokens(self, text: str) -> int:
        return self._inner.count_tokens(text)

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        return self._inner.token_offsets(text)

    def embed_passages(self, texts: Sequence[str], batch_size: int = 64) -> FloatMatrix:
        return self._project(self._inner.embed_passages(texts, batch_size=batch_size))

    def embed_queries(self, texts: Sequence[str], batch_size: int = 64) -> FloatMatrix:
        return self._project(self._inner.embed_queries(texts, batch_size=batch_size))

    def _project(self, vectors: FloatMatrix) -> FloatMatrix:
        projected = (vectors @ self._matrix).astype(np.float32)
        norms = np.maximum(np.linalg.norm(projected, axis=1, keepdims=True), 1e-12)
        result: FloatMatrix = (projected / norms).astype(np.float32)
        return result
