-- 0008: usage the token quota did not record. A question answered while Redis was
-- unreachable (the quota failing open during its grace period), or whose settle failed, has
-- spent tokens no quota counter holds. Its audit row now says so: quota_debt is
-- '<UTC day YYYYMMDD>:<reservation id>', the quota day and the id under which the tokens are
-- charged once Redis is back (rag_core.limits.settlement). The id makes the charge
-- idempotent in Redis; the column itself is never updated (the audit log stays append-only
-- for the application role).
ALTER TABLE rag.audit_log
    ADD COLUMN quota_debt text
        CONSTRAINT audit_log_quota_debt_format CHECK (quota_debt ~ '^[0-9]{8}:[0-9a-f]{32}$');

-- Settlement reads a tenant's recent debts; rows without one (nearly all) stay out of it.
CREATE INDEX audit_log_quota_debt ON rag.audit_log (tenant_id, occurred_at)
    WHERE quota_debt IS NOT NULL;
