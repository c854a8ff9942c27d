"""The typed codes of the platform: one vocabulary for errors and outcomes.

Every :class:`~rag_core.errors.RagCoreError` maps to exactly one :class:`ErrorCode`, and the
same members name what happened to a question (``QueryAnswer.error_code``), fill the audit
log's ``error_code`` column, the CLI's ``--json`` error objects, the coming API's
problem+json ``code`` and the dbt models' accepted values. A code's value never changes once
released: analysts group by it.

Each code belongs to one :class:`ErrorCategory`, which decides the CLI's exit code (see
``EXIT_CODES``) and, later, the HTTP status.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class ErrorCategory(StrEnum):
    """What kind of trouble a code is: it decides the exit code and the HTTP status."""

    INVALID_INPUT = "invalid_input"      # the caller's request or data is wrong
    UNAVAILABLE = "unavailable"          # a dependency (database, Redis, LLM, model) is down
    REFUSED = "refused"                  # refused for safety (tenancy, roles, edited files)
    LIMITED = "limited"                  # a rate limit, quota or concurrency cap
    FAILED = "failed"                    # a job or benchmark ran and failed
    INTERNAL = "internal"                # a bug: not an error raised on purpose


class ExitCode(IntEnum):
    """Exit codes of the ``rag`` command line (documented in the README)."""

    OK = 0
    CHECK_FAILED = 1       # a check ran and found problems (doctor, isolation probe leaks)
    INVALID_INPUT = 2
    UNAVAILABLE = 3
    REFUSED = 4
    LIMITED = 5
    FAILED = 6
    INTERNAL = 70          # EX_SOFTWARE (sysexits.h)


EXIT_CODES: dict[ErrorCategory, ExitCode] = {
    ErrorCategory.INVALID_INPUT: ExitCode.INVALID_INPUT,
    ErrorCategory.UNAVAILABLE: ExitCode.UNAVAILABLE,
    ErrorCategory.REFUSED: ExitCode.REFUSED,
    ErrorCategory.LIMITED: ExitCode.LIMITED,
    ErrorCategory.FAILED: ExitCode.FAILED,
    ErrorCategory.INTERNAL: ExitCode.INTERNAL,
}


class ErrorCode(StrEnum):
    """Every error and non-success outcome the platform reports."""

    # configuration and input
    CONFIGURATION_INVALID = "configuration_invalid"
    INVALID_INPUT = "invalid_input"
    QUESTION_FILE_INVALID = "question_file_invalid"
    INPUT_TOO_LARGE = "input_too_large"
    INVALID_QUESTION = "invalid_question"
    SOURCE_INVALID = "source_invalid"
    # a file path given by a flow or API caller that leaves the configured folders
    PATH_OUTSIDE_ROOTS = "path_outside_roots"
    DATASET_INVALID = "dataset_invalid"
    INVALID_TOKEN_COUNT = "invalid_token_count"
    INVALID_SESSION_ID = "invalid_session_id"
    SESSION_KEY_TOO_SHORT = "session_key_too_short"
    DIMENSION_MISMATCH = "dimension_mismatch"
    # tenants
    INVALID_TENANT_ID = "invalid_tenant_id"
    UNKNOWN_TENANT = "unknown_tenant"
    CROSS_TENANT_BLOCKED = "cross_tenant_blocked"
    UNSAFE_DATABASE_ROLE = "unsafe_database_role"
    # database and services
    DATABASE_UNAVAILABLE = "database_unavailable"
    DATABASE_ERROR = "database_error"
    EMBEDDED_SERVER_FAILED = "embedded_server_failed"
    MIGRATION_FAILED = "migration_failed"
    MIGRATION_EDITED = "migration_edited"
    WRITE_REFUSED = "write_refused"
    UNKNOWN_EMBEDDING_MODEL = "unknown_embedding_model"
    EMBEDDING_MODEL_UNAVAILABLE = "embedding_model_unavailable"
    # the LLM
    CIRCUIT_OPEN = "circuit_open"
    LLM_UNAVAILABLE = "llm_unavailable"
    REQUEST_REJECTED = "request_rejected"
    BAD_RESPONSE = "bad_response"
    INVALID_ANSWER = "invalid_answer"
    LLM_ERROR = "llm_error"
    # limits
    RATE_LIMITED = "rate_limited"
    QUOTA_EXCEEDED = "quota_exceeded"
    LIMITS_UNAVAILABLE = "limits_unavailable"
    QUOTA_UNAVAILABLE = "quota_unavailable"  # Redis down past the token quota's grace period
    CONCURRENCY_TIMEOUT = "concurrency_timeout"
    CONCURRENCY_UNAVAILABLE = "concurrency_unavailable"
    # outcomes of the query path that are not exceptions
    NO_DOCUMENTS = "no_documents"
    PARTIAL = "partial"
    # jobs and benchmarks
    BENCHMARK_FAILED = "benchmark_failed"
    # the HTTP API: no or an unknown API key; a resource missing or not the caller's
    # (indistinguishable on purpose); a body that is not JSON; a method a route lacks
    UNAUTHORIZED = "unauthorized"
    NOT_FOUND = "not_found"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    # feature flags and rollouts
    UNKNOWN_FLAG = "unknown_flag"
    INVALID_FLAG = "invalid_flag"
    ROLLOUT_REFUSED = "rollout_refused"
    ROLLOUT_ROLLED_BACK = "rollout_rolled_back"
    # operating it: the caches' Redis a command needs is down; an action that needs --yes
    CACHE_UNAVAILABLE = "cache_unavailable"
    CONFIRMATION_REQUIRED = "confirmation_required"
    # analytics: a Great Expectations checkpoint on the dbt marts found rows that break it
    DATA_QUALITY_FAILED = "data_quality_failed"
    # anything not raised on purpose
    INTERNAL_ERROR = "internal_error"

    @property
    def category(self) -> ErrorCategory:
        return _CATEGORIES[self]

    @property
    def exit_code(self) -> ExitCode:
        return EXIT_CODES[self.category]


_C = ErrorCode
_CATEGORIES: dict[ErrorCode, ErrorCategory] = {
    **dict.fromkeys([
        _C.CONFIGURATION_INVALID, _C.INVALID_INPUT, _C.QUESTION_FILE_INVALID, _C.INPUT_TOO_LARGE,
        _C.INVALID_QUESTION,
        _C.SOURCE_INVALID, _C.DATASET_INVALID, _C.INVALID_TOKEN_COUNT, _C.INVALID_SESSION_ID,
        _C.SESSION_KEY_TOO_SHORT, _C.DIMENSION_MISMATCH, _C.INVALID_TENANT_ID,
        _C.UNKNOWN_TENANT, _C.UNKNOWN_EMBEDDING_MODEL, _C.REQUEST_REJECTED, _C.NO_DOCUMENTS,
        _C.NOT_FOUND, _C.UNSUPPORTED_MEDIA_TYPE, _C.METHOD_NOT_ALLOWED, _C.UNKNOWN_FLAG,
        _C.INVALID_FLAG,
    ], ErrorCategory.INVALID_INPUT),
    **dict.fromkeys([
        _C.DATABASE_UNAVAILABLE, _C.DATABASE_ERROR, _C.EMBEDDED_SERVER_FAILED,
        _C.EMBEDDING_MODEL_UNAVAILABLE, _C.CIRCUIT_OPEN, _C.LLM_UNAVAILABLE, _C.BAD_RESPONSE,
        _C.INVALID_ANSWER, _C.LLM_ERROR, _C.LIMITS_UNAVAILABLE, _C.CONCURRENCY_UNAVAILABLE,
        _C.QUOTA_UNAVAILABLE, _C.CACHE_UNAVAILABLE,
    ], ErrorCategory.UNAVAILABLE),
    **dict.fromkeys([
        _C.CROSS_TENANT_BLOCKED, _C.UNSAFE_DATABASE_ROLE, _C.MIGRATION_EDITED,
        _C.WRITE_REFUSED,
        _C.PATH_OUTSIDE_ROOTS, _C.UNAUTHORIZED, _C.ROLLOUT_REFUSED, _C.CONFIRMATION_REQUIRED,
    ], ErrorCategory.REFUSED),
    **dict.fromkeys([
        _C.RATE_LIMITED, _C.QUOTA_EXCEEDED, _C.CONCURRENCY_TIMEOUT,
    ], ErrorCategory.LIMITED),
    **dict.fromkeys([
        _C.MIGRATION_FAILED, _C.PARTIAL, _C.BENCHMARK_FAILED, _C.ROLLOUT_ROLLED_BACK,
        _C.DATA_QUALITY_FAILED,
    ], ErrorCategory.FAILED),
    _C.INTERNAL_ERROR: ErrorCategory.INTERNAL,
}
del _C


#: What a caller is told when the model gave no usable answer. The error itself (a
#: provider's response body, raw model output) goes to the log, never to the caller.
PUBLIC_MESSAGES: dict[ErrorCode, str] = {
    ErrorCode.CIRCUIT_OPEN: "the language model is not being called for a while after "
                            "repeated failures; retry later",
    ErrorCode.LLM_UNAVAILABLE: "the language model did not answer; retry later",
    ErrorCode.REQUEST_REJECTED: "the language model refused the request",
    ErrorCode.BAD_RESPONSE: "the language model's reply could not be read",
    ErrorCode.INVALID_ANSWER: "the language model gave no usable answer to this question",
    ErrorCode.LLM_ERROR: "the language model call failed",
    ErrorCode.CONCURRENCY_TIMEOUT: "too many language model calls are running; retry later",
    ErrorCode.CONCURRENCY_UNAVAILABLE: "the language model call could not be scheduled",
}
