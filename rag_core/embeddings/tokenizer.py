"""Wordpiece tokenisation for chunking, shared by every backend.

Both backends count tokens with the ``tokenizers`` library on the model's own tokenizer.json
(FastEmbed tokenises with exactly that file; sentence-transformers' tokenizer is built from it),
so a chunker produces identical chunks whichever backend is configured.

The shipped tokenizer.json carries ``truncation: 128`` and ``padding: Fixed(128)`` from the
original Hugging Face repository. Both are switched off here: a chunker needs the count of the
*whole* text, never a truncated or padded one. Truncation at the model window (256) is the
embedding backends' business, not the tokenizer's.
"""

from __future__ import annotations

import functools
from pathlib import Path

from tokenizers import Tokenizer

__all__ = ["WordpieceTokenizer", "load_tokenizer"]


class WordpieceTokenizer:
    """Counts and locates wordpieces of all-MiniLM-L6-v2 (no special tokens, no truncation)."""

    def __init__(self, tokenizer_json: Path) -> None:
        tokenizer = Tokenizer.from_file(str(tokenizer_json))
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self._tokenizer = tokenizer
        self.path = tokenizer_json

    def count_tokens(self, text: str) -> int:
        """Number of wordpieces of ``text``, without [CLS]/[SEP] and without truncation."""
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """``(start, end)`` character offsets into ``text`` of each wordpiece, in order."""
        encoding = self._tokenizer.encode(text, add_special_tokens=False)
        return [(int(start), int(end)) for start, end in encoding.offsets]


@functools.lru_cache(maxsize=8)
def _load(path: str) -> WordpieceTokenizer:
    return WordpieceTokenizer(Path(path))


def load_tokenizer(model_dir: Path) -> WordpieceTokenizer:
    """The tokenizer of a model folder (one shared instance per file and process).

    Loading needs only tokenizer.json, so a chunker can count tokens without loading weights.
    """
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"no tokenizer.json in {model_dir}")
    return _load(str(path.resolve()))
