"""Prefect flow ``ingest``: plan (or resume) a job, run workers on it, close it.

The source must lie under ``RAG_SOURCE_ROOTS`` (a parameter is not the local user: see
``rag_core.common.paths``); anything else fails the flow with ``path_outside_roots`` before
the tenant's data is touched. The job itself lives in PostgreSQL (``rag.ingestion_jobs`` /
``rag.ingestion_items``), so scaling out is starting more ``ingest-worker`` flow runs on a
process work pool: each claims disjoint batches with ``FOR UPDATE SKIP LOCKED``. With
``pool_workers`` the ``ingest`` run submits them itself once the job is planned, works beside
them, and waits for them before it closes the job (``flows._pool_runs``). Every worker's
share is recorded as a table artifact of its flow run, so the Prefect API shows which worker
(the run's ``prefect.worker.name`` label) did what. Retries are declared on the tasks; a
retried task resumes the same job, it never starts a second one.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import wait
from pydantic import BaseModel, Field

from flows._pool_runs import settle_runs, submit_runs, wait_started
from flows._resources import platform, retry_unless_refused
from rag_core.common.tenancy import TENANT_ID_REGEX

#: The deployment (``prefect.yaml``) whose runs join a job as more workers.
WORKER_DEPLOYMENT = "ingest-worker/ingest-worker"


class IngestParameters(BaseModel):
    """What to ingest, for whom. Shown as a form by the Prefect UI and `prefect deploy`."""

    source: str = Field(description="folder of .txt/.md/.html files, or BEIR .jsonl[.gz], "
                                    "under RAG_SOURCE_ROOTS (relative: from the project "
                                    "folder, e.g. data/scifact/corpus.jsonl.gz)")
    tenant_id: str = Field(pattern=TENANT_ID_REGEX)
    workers: int = Field(default=1, ge=1, le=16, description="worker tasks in this flow run")
    pool_workers: int = Field(default=0, ge=0, le=64,
                              description="more ingest-worker flow runs submitted to the work "
                                          "pool for this job (each worker that picks one up "
                                          "claims its own batches)")
    pool_start_wait_s: float = Field(default=0, ge=0, le=3600,
                                     description="how long this run waits for its pool "
                                                 "workers to start before it starts its own "
                                                 "share (0: at once)")
    pool_workers_timeout_s: float = Field(default=6 * 3600, gt=0,
                                          description="how long this run waits for its pool "
                                                      "workers once its own share is done")


@task(name="plan-or-resume-job", retries=2, retry_delay_seconds=[5, 30],
      retry_condition_fn=retry_unless_refused)
def plan_or_resume(params: IngestParameters) -> str:
    # plan() confines the source to the configured roots: a deployment parameter must not
    # reach the platform's own files or another tenant's folders.
    job_id, resumed = platform().ingestion.plan(params.tenant_id, params.source)
    if resumed:
        get_run_logger().info("resuming unfinished job %s", job_id)
    return job_id


# NO_CACHE on the tasks with side effects: with results persisted (a deployment may turn
# that on), two calls with the same inputs in one run would otherwise share one result.
@task(name="process-items", retries=3, retry_delay_seconds=[5, 30, 120], cache_policy=NO_CACHE)
def process_items(job_id: str, tenant_id: str) -> dict[str, Any]:
    stats = platform().ingestion.work(tenant_id, job_id)[0]
    return vars(stats)


@task(name="record-worker-share", retries=2, retry_delay_seconds=[2, 10],
      cache_policy=NO_CACHE)
def record_share(job_id: str, stats: dict[str, Any]) -> None:
    # A task of its own: a failed artifact write retries this, not the ingestion work.
    create_table_artifact(
        table=[{"job_id": job_id, "host": socket.gethostname(), "pid": os.getpid()} | stats],
        description=f"ingestion job {job_id}: the items and chunks this worker processed")


@task(name="submit-pool-workers", cache_policy=NO_CACHE)
def submit_pool_workers(job_id: str, tenant_id: str, count: int) -> list[str]:
    return submit_runs(WORKER_DEPLOYMENT, {"job_id": job_id, "tenant_id": tenant_id}, count,
                       name_prefix=f"ingest-worker-{job_id[:8]}")


@task(name="wait-for-pool-workers", cache_policy=NO_CACHE)
def wait_for_pool_workers(run_ids: list[str], timeout_s: float) -> int:
    return wait_started(run_ids, timeout_s)


@task(name="settle-pool-workers", cache_policy=NO_CACHE)
def settle_pool_workers(run_ids: list[str], timeout_s: float) -> list[dict[str, Any]]:
    return settle_runs(run_ids, timeout_s)


@task(name="finalize-job", retries=2, retry_delay_seconds=5)
def finalize(job_id: str, tenant_id: str) -> dict[str, Any]:
    return platform().ingestion.finalize(tenant_id, job_id).as_dict()


@flow(name="ingest", log_prints=True)
def ingest(params: IngestParameters) -> dict[str, Any]:
    """Ingest a source for a tenant; returns the job summary (counts balance: nothing
    read is silently dropped)."""
    job_id = plan_or_resume(params)
    helpers = submit_pool_workers(job_id, params.tenant_id, params.pool_workers) \
        if params.pool_workers else []
    if helpers and params.pool_start_wait_s:
        wait_for_pool_workers(helpers, params.pool_start_wait_s)
    futures = [process_items.submit(job_id, params.tenant_id) for _ in range(params.workers)]
    wait(futures)
    workers = [future.result() for future in futures]
    pool_workers = settle_pool_workers(helpers, params.pool_workers_timeout_s) \
        if helpers else []
    if pool_workers:
        # What a pool worker that died had claimed went back to pending after our own
        # workers stopped looking: done here, so the job still ends.
        workers.append(process_items(job_id, params.tenant_id))
    record_share(job_id, _sum(workers))
    summary = finalize(job_id, params.tenant_id)
    get_run_logger().info("ingestion %s: %s", job_id, summary)
    return summary | {"workers": workers, "pool_workers": pool_workers}


@flow(name="ingest-worker", log_prints=True)
def ingest_worker(job_id: str, tenant_id: str) -> dict[str, Any]:
    """One more worker on an existing job (scale out on a process work pool)."""
    stats = process_items(job_id, tenant_id)
    record_share(job_id, stats)
    return {"worker": stats, "job": finalize(job_id, tenant_id)}


def _sum(workers: list[dict[str, Any]]) -> dict[str, Any]:
    """The flow run's share: its worker tasks' stats added up."""
    return {key: sum(w[key] for w in workers) for key in workers[0]} if workers else {}
