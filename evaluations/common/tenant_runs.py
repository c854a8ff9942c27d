"""What every evaluation over a BEIR corpus does around its own measurement: a tenant of its
own (fresh, or one kept by an earlier run), the corpus ingested into it through the product's
ingestion, the corpus' document ids, and the run recorded as a row of ``rag.benchmark_runs``.

``rag eval retrieval`` and ``rag eval answers`` both run through these, so a tenant kept by
one (``--keep-tenant``) serves the other (``--tenant``) and an ingestion that left documents
pending fails both the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from rag_core.common.tenancy import TenantId, parse_tenant_id
from rag_core.composition import Platform
from rag_core.db import tenant_admin
from rag_core.db.pool import Database
from rag_core.errors import BenchmarkError, UnknownTenantError
from rag_core.ingestion.jobs import JobSummary

__all__ = ["EvaluationTenant", "IngestedCorpus", "ProgressCallback", "check_schema", "chunk_count",
           "document_ids", "evaluation_tenant", "ingest_corpus", "record_run"]

ProgressCallback = Callable[[str, int, int], None]  # (stage, done, total)

_RECORD = """
INSERT INTO rag.benchmark_runs (benchmark, dataset, split, mode, config, metrics, timings,
                                per_query, git_commit, started_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
RETURNING run_id
"""


@dataclass(frozen=True)
class EvaluationTenant:
    tenant_id: TenantId
    kept: bool  # True for a tenant given by the caller, or when asked to keep it


@dataclass(frozen=True)
class IngestedCorpus:
    summary: JobSummary
    doc_ids: dict[int, str]  # document_id -> the dataset's own id (BEIR ``_id``)
    ingest_s: float


def check_schema(admin_url: str, *, record: bool, hybrid: bool) -> None:
    """Fail before the (long) ingestion when migration 0004 is missing."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT to_regclass('rag.benchmark_runs') IS NOT NULL, "
            "to_regprocedure('rag.search_chunks_text(text, text, integer, text)') IS NOT NULL"
        ).fetchone()
    assert row is not None
    if (record and not row[0]) or (hybrid and not row[1]):
        raise BenchmarkError("the database lacks migration 0004 (benchmark_runs, full-text "
                             "search): run `rag db upgrade`")


@contextmanager
def evaluation_tenant(admin_url: str, tenant: TenantId | str | None, *, keep_tenant: bool,
                      display_name: str) -> Iterator[EvaluationTenant]:
    """A fresh tenant (deleted on leaving unless ``keep_tenant``), or the existing ``tenant``
    (never deleted; :class:`UnknownTenantError` when there is none)."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if tenant is None:
            chosen = tenant_admin.create_tenant(conn, display_name=display_name)
        else:
            chosen = parse_tenant_id(tenant)
            if not tenant_admin.tenant_exists(conn, chosen):
                raise UnknownTenantError(chosen)
    kept = keep_tenant or tenant is not None
    try:
        yield EvaluationTenant(chosen, kept)
    finally:
        if not kept:
            with psycopg.connect(admin_url, autocommit=True) as conn:
                tenant_admin.delete_tenant(conn, chosen)


def ingest_corpus(platform: Platform, tenant: TenantId, corpus: Path,
                  progress: ProgressCallback | None = None) -> IngestedCorpus:
    """Ingest ``corpus`` as ``rag ingest`` would (a document already stored unchanged is not
    embedded again); a job left with pending items, or a tenant left empty, is an error."""
    started = time.perf_counter()

    def ingest_progress(stage: str, count: int) -> None:
        if progress is not None and stage == "done":
            progress("ingest", count, 0)

    ingestion = platform.ingestion.run(tenant, corpus,
                                       progress=ingest_progress if progress else None,
                                       resume=False)
    ingest_s = time.perf_counter() - started
    summary = ingestion.summary
    ids = document_ids(platform.database, tenant)
    if summary.pending or not ids:
        raise BenchmarkError(f"ingestion of {corpus} ended {summary.status} with "
                             f"{len(ids)} documents stored, {summary.pending} pending",
                             value=str(corpus))
    return IngestedCorpus(summary, ids, ingest_s)


def document_ids(db: Database, tenant: TenantId) -> dict[int, str]:
    """document_id → the dataset's own id (``external_id``, the BEIR ``_id``)."""
    with db.tenant_session(tenant) as conn:
        rows = conn.execute("SELECT document_id, external_id FROM rag.documents "
                            "WHERE tenant_id = %s AND is_current", [tenant]).fetchall()
    return {int(r[0]): str(r[1]) for r in rows}


def chunk_count(db: Database, tenant: TenantId) -> int:
    with db.tenant_session(tenant) as conn:
        row = conn.execute("SELECT count(*) FROM rag.chunks WHERE tenant_id = %s",
                           [tenant]).fetchone()
    return int(row[0]) if row else 0


def record_run(admin_url: str, *, benchmark: str, dataset: str, split: str, mode: str,
               config: Mapping[str, Any], metrics: Mapping[str, Any],
               timings: Mapping[str, Any], per_query: Mapping[str, Any],
               git_commit: str | None, started_at: datetime) -> int:
    """One row of ``rag.benchmark_runs``; returns its ``run_id``."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        row = conn.execute(_RECORD, [
            benchmark, dataset, split, mode, Jsonb(dict(config)), Jsonb(dict(metrics)),
            Jsonb(dict(timings)), Jsonb(dict(per_query)), git_commit, started_at]).fetchone()
    assert row is not None
    return int(row[0])
