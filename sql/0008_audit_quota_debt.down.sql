-- Undo 0008: the debts of unsettled rows are forgotten with the column.
DROP INDEX rag.audit_log_quota_debt;
ALTER TABLE rag.audit_log DROP COLUMN quota_debt;
