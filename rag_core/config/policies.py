"""The policies nested in :class:`rag_core.config.Settings`: retry, breaker, rate limits,
the outage policy and the LLM endpoint. Small frozen models, so a validation error names
the offending field (``RAG_RETRY__ATTEMPTS=0``)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class RetryPolicy(BaseModel):
    """How one call retries transient failures (429, 5xx, timeouts, connection errors).

    ``attempts`` counts HTTP attempts in total (3 = the first try and two retries). The wait
    before retry *n* is ``initial_backoff_s * 2**(n-1)`` capped at ``max_backoff_s``; with
    ``jitter`` it is drawn uniformly from the upper half of that value, so workers that failed
    together do not retry together yet every wait keeps a floor. A ``Retry-After`` header
    (seconds form) replaces the backoff when ``honour_retry_after`` is set, capped at
    ``max_retry_after_s`` so a hostile or buggy header cannot park a worker for an hour.
    """

    model_config = _FROZEN

    attempts: int = Field(default=3, ge=1, le=20)
    initial_backoff_s: float = Field(default=0.5, ge=0)
    max_backoff_s: float = Field(default=8.0, ge=0)
    jitter: bool = True
    honour_retry_after: bool = True
    max_retry_after_s: float = Field(default=30.0, ge=0)

    @model_validator(mode="after")
    def _backoff_order(self) -> RetryPolicy:
        if self.max_backoff_s < self.initial_backoff_s:
            raise ValueError(f"max_backoff_s={self.max_backoff_s} is smaller than "
                             f"initial_backoff_s={self.initial_backoff_s}")
        return self


class BreakerPolicy(BaseModel):
    """When the shared circuit breaker opens, how long it stays open, how it probes.

    The breaker opens when, within the last ``window_s`` seconds, at least ``minimum_calls``
    calls were recorded and the share of failures among them is at least
    ``failure_rate_threshold``. It then refuses calls for ``open_s`` seconds, after which
    ``half_open_max_calls`` probe calls are let through: a successful probe closes it, a
    failed one re-opens it for another ``open_s``. A probe holds its slot for at most
    ``probe_lease_s`` (default: ``open_s``), so a worker that dies mid-probe cannot keep the
    breaker half-open forever.
    """

    model_config = _FROZEN

    failure_rate_threshold: float = Field(default=0.5, gt=0, le=1)
    minimum_calls: int = Field(default=10, ge=1)
    window_s: int = Field(default=60, ge=1, le=3600)
    open_s: float = Field(default=60.0, gt=0)
    half_open_max_calls: int = Field(default=1, ge=1)
    probe_lease_s: float | None = Field(default=None, gt=0)

    @property
    def effective_probe_lease_s(self) -> float:
        """The probe lease: ``probe_lease_s`` if given, else ``open_s``."""
        return self.probe_lease_s if self.probe_lease_s is not None else self.open_s


class RateLimitPolicy(BaseModel):
    """Limits of one tenant. ``window_s`` exists so tests can use a short window."""

    model_config = _FROZEN

    requests_per_minute: int = Field(default=60, ge=1,
                                     description="requests admitted per sliding window")
    window_s: float = Field(default=60.0, gt=0, le=86_400,
                            description="sliding-window length (60 s: per minute)")
    tokens_per_day: int = Field(default=1_000_000, ge=1)
    alert_fraction: float = Field(default=0.8, gt=0, le=1)
    reservation_ttl_s: float = Field(default=300, gt=0, le=86_400,
                                     description="an unsettled reservation is released after")
    key_prefix: str = Field(default="rag", pattern=r"^[A-Za-z0-9_.-]{1,32}$")


class OutageMode(StrEnum):
    """What a Redis-backed control does while Redis cannot be reached."""

    FAIL_OPEN = "fail_open"      # carry on without it (counted)
    FAIL_CLOSED = "fail_closed"  # refuse the work (typed error)
    # Enforce the same policy per process, in memory (counted). Only the rate limit has such
    # a stand-in: a sliding window needs nothing but this process's own requests.
    LOCAL_FALLBACK = "local_fallback"


class OutagePolicy(BaseModel):
    """The one outage policy: per control, fail open or closed when Redis is down.

    Consulted by :class:`rag_core.common.outage.Outages`, which every Redis-backed control
    (caches, rate limit, token quota, LLM-call slots, circuit breaker) calls when Redis
    fails, so the behaviour of all of them changes here and nowhere else.
    """

    model_config = _FROZEN

    answer_cache: OutageMode = OutageMode.FAIL_OPEN
    embedding_cache: OutageMode = OutageMode.FAIL_OPEN
    # A Redis outage must not lift rate limits: each process keeps its own window meanwhile.
    rate_limit: OutageMode = OutageMode.LOCAL_FALLBACK
    # Fail open, but only for ``token_quota_grace_s`` from the first failure this process saw
    # (a Redis restart should not fail questions); the tokens spent meanwhile are charged
    # from the audit log when Redis is back (rag_core.limits.settlement).
    token_quota: OutageMode = OutageMode.FAIL_OPEN
    token_quota_grace_s: float = Field(default=60.0, ge=0, le=86_400)
    llm_slots: OutageMode = OutageMode.FAIL_OPEN
    breaker: OutageMode = OutageMode.FAIL_OPEN

    @model_validator(mode="after")
    def _fallback_only_where_one_exists(self) -> OutagePolicy:
        for name in ("answer_cache", "embedding_cache", "token_quota", "llm_slots", "breaker"):
            if getattr(self, name) is OutageMode.LOCAL_FALLBACK:
                raise ValueError(f"{name}={OutageMode.LOCAL_FALLBACK.value}: only rate_limit "
                                 "has a local fallback")
        return self


class LLMSettings(BaseSettings):
    """Where and how to call the chat-completions API (Groq or any OpenAI-compatible one).

    ``api_key`` unset means the labelled extractive answerer (the offline demo). Model ids are
    retired by the provider from time to time, which is why the model is configuration.
    Read from ``RAG_LLM_*`` (and ``GROQ_API_KEY`` / ``GROQ_BASE_URL``).
    """

    model_config = SettingsConfigDict(env_prefix="RAG_LLM_", extra="ignore", frozen=True,
                                      populate_by_name=True)

    api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("api_key", "RAG_LLM_API_KEY",
                                                    "GROQ_API_KEY"))
    base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("base_url", "RAG_LLM_BASE_URL",
                                                    "GROQ_BASE_URL"))
    model: str = Field(default="llama-3.1-8b-instant", min_length=1)
    timeout_s: float = Field(default=30.0, gt=0)
    max_tokens: int = Field(default=1024, ge=16)
    temperature: float = Field(default=0.0, ge=0, le=2)

    @property
    def configured(self) -> bool:
        """True when an API key is set (else the extractive answerer is used)."""
        return self.api_key is not None
