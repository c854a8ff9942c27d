"""``rag bench query``: latency of the query path, cached vs uncached, and what batching
saves, against the fake Groq server with a fixed latency (so the numbers describe the
platform, not a provider).

Everything else is real: a fresh tenant with ingested SciFact abstracts in PostgreSQL, the
FastEmbed query embedder, Redis caches and limits, the audit log. Each phase uses its own
Redis key prefix so no phase warms another's cache.
"""

from __future__ import annotations

import gzip
import itertools
import json
import secrets
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
from pydantic import SecretStr

from evaluations.fake_groq import FakeGroqServer, FakeResponse, RecordedRequest, answering_responder
from rag_core import tenants as tenant_admin
from rag_core.config import Settings
from rag_core.db.connection import resolve_targets
from rag_core.db.pool import Database
from rag_core.embeddings.base import Embedder
from rag_core.ingestion.factory import store_from, worker_policy_from
from rag_core.ingestion.runner import run_ingestion
from rag_core.query_factory import build_query_service
from rag_core.query_service import QueryService
from rag_core.tenancy import TenantId

REPO_ROOT = Path(__file__).resolve().parent.parent
SCIFACT = REPO_ROOT / "data" / "scifact"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def _fixed_latency(delay_s: float) -> Callable[[RecordedRequest], FakeResponse]:
    def responder(request: RecordedRequest) -> FakeResponse:
        response = answering_responder(request)
        return FakeResponse(status=response.status, body=response.body,
                            headers=response.headers, delay_s=delay_s)

    return responder


def _questions(n: int) -> list[str]:
    with (SCIFACT / "queries.jsonl").open(encoding="utf-8") as handle:
        return [json.loads(line)["text"] for line in itertools.islice(handle, n)]


def _ingest_tenant(settings: Settings, db: Database, embedder: Embedder,
                   docs: int) -> TenantId:
    with psycopg.connect(resolve_targets(settings).admin_url, autocommit=True) as conn:
        tenant = tenant_admin.create_tenant(conn, display_name="query benchmark")
    with gzip.open(SCIFACT / "corpus.jsonl.gz", "rt", encoding="utf-8") as handle:
        lines = list(itertools.islice(handle, docs))
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "corpus.jsonl"
        source.write_text("".join(lines))
        run_ingestion(db, embedder, store_from(settings, db), tenant, source,
                      policy=worker_policy_from(settings), resume=False)
    return tenant


def _service(settings: Settings, db: Database, embedder: Embedder,
             fake: FakeGroqServer) -> QueryService:
    phase = settings.model_copy(update={
        "llm_api_key": SecretStr("benchmark"), "llm_base_url": fake.base_url,
        "redis_key_prefix": f"bench{secrets.token_hex(4)}",
        "rate_limit": settings.rate_limit.model_copy(update={
            "requests_per_minute": 1_000_000, "tokens_per_day": 10**12})})
    return build_query_service(phase, db, embedder=embedder)


def _timed(call: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = call()
    return result, (time.perf_counter() - started) * 1000


def run_query_benchmark(settings: Settings, db: Database, embedder: Embedder, *,
                        docs: int = 100, questions: int = 40, llm_latency_ms: float = 200,
                        keep_tenant: bool = False) -> dict[str, Any]:
    tenant = _ingest_tenant(settings, db, embedder, docs)
    asked = _questions(questions)
    try:
        with FakeGroqServer(default=_fixed_latency(llm_latency_ms / 1000)) as fake:
            service = _service(settings, db, embedder, fake)
            service.ask(tenant, "warm-up question about proteins")  # load paths, pools
            uncached = [_timed(partial(service.ask, tenant, q))[1] for q in asked]
            cached_answers = [_timed(partial(service.ask, tenant, q)) for q in asked]
            cached = [ms for _, ms in cached_answers]
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

    def tokens(answers: list[Any]) -> int:
        return sum(a.prompt_tokens + a.completion_tokens for a in answers)

    return {
        "docs": docs, "questions": len(asked), "llm_latency_ms": llm_latency_ms,
        "uncached_p50_ms": round(statistics.median(uncached), 3),
        "uncached_p95_ms": round(percentile(uncached, 95), 3),
        "cached_p50_ms": round(statistics.median(cached), 3),
        "cached_p95_ms": round(percentile(cached, 95), 3),
        "cache_hits": hits,
        "batch_llm_calls": batch_calls, "single_llm_calls": single_calls,
        "batch_tokens": tokens(batch_answers), "single_tokens": tokens(single_answers),
        "batch_token_ratio": round(tokens(batch_answers) / max(1, tokens(single_answers)), 4),
        "batch_wall_ms": round(batch_ms, 1), "singles_wall_ms": round(singles_ms, 1),
        "goals": {"cached_p95_le_2ms": percentile(cached, 95) <= 2.0,
                  "batch_one_call": batch_calls == 1,
                  "batch_tokens_le_half": tokens(batch_answers) <= 0.5 * tokens(single_answers)},
    }
