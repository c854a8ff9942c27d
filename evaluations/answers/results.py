"""The typed result of ``rag eval answers``. :meth:`AnswerEvalResult.as_dict` is the
``--json`` object; its keys are a contract, and so are the ``config`` keys recorded in
``rag.benchmark_runs`` (the analysts' ``benchmark_history`` mart reads ``prompt_version``,
``model``, ``retrieval_mode``, ``embedding_model_key`` and ``answerer``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from evaluations.answers.scoring import Scores


@dataclass(frozen=True)
class AnswerRunSettings:
    """What the run's answers were produced and scored with."""

    prompt_version: str
    model: str
    answerer: str  # "extractive" or "llm"
    retrieval_mode: str
    embedding_model_key: str
    embedding_model: str  # model_id@version of the query embedder
    dataset: str
    split: str
    queries: int
    k: int
    redact_passages: bool
    judge_model: str | None
    judge_requests_per_minute: int | None

    def as_dict(self) -> dict[str, Any]:
        return {"prompt_version": self.prompt_version, "model": self.model,
                "answerer": self.answerer, "retrieval_mode": self.retrieval_mode,
                "embedding_model_key": self.embedding_model_key,
                "embedding_model": self.embedding_model, "dataset": self.dataset,
                "split": self.split, "queries": self.queries, "k": self.k,
                "redact_passages": self.redact_passages, "judge_model": self.judge_model,
                "judge_requests_per_minute": self.judge_requests_per_minute}


@dataclass(frozen=True)
class AnswerEvalResult:
    settings: AnswerRunSettings
    scores: Scores
    answered: int
    errors: dict[str, int]  # error code -> claims the query path failed with it
    docs: int
    judged_docs_not_ingested: int
    timings: dict[str, float]
    tenant_id: str
    tenant_kept: bool
    git_commit: str | None
    started_at: str
    dataset_dir: str
    run_id: int | None = None
    per_query: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    def counts(self) -> dict[str, Any]:
        return {"queries": self.settings.queries, "answered": self.answered,
                "errors": dict(self.errors), "docs": self.docs,
                "judged_docs_not_ingested": self.judged_docs_not_ingested}

    def as_dict(self) -> dict[str, Any]:
        scores = self.scores
        return {
            "ok": True, "metrics": scores.metrics,
            "metric_counts": {name: s.as_dict() for name, s in scores.summary.items()},
            "failed_metrics": scores.failed, "skipped_metrics": dict(scores.skipped),
            "settings": self.settings.as_dict(), "counts": self.counts(),
            "judge_calls": scores.judge.as_dict() if scores.judge is not None else None,
            "timings": dict(self.timings), "run_id": self.run_id,
            "tenant_id": self.tenant_id, "tenant_kept": self.tenant_kept,
            "dataset_dir": self.dataset_dir, "git_commit": self.git_commit,
            "started_at": self.started_at,
        }
