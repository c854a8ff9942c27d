"""Facts about the schema that code outside ``sql/`` relies on."""

from __future__ import annotations

# Every table that holds tenant rows: RLS must be enabled and forced on each (the doctor
# checks it; the isolation probe attacks each).
TENANT_TABLES: tuple[str, ...] = (
    "tenants", "documents", "chunks", "chunk_embeddings", "ingestion_jobs", "audit_log",
    "ingestion_items", "ingestion_errors", "batch_jobs", "batch_events",
)
