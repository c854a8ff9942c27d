"""A golden question set with judgements, for comparing embedding versions on one tenant.

The set is a BEIR split's queries and qrels (``rag eval retrieval``'s reader): SciFact's
test claims with their judged abstracts, say. The tenant it is measured on holds a golden
corpus, all of the dataset's corpus or a part of it (:func:`golden_subset` cuts one small
enough for a test: the judged documents of the first queries plus distractors); only
queries with at least one relevant document in the tenant are scored
(:meth:`GoldenSet.restricted_to`), so a partial corpus does not count queries no version
could answer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluations.common.beir import iter_jsonl, load_beir

__all__ = ["GoldenSet", "golden_subset"]


@dataclass(frozen=True)
class GoldenSet:
    """Query id -> text, and query id -> {document id: grade}."""

    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]

    @classmethod
    def from_beir(cls, dataset_dir: Path, split: str = "test",
                  limit_queries: int | None = None) -> GoldenSet:
        dataset = load_beir(Path(dataset_dir), split).limited(limit_queries)
        return cls(dict(dataset.queries), {q: dict(d) for q, d in dataset.qrels.items()})

    def restricted_to(self, documents: set[str]) -> GoldenSet:
        """The queries with a relevant document among ``documents``, judged on those."""
        qrels = {q: {d: g for d, g in docs.items() if d in documents}
                 for q, docs in self.qrels.items()}
        kept = [q for q, docs in qrels.items() if any(g >= 1 for g in docs.values())]
        return GoldenSet({q: self.queries[q] for q in kept}, {q: qrels[q] for q in kept})


def golden_subset(dataset_dir: Path, *, queries: int, distractors: int, split: str = "test",
                  seed: int = 0) -> tuple[list[dict[str, Any]], GoldenSet]:
    """A small golden corpus: the documents judged relevant for the split's first
    ``queries`` queries, plus ``distractors`` other documents drawn with ``seed``; returns
    the corpus records (BEIR lines, file order) and the golden set restricted to them."""
    golden = GoldenSet.from_beir(dataset_dir, split, queries)
    judged = {d for docs in golden.qrels.values() for d, g in docs.items() if g >= 1}
    dataset = load_beir(Path(dataset_dir), split)
    records = list(iter_jsonl(dataset.corpus_path))
    others = [i for i, r in enumerate(records) if str(r.get("_id")) not in judged]
    chosen = set(random.Random(seed).sample(others, min(distractors, len(others))))
    kept = [r for i, r in enumerate(records) if str(r.get("_id")) in judged or i in chosen]
    return kept, golden.restricted_to({str(r["_id"]) for r in kept})
