-- 0010 rollback: API keys go (their policies and grants with the table, the function's grant
-- with the function). Every key stops resolving: the HTTP service then refuses every request.

DROP FUNCTION rag.api_key_tenant(text, text);
DROP TABLE rag.api_keys;
