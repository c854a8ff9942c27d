-- 0013: a read-only analytics role for analysts and dbt.
--
-- rag_analyst (LOGIN, not a superuser, NOBYPASSRLS, NOCREATEDB, NOCREATEROLE) reads schema
-- rag_reporting and builds its models in schema rag_analytics (USAGE and CREATE there); it
-- has no privilege on schema rag or anything in it. The application role gets nothing on
-- either schema.
--
-- rag_reporting holds one view per table analysts report on, named like it: audit_log,
-- ingestion_jobs, ingestion_items, ingestion_errors, tenants, feature_flags,
-- feature_flag_events, benchmark_runs. They show every tenant's rows but no tenant content:
-- no document text or title (ingestion_items.body, title, metadata), no question text
-- (audit_log.question_redacted: audit rows otherwise carry hashes, ids and measurements),
-- and no secrets (tenants.cache_epoch, feature_flags.cohort_salt). Tenant ids are shown as
-- text, so analysts need no access to the rag.tenant_id domain.
--
-- Whose rights read the base tables: the views are owned by rag_reporting_owner, a NOLOGIN
-- role made for it (nobody logs in as it; no role is made its member), granted SELECT on
-- exactly the columns the views show and nothing else: no privilege on rag.documents,
-- rag.chunks, rag.chunk_embeddings or any other table holding tenant content. The tables'
-- RLS is FORCEd, and a view reads its tables with its owner's rights and under its owner's
-- policies, so the owner needs a way past the tenant policy. Two were possible:
--   * BYPASSRLS on the owner. It is a role attribute, not a per-table grant: it would lift
--     RLS on every table the role is (or is later, by mistake) granted, content included;
--     and ingestion_items and audit_log themselves hold tenant content in some columns.
--   * chosen: a permissive SELECT policy `reporting_read ... TO rag_reporting_owner USING
--     (true)` on each reported tenant table and on no other. No role has BYPASSRLS; the
--     all-rows read exists only on these five tables, only for that role, only for SELECT,
--     and only through the columns it was granted. Every other role stays under
--     tenant_isolation alone (permissive policies of other roles do not apply to it).
-- rag doctor accepts the policy by name and exact form (rag_core.db.rls_catalog) and checks
-- the two roles (rag_core.db.reporting): the owner NOLOGIN and nobody's member, neither
-- role BYPASSRLS nor holding any privilege on a tenant table without a reporting view, or
-- on a withheld column.
--
-- rag_analytics may already exist, built by dbt as the admin before this migration: its
-- objects are handed to rag_analyst, so `rag dbt build` (now run as rag_analyst) can replace
-- them. The schema itself stays the admin's, so the admin can always drop it.
--
-- Roles are cluster-wide (as rag_app, 0001): created here when missing, left in place by
-- the rollback. Their passwords are set after the migrations by `rag db upgrade`
-- (rag_core.ops.services): the analytics role's from the embedded server's credentials, or
-- RAG_ANALYTICS_DB_PASSWORD. On a server where the admin is not a superuser it must be able
-- to SET ROLE to both roles (ALTER ... OWNER requires it).

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rag_reporting_owner') THEN
        CREATE ROLE rag_reporting_owner NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB
            NOCREATEROLE NOINHERIT;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;  -- created meanwhile by a migration of another database on this server
END
$$;
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rag_analyst') THEN
        CREATE ROLE rag_analyst LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;

-- What the views' owner may read: the shown columns only (column grants throughout, even
-- where every column is shown, so that a column a later migration adds is not readable
-- until a migration says so).
GRANT SELECT (tenant_id, display_name, corpus_version, created_at)
    ON rag.tenants TO rag_reporting_owner;
GRANT SELECT (audit_id, tenant_id, occurred_at, request_id, parent_request_id, kind,
              session_hash, batch_id, question_hash, model, prompt_version, chunk_ids,
              prompt_tokens, completion_tokens, latency_ms, cache_hit, retries,
              breaker_state, error_code, rollout_cohort, quota_debt)
    ON rag.audit_log TO rag_reporting_owner;
GRANT SELECT (job_id, tenant_id, source_uri, model_key, status, params, counts, error,
              created_at, started_at, finished_at, heartbeat_at, source_fingerprint)
    ON rag.ingestion_jobs TO rag_reporting_owner;
GRANT SELECT (job_id, item_no, tenant_id, source_uri, external_id, content_hash, status,
              attempts, chunk_count, document_id, error, updated_at)
    ON rag.ingestion_items TO rag_reporting_owner;
GRANT SELECT (error_id, job_id, tenant_id, source, line_no, record_id, reason, created_at)
    ON rag.ingestion_errors TO rag_reporting_owner;
