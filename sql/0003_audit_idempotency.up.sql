-- 0003: audit rows are written at most once per request id, so a spooled batch that is
-- replayed after a database outage (or replayed twice) never duplicates a row.
CREATE UNIQUE INDEX audit_log_request ON rag.audit_log (request_id);
