"""Ingestion: read sources, validate, chunk, embed and store, as a resumable work queue."""
