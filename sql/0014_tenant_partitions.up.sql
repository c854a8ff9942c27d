-- 0014: a tenant's vectors are stored together, and each tenant is searched by the plan its
-- size calls for, recorded on its row.
--
-- rag.chunk_embeddings becomes a table partitioned BY LIST (shard):
--   * shard 'shared' (partition rag.chunk_embeddings_shared, the table of 0001 renamed): the
--     tenants below the size threshold (RAG_RETRIEVAL__OWN_PARTITION_MIN_ROWS). Searched
--     exactly over the tenant's rows, found by the (tenant_id, model_key) b-tree; its
--     per-model HNSW indexes of 0001 stay, as the fallback for a shared tenant that has
--     outgrown the threshold and not been promoted yet (the plan of 0006, unchanged).
--   * shard = the tenant id (partition rag.chunk_embeddings_<tenant id>): one tenant that
--     grew past the threshold, with its own HNSW graph per model key, its graph parameters
--     (m, ef_construction) and ef_search picked by its size from rag.partition_graph_params.
-- Partitioned on a shard column rather than on tenant_id with a DEFAULT partition: ATTACH
-- next to a DEFAULT partition scans the default partition under an ACCESS EXCLUSIVE lock to
-- prove none of its rows belongs to the new one. Here a new partition is created as a plain
-- table with a CHECK matching its bound, attached while empty (SHARE UPDATE EXCLUSIVE on the
-- parent: reads and writes go on), filled by moves, indexed, then switched to.
--
-- The plan lives on the tenant row (rag.tenants.embedding_plan), read by rag.search_chunks
-- inside the same statement (no round trip, and the same snapshot as the rows it reads):
--   'shared'    exact over the tenant's rows of the shared partition (HNSW iterative on the
--               shared graph when the tenant has more than p_exact_max_rows: 0006's plan)
--   'promoting' rows moving shared -> own, in batches of one transaction each (delete from
--   'demoting'  one, insert into the other): exact over both partitions, deduplicated by
--               chunk_id; every snapshot sees each row exactly once
--   'own'       HNSW on the tenant's own partition with the plan's ef_search
-- Writers (ingestion, re-embedding) never name the shard: the column's default,
-- rag.embedding_shard(), reads the session tenant's plan and locks its row FOR KEY SHARE
-- until the writer commits. The promoter switches a plan with SELECT ... FOR UPDATE, which
-- waits for those writers (and only them: KEY SHARE does not block corpus_version updates
-- or other writers), so no row is ever written to the side a move has already emptied.
-- rag_core.db.tenant_partitions does the moves; rag_core.ops.rebalance decides them.
--
-- Keys: a partitioned table's unique keys must include the partition key, so the primary key
-- is (chunk_id, model_key, shard); within a partition it is (chunk_id, model_key). Nobody
-- upserts vectors (ingestion and re-embedding insert rows that do not exist yet, re-embedding
-- under FOR NO KEY UPDATE of the chunk), and a move deletes and inserts a row in one
-- transaction, so a (chunk, model) pair is never in two partitions.
--
-- Isolation: the parent has RLS ENABLEd and FORCEd with the tenant policy (it applies to all
-- partitions when read through the parent); every partition has the same three of its own,
-- for direct access, and the application role has no privilege on any partition: it reaches
-- vectors through rag.chunk_embeddings only. rag doctor checks every partition like any
-- tenant table.

-- The plan of each tenant. NULL parameters: the shared plan (no graph of its own).
ALTER TABLE rag.tenants
    ADD COLUMN embedding_plan text NOT NULL DEFAULT 'shared'
        CONSTRAINT tenants_embedding_plan_check
        CHECK (embedding_plan IN ('shared', 'promoting', 'own', 'demoting')),
    ADD COLUMN embedding_hnsw_m integer
        CONSTRAINT tenants_embedding_hnsw_m_check CHECK (embedding_hnsw_m BETWEEN 2 AND 100),
    ADD COLUMN embedding_hnsw_ef_construction integer
        CONSTRAINT tenants_embedding_hnsw_ef_construction_check
        CHECK (embedding_hnsw_ef_construction BETWEEN 4 AND 1000),
    ADD COLUMN embedding_ef_search integer
        CONSTRAINT tenants_embedding_ef_search_check
        CHECK (embedding_ef_search BETWEEN 1 AND 1000),
    ADD COLUMN embedding_plan_at timestamptz;

