-- 0001 foundation: schema, tenant tables, row-level security, the application role,
-- the embedding-model registry and the tenant-filtered search function.
--
-- Tenant isolation has three layers, all required:
--   1. RLS policies (ENABLEd and FORCEd) compare tenant_id with the transaction-local setting
--      app.tenant_id; an unset or empty setting matches nothing (fail closed).
--   2. Every query of the application also filters on tenant_id explicitly.
--   3. The application checks the tenant of every row it receives (rag_core.retrieval).
-- The application connects as rag_app: not a superuser, NOBYPASSRLS, and owner of nothing,
-- because owners and superusers are exempt from RLS unless it is FORCEd (owners) or at all
-- (superusers).

CREATE EXTENSION IF NOT EXISTS vector;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rag_app') THEN
        CREATE ROLE rag_app LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;  -- created meanwhile by a migration of another database on this server
END
$$;

CREATE SCHEMA rag;
REVOKE ALL ON SCHEMA rag FROM PUBLIC;
GRANT USAGE ON SCHEMA rag TO rag_app;

-- The tenant of the current transaction, or NULL. NULLIF: after a transaction that used
-- set_config(..., true) ends, the setting reads as '' rather than NULL.
CREATE FUNCTION rag.current_tenant_id() RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT nullif(current_setting('app.tenant_id', true), '') $$;

CREATE DOMAIN rag.tenant_id AS text
    CHECK (VALUE ~ '^tn_[0-9a-f]{32}$');

