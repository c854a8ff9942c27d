"""Errors of the database and of the local services (embedded servers, model files)."""

from __future__ import annotations

from pathlib import Path

from rag_core.codes import ErrorCode
from rag_core.errors.base import RagCoreError


class DatabaseError(RagCoreError):
    """The database refused or failed an operation."""

    code = ErrorCode.DATABASE_ERROR


class DatabaseUnavailableError(DatabaseError):
    """The database cannot be reached."""

    code = ErrorCode.DATABASE_UNAVAILABLE

    def __init__(self, target: str, reason: str) -> None:
        self.target = target
        super().__init__(f"database {target} is unavailable: {' '.join(reason.split())}")


class MigrationError(DatabaseError):
    """A migration could not be applied or rolled back."""

    code = ErrorCode.MIGRATION_FAILED

    def __init__(self, version: int, reason: str) -> None:
        self.version = version
        super().__init__(f"migration {version:04d}: {reason}")


class MigrationChecksumError(MigrationError):
    """An already-applied migration file was edited after it was applied."""

    code = ErrorCode.MIGRATION_EDITED

    def __init__(self, version: int, recorded: str, on_disk: str) -> None:
        self.recorded = recorded
        self.on_disk = on_disk
        super().__init__(
            version,
            f"file changed after it was applied (recorded sha256 {recorded[:12]}, "
            f"file now {on_disk[:12]}); write a new migration instead of editing this one",
        )


class UnknownEmbeddingModelError(DatabaseError):
    """A search or write named an embedding model that is not registered in the database."""

    code = ErrorCode.UNKNOWN_EMBEDDING_MODEL

    def __init__(self, model_key: str, reason: str | None = None) -> None:
        self.model_key = model_key
        super().__init__(
            f"embedding model {model_key!r} " + (reason or (
                "is not registered; register it with "
                "rag.register_embedding_model(key, dimension) in a migration"))
        )


class ServiceError(RagCoreError):
    """A local service or resource the platform runs on could not be used."""


class EmbeddedServerError(ServiceError):
    """The embedded PostgreSQL or Redis server could not be started or stopped."""

    code = ErrorCode.EMBEDDED_SERVER_FAILED

    def __init__(self, component: str, data_dir: str, reason: str) -> None:
        self.component = component
        self.data_dir = data_dir
        super().__init__(f"embedded {component} in {data_dir}: {reason}")


class CacheUnavailableError(ServiceError):
    """The caches' Redis could not be used for an operation that must finish (clearing the
    answer cache in ``rag rollback``); the query path never raises it (a cache outage there
    is a miss)."""

    code = ErrorCode.CACHE_UNAVAILABLE

    def __init__(self, operation: str, reason: str, *, done: int = 0) -> None:
        self.operation = operation
        self.done = done
        super().__init__(f"the caches' Redis failed during {operation} after {done} keys: "
                         f"{' '.join(reason.split())}")


class EmbeddingModelUnavailableError(ServiceError):
    """The files an embedding backend needs are missing or incomplete.

    Raised instead of letting FastEmbed fall back to a model-hub download (which fails on an
    offline machine with a much less helpful message).
    """

    code = ErrorCode.EMBEDDING_MODEL_UNAVAILABLE

    def __init__(self, model_id: str, path: Path | str, reason: str | None = None) -> None:
        self.model_id = model_id
        self.path = Path(path)
        self.reason = reason
        detail = reason or "the exported ONNX model folder does not exist"
        super().__init__(
            f"embedding model {model_id!r} is unavailable at {self.path}: {detail}; "
            "create it with `rag setup` (or rag_core.embeddings.ensure_models(state_dir))"
        )


class PartitionBusyError(DatabaseError):
    """A tenant's partition change kept waiting for a lock (others' transactions held it)
    through every attempt; nothing was left half done, a later run continues."""

    def __init__(self, tenant_id: str, step: str, attempts: int) -> None:
        self.tenant_id = tenant_id
        self.step = step
        super().__init__(f"tenant {tenant_id}: {step} did not get its lock in {attempts} "
                         "attempts (busy); run `rag tenant rebalance` again later")
