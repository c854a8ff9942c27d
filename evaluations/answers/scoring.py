"""ragas' metrics over the claims of ``rag eval answers``: each claim's sample, its scores,
and the run's summary per metric.

Offline (no LLM), with ragas' own metric classes on a ``SingleTurnSample`` each:

=====================================  =================================================
``id_based_context_precision``         share of the retrieved documents (the documents of
                                       the retrieved chunks) that the qrels judge relevant
``id_based_context_recall``            share of the relevant documents retrieved
``non_llm_context_precision_with_      ranked precision of the retrieved chunks, a chunk
reference``                            counting as relevant when its Levenshtein similarity
                                       to a relevant document's text is ≥ 0.5
``non_llm_context_recall``             share of the relevant documents' texts matched
                                       (similarity > 0.5) by a retrieved chunk
``id_based_citation_precision`` /      the two ID-based metrics over the documents the
``id_based_citation_recall``           answer *cites* (its citations' chunks) instead
``non_llm_string_similarity``          1 - normalised Levenshtein distance of the answer to
                                       the claim's reference answer
=====================================  =================================================

A relevant document's text is its title and body as the corpus has them (the shape of a
stored chunk: title, newline, text); only documents present in the corpus have one, while
the ID-based recall counts every relevant document of the qrels. SciFact claims have no
reference answers, so ``non_llm_string_similarity`` is computed only for queries that carry
a ``reference`` (or ``answer``) string in ``queries.jsonl`` and skipped otherwise, with that
reason. The extractive answerer's label (``[extractive answer: …]``) is not part of the
answer that is scored.

Judged by an LLM (:mod:`evaluations.answers.judge`), ragas' ``collections`` metrics:
``faithfulness`` (the answer's statements supported by the retrieved chunks) and
``answer_relevancy`` (questions generated from the answer, compared with the claim by the
platform's embedder).

Each (claim, metric) ends in one of: scored, undefined (ragas returned NaN: e.g. no
statement in the answer, no retrieved document), not applicable (an input is missing: no
answer, no citation, no reference) or failed (the judge's calls failed). A metric's score is
the mean of its scored claims; a metric with any failed claim has no score (``None``) and is
listed in ``failed`` with the first error, so a half-answered judge never passes for a low
score.
"""

from __future__ import annotations

import asyncio
import math
import warnings
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from evaluations.answers.judge import JudgeSettings, JudgeStats, PlatformEmbeddings, judge_llm
from rag_core.answering.extractive import EXTRACTIVE_LABEL
from rag_core.embeddings.base import Embedder

__all__ = ["JUDGED_METRICS", "OFFLINE_METRICS", "ClaimSample", "MetricSummary", "Scores",
           "score_claims", "scored_answer"]

OFFLINE_METRICS: tuple[str, ...] = (
    "id_based_context_precision", "id_based_context_recall",
    "non_llm_context_precision_with_reference", "non_llm_context_recall",
    "id_based_citation_precision", "id_based_citation_recall", "non_llm_string_similarity")
JUDGED_METRICS: tuple[str, ...] = ("faithfulness", "answer_relevancy")

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class ClaimSample:
    """One claim as the product handled it, with what the dataset says about it."""

    claim_id: str
    claim: str
    response: str | None  # the answer scored (None: the query path gave no answer)
    retrieved_ids: list[str]  # the document of each retrieved chunk, best first
    retrieved_contexts: list[str]  # the chunks' texts, as the answerer received them
    cited_ids: list[str]  # the documents of the answer's citations
    relevant_ids: list[str]  # the qrels' relevant documents (grade >= 1)
    reference_contexts: list[str]  # the texts of the relevant documents in the corpus
    reference: str | None = None  # a reference answer, where the dataset has one


@dataclass
class MetricSummary:
    value: float | None = None
    scored: int = 0
    undefined: int = 0
    not_applicable: int = 0
    failed: int = 0
    first_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"value": self.value, "scored": self.scored, "undefined": self.undefined,
                "not_applicable": self.not_applicable, "failed": self.failed}


@dataclass
class Scores:
    per_claim: dict[str, dict[str, float | None]] = field(default_factory=dict)
    summary: dict[str, MetricSummary] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # metric -> why not computed
    judge: JudgeStats | None = None

    @property
    def metrics(self) -> dict[str, float | None]:
        return {name: s.value for name, s in self.summary.items()}

    @property
    def failed(self) -> dict[str, str]:
        return {name: f"{s.failed} of {s.failed + s.scored + s.undefined} claims' judge calls "
                      f"failed ({s.first_error})"
                for name, s in self.summary.items() if s.failed}


def scored_answer(answer: str | None) -> str | None:
    """The answer as scored: without the extractive answerer's label."""
    if answer is None:
        return None
    text = answer.removeprefix(EXTRACTIVE_LABEL).strip()
    return text or None


_Outcome = float | None | BaseException  # a value (NaN: undefined), not applicable, failed


def _read_ragas_user_id() -> None:
    """ragas' log formatter stamps each record with a user id it reads from a file that it
    opens and never closes (``ragas._analytics.get_userid``, cached after the first call):
    read it once here, with the unclosed file's ResourceWarning silenced. Nothing is sent
    (``RAGAS_DO_NOT_TRACK=true``, :mod:`rag_core.common.offline`)."""
    from ragas._analytics import get_userid

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        get_userid()


