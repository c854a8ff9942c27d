"""Settings of the HTTP service (``rag serve``), nested in :class:`rag_core.config.Settings`
as ``api`` (``RAG_API__PORT=8080``).

The defaults serve one machine: two workers on the loopback interface. Everything that
bounds a request (body size, batch size) is here so one setting changes it for every worker;
the question length is the query path's own (``RAG_MAX_QUESTION_CHARS``).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ApiSettings(BaseModel):
    """How the HTTP service listens, what it accepts, and how its background parts pace."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=8000, ge=0, le=65_535)
    workers: int = Field(default=2, ge=1, le=64)
    # Bounded inputs: a body is refused (413) as soon as it passes this many bytes, before
    # it is parsed; a batch holds at most this many questions (also capped by
    # RAG_MAX_BATCH_QUESTIONS).
    max_body_bytes: int = Field(default=256 * 1024, ge=1024, le=64 * 1024 * 1024)
    max_batch_questions: int = Field(default=100, ge=1, le=100_000)
    # Revoking a key takes effect in every worker within this many seconds: resolved keys
    # are kept in memory that long, so a cached answer needs no database round trip.
    api_key_cache_ttl_s: float = Field(default=5.0, ge=0, le=3600)
    # Each tenant's corpus version and cache epoch are read from the database at most this
    # often per worker (an ingestion becomes visible to the answer cache within it).
    tenant_state_ttl_s: float = Field(default=1.0, ge=0, le=600)
    # Batch jobs: how often an idle worker looks for work, how long a claimed job stays
    # its worker's before another may take it over (renewed while it runs).
    batch_poll_interval_s: float = Field(default=0.5, gt=0, le=60)
    batch_lease_s: float = Field(default=30.0, ge=1, le=3600)
    # Server-Sent Events: how often a stream looks for new events, and a keep-alive ping.
    sse_poll_interval_s: float = Field(default=0.2, gt=0, le=10)
    sse_ping_s: float = Field(default=15.0, gt=0, le=300)
    # The audit writer: rows acknowledged to a client are in the spool already; the writer
    # moves them into the database every interval, or sooner once this many wait.
    audit_flush_interval_s: float = Field(default=0.2, gt=0, le=60)
    audit_flush_rows: int = Field(default=500, ge=1, le=100_000)
    # The RLS overhead sampler (rag_core.ops.rls_sampler): one paired measurement of the
    # policy's cost in a tenant search every this many seconds, by one worker per database;
    # 0 turns it off. Each sample runs the search 2 x (repeats + 1) times.
    rls_sample_interval_s: float = Field(default=60.0, ge=0, le=86_400)
    rls_sample_repeats: int = Field(default=3, ge=1, le=20)
