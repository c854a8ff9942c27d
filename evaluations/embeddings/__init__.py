"""``rag bench embeddings``: FastEmbed fp32, FastEmbed int8 and sentence-transformers on the
same all-MiniLM-L6-v2 weights (see :mod:`evaluations.embeddings.benchmark`).

Deliberately empty of imports: every backend worker process starts with
``python -m evaluations.embeddings.worker``, which imports this package first, and the
cold-load time it reports must not include anything the worker does not need.
"""
