-- 0009: a cache epoch per tenant, drawn at random when the tenant row is created.
-- Every cache key (answers, query embeddings) carries it. Deleting a tenant purges its Redis
-- keys, but a purge can miss keys (Redis down at the time, a write racing the purge): a
-- tenant id created again gets a new epoch, so it can never read what the old tenant left.
-- The application role reads it with the row (its SELECT on rag.tenants covers the column);
-- it cannot change it (its UPDATE is limited to corpus_version).

ALTER TABLE rag.tenants
    ADD COLUMN cache_epoch uuid NOT NULL DEFAULT gen_random_uuid();
