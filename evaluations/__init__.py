"""Benchmarks and evaluations of the platform, mounted as ``rag eval`` and ``rag bench`` by
:mod:`evaluations.cli` (and run as Prefect flows by ``flows/benchmark_*``).

One package per concern:

* :mod:`evaluations.common`: the BEIR reader, retrieval metrics (ranx), the one percentile
  function and the report writer every benchmark shares;
* :mod:`evaluations.retrieval`: ``rag eval retrieval``;
* :mod:`evaluations.embeddings`: ``rag bench embeddings``;
* :mod:`evaluations.index`: ``rag bench index``;
* :mod:`evaluations.ingest` and :mod:`evaluations.query`: ``rag bench ingest`` / ``query``;
* :mod:`evaluations.pii`: the PII redactor's precision and recall
  (``python -m evaluations.pii_report``).

Results travel as typed objects; each has ``as_dict()``, the JSON object ``--json`` prints
and ``results.json`` stores.
"""
