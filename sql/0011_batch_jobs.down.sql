-- Undo 0011: batch jobs and their events are dropped with the tables (queued jobs are lost;
-- the questions were only ever kept redacted, the answers are in the audit log).
DROP FUNCTION rag.claim_batch_job(text, double precision);
DROP TABLE rag.batch_events;
DROP TABLE rag.batch_jobs;
