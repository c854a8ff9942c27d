"""Text embeddings for the RAG platform: one model (all-MiniLM-L6-v2), three backends.

``load_embedder("fastembed" | "fastembed-int8" | "sentence-transformers", state_dir=...)``
returns a cached :class:`Embedder`; ``ensure_models(state_dir)`` creates the ONNX export the
FastEmbed backends need. Heavy libraries (torch, onnxruntime, fastembed) are imported only
when a model is loaded or exported, so importing this package is cheap.
"""

from rag_core.errors import EmbeddingModelUnavailableError

from .base import (
    DIMENSION,
    MAX_TOKENS,
    MODEL_ID,
    SPECIAL_TOKENS_PER_INPUT,
    Embedder,
    FloatMatrix,
    TokenCounter,
)
from .onnx_export import ExportResult, export_onnx
from .registry import BACKENDS, ensure_models, load_embedder, onnx_export_dir
from .tokenizer import WordpieceTokenizer, load_tokenizer

__all__ = [
    "BACKENDS",
    "DIMENSION",
    "MAX_TOKENS",
    "MODEL_ID",
    "SPECIAL_TOKENS_PER_INPUT",
    "Embedder",
    "EmbeddingModelUnavailableError",
    "ExportResult",
    "FloatMatrix",
    "TokenCounter",
    "WordpieceTokenizer",
    "ensure_models",
    "export_onnx",
    "load_embedder",
    "load_tokenizer",
    "onnx_export_dir",
]
