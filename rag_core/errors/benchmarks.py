"""Errors of benchmark and evaluation runs."""

from __future__ import annotations

from rag_core.codes import ErrorCode
from rag_core.errors.base import RagCoreError


class BenchmarkError(RagCoreError):
    """A benchmark or evaluation run could not be carried out."""

    code = ErrorCode.BENCHMARK_FAILED

    def __init__(self, message: str, *, value: object = None) -> None:
        self.value = value
        super().__init__(message)
