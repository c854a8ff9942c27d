-- 0007: foreign keys carry the tenant, so a row can never point at another tenant's parent.
--
-- Until now a child referenced its parent by id alone (chunks.document_id -> documents), so
-- a chunk of tenant B could name a document of tenant A: RLS hides such a row from both
-- tenants' sessions, but the owner, a superuser, a bulk load or a future bug could write it,
-- and a cascade from A's document would then delete B's rows. Each parent gets a
-- UNIQUE (tenant_id, id) key and each child references (tenant_id, parent id), so the
-- database itself refuses the mismatch; RI checks bypass RLS, so this holds for every role.
--
-- The pairs, read from pg_constraint (every foreign key in schema rag whose child and parent
-- both have a tenant_id column and whose key is not tenant_id itself):
--   chunks (document_id)           -> documents (document_id)
--   chunk_embeddings (chunk_id)    -> chunks (chunk_id)
--   ingestion_items (job_id)       -> ingestion_jobs (job_id)
--   ingestion_errors (job_id)      -> ingestion_jobs (job_id)
-- documents and ingestion_jobs reference tenants by tenant_id already; audit_log references
-- nothing (chunk_ids is an array); embedding_models and feature_flags are not tenant data.
-- ON DELETE CASCADE is kept as it was.
--
-- A database holding a mismatched row (impossible through the application, which writes
-- every row in its tenant's session) is refused with the table, the count and one example,
-- instead of a bare foreign-key error: such rows must be looked at, not silently dropped.

DO $$
DECLARE
    v_count bigint;
    v_example text;
BEGIN
    SELECT count(*), min(format('chunk %s (tenant %s) -> document %s (tenant %s)',
                                c.chunk_id, c.tenant_id, d.document_id, d.tenant_id))
      INTO v_count, v_example
      FROM rag.chunks c JOIN rag.documents d ON d.document_id = c.document_id
     WHERE c.tenant_id <> d.tenant_id;
    IF v_count > 0 THEN
        RAISE EXCEPTION 'rag.chunks has % row(s) whose document belongs to another tenant, '
            'e.g. %', v_count, v_example USING ERRCODE = '23503';
    END IF;

    SELECT count(*), min(format('embedding of chunk %s (tenant %s) -> chunk tenant %s',
                                e.chunk_id, e.tenant_id, c.tenant_id))
      INTO v_count, v_example
      FROM rag.chunk_embeddings e JOIN rag.chunks c ON c.chunk_id = e.chunk_id
     WHERE e.tenant_id <> c.tenant_id;
    IF v_count > 0 THEN
        RAISE EXCEPTION 'rag.chunk_embeddings has % row(s) whose chunk belongs to another '
            'tenant, e.g. %', v_count, v_example USING ERRCODE = '23503';
    END IF;

    SELECT count(*), min(format('item %s/%s (tenant %s) -> job tenant %s',
                                i.job_id, i.item_no, i.tenant_id, j.tenant_id))
      INTO v_count, v_example
      FROM rag.ingestion_items i JOIN rag.ingestion_jobs j ON j.job_id = i.job_id
     WHERE i.tenant_id <> j.tenant_id;
    IF v_count > 0 THEN
        RAISE EXCEPTION 'rag.ingestion_items has % row(s) whose job belongs to another '
            'tenant, e.g. %', v_count, v_example USING ERRCODE = '23503';
    END IF;

    SELECT count(*), min(format('error %s (tenant %s) -> job %s (tenant %s)',
                                r.error_id, r.tenant_id, j.job_id, j.tenant_id))
      INTO v_count, v_example
      FROM rag.ingestion_errors r JOIN rag.ingestion_jobs j ON j.job_id = r.job_id
     WHERE r.tenant_id <> j.tenant_id;
    IF v_count > 0 THEN
        RAISE EXCEPTION 'rag.ingestion_errors has % row(s) whose job belongs to another '
            'tenant, e.g. %', v_count, v_example USING ERRCODE = '23503';
    END IF;
END
$$;

-- The parents' tenant-qualified keys (a foreign key needs a unique constraint to point at).
ALTER TABLE rag.documents
    ADD CONSTRAINT documents_tenant_document_key UNIQUE (tenant_id, document_id);
ALTER TABLE rag.chunks
    ADD CONSTRAINT chunks_tenant_chunk_key UNIQUE (tenant_id, chunk_id);
ALTER TABLE rag.ingestion_jobs
    ADD CONSTRAINT ingestion_jobs_tenant_job_key UNIQUE (tenant_id, job_id);

-- The children: the id-only keys give way to tenant-qualified ones.
ALTER TABLE rag.chunks
    DROP CONSTRAINT chunks_document_id_fkey,
    ADD CONSTRAINT chunks_tenant_document_fkey FOREIGN KEY (tenant_id, document_id)
        REFERENCES rag.documents (tenant_id, document_id) ON DELETE CASCADE;
ALTER TABLE rag.chunk_embeddings
    DROP CONSTRAINT chunk_embeddings_chunk_id_fkey,
    ADD CONSTRAINT chunk_embeddings_tenant_chunk_fkey FOREIGN KEY (tenant_id, chunk_id)
        REFERENCES rag.chunks (tenant_id, chunk_id) ON DELETE CASCADE;
ALTER TABLE rag.ingestion_items
    DROP CONSTRAINT ingestion_items_job_id_fkey,
    ADD CONSTRAINT ingestion_items_tenant_job_fkey FOREIGN KEY (tenant_id, job_id)
        REFERENCES rag.ingestion_jobs (tenant_id, job_id) ON DELETE CASCADE;
ALTER TABLE rag.ingestion_errors
    DROP CONSTRAINT ingestion_errors_job_id_fkey,
    ADD CONSTRAINT ingestion_errors_tenant_job_fkey FOREIGN KEY (tenant_id, job_id)
        REFERENCES rag.ingestion_jobs (tenant_id, job_id) ON DELETE CASCADE;
