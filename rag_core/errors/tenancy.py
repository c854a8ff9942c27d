"""Errors about tenants: callers must fail closed on every one of them."""

from __future__ import annotations

from rag_core.codes import ErrorCode
from rag_core.errors.base import RagCoreError, shown


class TenantError(RagCoreError):
    """Anything about tenants. Callers must fail closed on every subclass."""


class InvalidTenantIdError(TenantError, ValueError):
    """A tenant id does not match ``tn_`` + 32 lowercase hex characters."""

    code = ErrorCode.INVALID_TENANT_ID

    def __init__(self, value: object) -> None:
        self.value = value
        super().__init__(f"invalid tenant id {shown(value)!r}: expected 'tn_' followed by "
                         "32 lowercase hex characters")


class UnknownTenantError(TenantError):
    """The tenant id is well formed but no such tenant exists."""

    code = ErrorCode.UNKNOWN_TENANT

    def __init__(self, tenant_id: str) -> None:
        self.tenant_id = tenant_id
        super().__init__(f"tenant {tenant_id} does not exist")


class CrossTenantLeakError(TenantError):
    """A row of another tenant reached the application. It is never returned to the caller."""

    code = ErrorCode.CROSS_TENANT_BLOCKED

    def __init__(self, expected_tenant: str, row_tenant: object, row_id: object) -> None:
        self.expected_tenant = expected_tenant
        self.row_tenant = row_tenant
        self.row_id = row_id
        super().__init__(
            f"cross-tenant access violation: session tenant {expected_tenant} "
            f"received row {row_id!r} of tenant {row_tenant!r}"
        )


class UnsafeDatabaseRoleError(TenantError):
    """The application connected with a role that could bypass row-level security."""

    code = ErrorCode.UNSAFE_DATABASE_ROLE

    def __init__(self, role: str, reason: str) -> None:
        self.role = role
        super().__init__(f"database role {role!r} must not be used by the application: {reason}")
