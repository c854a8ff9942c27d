"""Errors of operating the platform: an action that changes production state and was not
confirmed (``rag rollback`` without ``--yes`` where nobody can answer a prompt)."""

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
