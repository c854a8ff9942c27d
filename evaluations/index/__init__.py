"""``rag bench index``: vector index strategies per tenant size (see
:mod:`evaluations.index.stages`)."""
