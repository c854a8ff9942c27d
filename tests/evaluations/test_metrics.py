"""Retrieval metrics against hand-computed values: graded relevance (linear gain, as
pytrec_eval/MTEB), cut-offs, ties, queries with nothing relevant retrieved or no results."""

from __future__ import annotations

import math
import socket
from typing import Any

import pytest

from evaluations.common.metrics import METRICS, evaluate_run, rank_documents


def log2(x: float) -> float:
    return math.log(x, 2)


def test_graded_ndcg_uses_linear_gain_like_pytrec_eval() -> None:
    # Grades: a=2, b=1, d=1 relevant; c judged non-relevant. Ranking: b x a c d.
    qrels = {"q": {"a": 2, "b": 1, "c": 0, "d": 1}}
    run = {"q": {"b": 0.9, "x": 0.8, "a": 0.7, "c": 0.6, "d": 0.5}}
    dcg = 1 / log2(2) + 2 / log2(4) + 1 / log2(6)  # b at 1, a at 3, d at 5
    idcg = 2 / log2(2) + 1 / log2(3) + 1 / log2(4)  # a, b, d
    exponential = (1 / log2(2) + 3 / log2(4) + 1 / log2(6)) / \
        (3 / log2(2) + 1 / log2(3) + 1 / log2(4))
    result = evaluate_run(qrels, run)
    assert result.metrics["ndcg@10"] == pytest.approx(dcg / idcg, abs=1e-9)
    assert result.metrics["ndcg@10"] == pytest.approx(0.762346, abs=1e-6)
    assert abs(result.metrics["ndcg@10"] - exponential) > 0.05  # not Burges' 2^rel - 1
    assert result.metrics["recall@10"] == 1.0
    assert result.metrics["recall@100"] == 1.0
    assert result.metrics["mrr@10"] == 1.0
    assert result.queries == 1 and result.missing_from_run == []


def test_cutoffs_at_10_and_100() -> None:
    # 12 non-relevant documents, then the two relevant ones at ranks 13 and 14... and a third
    # relevant one never retrieved.
    ranking = [f"n{i:02d}" for i in range(12)] + ["r1", "r2"]
    run = {"q": {doc: 100.0 - i for i, doc in enumerate(ranking)}}
    qrels = {"q": {"r1": 1, "r2": 1, "r3": 1}}
    result = evaluate_run(qrels, run)
    assert result.metrics["ndcg@10"] == 0.0
    assert result.metrics["recall@10"] == 0.0
    assert result.metrics["recall@100"] == pytest.approx(2 / 3)
    assert result.metrics["mrr@10"] == 0.0

    # The first relevant document at rank 4: MRR@10 = 1/4; nDCG@10 = (1/log2 5) / IDCG of
    # three relevant documents.
    run = {"q": {"n0": 4.0, "n1": 3.0, "n2": 2.0, "r2": 1.0}}
    result = evaluate_run(qrels, run)
    assert result.metrics["mrr@10"] == pytest.approx(0.25)
    assert result.metrics["ndcg@10"] == pytest.approx(
        (1 / log2(5)) / (1 + 1 / log2(3) + 1 / log2(4)))
    assert result.metrics["recall@10"] == pytest.approx(1 / 3)


def test_ties_are_broken_by_document_id_descending_like_trec_eval() -> None:
    assert rank_documents({"a": 1.0, "b": 1.0, "c": 2.0, "aa": 1.0}) == ["c", "b", "aa", "a"]
    # Insertion order does not matter.
    assert rank_documents({"aa": 1.0, "a": 1.0, "c": 2.0, "b": 1.0}) == ["c", "b", "aa", "a"]
    # d1 ties with d2 and comes after it ("d2" > "d1"): rank 3.
    qrels = {"q": {"d1": 1}}
    run = {"q": {"d1": 0.5, "d2": 0.5, "d0": 0.9}}
    result = evaluate_run(qrels, run)
    assert result.metrics["mrr@10"] == pytest.approx(1 / 3)
    assert result.metrics["ndcg@10"] == pytest.approx(1 / log2(4))
    # ... and if the relevant document has the larger id it wins the tie: rank 2.
    result = evaluate_run({"q": {"d2": 1}}, run)
    assert result.metrics["mrr@10"] == pytest.approx(1 / 2)


def test_query_with_nothing_relevant_retrieved_scores_zero() -> None:
    result = evaluate_run({"q": {"r": 1}}, {"q": {"x": 0.9, "y": 0.8}})
    assert result.per_query["q"] == dict.fromkeys(METRICS, 0.0)
    assert result.queries == 1


def test_query_missing_from_run_counts_as_zero_and_extra_run_queries_are_ignored() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}}
    run = {"q1": {"a": 0.9}, "q9": {"b": 0.9}}  # q2 missing, q9 unjudged
    result = evaluate_run(qrels, run)
    assert result.per_query["q1"] == dict.fromkeys(METRICS, 1.0)
    assert result.per_query["q2"] == dict.fromkeys(METRICS, 0.0)
    assert "q9" not in result.per_query
    assert result.missing_from_run == ["q2"]
    assert result.queries == 2
    assert result.metrics == dict.fromkeys(METRICS, 0.5)
    # An empty result list is the same as a missing query.
    assert evaluate_run(qrels, {"q1": {"a": 0.9}, "q2": {}}).metrics == result.metrics


def test_queries_without_relevant_judgements_are_skipped() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"b": 0}}
    result = evaluate_run(qrels, {"q1": {"a": 0.9}, "q2": {"b": 0.9}})
    assert result.queries == 1
    assert result.skipped_no_relevant == ["q2"]
    assert result.metrics["ndcg@10"] == 1.0


def test_mean_over_queries_in_any_key_order() -> None:
    # Query order differs between qrels and run: values must still pair up by query id.
    qrels = {"q2": {"b": 1}, "q1": {"a": 1}, "q3": {"c": 1}}
    run = {"q1": {"x": 0.9, "a": 0.8}, "q3": {"c": 0.1}, "q2": {"y": 0.5, "z": 0.4, "b": 0.3}}
    result = evaluate_run(qrels, run)
    assert result.per_query["q1"]["mrr@10"] == pytest.approx(1 / 2)
    assert result.per_query["q2"]["mrr@10"] == pytest.approx(1 / 3)
    assert result.per_query["q3"]["mrr@10"] == 1.0
    assert result.metrics["mrr@10"] == pytest.approx((1 / 2 + 1 / 3 + 1) / 3)
    assert result.per_query["q2"]["ndcg@10"] == pytest.approx(1 / log2(4))
    # A single metric works too (ranx mishandles that case on its own).
    single = evaluate_run(qrels, run, ["mrr@10"])
    assert single.metrics == {"mrr@10": pytest.approx((1 / 2 + 1 / 3 + 1) / 3)}


def test_invalid_input_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported metric"):
        evaluate_run({"q": {"a": 1}}, {"q": {"a": 1.0}}, ["map@10"])
    with pytest.raises(ValueError, match="unsupported metric"):
        evaluate_run({"q": {"a": 1}}, {"q": {"a": 1.0}}, ["ndcg"])
    with pytest.raises(ValueError, match="not finite"):
        evaluate_run({"q": {"a": 1}}, {"q": {"a": float("nan")}})


def test_metrics_never_touch_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    result = evaluate_run({"q": {"a": 2, "b": 1}}, {"q": {"b": 0.9, "a": 0.1}})
    assert result.metrics["ndcg@10"] == pytest.approx(
        (1 + 2 / log2(3)) / (2 + 1 / log2(3)))
