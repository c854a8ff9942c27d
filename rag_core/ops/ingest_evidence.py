"""What an ingestion split over several workers left behind, read back as evidence.

Two independent witnesses: the database (what was stored: every chunk once, every document
in its first version, no item seen twice) and each worker's own account of its share (the
table artifact every ingestion flow run records, grouped by the worker that ran the flow run,
as the Prefect API labels it). They must agree: the shares add up to the job's items and to
the chunks stored, so an item processed twice, or by nobody, shows as a difference.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from rag_core.common.tenancy import TenantId
from rag_core.db.pool import Database

# A document written twice would be two chunk sets for one source (a second version, or
# two ids); an embedding written twice, a chunk with two vectors of one model.
_STORED = """
SELECT (SELECT count(*) FROM rag.chunks),
       (SELECT count(DISTINCT (d.source_uri, c.ordinal))
          FROM rag.chunks c JOIN rag.documents d USING (document_id)),
       (SELECT count(*) FROM rag.documents),
       (SELECT count(DISTINCT source_uri) FROM rag.documents),
       (SELECT count(*) FROM rag.documents WHERE version > 1),
       (SELECT count(*) FROM rag.chunk_embeddings),
       (SELECT count(DISTINCT (chunk_id, model_key)) FROM rag.chunk_embeddings),
       (SELECT count(*) FROM rag.ingestion_items WHERE status = 'duplicate')
"""

_JOBS = "SELECT job_id FROM rag.ingestion_jobs ORDER BY created_at"


@dataclass(frozen=True)
class StoredCounts:
    """What one tenant holds (a tenant that was empty before the job)."""

    chunk_rows: int
    distinct_chunks: int
    documents: int
    distinct_sources: int
    later_versions: int
    embedding_rows: int
    distinct_embeddings: int
    items_seen_as_duplicate: int

    @property
    def duplicates(self) -> int:
        """Rows stored more than once, by every measure above (0 when nothing was)."""
        return (self.chunk_rows - self.distinct_chunks + self.documents
                - self.distinct_sources + self.later_versions + self.embedding_rows
                - self.distinct_embeddings + self.items_seen_as_duplicate)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"duplicates": self.duplicates}


def stored_counts(db: Database, tenant: TenantId) -> StoredCounts:
    """The tenant's rows, under its own row-level security."""
    with db.tenant_session(tenant) as conn:
        row = conn.execute(_STORED).fetchone()
    assert row is not None  # an aggregate query always returns its row
    return StoredCounts(*(int(value) for value in row))


def job_ids(db: Database, tenant: TenantId) -> list[str]:
    with db.tenant_session(tenant) as conn:
        return [str(row[0]) for row in conn.execute(_JOBS).fetchall()]


@dataclass
class WorkerShare:
    """One Prefect worker's part of the job: the flow runs it ran, what they processed."""

    worker: str
    flow_runs: list[str] = field(default_factory=list)
    items: int = 0
    chunks: int = 0
    pids: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def worker_shares(flow_runs: list[dict[str, Any]],
                  artifacts: list[dict[str, Any]]) -> list[WorkerShare]:
    """Group the flow runs' recorded shares (their table artifacts, as the REST API returns
    them) by the worker named in each flow run's ``prefect.worker.name`` label."""
    worker_of = {run["id"]: (run.get("labels") or {}).get("prefect.worker.name", "(none)")
                 for run in flow_runs}
    names = {run["id"]: run["name"] for run in flow_runs}
    shares: dict[str, WorkerShare] = {}
    for artifact in artifacts:
        run_id = artifact.get("flow_run_id")
        if run_id not in worker_of or artifact.get("type") != "table":
            continue
        share = shares.setdefault(worker_of[run_id], WorkerShare(worker_of[run_id]))
        if names[run_id] not in share.flow_runs:
            share.flow_runs.append(names[run_id])
        for row in _rows(artifact.get("data")):
            share.items += int(row.get("items", 0))
            share.chunks += int(row.get("chunks_written", 0))
            if "pid" in row and int(row["pid"]) not in share.pids:
                share.pids.append(int(row["pid"]))
    return sorted(shares.values(), key=lambda share: share.worker)


def _rows(data: Any) -> list[dict[str, Any]]:
    """A table artifact's rows: stored as the JSON text of a list of objects."""
    rows = json.loads(data) if isinstance(data, str) else data
    return [row for row in rows if isinstance(row, dict)] if isinstance(rows, list) else []