GRANT SELECT (flag_key, enabled, rollout_percent, description, updated_at, state, stages,
              variant, force_on, force_off, created_at)
    ON rag.feature_flags TO rag_reporting_owner;
GRANT SELECT (event_id, flag_key, rollout_percent, enabled, reason, occurred_at, action,
              state, actor, details)
    ON rag.feature_flag_events TO rag_reporting_owner;
GRANT SELECT (run_id, benchmark, dataset, split, mode, config, metrics, timings, per_query,
              git_commit, started_at, finished_at)
    ON rag.benchmark_runs TO rag_reporting_owner;

-- Every tenant's rows of the reported tables, for the views' owner alone (see above).
DO $$
DECLARE
    tbl text;
BEGIN
    FOREACH tbl IN ARRAY ARRAY['tenants', 'audit_log', 'ingestion_jobs', 'ingestion_items',
                               'ingestion_errors']
    LOOP
        EXECUTE format('CREATE POLICY reporting_read ON rag.%I AS PERMISSIVE FOR SELECT '
                       'TO rag_reporting_owner USING (true)', tbl);
    END LOOP;
END
$$;

CREATE SCHEMA rag_reporting;

CREATE VIEW rag_reporting.tenants AS
SELECT tenant_id::text AS tenant_id, display_name, corpus_version, created_at
  FROM rag.tenants;

CREATE VIEW rag_reporting.audit_log AS
SELECT audit_id, tenant_id::text AS tenant_id, occurred_at, request_id, parent_request_id,
       kind, session_hash, batch_id, question_hash, model, prompt_version, chunk_ids,
       prompt_tokens, completion_tokens, latency_ms, cache_hit, retries, breaker_state,
       error_code, rollout_cohort, quota_debt
  FROM rag.audit_log;

CREATE VIEW rag_reporting.ingestion_jobs AS
SELECT job_id, tenant_id::text AS tenant_id, source_uri, model_key, status, params, counts,
       error, created_at, started_at, finished_at, heartbeat_at, source_fingerprint
  FROM rag.ingestion_jobs;

CREATE VIEW rag_reporting.ingestion_items AS
SELECT job_id, item_no, tenant_id::text AS tenant_id, source_uri, external_id, content_hash,
       status, attempts, chunk_count, document_id, error, updated_at
  FROM rag.ingestion_items;

CREATE VIEW rag_reporting.ingestion_errors AS
SELECT error_id, job_id, tenant_id::text AS tenant_id, source, line_no, record_id, reason,
       created_at
  FROM rag.ingestion_errors;

CREATE VIEW rag_reporting.feature_flags AS
SELECT flag_key, enabled, rollout_percent, description, updated_at, state, stages, variant,
       force_on, force_off, created_at
  FROM rag.feature_flags;

CREATE VIEW rag_reporting.feature_flag_events AS
SELECT event_id, flag_key, rollout_percent, enabled, reason, occurred_at, action, state,
       actor, details
  FROM rag.feature_flag_events;

CREATE VIEW rag_reporting.benchmark_runs AS
SELECT run_id, benchmark, dataset, split, mode, config, metrics, timings, per_query,
       git_commit, started_at, finished_at
  FROM rag.benchmark_runs;

GRANT USAGE ON SCHEMA rag_reporting TO rag_analyst;
GRANT SELECT ON ALL TABLES IN SCHEMA rag_reporting TO rag_analyst;

-- The views change hands last: ALTER ... OWNER needs the new owner to have CREATE on the
-- schema, which it keeps no longer than that.
GRANT CREATE ON SCHEMA rag_reporting TO rag_reporting_owner;
DO $$
DECLARE
    v text;
BEGIN
    FOR v IN SELECT c.relname FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = 'rag_reporting' AND c.relkind = 'v'
    LOOP
        EXECUTE format('ALTER VIEW rag_reporting.%I OWNER TO rag_reporting_owner', v);
    END LOOP;
END
$$;
REVOKE CREATE ON SCHEMA rag_reporting FROM rag_reporting_owner;

-- dbt's schema.
CREATE SCHEMA IF NOT EXISTS rag_analytics;
GRANT USAGE, CREATE ON SCHEMA rag_analytics TO rag_analyst;
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT c.relname, c.relkind FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = 'rag_analytics' AND c.relkind IN ('r', 'p', 'v', 'm')
                AND c.relowner <> 'rag_analyst'::regrole
    LOOP
        EXECUTE format('ALTER %s rag_analytics.%I OWNER TO rag_analyst',
                       CASE r.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                                      ELSE 'TABLE' END, r.relname);
    END LOOP;
END
$$;
