-- 0002 ingestion queue: staged work items that several workers claim with
-- FOR UPDATE SKIP LOCKED, rejected records with their reasons, and the lookups that make
-- re-ingestion idempotent. RLS on both new tables, as on every tenant table.

CREATE TABLE rag.ingestion_items (
    job_id       uuid NOT NULL REFERENCES rag.ingestion_jobs (job_id) ON DELETE CASCADE,
    item_no      integer NOT NULL,
    tenant_id    rag.tenant_id NOT NULL,
    source_uri   text NOT NULL,
    external_id  text,
    title        text NOT NULL DEFAULT '',
    body         text NOT NULL,
    metadata     jsonb NOT NULL DEFAULT '{}'::jsonb,
    content_hash bytea NOT NULL,
    status       text NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'ingested', 'duplicate', 'failed')),
    attempts     integer NOT NULL DEFAULT 0,
    chunk_count  integer,
    document_id  bigint,
    error        text,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, item_no),
    UNIQUE (job_id, source_uri)
);
CREATE INDEX ingestion_items_pending ON rag.ingestion_items (job_id, item_no)
    WHERE status = 'pending';

CREATE TABLE rag.ingestion_errors (
    error_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id     uuid NOT NULL REFERENCES rag.ingestion_jobs (job_id) ON DELETE CASCADE,
    tenant_id  rag.tenant_id NOT NULL,
    source     text NOT NULL,
    line_no    integer,
    record_id  text,
    reason     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ingestion_errors_job ON rag.ingestion_errors (job_id);

-- A resumed run finds its unfinished job by tenant and source fingerprint.
ALTER TABLE rag.ingestion_jobs ADD COLUMN source_fingerprint text;
CREATE INDEX ingestion_jobs_resume ON rag.ingestion_jobs (tenant_id, source_fingerprint)
    WHERE status IN ('queued', 'running');

-- Passage embedding cache: identical chunk text is never embedded twice per tenant/model.
CREATE INDEX chunks_tenant_hash ON rag.chunks (tenant_id, content_hash);

DO $$
DECLARE
    tbl text;
BEGIN
    FOREACH tbl IN ARRAY ARRAY['ingestion_items', 'ingestion_errors']
    LOOP
        EXECUTE format('ALTER TABLE rag.%I ENABLE ROW LEVEL SECURITY', tbl);
        EXECUTE format('ALTER TABLE rag.%I FORCE ROW LEVEL SECURITY', tbl);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON rag.%I FOR ALL TO PUBLIC '
            'USING (tenant_id = rag.current_tenant_id()) '
            'WITH CHECK (tenant_id = rag.current_tenant_id())', tbl);
    END LOOP;
END
$$;

GRANT SELECT, INSERT, UPDATE, DELETE ON rag.ingestion_items TO rag_app;
GRANT SELECT, INSERT ON rag.ingestion_errors TO rag_app;
