"""The one exception tree of the platform, in one place (this package).

Every error the product raises on purpose derives from :class:`RagCoreError`, carries the
offending value as attributes and in its message, and maps to exactly one
:class:`~rag_core.codes.ErrorCode` (its class attribute ``code``). Third-party exceptions are
translated at the boundary where they arise (psycopg in ``rag_core.db``, groq in
``rag_core.llm``, redis in ``rag_core.limits``), with the original kept as ``__cause__``.

The tree::

    RagCoreError
    ├── ConfigurationError
    ├── InputError: InvalidQuestionIdsError, InputTooLargeError, QuestionFileError, SourceError,
    │               DatasetError, PathOutsideRootsError,
    │               InvalidTokenCountError, InvalidSessionIdError, SessionKeyTooShortError,
    │               DimensionMismatchError
    ├── TenantError: InvalidTenantIdError, UnknownTenantError, CrossTenantLeakError,
    │                UnsafeDatabaseRoleError
    ├── DatabaseError: DatabaseUnavailableError, MigrationError (MigrationChecksumError),
    │                  UnknownEmbeddingModelError
    ├── ServiceError: EmbeddedServerError, EmbeddingModelUnavailableError,
    │                 CacheUnavailableError
    ├── EmbeddingKeyRefusedError (re-embedding into or dropping a model key's vectors)
    ├── LLMError: LLMUnavailableError, LLMRequestRejectedError, CircuitOpenError,
    │             LLMResponseError
    ├── LimitError: RateLimitExceededError, TokenQuotaExceededError, RateLimitBackendError,
    │               QuotaUnavailableError,
    │               ConcurrencyError (ConcurrencyLimitTimeoutError, ConcurrencyBackendError)
    ├── BenchmarkError
    ├── ApiError: UnauthorizedError, ResourceNotFoundError (UnknownApiKeyError, UnknownFlagError)
    ├── InvalidFlagError (an InputError), FlagStateError
    ├── RolloutRolledBackError
    ├── ConfirmationRequiredError
    └── DataQualityError (the analytics marts' expectations)
"""

from rag_core.errors.api import (
    ApiError,
    ResourceNotFoundError,
    UnauthorizedError,
    UnknownApiKeyError,
)
from rag_core.errors.base import RAW_TEXT_LIMIT, RagCoreError, truncate
from rag_core.errors.benchmarks import (
    BenchmarkError,
)
from rag_core.errors.embeddings import EmbeddingKeyRefusedError
from rag_core.errors.flags import (
    FlagStateError,
    InvalidFlagError,
    RolloutRolledBackError,
    UnknownFlagError,
)
from rag_core.errors.inputs import (
    ConfigurationError,
    DatasetError,
    DimensionMismatchError,
    InputError,
    InputTooLargeError,
    InvalidQuestionError,
    InvalidQuestionIdsError,
    InvalidSessionIdError,
    InvalidTokenCountError,
    QuestionFileError,
    SessionKeyTooShortError,
    SourceError,
    unstorable_text,
)
from rag_core.errors.limits import (
    ConcurrencyBackendError,
    ConcurrencyError,
    ConcurrencyLimitTimeoutError,
    LimitError,
    QuotaUnavailableError,
    RateLimitBackendError,
    RateLimitExceededError,
    TokenQuotaExceededError,
)
from rag_core.errors.llm import (
    CircuitOpenError,
    LLMError,
    LLMRequestRejectedError,
    LLMResponseError,
    LLMUnavailableError,
)
from rag_core.errors.operations import ConfirmationRequiredError, DataQualityError
from rag_core.errors.paths import PathOutsideRootsError
from rag_core.errors.storage import (
    CacheUnavailableError,
    DatabaseError,
    DatabaseUnavailableError,
    EmbeddedServerError,
    EmbeddingModelUnavailableError,
    MigrationChecksumError,
    MigrationError,
    ServiceError,
    UnknownEmbeddingModelError,
)
from rag_core.errors.tenancy import (
    CrossTenantLeakError,
    InvalidTenantIdError,
    TenantError,
    UnknownTenantError,
    UnsafeDatabaseRoleError,
)

__all__ = [
    "RAW_TEXT_LIMIT",
    "ApiError",
    "BenchmarkError",
    "CacheUnavailableError",
    "CircuitOpenError",
    "ConcurrencyBackendError",
    "ConcurrencyError",
    "ConcurrencyLimitTimeoutError",
    "ConfigurationError",
    "ConfirmationRequiredError",
    "CrossTenantLeakError",
    "DataQualityError",
    "DatabaseError",
    "DatabaseUnavailableError",
    "DatasetError",
    "DimensionMismatchError",
    "EmbeddedServerError",
    "EmbeddingKeyRefusedError",
    "EmbeddingModelUnavailableError",
    "FlagStateError",
    "InputError",
    "InputTooLargeError",
    "InvalidFlagError",
    "InvalidQuestionError",
    "InvalidQuestionIdsError",
    "InvalidSessionIdError",
    "InvalidTenantIdError",
    "InvalidTokenCountError",
    "LLMError",
    "LLMRequestRejectedError",
    "LLMResponseError",
    "LLMUnavailableError",
    "LimitError",
    "MigrationChecksumError",
    "MigrationError",
    "PathOutsideRootsError",
    "QuestionFileError",
    "QuotaUnavailableError",
    "RagCoreError",
    "RateLimitBackendError",
    "RateLimitExceededError",
    "ResourceNotFoundError",
    "RolloutRolledBackError",
    "ServiceError",
    "SessionKeyTooShortError",
    "SourceError",
    "TenantError",
    "TokenQuotaExceededError",
    "UnauthorizedError",
    "UnknownApiKeyError",
    "UnknownEmbeddingModelError",
    "UnknownFlagError",
    "UnknownTenantError",
    "UnsafeDatabaseRoleError",
    "truncate",
    "unstorable_text",
]
