-- 0013 rollback: the reporting views and schema, the reporting policies, and every privilege
-- the two roles hold in this database go. What rag_analyst built in rag_analytics (dbt's
-- models) is handed back to the admin, as it was before 0013; the schema goes when that
-- leaves it empty. The roles themselves are cluster-wide and stay, as rag_app does (0001):
-- other databases on the server may use them. Nothing of this database depends on them
-- afterwards, so once no database does, a DBA may DROP ROLE them.

-- CASCADE: dbt's views over these views (its staging models) go with them, as they could
-- not work without them; dbt's tables stay.
DROP SCHEMA rag_reporting CASCADE;

DO $$
DECLARE
    tbl text;
BEGIN
    FOREACH tbl IN ARRAY ARRAY['tenants', 'audit_log', 'ingestion_jobs', 'ingestion_items',
                               'ingestion_errors']
    LOOP
        EXECUTE format('DROP POLICY reporting_read ON rag.%I', tbl);
    END LOOP;
END
$$;

-- Column by column, as granted: a table-level REVOKE would leave an explicit ACL behind
-- on a table that had none.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT a.attrelid::regclass AS tbl, a.attname
               FROM pg_attribute a, aclexplode(a.attacl) g
              WHERE a.attrelid IN ('rag.tenants'::regclass, 'rag.audit_log'::regclass,
                                   'rag.ingestion_jobs'::regclass,
                                   'rag.ingestion_items'::regclass,
                                   'rag.ingestion_errors'::regclass,
                                   'rag.feature_flags'::regclass,
                                   'rag.feature_flag_events'::regclass,
                                   'rag.benchmark_runs'::regclass)
                AND g.grantee = 'rag_reporting_owner'::regrole
    LOOP
        EXECUTE format('REVOKE ALL (%I) ON %s FROM rag_reporting_owner', r.attname, r.tbl);
    END LOOP;
END
$$;

DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT c.relname, c.relkind FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = 'rag_analytics' AND c.relkind IN ('r', 'p', 'v', 'm')
                AND c.relowner = 'rag_analyst'::regrole
    LOOP
        EXECUTE format('ALTER %s rag_analytics.%I OWNER TO %I',
                       CASE r.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                                      ELSE 'TABLE' END, r.relname, current_user);
    END LOOP;
    IF NOT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE n.nspname = 'rag_analytics')
       AND NOT EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                        WHERE n.nspname = 'rag_analytics')
       AND NOT EXISTS (SELECT 1 FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
                        WHERE n.nspname = 'rag_analytics') THEN
        DROP SCHEMA rag_analytics;
    ELSE
        REVOKE ALL ON SCHEMA rag_analytics FROM rag_analyst;
    END IF;
END
$$;
