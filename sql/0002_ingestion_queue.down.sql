DROP INDEX IF EXISTS rag.chunks_tenant_hash;
DROP INDEX IF EXISTS rag.ingestion_jobs_resume;
ALTER TABLE rag.ingestion_jobs DROP COLUMN IF EXISTS source_fingerprint;
DROP TABLE IF EXISTS rag.ingestion_errors;
DROP TABLE IF EXISTS rag.ingestion_items;
