"""Errors of operating the platform: an action that changes production state and was not
confirmed (``rag rollback`` without ``--yes`` where nobody can answer a prompt); the data
quality checks of the analytics marts failing (``rag analytics check``, the analytics flow)."""

from __future__ import annotations

from rag_core.codes import ErrorCode
from rag_core.errors.base import RagCoreError


class ConfirmationRequiredError(RagCoreError):
    """A command that changes shared state ran without its confirmation: no ``--yes`` and
    no terminal to ask on (CI, a pipe), or the operator answered no. Nothing was changed."""

    code = ErrorCode.CONFIRMATION_REQUIRED

    def __init__(self, command: str, reason: str) -> None:
        self.command = command
        super().__init__(f"{command} not run: {reason}; nothing was changed")


class DataQualityError(RagCoreError):
    """A Great Expectations checkpoint on the dbt marts found rows that break its
    expectations (or a mart it checks is missing). ``summary`` names each broken
    expectation, its column and a sample of the offending rows."""

    code = ErrorCode.DATA_QUALITY_FAILED

    def __init__(self, summary: str, *, failed: int) -> None:
        self.summary = summary
        self.failed = failed
        super().__init__(summary)
