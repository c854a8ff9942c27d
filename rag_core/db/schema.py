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
