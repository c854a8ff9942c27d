"""What the query service takes and returns: its configuration, an answer and its sources,
and the working state of one question on its way through the stages.

Apart from :mod:`rag_core.query.service` so that the stages' helpers (the audit rows,
:mod:`rag_core.query.service_audit`) read the same types without importing the service.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from rag_core.answering import AnswerResult
from rag_core.codes import ErrorCode
from rag_core.limits.quota import Reservation
from rag_core.query.answer_cache import AnswerKey
from rag_core.retrieval.retriever import Retrieval

__all__ = ["Pending", "QueryAnswer", "QueryConfig", "Source"]


@dataclass(frozen=True)
class Source:
    chunk_id: int
    document_id: int
    score: float
    excerpt: str


@dataclass
class QueryAnswer:
    request_id: str
    question_id: str
    question: str
    answer: str | None
    sources: list[Source] = field(default_factory=list)
    citations: list[int] = field(default_factory=list)
    cache_hit: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model: str | None = None
    error_code: ErrorCode | None = None
    error: str | None = None
    retry_after_s: float | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)

    def as_dict(self, *, include_question: bool = False) -> dict[str, Any]:
        """The answer as JSON-ready data; the caller's raw question (which may hold personal
        data the audit log only keeps redacted) only when asked for."""
        data = asdict(self)
        if not include_question:
            del data["question"]
        return data


@dataclass
class Pending:
    """One question inside the service (not part of its API): the answer being built and
    what the stages found on the way."""

    answer: QueryAnswer
    redacted: str  # the question after PII redaction, once admitted
    started: float
    admitted: bool = False
    cache_key: AnswerKey | None = None
    retrieval: Retrieval | None = None
    reservation: Reservation | None = None
    quota_debt: str | None = None  # tokens the quota could not record (see limits.guarded)
    result: AnswerResult | None = None


@dataclass(frozen=True)
class QueryConfig:
    k: int
    batch_size: int
    max_concurrent_llm_calls: int
    max_concurrent_searches: int
    model: str
    prompt_version: str
    embedding_model: str
    rollout_cohort: str | None = None
    retrieval_mode: str = "hybrid"  # or "dense"; Settings.retrieval_mode says which
    max_question_chars: int = 4000
    max_batch_questions: int = 1000
    redact_passages: bool = False  # see rag_core.query.passages