-- Graph parameters by tenant size (rows of the tenant's largest model key): the row with the
-- largest min_rows not above the size applies. Seeded from the index benchmark of
-- 2026-11-25 (reports/index/20261125T122205Z, 500,000 vectors): in its own partition a
-- 25,000-50,000-row tenant reaches recall@10 >= 0.998 at ef_search 100 (p95 <= 5.5 ms) with
-- m 16 / ef_construction 64; the 170,000- and 250,000-row tenants need m 24 /
-- ef_construction 96 to pass 0.98 (at ef_search 200). `rag bench index` re-measures them;
-- an operator may change the rows (owner only), the next promotion or rebalance uses them.
CREATE TABLE rag.partition_graph_params (
    min_rows        bigint PRIMARY KEY CHECK (min_rows >= 0),
    m               integer NOT NULL CHECK (m BETWEEN 2 AND 100),
    ef_construction integer NOT NULL CHECK (ef_construction BETWEEN 4 AND 1000),
    ef_search       integer NOT NULL CHECK (ef_search BETWEEN 1 AND 1000),
    note            text NOT NULL DEFAULT ''
);
INSERT INTO rag.partition_graph_params (min_rows, m, ef_construction, ef_search, note) VALUES
    (0, 16, 64, 100, 'own partition, 25k-50k rows: recall@10 >= 0.998, p95 <= 5.5 ms'),
    (100000, 24, 96, 200, 'own partition, 170k-250k rows: recall@10 >= 0.98 needs m 24');

-- The shard a writer in the session's tenant writes to, locking the tenant row FOR KEY SHARE
-- until the writer's transaction ends (see the header). Outside a tenant session (an owner's
-- bulk load): 'shared'. VOLATILE: it locks.
CREATE FUNCTION rag.embedding_shard() RETURNS text
    LANGUAGE sql VOLATILE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT coalesce((SELECT CASE WHEN t.embedding_plan IN ('promoting', 'own')
                                 THEN t.tenant_id::text ELSE 'shared' END
                       FROM rag.tenants t
                      WHERE t.tenant_id = rag.current_tenant_id()
                        FOR KEY SHARE), 'shared')
$$;
REVOKE ALL ON FUNCTION rag.embedding_shard() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rag.embedding_shard() TO rag_app;

-- The names of a tenant's partition and of its graph for a model key (within 63 bytes).
CREATE FUNCTION rag.tenant_partition_name(p_tenant_id text) RETURNS text
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT 'chunk_embeddings_' || p_tenant_id $$;
CREATE FUNCTION rag.tenant_hnsw_index_name(p_tenant_id text, p_model_key text) RETURNS text
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT 'cet_' || substr(p_tenant_id, 4) || '_hnsw_' || left(md5(p_model_key), 10) $$;

-- The table of 0001 becomes the shared partition. Its primary key gives way to the
-- parent's (which must hold the partition key); its foreign keys to the parent's (cloned
-- onto every partition); its b-tree and HNSW indexes stay.
ALTER TABLE rag.chunk_embeddings RENAME TO chunk_embeddings_shared;
ALTER INDEX rag.chunk_embeddings_tenant_model RENAME TO chunk_embeddings_shared_tenant_model;
ALTER TABLE rag.chunk_embeddings_shared
    DROP CONSTRAINT chunk_embeddings_pkey,
    DROP CONSTRAINT chunk_embeddings_tenant_chunk_fkey,
    DROP CONSTRAINT chunk_embeddings_model_key_fkey,
    ADD COLUMN shard text NOT NULL DEFAULT 'shared',
    ADD CONSTRAINT chunk_embeddings_shared_shard_check CHECK (shard = 'shared');
REVOKE ALL ON rag.chunk_embeddings_shared FROM rag_app;

CREATE TABLE rag.chunk_embeddings (
    chunk_id   bigint NOT NULL,
    model_key  text NOT NULL,
    tenant_id  rag.tenant_id NOT NULL,
    embedding  vector NOT NULL,
    shard      text NOT NULL DEFAULT rag.embedding_shard(),
    CONSTRAINT chunk_embeddings_pkey PRIMARY KEY (chunk_id, model_key, shard),
    CONSTRAINT chunk_embeddings_model_key_fkey FOREIGN KEY (model_key)
        REFERENCES rag.embedding_models (model_key),
    CONSTRAINT chunk_embeddings_tenant_chunk_fkey FOREIGN KEY (tenant_id, chunk_id)
        REFERENCES rag.chunks (tenant_id, chunk_id) ON DELETE CASCADE
) PARTITION BY LIST (shard);
CREATE INDEX chunk_embeddings_tenant_model ON rag.chunk_embeddings (tenant_id, model_key);
ALTER TABLE rag.chunk_embeddings
    ATTACH PARTITION rag.chunk_embeddings_shared FOR VALUES IN ('shared');

ALTER TABLE rag.chunk_embeddings ENABLE ROW LEVEL SECURITY;
ALTER TABLE rag.chunk_embeddings FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON rag.chunk_embeddings FOR ALL TO PUBLIC
    USING (tenant_id = rag.current_tenant_id())
    WITH CHECK (tenant_id = rag.current_tenant_id());
GRANT SELECT, INSERT, UPDATE, DELETE ON rag.chunk_embeddings TO rag_app;

-- Register a model: its HNSW index on the shared partition (0001's, same name) and on every
-- tenant partition, there with the tenant's recorded graph parameters (a new key has no
-- vectors yet, so these builds are of empty graphs). Owner-only: DDL. A tenant row is read
-- in its own tenant scope (RLS is FORCEd on rag.tenants, for the owner too).
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

-- Nearest chunks of one tenant for one model, by the tenant's plan (see the header). Same
-- signature, checks and result as 0006; p_ef_search and p_exact_max_rows apply to the shared
-- plan (p_ef_search also to an own partition whose plan records no ef_search). plan:
-- 'exact' | 'hnsw_iterative' (shared), 'own_hnsw', 'moving_exact'.
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
        SELECT count(*) INTO v_rows FROM (
            SELECT 1 FROM rag.chunk_embeddings e
             WHERE e.shard = 'shared' AND e.tenant_id = p_tenant_id
               AND e.model_key = p_model_key
             LIMIT p_exact_max_rows + 1) s;
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
