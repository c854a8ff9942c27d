"""The HTTP service (``rag serve``): FastAPI routes over the composition root.

It sits above :mod:`rag_core.composition` and below the CLI: a route turns a request into a
call on the :class:`~rag_core.composition.Platform`'s objects and the result (or a typed
error) into JSON or RFC 9457 ``application/problem+json``; nothing in here answers a
question or touches SQL itself.
"""
