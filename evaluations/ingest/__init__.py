"""``rag bench ingest``: raw embedding throughput against end-to-end ingestion throughput."""
