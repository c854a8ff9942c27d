"""Retry, circuit-breaker and client settings of the LLM path, as small frozen models.

The defaults are the seed plan's (3 attempts with exponential backoff up to 8 s; a breaker
that opens at a 50% failure rate over 60 s once it has seen 10 calls, stays open 60 s and
then lets one probe through). They are plain pydantic models so the global settings object
can embed them and validation errors name the offending field and value.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

__all__ = ["BreakerPolicy", "LLMConfig", "RetryPolicy"]

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


class LLMConfig(BaseModel):
    """Where and how to call the chat-completions API.

    ``base_url`` ``None`` lets the groq SDK use ``GROQ_BASE_URL`` or its default endpoint;
    ``api_key`` ``None`` lets it read ``GROQ_API_KEY``. Model ids are retired by the provider
    from time to time, which is why the model is configuration and not code.
    """

    model_config = _FROZEN

    base_url: str | None = None
    api_key: SecretStr | None = None
    model: str = Field(default="llama-3.1-8b-instant", min_length=1)
    timeout_s: float = Field(default=30.0, gt=0)
    max_tokens: int = Field(default=1024, ge=1)
    temperature: float = Field(default=0.0, ge=0, le=2)
