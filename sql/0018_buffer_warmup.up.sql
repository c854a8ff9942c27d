-- pg_prewarm, where the server has it and the migrating role may create it: a promotion
-- loads the tenant's new graphs into shared_buffers before its searches switch to them
-- (rag_core.db.buffer_warmup). `rag bench index` (reports/index/20261202T182853Z) had the
-- promoted 25k / 50k tenants at a server CPU p95 of 13 / 17 ms on graphs whose own-partition
-- twin answered at 6.4 / 7.3 ms: the graph pages came from the operating system's cache, a
-- read per page, after later promotions had pushed them out of shared_buffers.
-- Optional: it is a contrib module and not a trusted extension, so a managed server's
-- non-superuser owner cannot create it; without it promotions skip the warm-up (`rag doctor`
-- says so). The comment marks it as ours: the down file drops only what this file created.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_prewarm') THEN
        RETURN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_prewarm') THEN
        RAISE NOTICE 'pg_prewarm is not available on this server: promotions will not warm '
                     'their graphs';
        RETURN;
    END IF;
    BEGIN
        CREATE EXTENSION pg_prewarm SCHEMA public;
        COMMENT ON EXTENSION pg_prewarm IS 'created by rag migration 0018 (buffer warm-up)';
    EXCEPTION WHEN insufficient_privilege THEN
        RAISE NOTICE 'pg_prewarm not created (%): promotions will not warm their graphs',
                     SQLERRM;
    END;
END
$$;
