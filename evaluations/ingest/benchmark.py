"""``rag bench ingest``: is ingestion as fast as the embedding model allows?

Measures, in one run and on the same chunk texts, (a) the raw throughput of the configured
embedding backend (``embed_passages`` over every chunk, nothing else) and (b) end-to-end
ingestion throughput of the real path (read, validate, chunk, dedup, embed, COPY, job
bookkeeping) into a fresh tenant. The ratio is the share of embedding speed that ingestion
keeps; the rest is database, chunking and bookkeeping overhead. Raw embedding is measured
before and after the ingestion and averaged, so drift on a busy machine hits both sides.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from evaluations.common.beir import read_documents, write_jsonl
from rag_core.composition import Platform
from rag_core.config import Settings
from rag_core.db import tenant_admin
from rag_core.db.connection import resolve_targets
from rag_core.db.pool import Database
from rag_core.embeddings.base import Embedder
from rag_core.errors import BenchmarkError
from rag_core.ingestion.chunking import chunk_document

__all__ = ["IngestBenchmark", "run_ingest_benchmark"]

# the parts of the ingestion summary the benchmark reports beside its own numbers
_DETAIL_KEYS = ("plan_s", "process_s", "embed_s", "write_s", "status")


@dataclass(frozen=True)
class IngestBenchmark:
    """One run; ``details`` are the ingestion job's own timings and status."""

    docs: int
    chunks: int
    backend: str
    raw_embed_s: list[float]
    ingest_s: float
    details: dict[str, Any]

    @property
    def raw_embed_per_s(self) -> float:
        return self.chunks / statistics.mean(self.raw_embed_s)

    @property
    def ingest_per_s(self) -> float:
        return self.chunks / self.ingest_s

    def as_dict(self) -> dict[str, Any]:
        return {
            "docs": self.docs, "chunks": self.chunks, "backend": self.backend,
            "raw_embed_per_s": round(self.raw_embed_per_s, 2),
            "ingest_per_s": round(self.ingest_per_s, 2),
            "ratio": round(self.ingest_per_s / self.raw_embed_per_s, 4),
            "raw_embed_s": [round(s, 3) for s in self.raw_embed_s],
            "ingest_s": round(self.ingest_s, 3), **self.details,
        }


def run_ingest_benchmark(settings: Settings, db: Database, embedder: Embedder, corpus: Path,
                         limit: int | None = None) -> IngestBenchmark:
    records = read_documents(corpus, limit)
    platform = Platform(settings, database=db, embedder=embedder, start_services=False)
    policy = platform.worker_policy
    texts = [chunk.text for record in records
             for chunk in chunk_document(record.get("title", ""), record["text"],
                                         embedder.tokenizer, policy.chunking)]
    embedder.embed_passages(texts[:policy.embed_batch_size], policy.embed_batch_size)  # warm

    def raw_pass() -> float:
        started = time.perf_counter()
        embedder.embed_passages(texts, batch_size=policy.embed_batch_size)
        return time.perf_counter() - started

    raw_before = raw_pass()
    admin_url = resolve_targets(settings).admin_url
    with psycopg.connect(admin_url, autocommit=True) as conn:
        tenant = tenant_admin.create_tenant(conn, display_name="ingest benchmark")
    try:
        with tempfile.TemporaryDirectory() as folder:
            source = write_jsonl(Path(folder) / "corpus.jsonl", records)
            started = time.perf_counter()
            result = platform.ingestion.run(tenant, source, workers=1, resume=False)
            ingest_s = time.perf_counter() - started
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            tenant_admin.delete_tenant(conn, tenant)
    raw_after = raw_pass()
    if result.summary.chunks != len(texts):
        raise BenchmarkError(f"ingestion stored {result.summary.chunks} chunks, the raw pass "
                             f"embedded {len(texts)}: the two runs are not comparable",
                             value=result.summary.chunks)
    details = {k: v for k, v in result.as_dict().items() if k in _DETAIL_KEYS}
    return IngestBenchmark(len(records), len(texts), embedder.backend, [raw_before, raw_after],
                           ingest_s, details)