def _offline_metrics() -> dict[str, Any]:
    with warnings.catch_warnings():
        # ragas 0.4 keeps its non-LLM single-turn metrics only under the deprecated names
        warnings.simplefilter("ignore", DeprecationWarning)
        from ragas.metrics import (
            IDBasedContextPrecision,
            IDBasedContextRecall,
            NonLLMContextPrecisionWithReference,
            NonLLMContextRecall,
            NonLLMStringSimilarity,
        )
    return {
        "id_based_context_precision": IDBasedContextPrecision(),
        "id_based_context_recall": IDBasedContextRecall(),
        "non_llm_context_precision_with_reference": NonLLMContextPrecisionWithReference(),
        "non_llm_context_recall": NonLLMContextRecall(),
        "id_based_citation_precision": IDBasedContextPrecision(
            name="id_based_citation_precision"),
        "id_based_citation_recall": IDBasedContextRecall(name="id_based_citation_recall"),
        "non_llm_string_similarity": NonLLMStringSimilarity(),
    }


def _offline_sample(name: str, claim: ClaimSample) -> dict[str, Any] | None:
    """The sample's fields for metric ``name``; None when an input is missing."""
    if name in ("id_based_context_precision", "id_based_context_recall"):
        return {"retrieved_context_ids": claim.retrieved_ids,
                "reference_context_ids": claim.relevant_ids} \
            if claim.retrieved_ids and claim.relevant_ids else None
    if name in ("id_based_citation_precision", "id_based_citation_recall"):
        return {"retrieved_context_ids": claim.cited_ids,
                "reference_context_ids": claim.relevant_ids} \
            if claim.cited_ids and claim.relevant_ids else None
    if name == "non_llm_string_similarity":
        return {"response": claim.response, "reference": claim.reference} \
            if claim.response and claim.reference else None
    return {"retrieved_contexts": claim.retrieved_contexts,
            "reference_contexts": claim.reference_contexts} \
        if claim.retrieved_contexts and claim.reference_contexts else None


async def score_claims(claims: Sequence[ClaimSample], embedder: Embedder, *,
                       judge: JudgeSettings | None = None,
                       judge_sleep: Sleep = asyncio.sleep) -> Scores:
    """Every metric over ``claims``: the offline ones always, the judged ones with a judge."""
    from ragas.dataset_schema import SingleTurnSample

    _read_ragas_user_id()
    scores = Scores(per_claim={c.claim_id: {} for c in claims})
    outcomes: dict[str, dict[str, _Outcome]] = {}
    for name, metric in _offline_metrics().items():
        column: dict[str, _Outcome] = {}
        for claim in claims:
            fields = _offline_sample(name, claim)
            column[claim.claim_id] = None if fields is None else float(
                await metric.single_turn_ascore(SingleTurnSample(**fields)))
        outcomes[name] = column
    if not any(c.reference for c in claims):
        del outcomes["non_llm_string_similarity"]
        scores.skipped["non_llm_string_similarity"] = (
            "no reference answers: the dataset's queries carry no 'reference' or 'answer'")
    if judge is not None and judge.configured:
        scores.judge = JudgeStats()
        outcomes |= await _judged(claims, embedder, judge, scores.judge, judge_sleep)
    else:
        for name in JUDGED_METRICS:
            scores.skipped[name] = "no judge: give --judge-base-url and --judge-model (or " \
                                   "RAG_EVAL__JUDGE_BASE_URL, RAG_EVAL__JUDGE_MODEL)"
    for name, column in outcomes.items():
        scores.summary[name] = _summarise(column)
        for claim_id, outcome in column.items():
            scores.per_claim[claim_id][name] = outcome if isinstance(outcome, float) \
                and not math.isnan(outcome) else None
    return scores


async def _judged(claims: Sequence[ClaimSample], embedder: Embedder, settings: JudgeSettings,
                  stats: JudgeStats, sleep: Sleep) -> dict[str, dict[str, _Outcome]]:
    from ragas.metrics.collections import AnswerRelevancy, Faithfulness

    llm, http = judge_llm(settings, stats, sleep=sleep)
    faithfulness = Faithfulness(llm=llm)
    relevancy = AnswerRelevancy(llm=llm, embeddings=PlatformEmbeddings(embedder),
                                strictness=settings.answer_relevancy_strictness)

    async def one(metric: Any, **inputs: Any) -> _Outcome:
        if not all(inputs.values()):
            return None
        try:
            return float((await metric.ascore(**inputs)).value)
        except Exception as exc:  # the judge's failure: this claim's metric failed
            return exc

    try:
        names, jobs = [], []
        for claim in claims:
            names += [("faithfulness", claim.claim_id), ("answer_relevancy", claim.claim_id)]
            jobs += [one(faithfulness, user_input=claim.claim, response=claim.response,
                         retrieved_contexts=claim.retrieved_contexts),
                     one(relevancy, user_input=claim.claim, response=claim.response)]
        results = await asyncio.gather(*jobs)
    finally:
        await http.aclose()
    judged: dict[str, dict[str, _Outcome]] = {name: {} for name in JUDGED_METRICS}
    for (name, claim_id), outcome in zip(names, results, strict=True):
        judged[name][claim_id] = outcome
    return judged


def _summarise(column: dict[str, _Outcome]) -> MetricSummary:
    summary = MetricSummary()
    values: list[float] = []
    for outcome in column.values():
        if isinstance(outcome, BaseException):
            summary.failed += 1
            if summary.first_error is None:
                summary.first_error = f"{type(outcome).__name__}: {str(outcome)[:200]}"
        elif outcome is None:
            summary.not_applicable += 1
        elif math.isnan(outcome):
            summary.undefined += 1
        else:
            summary.scored += 1
            values.append(outcome)
    if values and not summary.failed:
        summary.value = round(sum(values) / len(values), 5)
    return summary
