"""``rag bench redaction``: what redacting the retrieved passages (``RAG_REDACT_PASSAGES``)
costs per query, with redaction off and on in the same run.

Real data through the product's code: SciFact abstracts ingested into a fresh tenant by the
ingestion path, its claims as questions, the platform's retriever (question embedding with
its Redis cache, ``rag.search_chunks``) for the k passages, and
:func:`rag_core.query.passages.redact_retrieval` (the query service's step) on them. A
warm-up pass fills the caches; then every round times each question with redaction off and
on, alternating which goes first, so drift of a shared machine hits both modes alike. The
passages changed by redaction are counted too: on scientific text every change is a false
positive, which is what redaction costs in answer quality.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
from rag_core.config import scifact_dir
from rag_core.db import tenant_admin
from rag_core.pii import default_redactor, find_pii
from rag_core.query.passages import redact_retrieval

__all__ = ["RedactionBenchConfig", "RedactionBenchResult", "run_passage_redaction_benchmark"]


@dataclass(frozen=True)
class RedactionBenchConfig:
    docs: int = 500
    questions: int = 100
    rounds: int = 5
    k: int = 5
    mode: str = "full"

    @classmethod
    def quick(cls) -> RedactionBenchConfig:
        """A smoke-test size: seconds, numbers not meaningful."""
        return cls(docs=15, questions=5, rounds=1, mode="quick")


@dataclass
class RedactionBenchResult:
    config: RedactionBenchConfig
    off_ms: list[float] = field(default_factory=list)  # retrieval, per query
    on_ms: list[float] = field(default_factory=list)  # retrieval + redaction, per query
    redact_ms: list[float] = field(default_factory=list)  # redaction alone, per query
    passages: int = 0
    passage_chars: int = 0
    passages_changed: int = 0
    findings: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        off, on = median(self.off_ms), median(self.on_ms)
        return {
            "mode": self.config.mode, "docs": self.config.docs,
            "questions": self.config.questions, "rounds": self.config.rounds,
            "k": self.config.k, "queries_timed": len(self.on_ms),
            "off_ms_per_query_p50": round(off, 3),
            "on_ms_per_query_p50": round(on, 3),
            "off_ms_per_query_mean": round(sum(self.off_ms) / max(1, len(self.off_ms)), 3),
            "on_ms_per_query_mean": round(sum(self.on_ms) / max(1, len(self.on_ms)), 3),
            "redact_ms_per_query_p50": round(median(self.redact_ms), 3),
            "redact_ms_per_query_p95": round(percentile(self.redact_ms, 95), 3),
            "ratio_on_off_p50": round(on / off, 3) if off else None,
            "passages": self.passages, "mean_passage_chars":
                round(self.passage_chars / max(1, self.passages)),
            "passages_changed": self.passages_changed,
            "findings": dict(sorted(self.findings.items())),
        }


def _ingest(platform: Platform, docs: int, dataset_dir: Path, folder: Path) -> TenantId:
    with platform.admin_connection() as conn:
        tenant = tenant_admin.create_tenant(conn, display_name="redaction benchmark")
    source = write_jsonl(folder / "corpus.jsonl",
                         read_documents(corpus_path(dataset_dir), docs))
    platform.ingestion.run(tenant, source, workers=1, resume=False)
    return tenant


def run_passage_redaction_benchmark(platform: Platform, config: RedactionBenchConfig,
                                    work_dir: Path,
                                    dataset_dir: Path | None = None) -> RedactionBenchResult:
    """Ingest ``config.docs`` abstracts into a fresh tenant (deleted afterwards) and time
    ``config.questions`` claims ``config.rounds`` times with passage redaction off and on."""
    dataset_dir = dataset_dir or scifact_dir()
    questions = list(load_queries(queries_path(dataset_dir)).values())[:config.questions]
    retriever, redactor = platform.retriever, default_redactor()
    tenant = _ingest(platform, config.docs, dataset_dir, work_dir)
    result = RedactionBenchResult(config)
    try:
        for question in questions:  # warm-up: embedding cache, pools, the redactor's tables
            redact_retrieval(retriever.retrieve(tenant, question, config.k), redactor)
        for round_no in range(config.rounds):
            for number, question in enumerate(questions):
                on_first = (round_no + number) % 2 == 1
                for redacting in (on_first, not on_first):
                    started = time.perf_counter()
                    retrieval = retriever.retrieve(tenant, question, config.k)
                    if redacting:
                        redacted, redact_ms = redact_retrieval(retrieval, redactor)
                    elapsed = (time.perf_counter() - started) * 1000
                    if not redacting:
                        result.off_ms.append(elapsed)
                        continue
                    result.on_ms.append(elapsed)
                    result.redact_ms.append(redact_ms)
                    if round_no == 0:
                        _count_changes(result, retrieval.chunks, redacted.chunks)
    finally:
        with platform.admin_connection() as conn:
            tenant_admin.delete_tenant(conn, tenant)
    return result


def _count_changes(result: RedactionBenchResult, before: list[Any], after: list[Any]) -> None:
    for original, redacted in zip(before, after, strict=True):
        result.passages += 1
        result.passage_chars += len(original.text)
        if redacted.text != original.text:
            result.passages_changed += 1
            result.findings.update(str(f.entity_type) for f in find_pii(original.text))
