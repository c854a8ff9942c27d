-- 0007 rollback: back to foreign keys by id alone, under their original names. Every row
-- satisfies them (a tenant-qualified reference implies the id-only one), so nothing is lost.

ALTER TABLE rag.ingestion_errors
    DROP CONSTRAINT ingestion_errors_tenant_job_fkey,
    ADD CONSTRAINT ingestion_errors_job_id_fkey FOREIGN KEY (job_id)
        REFERENCES rag.ingestion_jobs (job_id) ON DELETE CASCADE;
ALTER TABLE rag.ingestion_items
    DROP CONSTRAINT ingestion_items_tenant_job_fkey,
    ADD CONSTRAINT ingestion_items_job_id_fkey FOREIGN KEY (job_id)
        REFERENCES rag.ingestion_jobs (job_id) ON DELETE CASCADE;
ALTER TABLE rag.chunk_embeddings
    DROP CONSTRAINT chunk_embeddings_tenant_chunk_fkey,
    ADD CONSTRAINT chunk_embeddings_chunk_id_fkey FOREIGN KEY (chunk_id)
        REFERENCES rag.chunks (chunk_id) ON DELETE CASCADE;
ALTER TABLE rag.chunks
    DROP CONSTRAINT chunks_tenant_document_fkey,
    ADD CONSTRAINT chunks_document_id_fkey FOREIGN KEY (document_id)
        REFERENCES rag.documents (document_id) ON DELETE CASCADE;

ALTER TABLE rag.ingestion_jobs DROP CONSTRAINT ingestion_jobs_tenant_job_key;
ALTER TABLE rag.chunks DROP CONSTRAINT chunks_tenant_chunk_key;
ALTER TABLE rag.documents DROP CONSTRAINT documents_tenant_document_key;
