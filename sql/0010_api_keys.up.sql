-- 0010: per-tenant API keys for the HTTP service. The key alone decides the tenant.
--
-- A key is 'rag_<key_id>_<secret>' (rag_core.db.api_keys): key_id is 12 hex characters,
-- public (listed, logged), and finds the row; the secret is 256 bits from the OS CSPRNG.
-- Only the sha256 of the whole key is stored, never the key. A fast unsalted hash is right
-- here, unlike for passwords: salts and slow hashes (bcrypt, argon2) exist to stop guessing
-- of low-entropy secrets, and nobody guesses 256 random bits, fast hash or not. A slow hash
-- would instead cost every request that misses the resolver's cache.
--
-- Tenant rows like any other: RLS ENABLEd and FORCEd with the tenant predicate. The tenant
-- reference is tenant_id itself (rag.tenants' key), and the rotation link carries the
-- tenant (like 0007), so a key can never name another tenant's key as its replacement.
--
-- Keys are issued, rotated and revoked by administration (rag tenant key ..., the owner's
-- connection): the application role may read the non-secret columns in its tenant's session
-- (never key_hash) and write nothing, so a compromised runtime cannot mint a key.
--
-- Resolution happens before any tenant is known, so it cannot run in a tenant session:
-- rag.api_key_tenant (SECURITY DEFINER, owned by the owner, EXECUTE for rag_app alone)
-- answers "which tenant, if any, has this live key" and nothing else. FORCEd RLS confines
-- the owner too (unless it is a superuser), so the function needs one policy of its own,
-- api_key_resolution: for the owner alone, SELECT alone, the one row whose key_id the
-- function has put in app.api_key_id. A runtime cannot use it (rag_app is not the owner,
-- and the pool refuses a role that is a member of it); rag doctor accepts it by name and
-- exact shape only (rag_core.db.schema.OWNER_LOOKUP_POLICIES).

CREATE TABLE rag.api_keys (
    key_id      text PRIMARY KEY CHECK (key_id ~ '^[0-9a-f]{12}$'),
    tenant_id   rag.tenant_id NOT NULL REFERENCES rag.tenants (tenant_id) ON DELETE CASCADE,
    key_hash    text NOT NULL CHECK (key_hash ~ '^[0-9a-f]{64}$'),
    name        text NOT NULL DEFAULT '' CHECK (length(name) <= 100),
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz,
    -- The key that replaced this one (rag tenant key rotate); a replaced key is revoked.
    replaced_by text,
    CONSTRAINT api_keys_tenant_key_key UNIQUE (tenant_id, key_id),
    CONSTRAINT api_keys_tenant_replaced_by_fkey FOREIGN KEY (tenant_id, replaced_by)
        REFERENCES rag.api_keys (tenant_id, key_id),
    CONSTRAINT api_keys_replaced_is_revoked CHECK (replaced_by IS NULL OR revoked_at IS NOT NULL)
);

ALTER TABLE rag.api_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE rag.api_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON rag.api_keys FOR ALL TO PUBLIC
    USING (tenant_id = rag.current_tenant_id())
    WITH CHECK (tenant_id = rag.current_tenant_id());

-- The owner is whoever runs this migration (it has just created the table).
DO $$
BEGIN
    EXECUTE format(
        'CREATE POLICY api_key_resolution ON rag.api_keys AS PERMISSIVE FOR SELECT TO %I '
        'USING (key_id = current_setting(''app.api_key_id'', true))', current_user);
END
$$;

GRANT SELECT (key_id, tenant_id, name, created_at, revoked_at, replaced_by)
    ON rag.api_keys TO rag_app;

-- The tenant of the live key (key_id, sha256 hex of the whole key), else NULL; it says
-- nothing about why (unknown, revoked, wrong secret). The hash is compared in SQL, not in
-- constant time: a timing difference could only tell how many leading characters of a
-- sha256 an attacker got right, which without a preimage says nothing about the secret.
-- app.api_key_id is cleared before the function returns, so it never outlives the lookup
-- in the caller's transaction (an error in between aborts that transaction, which reverts
-- the setting). Not a SET clause on the function: a role that is not a superuser may not
-- attach one for a custom setting. search_path is fixed against a caller's.
CREATE FUNCTION rag.api_key_tenant(p_key_id text, p_key_hash text) RETURNS text
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_tenant text;
BEGIN
    IF p_key_id IS NULL OR p_key_hash IS NULL OR p_key_id !~ '^[0-9a-f]{12}$'
            OR p_key_hash !~ '^[0-9a-f]{64}$' THEN
        RETURN NULL;
    END IF;
    PERFORM set_config('app.api_key_id', p_key_id, true);
    SELECT k.tenant_id INTO v_tenant FROM rag.api_keys k
     WHERE k.key_id = p_key_id AND k.key_hash = p_key_hash AND k.revoked_at IS NULL;
    PERFORM set_config('app.api_key_id', '', true);
    RETURN v_tenant;
END
$$;
REVOKE ALL ON FUNCTION rag.api_key_tenant(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rag.api_key_tenant(text, text) TO rag_app;
