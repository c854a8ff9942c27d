DROP FUNCTION IF EXISTS rag.search_chunks_text(text, text, integer, text);
DROP INDEX IF EXISTS rag.chunks_text_tsv;
ALTER TABLE rag.chunks DROP COLUMN IF EXISTS text_tsv;
DROP TABLE IF EXISTS rag.benchmark_runs;
