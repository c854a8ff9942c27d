DROP INDEX IF EXISTS rag.audit_log_request;
