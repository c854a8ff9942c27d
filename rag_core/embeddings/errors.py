"""Exceptions raised by the embeddings package.

They are deliberately plain ``Exception`` subclasses for now so this package has no
dependency on the rest of ``rag_core``; the project's error tree can re-parent them later
without changing their attributes (``model_id`` and ``path``) or constructor signature.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["EmbeddingModelUnavailableError"]


class EmbeddingModelUnavailableError(Exception):
    """The files an embedding backend needs are missing or incomplete.

    Raised instead of letting FastEmbed fall back to a model-hub download (which fails on an
    offline machine with a much less helpful message) when the locally exported ONNX folder
    does not exist, or exists without a valid export manifest.
    """

    def __init__(self, model_id: str, path: Path | str, reason: str | None = None) -> None:
        self.model_id = model_id
        self.path = Path(path)
        self.reason = reason
        detail = reason or "the exported ONNX model folder does not exist"
        super().__init__(
            f"Embedding model {model_id!r} is unavailable at {self.path}: {detail}. "
            "Create it with the project's setup command, which calls "
            "rag_core.embeddings.ensure_models(state_dir), or directly with "
            "rag_core.embeddings.onnx_export.export_onnx(dest_dir)."
        )
