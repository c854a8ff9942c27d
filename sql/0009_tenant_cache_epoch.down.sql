-- 0009 rollback: tenants lose their cache epoch. Cache entries written under an epoch are
-- keyed by it and are never read by a version without it; they expire by their TTL.

ALTER TABLE rag.tenants DROP COLUMN cache_epoch;
