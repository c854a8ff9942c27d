"""``rag bench query``: query latency cached vs uncached, and what batching saves."""
