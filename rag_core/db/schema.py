"""Facts about the schema that code outside ``sql/`` relies on."""

from __future__ import annotations

# Every table that holds tenant rows: RLS must be enabled and forced on each (the doctor
# checks it; the isolation probe attacks each).
TENANT_TABLES: tuple[str, ...] = (
    "tenants", "documents", "chunks", "chunk_embeddings", "ingestion_jobs", "audit_log",
    "ingestion_items", "ingestion_errors", "batch_jobs", "batch_events", "api_keys",
)

# Policies that let a table's owner read one row by a key other than the tenant, for a
# lookup that must run before any tenant is known: a SECURITY DEFINER function owned by the
# owner, whom FORCEd RLS confines like every other role unless it is a superuser. Each is
# for SELECT alone, for the table's owner alone, and admits only the row named by a setting
# the function sets itself (and clears before returning). rag doctor accepts such a policy
# only by its (schema, table, name) and exactly this USING; anything else about it is
# judged like any other policy. (schema, table, policy) -> its deparsed USING.
OWNER_LOOKUP_POLICIES: dict[tuple[str, str, str], str] = {
    # rag.api_key_tenant: the tenant of a live API key (migration 0010).
    ("rag", "api_keys", "api_key_resolution"):
        "(key_id = current_setting('app.api_key_id'::text, true))",
}

# --- analysts (migration 0013) -----------------------------------------------------------
# Analysts and dbt connect as the analytics role (Settings.analytics_db_role, default
# rag_analyst): it reads schema REPORTING_SCHEMA and builds in ANALYTICS_SCHEMA, nothing else.
# The views of REPORTING_SCHEMA are owned by REPORTING_OWNER, a NOLOGIN role whose only way
# past the tenant policies is one SELECT policy per reported tenant table, REPORTING_POLICY,
# for it alone, USING (true); it is granted only the columns the views show.
REPORTING_SCHEMA = "rag_reporting"
ANALYTICS_SCHEMA = "rag_analytics"
REPORTING_OWNER = "rag_reporting_owner"
REPORTING_POLICY = "reporting_read"
# Tenant tables behind a reporting view, each with the columns no view shows (tenant content
# or secrets: document text and titles, redacted questions, the cache epoch). Every other
# tenant table holds tenant content and is out of the reporting roles' reach altogether.
REPORTED_TENANT_TABLES: dict[str, tuple[str, ...]] = {
    "tenants": ("cache_epoch",),
    "audit_log": ("question_redacted",),
    "ingestion_jobs": (),
    "ingestion_items": ("title", "body", "metadata"),
    "ingestion_errors": (),
}
# Global tables behind a reporting view (no tenant rows), with the columns no view shows.
REPORTED_GLOBAL_TABLES: dict[str, tuple[str, ...]] = {
    "feature_flags": ("cohort_salt",),
    "feature_flag_events": (),
    "benchmark_runs": (),
}
