-- Rollback of 0001: drops the schema and everything in it. The rag_app role is cluster-wide
-- (other databases on the server may use it) and the vector extension may serve other
-- schemas, so both are left in place.
DROP SCHEMA rag CASCADE;
