"""``rag bench load``: the HTTP service (``rag serve``, 2 workers) under a real HTTP load
generator (wrk), cached and uncached, with every request's audit row counted."""
