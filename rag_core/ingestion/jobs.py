"""Ingestion jobs in PostgreSQL: planning (read + validate + stage), resume, finalize.

Planning is one transaction: the job row, every accepted record as a pending work item and
every rejected record with its reason are committed together or not at all. A run killed
while planning leaves nothing behind; a run killed later leaves a ``running`` job whose
pending items the next run (or any other worker) picks up: jobs are found again by tenant,
source fingerprint and embedding model.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from psycopg.types.json import Jsonb

from rag_core.common.tenancy import TenantId, parse_tenant_id
from rag_core.db.pool import Connection, Database
from rag_core.ingestion.chunking import document_hash
from rag_core.ingestion.sources import SourceLimits, SourceRecord, fingerprint, read_source
from rag_core.ingestion.validation import RecordValidator, Rejection

_CREATE_STAGING = """
CREATE TEMP TABLE staging_items (
    item_no integer, source_uri text, external_id text, title text, body text,
    metadata jsonb, content_hash bytea) ON COMMIT DROP
"""

ProgressCallback = Callable[[str, int], None]


@dataclass(frozen=True)
class JobSummary:
    job_id: str
    tenant_id: str
    status: str
    read: int
    ingested: int
    duplicate: int
    rejected: int
    failed: int
    pending: int
    chunks: int

    @property
    def balanced(self) -> bool:
        """Nothing silently dropped: every record read is accounted for exactly once."""
        return self.ingested + self.duplicate + self.rejected + self.failed + self.pending \
            == self.read

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"balanced": self.balanced}


def find_resumable_job(db: Database, tenant: TenantId, source_fingerprint: str,
                       model_key: str) -> str | None:
    with db.tenant_session(tenant) as conn:
        row = conn.execute(
            "SELECT job_id FROM rag.ingestion_jobs WHERE tenant_id = %s "
            "AND source_fingerprint = %s AND model_key = %s AND status IN ('queued', 'running')"
            " ORDER BY created_at DESC LIMIT 1",
            [tenant, source_fingerprint, model_key]).fetchone()
    return None if row is None else str(row[0])


def plan_job(db: Database, tenant_id: TenantId | str, source: Path, model_key: str, *,
             params: dict[str, Any], validator: RecordValidator | None = None,
             read_batch: int = 1000, progress: ProgressCallback | None = None,
             limits: SourceLimits | None = None) -> str:
    """Create a job for ``source``: stage valid records as pending items, record rejects."""
    tenant = parse_tenant_id(tenant_id)
    validator = validator or RecordValidator()
    job_id = str(uuid.uuid4())
    source_fp = fingerprint(source)
    read = rejected = planned = 0
    with db.tenant_session(tenant) as conn:
        conn.execute(
            "INSERT INTO rag.ingestion_jobs (job_id, tenant_id, source_uri, model_key, status, "
            "params, source_fingerprint, started_at) "
            "VALUES (%s, %s, %s, %s, 'queued', %s, %s, now())",
            [job_id, tenant, str(source), model_key, Jsonb(params), source_fp])
        conn.execute(_CREATE_STAGING)
        for batch in _batched(read_source(source, limits), read_batch):
            outcome = validator.validate(tenant, batch)
            _stage(conn, outcome.accepted, planned)
            _record_rejections(conn, job_id, tenant, outcome.rejected)
            read += len(batch)
            rejected += len(outcome.rejected)
            planned += len(outcome.accepted)
            if progress:
                progress("read", len(batch))
        conn.execute(
            "INSERT INTO rag.ingestion_items (job_id, item_no, tenant_id, source_uri, "
            "external_id, title, body, metadata, content_hash) "
            "SELECT %s, item_no, %s, source_uri, external_id, title, body, metadata, "
            "content_hash FROM staging_items", [job_id, tenant])
        conn.execute(
            "UPDATE rag.ingestion_jobs SET status = 'running', counts = %s WHERE job_id = %s",
            [Jsonb({"read": read, "rejected": rejected, "planned": planned}), job_id])
    return job_id


def _batched(records: Iterator[SourceRecord], size: int) -> Iterator[list[SourceRecord]]:
    while batch := list(islice(records, size)):
        yield batch


def _stage(conn: Connection, records: list[SourceRecord], first_item_no: int) -> None:
    with conn.cursor().copy(
            "COPY staging_items (item_no, source_uri, external_id, title, body, metadata, "
            "content_hash) FROM STDIN") as copy:
        for offset, record in enumerate(records):
            copy.write_row([first_item_no + offset, record.source_uri, record.record_id,
                            record.title, record.text, json.dumps(record.metadata),
                            document_hash(record.title, record.text)])


def _record_rejections(conn: Connection, job_id: str, tenant: TenantId,
                       rejections: list[Rejection]) -> None:
    if not rejections:
        return
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO rag.ingestion_errors (job_id, tenant_id, source, line_no, record_id, "
            "reason) VALUES (%s, %s, %s, %s, %s, %s)",
            [[job_id, tenant, r.record.source, r.record.line_no, r.record.record_id, r.reason]
             for r in rejections])


def summarize(db: Database, tenant_id: TenantId | str, job_id: str) -> JobSummary:
    tenant = parse_tenant_id(tenant_id)
    with db.tenant_session(tenant) as conn:
        return _summarize(conn, tenant, job_id)


def _summarize(conn: Connection, tenant: TenantId, job_id: str) -> JobSummary:
    job = conn.execute("SELECT status, counts FROM rag.ingestion_jobs WHERE job_id = %s",
                       [job_id]).fetchone()
    if job is None:
        raise LookupError(f"ingestion job {job_id} not found for tenant {tenant}")
    by_status: dict[str, int] = dict(conn.execute(
        "SELECT status, count(*) FROM rag.ingestion_items WHERE job_id = %s GROUP BY status",
        [job_id]).fetchall())
    chunks = conn.execute(
        "SELECT coalesce(sum(chunk_count), 0) FROM rag.ingestion_items "
        "WHERE job_id = %s AND status = 'ingested'", [job_id]).fetchone()
    counts = job[1] or {}
    return JobSummary(
        job_id=job_id, tenant_id=tenant, status=str(job[0]), read=int(counts.get("read", 0)),
        ingested=int(by_status.get("ingested", 0)), duplicate=int(by_status.get("duplicate", 0)),
        rejected=int(counts.get("rejected", 0)), failed=int(by_status.get("failed", 0)),
        pending=int(by_status.get("pending", 0)), chunks=int(chunks[0]) if chunks else 0)


def finalize_job(db: Database, tenant_id: TenantId | str, job_id: str) -> JobSummary:
    """Close the job if no item is pending (idempotent); return its summary either way."""
    tenant = parse_tenant_id(tenant_id)
    with db.tenant_session(tenant) as conn:
        summary = _summarize(conn, tenant, job_id)
        if summary.pending or summary.status in ("succeeded", "partial", "failed"):
            return summary
        status = "succeeded" if not (summary.failed or summary.rejected) else "partial"
        if summary.read and summary.failed == summary.read:
            status = "failed"
        conn.execute(
            "UPDATE rag.ingestion_jobs SET status = %s, finished_at = now(), "
            "counts = counts || %s WHERE job_id = %s",
            [status, Jsonb({"ingested": summary.ingested, "duplicate": summary.duplicate,
                            "failed": summary.failed, "chunks": summary.chunks}), job_id])
        return _summarize(conn, tenant, job_id)


def list_rejections(db: Database, tenant_id: TenantId | str,
                    job_id: str) -> list[dict[str, Any]]:
    tenant = parse_tenant_id(tenant_id)
    with db.tenant_session(tenant) as conn:
        rows = conn.execute(
            "SELECT source, line_no, record_id, reason FROM rag.ingestion_errors "
            "WHERE job_id = %s ORDER BY error_id", [job_id]).fetchall()
    return [{"source": r[0], "line_no": r[1], "record_id": r[2], "reason": r[3]} for r in rows]
