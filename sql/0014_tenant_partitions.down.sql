-- 0014 rollback: rag.chunk_embeddings a plain table again (0001's, with 0007's keys).
-- Every tenant partition's rows go back into the shared one first (in the tenant's scope:
-- RLS is FORCEd on the partitions), then the parent is dropped with the emptied partitions;
-- the shared partition, detached, takes its old name, keys, grants and indexes back. The
-- search and registration functions are 0006's and 0001's again, and the plan columns go.

DO $$
DECLARE
    v_partition record;
BEGIN
    FOR v_partition IN
        SELECT c.relname, substr(c.relname, length('chunk_embeddings_') + 1) AS tenant_id
          FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'rag.chunk_embeddings'::regclass
           AND c.relname <> 'chunk_embeddings_shared'
    LOOP
        PERFORM set_config('app.tenant_id', v_partition.tenant_id, true);
        EXECUTE format('INSERT INTO rag.chunk_embeddings_shared '
                       '(chunk_id, model_key, tenant_id, embedding, shard) '
                       'SELECT chunk_id, model_key, tenant_id, embedding, ''shared'' '
                       '  FROM rag.%I', v_partition.relname);
    END LOOP;
    PERFORM set_config('app.tenant_id', '', true);
END
$$;

ALTER TABLE rag.chunk_embeddings DETACH PARTITION rag.chunk_embeddings_shared;
DROP TABLE rag.chunk_embeddings;

-- What the detached partition kept of the parent: its primary key and foreign keys.
DO $$
DECLARE
    v_constraint text;
BEGIN
    FOR v_constraint IN
        SELECT conname FROM pg_constraint
         WHERE conrelid = 'rag.chunk_embeddings_shared'::regclass AND contype IN ('p', 'f')
    LOOP
        EXECUTE format('ALTER TABLE rag.chunk_embeddings_shared DROP CONSTRAINT %I',
                       v_constraint);
    END LOOP;
END
$$;
ALTER TABLE rag.chunk_embeddings_shared DROP COLUMN shard;
ALTER TABLE rag.chunk_embeddings_shared RENAME TO chunk_embeddings;
ALTER INDEX rag.chunk_embeddings_shared_tenant_model RENAME TO chunk_embeddings_tenant_model;
ALTER TABLE rag.chunk_embeddings
    ADD CONSTRAINT chunk_embeddings_pkey PRIMARY KEY (chunk_id, model_key),
    ADD CONSTRAINT chunk_embeddings_model_key_fkey FOREIGN KEY (model_key)
        REFERENCES rag.embedding_models (model_key),
    ADD CONSTRAINT chunk_embeddings_tenant_chunk_fkey FOREIGN KEY (tenant_id, chunk_id)
        REFERENCES rag.chunks (tenant_id, chunk_id) ON DELETE CASCADE;
GRANT SELECT, INSERT, UPDATE, DELETE ON rag.chunk_embeddings TO rag_app;

DROP FUNCTION rag.tenant_hnsw_index_name(text, text);
DROP FUNCTION rag.tenant_partition_name(text);
DROP FUNCTION rag.embedding_shard();
DROP TABLE rag.partition_graph_params;
ALTER TABLE rag.tenants
    DROP COLUMN embedding_plan,
    DROP COLUMN embedding_hnsw_m,
    DROP COLUMN embedding_hnsw_ef_construction,
    DROP COLUMN embedding_ef_search,
    DROP COLUMN embedding_plan_at;

-- 0001's registration (its index on the one table).
CREATE OR REPLACE FUNCTION rag.register_embedding_model(
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

-- 0006's search.
CREATE OR REPLACE FUNCTION rag.search_chunks(
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
    -- NULL compares to nothing: without these, k NULL meant "LIMIT NULL" (every row).
    IF p_k IS NULL OR p_k < 1 OR p_k > 1000 THEN
        RAISE EXCEPTION 'k must be between 1 and 1000, got %', coalesce(p_k::text, 'NULL')
            USING ERRCODE = '22023';
    END IF;
    IF p_ef_search IS NULL OR p_ef_search < 1 OR p_ef_search > 1000
            OR p_exact_max_rows IS NULL OR p_exact_max_rows < 0
            OR p_max_scan_tuples IS NULL OR p_max_scan_tuples < 1
            OR p_iterative_scan IS NULL
            OR p_iterative_scan NOT IN ('relaxed_order', 'strict_order') THEN
        RAISE EXCEPTION 'invalid search options: ef_search %, exact_max_rows %, '
            'iterative_scan %, max_scan_tuples %', p_ef_search, p_exact_max_rows,
            p_iterative_scan, p_max_scan_tuples USING ERRCODE = '22023';
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
        -- tenant's rows found through the (tenant_id, model_key) b-tree. The k nearest
        -- vectors are found first and only they are joined to rag.chunks for their text
        -- (0001 joined every row of the tenant, then sorted the joined rows).
        RETURN QUERY EXECUTE format(
            'WITH nearest AS MATERIALIZED ('
            '  SELECT e.chunk_id, (e.embedding::vector(%1$s) <=> $3) + 0 AS distance '
            '    FROM rag.chunk_embeddings e '
            '   WHERE e.tenant_id = $1 AND e.model_key = %2$L '
            '   ORDER BY distance, e.chunk_id LIMIT $5) '
            'SELECT c.chunk_id, c.document_id, c.tenant_id::text, c.ordinal, c.text, '
            '       n.distance, $4 '
            '  FROM nearest n JOIN rag.chunks c ON c.chunk_id = n.chunk_id '
            ' WHERE c.tenant_id = $1 '
            ' ORDER BY n.distance, c.chunk_id', v_dimension, p_model_key)
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
