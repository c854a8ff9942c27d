"""``rag bench query``: latency of the query path, cached vs uncached, and what batching
saves, against the fake Groq server with a fixed latency (so the numbers describe the
platform, not a provider).

Everything else is real: a fresh tenant with ingested SciFact abstracts in PostgreSQL, the
FastEmbed query embedder, Redis caches and limits, the audit log. Each phase uses its own
Redis key prefix so no phase warms another's cache.
"""

from __future__ import annotations

import secrets
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from pydantic import SecretStr

from evaluations.common.beir import (
    corpus_path,
    load_queries,
    queries_path,
    read_documents,
    write_jsonl,
)
from evaluations.common.stats import median, percentile
from rag_core.common.tenancy import TenantId
from rag_core.composition import Platform
from rag_core.config import Settings, scifact_dir
from rag_core.db import tenant_admin
from rag_core.db.connection import resolve_targets
from rag_core.db.pool import Database
from rag_core.embeddings.base import Embedder
from rag_core.query.service import QueryService
from rag_testing.fake_groq import FakeGroqServer, answering_after

__all__ = ["QueryBenchmarkResult", "run_query_benchmark"]

T = TypeVar("T")
CACHED_P95_GOAL_MS = 2.0


@dataclass(frozen=True)
class QueryBenchmarkResult:
    """Raw measurements of one run; :meth:`as_dict` rounds them into the ``--json`` object
    (the goals are judged on the unrounded values)."""

    docs: int
    questions: int
    llm_latency_ms: float
    uncached_ms: list[float]
    cached_ms: list[float]
    cache_hits: int
    batch_llm_calls: int
    single_llm_calls: int
    batch_tokens: int
    single_tokens: int
    batch_wall_ms: float
    singles_wall_ms: float

    def as_dict(self) -> dict[str, Any]:
        cached_p95 = percentile(self.cached_ms, 95)
        return {
            "docs": self.docs, "questions": self.questions,
            "llm_latency_ms": self.llm_latency_ms,
            "uncached_p50_ms": round(median(self.uncached_ms), 3),
            "uncached_p95_ms": round(percentile(self.uncached_ms, 95), 3),
            "cached_p50_ms": round(median(self.cached_ms), 3),
            "cached_p95_ms": round(cached_p95, 3),
            "cache_hits": self.cache_hits,
            "batch_llm_calls": self.batch_llm_calls, "single_llm_calls": self.single_llm_calls,
            "batch_tokens": self.batch_tokens, "single_tokens": self.single_tokens,
            "batch_token_ratio": round(self.batch_tokens / max(1, self.single_tokens), 4),
            "batch_wall_ms": round(self.batch_wall_ms, 1),
            "singles_wall_ms": round(self.singles_wall_ms, 1),
            "goals": {"cached_p95_le_2ms": cached_p95 <= CACHED_P95_GOAL_MS,
                      "batch_one_call": self.batch_llm_calls == 1,
                      "batch_tokens_le_half": self.batch_tokens <= 0.5 * self.single_tokens},
        }


def _questions(dataset_dir: Path, n: int) -> list[str]:
    """The first ``n`` SciFact claims, in file order."""
    return list(load_queries(queries_path(dataset_dir)).values())[:n]


def _ingest_tenant(settings: Settings, db: Database, embedder: Embedder, dataset_dir: Path,
                   docs: int) -> TenantId:
    with psycopg.connect(resolve_targets(settings).admin_url, autocommit=True) as conn:
        tenant = tenant_admin.create_tenant(conn, display_name="query benchmark")
    records = read_documents(corpus_path(dataset_dir), docs)
    with tempfile.TemporaryDirectory() as folder:
        source = write_jsonl(Path(folder) / "corpus.jsonl", records)
        platform = Platform(settings, database=db, embedder=embedder, start_services=False)
        platform.ingestion.run(tenant, source, workers=1, resume=False)
    return tenant


def _service(settings: Settings, db: Database, embedder: Embedder,
             fake: FakeGroqServer) -> QueryService:
    phase = settings.model_copy(update={
        "llm": settings.llm.model_copy(update={"api_key": SecretStr("benchmark"),
                                               "base_url": fake.base_url}),
        "redis_key_prefix": f"bench{secrets.token_hex(4)}",
        "rate_limit": settings.rate_limit.model_copy(update={
            "requests_per_minute": 1_000_000, "tokens_per_day": 10**12})})
    return Platform(phase, database=db, embedder=embedder, start_services=False).query_service


def _timed(call: Callable[[], T]) -> tuple[T, float]:
    started = time.perf_counter()
    result = call()
    return result, (time.perf_counter() - started) * 1000


def _tokens(answers: list[Any]) -> int:
    return sum(a.prompt_tokens + a.completion_tokens for a in answers)


def run_query_benchmark(settings: Settings, db: Database, embedder: Embedder, *,
                        docs: int = 100, questions: int = 40, llm_latency_ms: float = 200,
                        keep_tenant: bool = False,
                        dataset_dir: Path | None = None) -> QueryBenchmarkResult:
    """Ingest ``docs`` abstracts of ``dataset_dir`` (default: the shipped SciFact) into a
    fresh tenant, then time ``questions`` of its claims uncached, cached and batched."""
    dataset_dir = dataset_dir or scifact_dir()
    tenant = _ingest_tenant(settings, db, embedder, dataset_dir, docs)
    asked = _questions(dataset_dir, questions)
    try:
        with FakeGroqServer(default=answering_after(llm_latency_ms / 1000)) as fake:
            service = _service(settings, db, embedder, fake)
            service.ask(tenant, "warm-up question about proteins")  # load paths, pools
            uncached = [_timed(partial(service.ask, tenant, q))[1] for q in asked]
            cached_answers = [_timed(partial(service.ask, tenant, q)) for q in asked]
            hits = sum(a.cache_hit for a, _ in cached_answers)

            five = asked[:5]
            calls_before = fake.request_count
            batch_answers, batch_ms = _timed(
                lambda: _service(settings, db, embedder, fake).ask_many(tenant, five))
            batch_calls = fake.request_count - calls_before
            singles_service = _service(settings, db, embedder, fake)
            calls_before = fake.request_count
            single_answers, singles_ms = _timed(
                lambda: [singles_service.ask(tenant, q) for q in five])
            single_calls = fake.request_count - calls_before
    finally:
        if not keep_tenant:
            with psycopg.connect(resolve_targets(settings).admin_url, autocommit=True) as conn:
                tenant_admin.delete_tenant(conn, tenant)
    return QueryBenchmarkResult(
        docs=docs, questions=len(asked), llm_latency_ms=llm_latency_ms, uncached_ms=uncached,
        cached_ms=[ms for _, ms in cached_answers], cache_hits=hits,
        batch_llm_calls=batch_calls, single_llm_calls=single_calls,
        batch_tokens=_tokens(list(batch_answers)), single_tokens=_tokens(single_answers),
        batch_wall_ms=batch_ms, singles_wall_ms=singles_ms)
