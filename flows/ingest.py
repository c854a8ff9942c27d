"""Prefect flow ``ingest``: plan (or resume) a job, run workers on it, close it.

The job itself lives in PostgreSQL (``rag.ingestion_jobs`` / ``rag.ingestion_items``), so
scaling out is starting more ``ingest-worker`` flow runs on a process work pool: each
claims disjoint batches with ``FOR UPDATE SKIP LOCKED``. Retries are declared on the tasks;
a retried task resumes the same job, it never starts a second one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.futures import wait
from pydantic import BaseModel, Field

from flows import _resources
from rag_core.ingestion.factory import store_from, worker_policy_from
from rag_core.ingestion.jobs import finalize_job, find_resumable_job, plan_job
from rag_core.ingestion.runner import process_job
from rag_core.ingestion.sources import fingerprint
from rag_core.ingestion.validation import RecordValidator
from rag_core.tenancy import parse_tenant_id


class IngestParameters(BaseModel):
    """What to ingest, for whom. Shown as a form by the Prefect UI and `prefect deploy`."""

    source: str = Field(description="folder of .txt/.md/.html files, or BEIR .jsonl[.gz]")
    tenant_id: str = Field(pattern=r"^tn_[0-9a-f]{32}$")
    workers: int = Field(default=1, ge=1, le=16, description="worker tasks in this flow run")


@task(name="plan-or-resume-job", retries=2, retry_delay_seconds=[5, 30])
def plan_or_resume(params: IngestParameters) -> str:
    db = _resources.database()
    settings = _resources.settings()
    tenant = parse_tenant_id(params.tenant_id)
    source = Path(params.source)
    model_key = settings.embedding_model_key
    job_id = find_resumable_job(db, tenant, fingerprint(source), model_key)
    if job_id is not None:
        get_run_logger().info("resuming unfinished job %s", job_id)
        return job_id
    embedder = _resources.embedder()
    return plan_job(db, tenant, source, model_key, validator=RecordValidator(),
                    params={"model_id": embedder.model_id, "backend": embedder.backend,
                            "model_version": embedder.model_version})


@task(name="process-items", retries=3, retry_delay_seconds=[5, 30, 120])
def process_items(job_id: str, tenant_id: str) -> dict[str, Any]:
    db = _resources.database()
    settings = _resources.settings()
    stats = process_job(db, _resources.embedder(), store_from(settings, db),
                        parse_tenant_id(tenant_id), job_id,
                        policy=worker_policy_from(settings))[0]
    return vars(stats)


@task(name="finalize-job", retries=2, retry_delay_seconds=5)
def finalize(job_id: str, tenant_id: str) -> dict[str, Any]:
    return finalize_job(_resources.database(), tenant_id, job_id).as_dict()


@flow(name="ingest", log_prints=True)
def ingest(params: IngestParameters) -> dict[str, Any]:
    """Ingest a source for a tenant; returns the job summary (counts balance: nothing
    read is silently dropped)."""
    job_id = plan_or_resume(params)
    futures = [process_items.submit(job_id, params.tenant_id) for _ in range(params.workers)]
    wait(futures)
    workers = [future.result() for future in futures]
    summary = finalize(job_id, params.tenant_id)
    get_run_logger().info("ingestion %s: %s", job_id, summary)
    return summary | {"workers": workers}


@flow(name="ingest-worker", log_prints=True)
def ingest_worker(job_id: str, tenant_id: str) -> dict[str, Any]:
    """One more worker on an existing job (scale out on a process work pool)."""
    stats = process_items(job_id, tenant_id)
    return {"worker": stats, "job": finalize(job_id, tenant_id)}
