"""The one exception tree of rag_core.

Every error carries the offending value as an attribute and in its message, so a log line
or a CLI error is enough to see what was wrong without a debugger. Callers catch
``RagCoreError`` (or a branch of it); third-party exceptions are translated at the boundary
where they arise (psycopg errors in ``rag_core.db``), never leaked half-way.
"""

from __future__ import annotations


class RagCoreError(Exception):
    """Base class of every error raised on purpose by rag_core."""


# --- configuration -------------------------------------------------------------------------
class ConfigurationError(RagCoreError):
    """A setting is missing or invalid."""

    def __init__(self, setting: str, value: object, reason: str) -> None:
        self.setting = setting
        self.value = value
        super().__init__(f"setting {setting}={value!r} is invalid: {reason}")


# --- tenants -------------------------------------------------------------------------------
class TenantError(RagCoreError):
    """Anything about tenants. Callers must fail closed on every subclass."""


class InvalidTenantIdError(TenantError, ValueError):
    """A tenant id does not match ``tn_`` + 32 lowercase hex characters."""

    def __init__(self, value: object) -> None:
        self.value = value
        shown = value if not isinstance(value, str) or len(value) <= 80 else value[:77] + "..."
        super().__init__(
            f"invalid tenant id {shown!r}: expected 'tn_' followed by 32 lowercase hex characters"
        )


class UnknownTenantError(TenantError):
    """The tenant id is well formed but no such tenant exists."""

    def __init__(self, tenant_id: str) -> None:
        self.tenant_id = tenant_id
        super().__init__(f"tenant {tenant_id} does not exist")


class CrossTenantLeakError(TenantError):
    """A row of another tenant reached the application. It is never returned to the caller."""

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

    def __init__(self, role: str, reason: str) -> None:
        self.role = role
        super().__init__(f"database role {role!r} must not be used by the application: {reason}")


# --- database ------------------------------------------------------------------------------
class DatabaseError(RagCoreError):
    """The database refused or failed an operation."""


class DatabaseUnavailableError(DatabaseError):
    """The database cannot be reached."""

    def __init__(self, target: str, reason: str) -> None:
        self.target = target
        super().__init__(f"database {target} is unavailable: {reason}")


class EmbeddedServerError(DatabaseError):
    """The embedded PostgreSQL or Redis server could not be started or stopped."""

    def __init__(self, component: str, data_dir: str, reason: str) -> None:
        self.component = component
        self.data_dir = data_dir
        super().__init__(f"embedded {component} in {data_dir}: {reason}")


class MigrationError(DatabaseError):
    """A migration could not be applied or rolled back."""

    def __init__(self, version: int, reason: str) -> None:
        self.version = version
        super().__init__(f"migration {version:04d}: {reason}")


class MigrationChecksumError(MigrationError):
    """An already-applied migration file was edited after it was applied."""

    def __init__(self, version: int, recorded: str, on_disk: str) -> None:
        self.recorded = recorded
        self.on_disk = on_disk
        super().__init__(
            version,
            f"file changed after it was applied (recorded sha256 {recorded[:12]}, "
            f"file now {on_disk[:12]}); write a new migration instead of editing this one",
        )


class WriteRefusedError(DatabaseError):
    """Row-level security (or a privilege check) refused a write."""

    def __init__(self, tenant_id: str, table: str, reason: str) -> None:
        self.tenant_id = tenant_id
        self.table = table
        super().__init__(f"write to {table} refused for tenant {tenant_id}: {reason}")


class UnknownEmbeddingModelError(DatabaseError):
    """A search or write named an embedding model that is not registered in the database."""

    def __init__(self, model_key: str) -> None:
        self.model_key = model_key
        super().__init__(
            f"embedding model {model_key!r} is not registered; register it with "
            "rag.register_embedding_model(key, dimension) in a migration"
        )


class DimensionMismatchError(RagCoreError, ValueError):
    """A vector does not have the dimension its embedding model declares."""

    def __init__(self, model_key: str, expected: int, actual: int) -> None:
        self.model_key = model_key
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"vector of dimension {actual} given for model {model_key!r}, which has {expected}"
        )
