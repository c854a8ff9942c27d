"""One call that runs (or resumes) an ingestion job to the end in this process.

Used by ``rag ingest`` and by the Prefect flow's tasks. Several workers here are threads
sharing one embedder; across machines, start more processes (or Prefect workers) on the
same job id: the queue in PostgreSQL keeps them disjoint.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag_core.common.paths import confine
from rag_core.common.tenancy import TenantId, parse_tenant_id
from rag_core.db.pool import Database
from rag_core.embeddings.base import Embedder
from rag_core.ingestion.chunking import ChunkingPolicy
from rag_core.ingestion.jobs import (
    JobSummary,
    finalize_job,
    find_resumable_job,
    plan_job,
    summarize,
)
from rag_core.ingestion.sources import fingerprint
from rag_core.ingestion.validation import RecordValidator, warm_up
from rag_core.ingestion.worker import IngestionWorker, WorkerPolicy, WorkerStats
from rag_core.retrieval.vector_store import VectorStore


@dataclass
class IngestionResult:
    summary: JobSummary
    resumed: bool
    workers: list[WorkerStats] = field(default_factory=list)
    plan_s: float = 0.0
    process_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        embedded = sum(w.chunks_embedded for w in self.workers)
        return self.summary.as_dict() | {
            "resumed": self.resumed, "plan_s": round(self.plan_s, 3),
            "process_s": round(self.process_s, 3), "chunks_embedded": embedded,
            "vectors_reused": sum(w.vectors_reused for w in self.workers),
            "embed_s": round(sum(w.embed_s for w in self.workers), 3),
            "write_s": round(sum(w.write_s for w in self.workers), 3),
            "db_retries": sum(w.retries for w in self.workers),
        }


def run_ingestion(db: Database, embedder: Embedder, store: VectorStore,
                  tenant_id: TenantId | str, source: Path, *, workers: int = 1,
                  policy: WorkerPolicy | None = None,
                  progress: Callable[[str, int], None] | None = None,
                  resume: bool = True) -> IngestionResult:
    """Plan (or find the unfinished job for) ``source`` and process it to completion."""
    tenant = parse_tenant_id(tenant_id)
    policy = policy or WorkerPolicy()
    started = time.perf_counter()
    job_id, resumed = plan_or_resume(db, embedder, store, tenant, source, policy,
                                     resume=resume, progress=progress)
    plan_s = time.perf_counter() - started
    if progress:
        before = summarize(db, tenant, job_id)
        progress("planned", before.read)
        progress("done", before.read - before.pending)

    started = time.perf_counter()
    stats = process_job(db, embedder, store, tenant, job_id, workers=workers, policy=policy,
                        on_items_done=(lambda n: progress("done", n)) if progress else None)
    summary = finalize_job(db, tenant, job_id)
    return IngestionResult(summary, resumed, stats, plan_s, time.perf_counter() - started)


def plan_or_resume(db: Database, embedder: Embedder, store: VectorStore, tenant: TenantId,
                   source: Path, policy: WorkerPolicy, *, resume: bool = True,
                   progress: Callable[[str, int], None] | None = None) -> tuple[str, bool]:
    """The unfinished job of ``source`` (when ``resume``), else a newly planned one: its id,
    and whether it was resumed."""
    job_id = find_resumable_job(db, tenant, fingerprint(source), store.model_key) \
        if resume else None
    if job_id is not None:
        return job_id, True
    warm_up()
    return plan_job(db, tenant, source, store.model_key, params=_params(embedder, policy),
                    validator=RecordValidator(), progress=progress,
                    limits=policy.source_limits), False


def process_job(db: Database, embedder: Embedder, store: VectorStore, tenant: TenantId,
                job_id: str, *, workers: int = 1, policy: WorkerPolicy | None = None,
                on_items_done: Callable[[int], None] | None = None) -> list[WorkerStats]:
    """Run ``workers`` worker threads on ``job_id`` until no pending item is left."""
    instances = [IngestionWorker(db, embedder, store.model_key, store, policy, on_items_done)
                 for _ in range(workers)]
    if workers == 1:
        instances[0].run(tenant, job_id)
        return [instances[0].stats]
    errors: list[BaseException] = []

    def target(worker: IngestionWorker) -> None:
        try:
            worker.run(tenant, job_id)
        except BaseException as exc:  # re-raised on the calling thread
            errors.append(exc)

    threads = [threading.Thread(target=target, args=(w,), name=f"ingest-{i}")
               for i, w in enumerate(instances)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return [w.stats for w in instances]


def _params(embedder: Embedder, policy: WorkerPolicy) -> dict[str, Any]:
    chunking: ChunkingPolicy = policy.chunking
    return {"model_id": embedder.model_id, "model_version": embedder.model_version,
            "backend": embedder.backend, "chunking": chunking.model_dump(),
            "claim_batch": policy.claim_batch}


@dataclass
class IngestionRunner:
    """The ingestion pieces of one process, assembled by the composition root."""

    db: Database
    embedder: Embedder
    store: VectorStore
    policy: WorkerPolicy
    default_workers: int = 1
    # Where a source named through :meth:`plan` (a flow, the API) must be; none: nowhere.
    source_roots: tuple[Path, ...] = ()

    def run(self, tenant_id: TenantId | str, source: Path, *, workers: int | None = None,
            progress: Callable[[str, int], None] | None = None,
            resume: bool = True) -> IngestionResult:
        """Plan (or resume) the job for ``source`` and process it to completion."""
        return run_ingestion(self.db, self.embedder, self.store, tenant_id, source,
                             workers=workers or self.default_workers, policy=self.policy,
                             progress=progress, resume=resume)

    def plan(self, tenant_id: TenantId | str, source: Path | str) -> tuple[str, bool]:
        """The unfinished job of ``source``, or a newly planned one: its id, and whether it
        was resumed.

        The entry of callers that are not the local user (flows, the API): ``source`` must
        lie under ``source_roots`` (:func:`rag_core.common.paths.confine`), checked before
        the tenant's data is touched. ``run`` (the CLI's) takes any path.
        """
        tenant = parse_tenant_id(tenant_id)  # a bad tenant id is refused before the path
        confined = confine(source, self.source_roots, setting="RAG_SOURCE_ROOTS")
        return plan_or_resume(self.db, self.embedder, self.store, tenant, confined,
                              self.policy)

    def work(self, tenant_id: TenantId | str, job_id: str, *,
             workers: int = 1) -> list[WorkerStats]:
        """Join job ``job_id`` with ``workers`` threads until no pending item is left."""
        return process_job(self.db, self.embedder, self.store, parse_tenant_id(tenant_id),
                           job_id, workers=workers, policy=self.policy)

    def finalize(self, tenant_id: TenantId | str, job_id: str) -> JobSummary:
        """Close the job (its final status and counts)."""
        return finalize_job(self.db, parse_tenant_id(tenant_id), job_id)
