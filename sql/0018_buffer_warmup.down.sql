-- 0018 rollback: pg_prewarm dropped if 0018 created it (its comment says so); an extension a
-- DBA installed before stays.
DO $$
BEGIN
    IF obj_description((SELECT oid FROM pg_extension WHERE extname = 'pg_prewarm'),
                       'pg_extension') = 'created by rag migration 0018 (buffer warm-up)' THEN
        DROP EXTENSION pg_prewarm;
    END IF;
END
$$;
