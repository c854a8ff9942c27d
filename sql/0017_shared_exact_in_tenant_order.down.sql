-- 0017 rollback: the covering b-trees dropped, rag.register_embedding_model as 0014 and
-- rag.search_chunks as 0016 defined them.
DO $$
DECLARE
    v_model record;
BEGIN
    FOR v_model IN SELECT model_key FROM rag.embedding_models LOOP
        EXECUTE format('DROP INDEX IF EXISTS rag.%I',
                       rag.shared_exact_index_name(v_model.model_key));
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION rag.register_embedding_model(
    p_model_key text, p_model_id text, p_dimension integer,
    p_m integer DEFAULT 16, p_ef_construction integer DEFAULT 64
) RETURNS void
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_partition record;
    v_scope text := current_setting('app.tenant_id', true);
    v_m integer;
    v_ef_construction integer;
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
        'CREATE INDEX IF NOT EXISTS %I ON rag.chunk_embeddings_shared '
        'USING hnsw ((embedding::vector(%s)) vector_cosine_ops) '
        'WITH (m = %s, ef_construction = %s) WHERE model_key = %L',
        'chunk_embeddings_hnsw_' || translate(p_model_key, '.-', '__'),
        p_dimension, p_m, p_ef_construction, p_model_key);
    FOR v_partition IN
        SELECT c.relname, substr(c.relname, length('chunk_embeddings_') + 1) AS tenant_id
          FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'rag.chunk_embeddings'::regclass
           AND c.relname <> 'chunk_embeddings_shared'
    LOOP
        PERFORM set_config('app.tenant_id', v_partition.tenant_id, true);
        SELECT t.embedding_hnsw_m, t.embedding_hnsw_ef_construction
          INTO v_m, v_ef_construction
          FROM rag.tenants t WHERE t.tenant_id = v_partition.tenant_id;
        EXECUTE format(
            'CREATE INDEX IF NOT EXISTS %I ON rag.%I '
            'USING hnsw ((embedding::vector(%s)) vector_cosine_ops) '
            'WITH (m = %s, ef_construction = %s) WHERE model_key = %L',
            rag.tenant_hnsw_index_name(v_partition.tenant_id, p_model_key),
            v_partition.relname, p_dimension, coalesce(v_m, p_m),
            coalesce(v_ef_construction, p_ef_construction), p_model_key);
    END LOOP;
    PERFORM set_config('app.tenant_id', coalesce(v_scope, ''), true);
END
$$;

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
    v_tenant_plan text;
    v_ef_search integer;
    v_nearest text;
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

    -- The tenant's plan, read under RLS in this function's snapshot: the rows read below are
    -- where this plan says they are (a switch commits only after the rows have moved).
    SELECT t.embedding_plan, t.embedding_ef_search INTO v_tenant_plan, v_ef_search
      FROM rag.tenants t WHERE t.tenant_id = p_tenant_id;

    IF v_tenant_plan = 'own' THEN
        v_plan := 'own_hnsw';
        PERFORM set_config('hnsw.ef_search',
                           greatest(coalesce(v_ef_search, p_ef_search), p_k)::text, true);
        PERFORM set_config('hnsw.iterative_scan', p_iterative_scan, true);
        PERFORM set_config('hnsw.max_scan_tuples', p_max_scan_tuples::text, true);
        v_nearest := format(
            'SELECT e.chunk_id, e.embedding::vector(%1$s) <=> $3 AS distance '
            '  FROM rag.chunk_embeddings e '
            ' WHERE e.shard = %3$L AND e.tenant_id = $1 AND e.model_key = %2$L '
            ' ORDER BY e.embedding::vector(%1$s) <=> $3 LIMIT $5',
            v_dimension, p_model_key, p_tenant_id);
    ELSIF v_tenant_plan IN ('promoting', 'demoting') THEN
        -- Both partitions, exactly ("+ 0": no index). Each row is in one of them in any
        -- snapshot; the 2k nearest still hold k distinct chunks if one ever were in both.
        v_plan := 'moving_exact';
        v_nearest := format(
            'SELECT DISTINCT ON (d.chunk_id) d.chunk_id, d.distance FROM ('
            '  SELECT e.chunk_id, (e.embedding::vector(%1$s) <=> $3) + 0 AS distance '
            '    FROM rag.chunk_embeddings e '
            '   WHERE e.shard IN (''shared'', %3$L) AND e.tenant_id = $1 '
            '     AND e.model_key = %2$L '
            '   ORDER BY distance, e.chunk_id LIMIT 2 * $5) d '
            ' ORDER BY d.chunk_id, d.distance', v_dimension, p_model_key, p_tenant_id);
    ELSE
        -- EXECUTE: planned with this tenant's id on every call. As a static statement,
        -- PL/pgSQL's plan cache went generic after five calls in a session: estimated at the
        -- average tenant's rows, LIMIT exact_max_rows + 1 looked cheap as a sequential scan,
        -- and every small tenant's search read the whole shared partition.
        EXECUTE 'SELECT count(*) FROM ('
                '  SELECT 1 FROM rag.chunk_embeddings e '
                '   WHERE e.shard = ''shared'' AND e.tenant_id = $1 AND e.model_key = $2 '
                '   LIMIT $3) s'
           INTO v_rows USING p_tenant_id, p_model_key, p_exact_max_rows + 1;
        IF v_rows <= p_exact_max_rows THEN
            -- "+ 0" keeps the planner off the HNSW index: an exact scan of the tenant's
            -- rows found through the (tenant_id, model_key) b-tree.
            v_plan := 'exact';
            v_nearest := format(
                'SELECT e.chunk_id, (e.embedding::vector(%1$s) <=> $3) + 0 AS distance '
                '  FROM rag.chunk_embeddings e '
                ' WHERE e.shard = ''shared'' AND e.tenant_id = $1 AND e.model_key = %2$L '
                ' ORDER BY distance, e.chunk_id LIMIT $5', v_dimension, p_model_key);
        ELSE
            v_plan := 'hnsw_iterative';
            PERFORM set_config('hnsw.ef_search', p_ef_search::text, true);
            PERFORM set_config('hnsw.iterative_scan', p_iterative_scan, true);
            PERFORM set_config('hnsw.max_scan_tuples', p_max_scan_tuples::text, true);
            v_nearest := format(
                'SELECT e.chunk_id, e.embedding::vector(%1$s) <=> $3 AS distance '
                '  FROM rag.chunk_embeddings e '
                ' WHERE e.shard = ''shared'' AND e.tenant_id = $1 AND e.model_key = %2$L '
                ' ORDER BY e.embedding::vector(%1$s) <=> $3 LIMIT $5',
                v_dimension, p_model_key);
        END IF;
    END IF;

    RETURN QUERY EXECUTE format(
        'WITH nearest AS MATERIALIZED (%s) '
        'SELECT c.chunk_id, c.document_id, c.tenant_id::text, c.ordinal, c.text, '
        '       n.distance, $4 '
        '  FROM nearest n JOIN rag.chunks c ON c.chunk_id = n.chunk_id '
        ' WHERE c.tenant_id = $1 '
        ' ORDER BY n.distance, c.chunk_id LIMIT $5', v_nearest)
        USING p_tenant_id, p_model_key, p_query, v_plan, p_k;
END
$$;

DROP FUNCTION rag.shared_exact_index_name(text);
DROP FUNCTION rag.shared_exact_max_dimension();
