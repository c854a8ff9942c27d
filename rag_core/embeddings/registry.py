"""Backend selection and the per-process model cache.

Loading a model costs seconds and ~100-300 MB, so each (backend, model folder) is loaded at
most once per process and shared; the embedders are safe to share between threads.

The ONNX export lives in the platform's state directory rather than in the package so that
it is written once per installation (by :func:`ensure_models`, run by the setup command) and
never at query time.
"""

from __future__ import annotations

import threading
from pathlib import Path

from .base import Embedder
from .onnx_export import export_onnx

__all__ = [
    "BACKENDS",
    "ONNX_DIR_NAME",
    "clear_cache",
    "ensure_models",
    "load_embedder",
    "onnx_export_dir",
]

BACKENDS = ("fastembed", "fastembed-int8", "sentence-transformers")
ONNX_DIR_NAME = "all-MiniLM-L6-v2-onnx"

_cache: dict[tuple[str, str], Embedder] = {}
_lock = threading.Lock()


def onnx_export_dir(state_dir: Path) -> Path:
    """Where the ONNX export of the embedding model lives for a given state directory."""
    return Path(state_dir) / "models" / ONNX_DIR_NAME


def load_embedder(backend: str, *, state_dir: Path) -> Embedder:
    """The embedder for ``backend``, loaded once per process and then reused.

    Raises ``ValueError`` for an unknown backend and
    :class:`~rag_core.embeddings.errors.EmbeddingModelUnavailableError` when a FastEmbed
    backend's export has not been created (see :func:`ensure_models`).
    """
    if backend not in BACKENDS:
        raise ValueError(
            f"unknown embedding backend {backend!r}; expected one of {', '.join(BACKENDS)}"
        )
    # sentence-transformers reads the packaged weights, independent of state_dir
    location = "" if backend == "sentence-transformers" else str(onnx_export_dir(state_dir))
    key = (backend, location)
    with _lock:
        embedder = _cache.get(key)
        if embedder is None:
            embedder = _load(backend, Path(location))
            _cache[key] = embedder
        return embedder


def _load(backend: str, export_dir: Path) -> Embedder:
    if backend == "sentence-transformers":
        from .sentence_transformers_backend import SentenceTransformerEmbedder

        return SentenceTransformerEmbedder()

    from .fastembed_backend import FastEmbedEmbedder

    return FastEmbedEmbedder(export_dir, variant="int8" if backend == "fastembed-int8" else "fp32")


def ensure_models(state_dir: Path) -> None:
    """Create the ONNX export (fp32 and int8) under ``state_dir`` unless it is up to date."""
    export_onnx(onnx_export_dir(state_dir), quantize_int8=True)


def clear_cache() -> None:
    """Forget loaded embedders (for tests; live references stay valid)."""
    with _lock:
        _cache.clear()
