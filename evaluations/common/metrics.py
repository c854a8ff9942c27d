"""Retrieval metrics: nDCG@10, Recall@10, Recall@100 and MRR@10, computed with ranx.

The numbers are meant to be comparable with BEIR and MTEB, which compute them with
pytrec_eval (trec_eval 9): the definitions below are the trec_eval ones.

- **nDCG@k** uses *linear* gain, ``rel_i / log2(i + 1)`` for the document at rank ``i``
  (1-based), normalised by the same sum over the ideal ranking of the query's judged
  documents, cut at ``k``. This is ranx's ``ndcg`` (Järvelin & Kekäläinen); ranx's
  ``ndcg_burges`` is the exponential-gain variant ``(2^rel - 1) / log2(i + 1)`` and is *not*
  what BEIR/MTEB report (the two differ as soon as grades above 1 exist, e.g. NFCorpus).
- **Recall@k**: relevant documents in the top ``k`` / all relevant documents of the query.
- **MRR@k**: ``1 / rank`` of the first relevant document within the top ``k``, else 0.

A document is relevant when its grade is >= 1; grades <= 0 count as not relevant (gain 0).

Conventions, applied before ranx sees anything:

- **Ties**: documents with equal scores are ordered by document id, *descending* (string
  comparison), exactly as trec_eval/pytrec_eval break ties (``comp_sim_docno``). The run is
  then handed to ranx as explicit ranks (strictly decreasing scores), because ranx sorts
  with an unstable sort and would otherwise order ties arbitrarily.
- **Queries evaluated**: every query of the qrels with at least one relevant document.
  Queries with no relevant judgement are skipped (their recall is undefined) and listed;
  queries that appear only in the run are ignored.
- **A query missing from the run** (or with an empty result list) scores 0 on every metric
  and counts in the mean. (pytrec_eval silently leaves such a query out of its output, which
  would inflate the mean; a retrieval system that returns nothing must not look better.)

ranx compiles its metrics with numba on first use (seconds, cached on disk afterwards); it
never touches the network on this path (ranxhub and the downloader are only used by
``Run.from_ranxhub``). It is imported lazily, so importing this module stays cheap, with its
compile-time warnings silenced (numba's "unsafe cast" type-safety warning, and Python 3.11's
invalid-escape DeprecationWarnings in ranx's sources), which would otherwise fail a test run
that turns warnings into errors. numba's ``workqueue`` threading layer is not thread safe,
so evaluations are serialised by a lock.
"""

from __future__ import annotations

import contextlib
import math
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Qrels = Mapping[str, Mapping[str, int]]
"""query id -> {document id: relevance grade}."""

RunScores = Mapping[str, Mapping[str, float]]
"""query id -> {document id: score}; higher is better."""

METRICS: tuple[str, ...] = ("ndcg@10", "recall@10", "recall@100", "mrr@10")
_SUPPORTED = ("ndcg", "recall", "mrr")

_lock = threading.Lock()
_ranx_evaluate: Callable[..., Any] | None = None


@dataclass(frozen=True)
class Evaluation:
    """Mean metrics over the evaluated queries, and each query's own values."""

    metrics: dict[str, float]
    per_query: dict[str, dict[str, float]]
    queries: int
    missing_from_run: list[str] = field(default_factory=list)
    skipped_no_relevant: list[str] = field(default_factory=list)

    def as_dict(self, digits: int = 5) -> dict[str, Any]:
        return {**{m: round(v, digits) for m, v in self.metrics.items()},
                "queries": self.queries, "missing_from_run": len(self.missing_from_run),
                "skipped_no_relevant": len(self.skipped_no_relevant)}


def rank_documents(scores: Mapping[str, float]) -> list[str]:
    """Document ids best first: score descending, ties by document id descending (trec_eval)."""
    for doc_id, score in scores.items():
        if not math.isfinite(score):
            raise ValueError(f"score of document {doc_id!r} is not finite: {score!r}")
    return [doc for doc, _ in sorted(scores.items(), key=lambda kv: (kv[1], kv[0]),
                                     reverse=True)]


def evaluate_run(qrels: Qrels, run: RunScores,
                 metrics: Sequence[str] = METRICS) -> Evaluation:
    """Evaluate ``run`` against ``qrels`` (see the module docstring for the conventions)."""
    for metric in metrics:
        _check_metric(metric)
    relevant = {q: {d: int(g) for d, g in docs.items() if int(g) >= 1}
                for q, docs in qrels.items()}
    queries = sorted(q for q, docs in relevant.items() if docs)
    skipped = sorted(q for q, docs in relevant.items() if not docs)
    rankings = {q: rank_documents(run.get(q, {})) for q in queries}
    missing = [q for q in queries if not rankings[q]]
    scored = [q for q in queries if rankings[q]]

    per_query: dict[str, dict[str, float]] = {q: dict.fromkeys(metrics, 0.0) for q in queries}
    if scored:
        # Same query order in both dicts: ranx pairs them up by position.
        ranx_qrels = {q: dict(relevant[q]) for q in scored}
        ranx_run = {q: {d: float(len(rankings[q]) - i) for i, d in enumerate(rankings[q])}
                    for q in scored}
        values = _evaluate_with_ranx(ranx_qrels, ranx_run, list(metrics))
        for metric in metrics:
            for q, value in zip(scored, values[metric], strict=True):
                per_query[q][metric] = float(value)
    means = {m: (sum(per_query[q][m] for q in queries) / len(queries) if queries else 0.0)
             for m in metrics}
    return Evaluation(means, per_query, len(queries), missing, skipped)


def _check_metric(metric: str) -> None:
    name, _, cutoff = metric.partition("@")
    if name not in _SUPPORTED or not cutoff.isdigit() or int(cutoff) < 1:
        raise ValueError(f"unsupported metric {metric!r}: use one of {_SUPPORTED} with a "
                         "cutoff, e.g. ndcg@10")


def _evaluate_with_ranx(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]],
                        metrics: list[str]) -> dict[str, Sequence[float]]:
    evaluate = _load_ranx()
    # ranx 0.3.21 mishandles a single metric with return_mean=False (it indexes its result by
    # the bare metric name): always ask for at least two entries.
    asked = list(dict.fromkeys(metrics))
    with _lock, _quiet():
        result = evaluate(qrels, run, asked if len(asked) > 1 else asked * 2,
                          return_mean=False, threads=1, save_results_in_run=False)
    return {m: list(result[m]) for m in metrics}


def _load_ranx() -> Callable[..., Any]:
    global _ranx_evaluate
    with _lock:
        if _ranx_evaluate is None:
            with _quiet():
                from ranx import evaluate

            _ranx_evaluate = evaluate
        return _ranx_evaluate


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the warnings ranx/numba emit while importing and compiling (see above)."""
    with warnings.catch_warnings():
        for category in _warning_categories():
            warnings.simplefilter("ignore", category)
        yield


def _warning_categories() -> Iterable[type[Warning]]:
    yield DeprecationWarning
    yield SyntaxWarning
    try:
        from numba.core.errors import NumbaWarning
    except ImportError:  # pragma: no cover - numba is a dependency of ranx
        return
    yield NumbaWarning