CREATE TABLE rag.tenants (
    tenant_id      rag.tenant_id PRIMARY KEY,
    display_name   text NOT NULL DEFAULT '',
    corpus_version bigint NOT NULL DEFAULT 0,
    created_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE rag.documents (
    document_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id     rag.tenant_id NOT NULL REFERENCES rag.tenants (tenant_id) ON DELETE CASCADE,
    source_uri    text NOT NULL,
    external_id   text,
    content_hash  bytea NOT NULL,
    title         text NOT NULL DEFAULT '',
    metadata      jsonb NOT NULL DEFAULT '{}'::jsonb,
    version       integer NOT NULL DEFAULT 1 CHECK (version >= 1),
    is_current    boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now(),
    superseded_at timestamptz,
    UNIQUE (tenant_id, source_uri, version)
);
-- At most one current version per source.
CREATE UNIQUE INDEX documents_current_source
    ON rag.documents (tenant_id, source_uri) WHERE is_current;
CREATE INDEX documents_tenant_hash ON rag.documents (tenant_id, content_hash);

CREATE TABLE rag.chunks (
    chunk_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id    rag.tenant_id NOT NULL,
    document_id  bigint NOT NULL REFERENCES rag.documents (document_id) ON DELETE CASCADE,
    ordinal      integer NOT NULL CHECK (ordinal >= 0),
    text         text NOT NULL,
    token_count  integer NOT NULL CHECK (token_count >= 0),
    content_hash bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (document_id, ordinal)
);
CREATE INDEX chunks_tenant ON rag.chunks (tenant_id);

-- Embedding models known to the database. One row per (model id, version, variant) that has
-- vectors stored; a re-embedding with a new model lives beside the old one under a new key.
CREATE TABLE rag.embedding_models (
    model_key   text PRIMARY KEY CHECK (model_key ~ '^[a-z0-9][a-z0-9._-]{0,62}$'),
    model_id    text NOT NULL,
    dimension   integer NOT NULL CHECK (dimension BETWEEN 1 AND 2000),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Vectors live apart from chunk text so that several models (of different dimensions) can
-- embed the same chunk. The column has no fixed dimension; each model gets a partial
-- expression index that casts to its own dimension (pgvector's documented pattern).
CREATE TABLE rag.chunk_embeddings (
    chunk_id   bigint NOT NULL REFERENCES rag.chunks (chunk_id) ON DELETE CASCADE,
    model_key  text NOT NULL REFERENCES rag.embedding_models (model_key),
    tenant_id  rag.tenant_id NOT NULL,
    embedding  vector NOT NULL,
    PRIMARY KEY (chunk_id, model_key)
);
CREATE INDEX chunk_embeddings_tenant_model ON rag.chunk_embeddings (tenant_id, model_key);

CREATE TABLE rag.ingestion_jobs (
    job_id       uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id    rag.tenant_id NOT NULL REFERENCES rag.tenants (tenant_id) ON DELETE CASCADE,
    source_uri   text NOT NULL,
    model_key    text REFERENCES rag.embedding_models (model_key),
    status       text NOT NULL DEFAULT 'queued'
                 CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'partial')),
    params       jsonb NOT NULL DEFAULT '{}'::jsonb,
    counts       jsonb NOT NULL DEFAULT '{}'::jsonb,
    error        text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    started_at   timestamptz,
    finished_at  timestamptz,
    heartbeat_at timestamptz
);
CREATE INDEX ingestion_jobs_tenant_status ON rag.ingestion_jobs (tenant_id, status);

-- One row per query and per sub-query (batch member). Append-only for the application.
CREATE TABLE rag.audit_log (
    audit_id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id         rag.tenant_id NOT NULL,
    occurred_at       timestamptz NOT NULL DEFAULT now(),
    request_id        uuid NOT NULL,
    parent_request_id uuid,
    kind              text NOT NULL CHECK (kind IN ('query', 'sub_query', 'batch')),
    session_hash      text,
    batch_id          uuid,
    question_redacted text,
    question_hash     text,
    model             text,
    prompt_version    text,
    chunk_ids         bigint[] NOT NULL DEFAULT '{}',
    prompt_tokens     integer NOT NULL DEFAULT 0,
    completion_tokens integer NOT NULL DEFAULT 0,
    latency_ms        jsonb NOT NULL DEFAULT '{}'::jsonb,
    cache_hit         boolean NOT NULL DEFAULT false,
    retries           integer NOT NULL DEFAULT 0,
    breaker_state     text,
    error_code        text,
    rollout_cohort    text
);
CREATE INDEX audit_log_tenant_time ON rag.audit_log (tenant_id, occurred_at);

-- Feature flags are global (a rollout moves a flag for everyone in a cohort); the
-- application may read them, only the owner (rollout flows) changes them.
CREATE TABLE rag.feature_flags (
    flag_key        text PRIMARY KEY CHECK (flag_key ~ '^[a-z0-9][a-z0-9_.-]{0,62}$'),
    enabled         boolean NOT NULL DEFAULT false,
    rollout_percent integer NOT NULL DEFAULT 0 CHECK (rollout_percent BETWEEN 0 AND 100),
    description     text NOT NULL DEFAULT '',
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE rag.feature_flag_events (
    event_id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    flag_key        text NOT NULL REFERENCES rag.feature_flags (flag_key) ON DELETE CASCADE,
    rollout_percent integer NOT NULL,
    enabled         boolean NOT NULL,
    reason          text NOT NULL DEFAULT '',
    occurred_at     timestamptz NOT NULL DEFAULT now()
);

-- Row-level security on every tenant table: same predicate for reads (USING) and writes
-- (WITH CHECK).
DO $$
DECLARE
    tbl text;
BEGIN
    FOREACH tbl IN ARRAY ARRAY['tenants', 'documents', 'chunks', 'chunk_embeddings',
                               'ingestion_jobs', 'audit_log']
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

-- Privileges of the application role: data only, no DDL, audit append-only, tenants
-- created by the owner (rag tenant create) but readable and version-bumpable by their own
-- sessions.
GRANT SELECT, UPDATE (corpus_version) ON rag.tenants TO rag_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON rag.documents, rag.chunks, rag.chunk_embeddings,
    rag.ingestion_jobs TO rag_app;
GRANT SELECT, INSERT ON rag.audit_log TO rag_app;
GRANT SELECT ON rag.embedding_models, rag.feature_flags TO rag_app;

-- Register a model and build its partial HNSW index (cosine). Owner-only: DDL.
CREATE FUNCTION rag.register_embedding_model(
    p_model_key text, p_model_id text, p_dimension integer,
    p_m integer DEFAULT 16, p_ef_construction integer DEFAULT 64
) RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
    INSERT INTO rag.embedding_models (model_key, model_id, dimension)
    VALUES (p_model_key, p_model_id, p_dimension)
    ON CONFLICT (model_key) DO NOTHING;
    IF (SELECT dimension FROM rag.embedding_models WHERE model_key = p_model_key) <> p_dimension
    THEN
        RAISE EXCEPTION 'model % is registered with another dimension', p_model_key
            USING ERRCODE = '22023';
    END IF;
    EXECUTE format(
        'CREATE INDEX IF NOT EXISTS %I ON rag.chunk_embeddings '
        'USING hnsw ((embedding::vector(%s)) vector_cosine_ops) '
        'WITH (m = %s, ef_construction = %s) WHERE model_key = %L',
        'chunk_embeddings_hnsw_' || translate(p_model_key, '.-', '__'),
        p_dimension, p_m, p_ef_construction, p_model_key);
END
$$;
REVOKE ALL ON FUNCTION rag.register_embedding_model(text, text, integer, integer, integer)
    FROM PUBLIC;

-- Nearest chunks of one tenant for one model. SECURITY INVOKER: it runs with the caller's
-- rights, so RLS applies inside it; the tenant filter is explicit as well, and the function
-- refuses to run when the session tenant is unset or differs from the requested tenant.
--
-- Plan: a tenant with at most p_exact_max_rows vectors for the model is searched exactly
-- (a filtered HNSW walk over a graph dominated by other tenants loses its results); larger
-- tenants use the HNSW index with pgvector 0.8 iterative scans, so the filter does not cut
-- the result below k. relaxed_order returns candidates nearly sorted: re-sort at the end.
CREATE FUNCTION rag.search_chunks(
    p_tenant_id text,
    p_model_key text,
    p_query vector,
    p_k integer DEFAULT 10,
    p_ef_search integer DEFAULT 100,
    p_exact_max_rows integer DEFAULT 10000,
    p_iterative_scan text DEFAULT 'relaxed_order',
    p_max_scan_tuples integer DEFAULT 20000
) RETURNS TABLE (
    chunk_id bigint, document_id bigint, tenant_id text, ordinal integer, text text,
    distance double precision, plan text
)
    LANGUAGE plpgsql STABLE SECURITY INVOKER
    AS $$
DECLARE
    v_dimension integer;
    v_rows bigint;
    v_plan text;
BEGIN
    IF p_tenant_id IS NULL OR rag.current_tenant_id() IS DISTINCT FROM p_tenant_id THEN
        RAISE EXCEPTION 'search for tenant % outside its tenant session', p_tenant_id
            USING ERRCODE = '42501';
    END IF;
    IF p_k < 1 OR p_k > 1000 THEN
        RAISE EXCEPTION 'k must be between 1 and 1000, got %', p_k USING ERRCODE = '22023';
    END IF;
    SELECT m.dimension INTO v_dimension FROM rag.embedding_models m
     WHERE m.model_key = p_model_key;
    IF v_dimension IS NULL THEN
        RAISE EXCEPTION 'unknown embedding model %', p_model_key USING ERRCODE = '22023';
    END IF;
    IF vector_dims(p_query) <> v_dimension THEN
        RAISE EXCEPTION 'query has dimension %, model % has %',
            vector_dims(p_query), p_model_key, v_dimension USING ERRCODE = '22000';
    END IF;

    SELECT count(*) INTO v_rows FROM (
        SELECT 1 FROM rag.chunk_embeddings e
         WHERE e.tenant_id = p_tenant_id AND e.model_key = p_model_key
         LIMIT p_exact_max_rows + 1) s;

    IF v_rows <= p_exact_max_rows THEN
        v_plan := 'exact';
        -- "+ 0" keeps the planner off the HNSW index: this must be an exact scan of the
        -- tenant's rows found through the (tenant_id, model_key) b-tree.
        RETURN QUERY EXECUTE format(
            'SELECT c.chunk_id, c.document_id, c.tenant_id::text, c.ordinal, c.text, '
            '       (e.embedding::vector(%1$s) <=> $3) + 0 AS distance, $4 '
            '  FROM rag.chunk_embeddings e JOIN rag.chunks c ON c.chunk_id = e.chunk_id '
            ' WHERE e.tenant_id = $1 AND c.tenant_id = $1 AND e.model_key = %2$L '
            ' ORDER BY distance, c.chunk_id LIMIT $5', v_dimension, p_model_key)
            USING p_tenant_id, p_model_key, p_query, v_plan, p_k;
    ELSE
        v_plan := 'hnsw_iterative';
        PERFORM set_config('hnsw.ef_search', p_ef_search::text, true);
        PERFORM set_config('hnsw.iterative_scan', p_iterative_scan, true);
        PERFORM set_config('hnsw.max_scan_tuples', p_max_scan_tuples::text, true);
        RETURN QUERY EXECUTE format(
            'WITH candidates AS MATERIALIZED ('
            '  SELECT e.chunk_id, e.embedding::vector(%1$s) <=> $3 AS distance '
            '    FROM rag.chunk_embeddings e '
            '   WHERE e.tenant_id = $1 AND e.model_key = %2$L '
            '   ORDER BY e.embedding::vector(%1$s) <=> $3 LIMIT $5) '
            'SELECT c.chunk_id, c.document_id, c.tenant_id::text, c.ordinal, c.text, '
            '       k.distance, $4 '
            '  FROM candidates k JOIN rag.chunks c ON c.chunk_id = k.chunk_id '
            ' WHERE c.tenant_id = $1 '
            ' ORDER BY k.distance, c.chunk_id', v_dimension, p_model_key)
            USING p_tenant_id, p_model_key, p_query, v_plan, p_k;
    END IF;
END
$$;
REVOKE ALL ON FUNCTION rag.search_chunks(text, text, vector, integer, integer, integer, text,
    integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rag.search_chunks(text, text, vector, integer, integer, integer, text,
    integer) TO rag_app;
GRANT EXECUTE ON FUNCTION rag.current_tenant_id() TO rag_app;

-- The default model of the product: sentence-transformers/all-MiniLM-L6-v2, 384 dims.
SELECT rag.register_embedding_model('minilm-l6-v2', 'sentence-transformers/all-MiniLM-L6-v2',
                                    384);
