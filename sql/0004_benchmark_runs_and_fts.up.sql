-- 0004: benchmark runs, and full-text search over chunks for hybrid retrieval.
--
-- rag.benchmark_runs holds the results of evaluation runs (`rag eval retrieval`): metrics,
-- configuration, timings and the git commit. It is not tenant data (no tenant_id, no RLS):
-- the owner writes it, the application role may only read it.
--
-- Full text: a generated tsvector over each chunk's text (english configuration; the text
-- already carries the document title) with a GIN index, and rag.search_chunks_text, which
-- follows the same tenant rules as rag.search_chunks (SECURITY INVOKER so RLS applies inside,
-- an explicit tenant filter, and a refusal when the session tenant is unset or differs).

CREATE TABLE rag.benchmark_runs (
    run_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    benchmark   text NOT NULL CHECK (benchmark ~ '^[a-z0-9][a-z0-9_.-]{0,62}$'),
    dataset     text NOT NULL,
    split       text NOT NULL DEFAULT '',
    mode        text NOT NULL DEFAULT '',
    config      jsonb NOT NULL DEFAULT '{}'::jsonb,
    metrics     jsonb NOT NULL DEFAULT '{}'::jsonb,
    timings     jsonb NOT NULL DEFAULT '{}'::jsonb,
    per_query   jsonb NOT NULL DEFAULT '{}'::jsonb,
    git_commit  text,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX benchmark_runs_lookup
    ON rag.benchmark_runs (benchmark, dataset, split, started_at);
GRANT SELECT ON rag.benchmark_runs TO rag_app;

-- The two-argument to_tsvector (explicit configuration) is IMMUTABLE, as a generated column
-- requires. Adding the column rewrites rag.chunks once.
ALTER TABLE rag.chunks
    ADD COLUMN text_tsv tsvector GENERATED ALWAYS AS (to_tsvector('english'::regconfig, text))
    STORED;
CREATE INDEX chunks_text_tsv ON rag.chunks USING gin (text_tsv);

-- The k chunks of one tenant that best match p_query, ranked by ts_rank (term frequency; no
-- length normalisation: chunks are bounded by the chunker's token window anyway).
-- Measured on SciFact (test, 300 queries, chunk level, RRF k=60 with the dense ranking):
-- ts_rank alone nDCG@10 0.593, fused 0.694 (dense alone 0.661); ts_rank_cd (cover density)
-- alone 0.436, fused 0.627, i.e. worse than dense alone: with an OR query every occurrence of
-- any one query word is a cover, so a chunk repeating one common word outranks a chunk that
-- contains many different words of the query.
-- p_match chooses how the query becomes a tsquery:
--   'any'       (default) any of the query's lexemes (OR): natural-language questions rarely
--               contain every word of the passage that answers them, so AND finds little;
--   'all'       plainto_tsquery: every lexeme (AND; on SciFact only 19 of 300 queries
--               match any chunk at all);
--   'websearch' websearch_to_tsquery: "quoted phrases", -exclusions, "or", as users type them.
-- A query with nothing searchable (empty, or stop words only) returns no rows.
CREATE FUNCTION rag.search_chunks_text(
    p_tenant_id text,
    p_query text,
    p_k integer DEFAULT 10,
    p_match text DEFAULT 'any'
) RETURNS TABLE (
    chunk_id bigint, document_id bigint, tenant_id text, ordinal integer, text text,
    rank real
)
    LANGUAGE plpgsql STABLE SECURITY INVOKER
    AS $$
#variable_conflict use_column
DECLARE
    v_query tsquery;
BEGIN
    IF p_tenant_id IS NULL OR rag.current_tenant_id() IS DISTINCT FROM p_tenant_id THEN
        RAISE EXCEPTION 'text search for tenant % outside its tenant session', p_tenant_id
            USING ERRCODE = '42501';
    END IF;
    IF p_k IS NULL OR p_k < 1 OR p_k > 1000 THEN
        RAISE EXCEPTION 'k must be between 1 and 1000, got %', p_k USING ERRCODE = '22023';
    END IF;
    IF p_match = 'any' THEN
        -- OR of the query's distinct lexemes. Each lexeme is quoted for the tsquery parser
        -- (quotes and backslashes doubled), so no input can inject tsquery operators.
        SELECT string_agg('''' || replace(replace(l.lexeme, '\', '\\'), '''', '''''') || '''',
                          ' | ' ORDER BY l.lexeme)::tsquery
          INTO v_query
          FROM unnest(tsvector_to_array(to_tsvector('english'::regconfig,
                                                    coalesce(p_query, '')))) AS l(lexeme);
    ELSIF p_match = 'all' THEN
        v_query := plainto_tsquery('english'::regconfig, coalesce(p_query, ''));
    ELSIF p_match = 'websearch' THEN
        v_query := websearch_to_tsquery('english'::regconfig, coalesce(p_query, ''));
    ELSE
        RAISE EXCEPTION 'match must be any, all or websearch, got %', p_match
            USING ERRCODE = '22023';
    END IF;
    IF v_query IS NULL OR numnode(v_query) = 0 THEN
        RETURN;
    END IF;

    RETURN QUERY
        SELECT c.chunk_id, c.document_id, c.tenant_id::text, c.ordinal, c.text,
               ts_rank(c.text_tsv, v_query) AS rank
          FROM rag.chunks c
         WHERE c.tenant_id = p_tenant_id AND c.text_tsv @@ v_query
         ORDER BY 6 DESC, c.chunk_id
         LIMIT p_k;
END
$$;
REVOKE ALL ON FUNCTION rag.search_chunks_text(text, text, integer, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rag.search_chunks_text(text, text, integer, text) TO rag_app;
