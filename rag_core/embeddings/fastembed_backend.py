"""FastEmbed (ONNX Runtime) backends on our own ONNX export of the packaged weights.

How FastEmbed 0.9.1 is driven here (from its source, not its docs):

* ``TextEmbedding(model_name="sentence-transformers/all-MiniLM-L6-v2", ...)`` selects
  ``PooledNormalizedEmbedding``: attention-mask mean pooling of the model's first output
  (accumulated in float64), then L2 normalisation, cast back to float32; the same as the
  sentence-transformers Pooling + Normalize modules. ``token_type_ids`` are fed as zeros.
* ``specific_model_path=DIR`` skips every download and loads ``DIR/model.onnx`` (the
  ``model_file`` registered for this model) plus tokenizer.json, tokenizer_config.json,
  special_tokens_map.json and config.json from ``DIR``.
* Truncation is ``tokenizer_config.json``'s ``model_max_length`` (hence the export writes 256);
  padding is reset to the longest sequence of each batch.
* ``threads`` sets both ``intra_op_num_threads`` and ``inter_op_num_threads`` of the
  onnxruntime session; ``None`` would let onnxruntime use every core of the host.
* ``cache_dir`` is created even when unused, so it is pointed at the export folder rather
  than at FastEmbed's default under the system temp directory.
* Batches are taken in input order and padded to their longest text, so texts are sorted by
  length first (as sentence-transformers does) and the result put back in input order.

The folder is produced by :func:`rag_core.embeddings.onnx_export.export_onnx`; if it is
missing this module raises :class:`EmbeddingModelUnavailableError` rather than letting
FastEmbed try (and, offline, fail) to download ``Qdrant/all-MiniLM-L6-v2-onnx``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rag_core.common.offline import forbid_hub_downloads
from rag_core.errors import EmbeddingModelUnavailableError

from ._common import (
    MiniLMTokenMixin,
    as_float_matrix,
    check_texts,
    empty_matrix,
    model_version,
    usable_cpus,
)
from .base import DIMENSION, MODEL_ID, FloatMatrix
from .onnx_export import MANIFEST_NAME, ONNX_FILE, TOKENIZER_FILES, read_manifest
from .tokenizer import load_tokenizer

__all__ = ["FastEmbedEmbedder", "Variant"]

Variant = Literal["fp32", "int8"]

_BACKEND_NAMES: dict[str, str] = {"fp32": "fastembed", "int8": "fastembed-int8"}


class FastEmbedEmbedder(MiniLMTokenMixin):
    """:class:`~rag_core.embeddings.base.Embedder` backed by FastEmbed + ONNX Runtime.

    ``export_dir`` is the folder written by ``export_onnx`` (holding ``manifest.json``,
    ``fp32/`` and ``int8/``).
    """

    def __init__(
        self, export_dir: Path, *, variant: Variant = "fp32", threads: int | None = None
    ) -> None:
        if variant not in _BACKEND_NAMES:
            raise ValueError(f"unknown FastEmbed variant {variant!r}; expected fp32 or int8")
        forbid_hub_downloads()
        export_dir = Path(export_dir)
        model_dir = export_dir / variant
        if not export_dir.is_dir():
            raise EmbeddingModelUnavailableError(MODEL_ID, export_dir)
        manifest = read_manifest(export_dir)
        if manifest is None or variant not in manifest.get("variants", {}):
            raise EmbeddingModelUnavailableError(
                MODEL_ID,
                model_dir,
                f"no complete {variant} export ({MANIFEST_NAME} missing or without {variant})",
            )
        missing = [n for n in (ONNX_FILE, *TOKENIZER_FILES) if not (model_dir / n).is_file()]
        if missing:
            raise EmbeddingModelUnavailableError(
                MODEL_ID, model_dir, f"missing {', '.join(missing)}"
            )

        from fastembed import TextEmbedding

        model = TextEmbedding(
            model_name=MODEL_ID,
            specific_model_path=str(model_dir),
            cache_dir=str(export_dir),
            threads=threads or usable_cpus(),
            providers=["CPUExecutionProvider"],
            cuda=False,
            local_files_only=True,
        )
        if model.embedding_size != DIMENSION:
            raise RuntimeError(f"FastEmbed reports dimension {model.embedding_size}")

        self._model: Any = model
        self._variant: Variant = variant
        self._tokenizer = load_tokenizer(model_dir)
        self._model_version = model_version(str(manifest["source_sha256"]), variant)
        self._backend_name = _BACKEND_NAMES[variant]
        self.model_dir = model_dir

    def embed_passages(self, texts: Sequence[str], batch_size: int = 64) -> FloatMatrix:
        return self._embed(texts, batch_size, query=False)

    def embed_queries(self, texts: Sequence[str], batch_size: int = 64) -> FloatMatrix:
        # all-MiniLM-L6-v2 has no query prefix; FastEmbed's query_embed equals embed for it
        return self._embed(texts, batch_size, query=True)

    def _embed(self, texts: Sequence[str], batch_size: int, *, query: bool) -> FloatMatrix:
        items = check_texts(texts)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not items:
            return empty_matrix()
        if self._variant == "int8":
            # dynamic quantisation derives one activation scale from the whole batch tensor,
            # padding included, so a text's int8 vector would depend on its batch neighbours
            # (cosine down to ~0.97 between batchings); one text per run makes it depend on
            # the text alone, and on CPU it is no slower since nothing is padded
            batch_size = 1
        # FastEmbed batches in input order and pads to the longest text of each batch; sorting
        # by length (as sentence-transformers does) avoids most padding work
        order = sorted(range(len(items)), key=lambda i: len(items[i]))
        ordered = [items[i] for i in order]
        embed = self._model.query_embed if query else self._model.passage_embed
        rows = as_float_matrix(list(embed(ordered, batch_size=batch_size)))
        if rows.shape[0] != len(items):
            raise RuntimeError(f"FastEmbed returned {rows.shape[0]} rows for {len(items)} texts")
        result = np.empty_like(rows)
        result[order] = rows
        return result

    def __repr__(self) -> str:
        return f"FastEmbedEmbedder({self.model_dir}, version={self._model_version})"
