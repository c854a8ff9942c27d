"""Prefect flow ``ingest``: plan (or resume) a job, run workers on it, close it.

The source must lie under ``RAG_SOURCE_ROOTS`` (a parameter is not the local user: see
``rag_core.common.paths``); anything else fails the flow with ``path_outside_roots`` before
the tenant's data is touched. The job itself lives in PostgreSQL (``rag.ingestion_jobs`` /
``rag.ingestion_items``), so scaling out is starting more ``ingest-worker`` flow runs on a
process work pool: each claims disjoint batches with ``FOR UPDATE SKIP LOCKED``. Retries are
declared on the tasks; a retried task resumes the same job, it never starts a second one.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.futures import wait
from pydantic import BaseModel, Field

from flows._resources import platform, retry_unless_refused
from rag_core.common.tenancy import TENANT_ID_REGEX


class IngestParameters(BaseModel):
    """What to ingest, for whom. Shown as a form by the Prefect UI and `prefect deploy`."""

    source: str = Field(description="folder of .txt/.md/.html files, or BEIR .jsonl[.gz], "
                                    "under RAG_SOURCE_ROOTS (relative: from the project "
                                    "folder, e.g. data/scifact/corpus.jsonl.gz)")
    tenant_id: str = Field(pattern=TENANT_ID_REGEX)
    workers: int = Field(default=1, ge=1, le=16, description="worker tasks in this flow run")


@task(name="plan-or-resume-job", retries=2, retry_delay_seconds=[5, 30],
      retry_condition_fn=retry_unless_refused)
def plan_or_resume(params: IngestParameters) -> str:
    # plan() confines the source to the configured roots: a deployment parameter must not
    # reach the platform's own files or another tenant's folders.
    job_id, resumed = platform().ingestion.plan(params.tenant_id, params.source)
    if resumed:
        get_run_logger().info("resuming unfinished job %s", job_id)
    return job_id


@task(name="process-items", retries=3, retry_delay_seconds=[5, 30, 120])
def process_items(job_id: str, tenant_id: str) -> dict[str, Any]:
    stats = platform().ingestion.work(tenant_id, job_id)[0]
    return vars(stats)


@task(name="finalize-job", retries=2, retry_delay_seconds=5)
def finalize(job_id: str, tenant_id: str) -> dict[str, Any]:
    return platform().ingestion.finalize(tenant_id, job_id).as_dict()


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
