"""Errors of embedding model keys: a write to a key's vectors refused for safety.

A model key names one exact embedding version (weights and numeric variant). Vectors of two
versions under one key would be compared with each other by every search, silently; and a
key's vectors dropped while some tenant's questions still search them would answer from
nothing. Both are refused with the key and the reason.
"""

from __future__ import annotations

from rag_core.codes import ErrorCode
from rag_core.errors.base import RagCoreError, shown


class EmbeddingKeyRefusedError(RagCoreError):
    """Re-embedding into, or dropping the vectors of, a model key was refused: the key holds
    another version's vectors, or it is still being searched."""

    code = ErrorCode.WRITE_REFUSED

    def __init__(self, model_key: str, action: str, reason: str) -> None:
        self.model_key = model_key
        self.action = action
        self.reason = reason
        super().__init__(f"{action} of embedding model key {shown(model_key)!r} refused: "
                         f"{reason}")
