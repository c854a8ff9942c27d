"""Errors of the HTTP API's own making: authentication and resources that are not found.

An unknown key and a missing key are one error (nothing tells a caller which keys exist);
another tenant's batch and a batch that does not exist are one error too.
"""

from __future__ import annotations

from rag_core.codes import ErrorCode
from rag_core.errors.base import RagCoreError, shown


class ApiError(RagCoreError):
    """Anything the HTTP layer refuses before the platform is asked."""


class UnauthorizedError(ApiError):
    """No API key, a malformed one, or one that is unknown or revoked."""

    code = ErrorCode.UNAUTHORIZED

    def __init__(self, reason: str = "a valid API key is required") -> None:
        self.reason = reason
        super().__init__(reason)


class ResourceNotFoundError(ApiError):
    """A resource that does not exist, or is not the caller's tenant's (the same answer)."""

    code = ErrorCode.NOT_FOUND

    def __init__(self, kind: str, resource_id: object) -> None:
        self.kind = kind
        self.resource_id = resource_id
        super().__init__(f"no {kind} {shown(resource_id)!r}")


class UnknownApiKeyError(ResourceNotFoundError):
    """A key id that is not one of this tenant's API keys (or, where a live key is needed,
    not one of its live keys). Another tenant's key id gets the same answer."""

    def __init__(self, tenant_id: str, key_id: object, *, live_only: bool = False) -> None:
        self.tenant_id = tenant_id
        self.kind = "live API key" if live_only else "API key"
        self.resource_id = key_id
        RagCoreError.__init__(self, f"tenant {tenant_id} has no {self.kind} {shown(key_id)!r}")
