"""The API's request and response bodies (pydantic): what the OpenAPI document shows.

Requests forbid unknown fields (a misspelt ``sesion_id`` is an error, not ignored). The
structural bounds are here; the configured ones (``RAG_MAX_QUESTION_CHARS``,
``RAG_API__MAX_BATCH_QUESTIONS``) are checked by the routes against the settings of the
running service and refused with the same problem shape, naming the field.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict

_REQUEST = ConfigDict(extra="forbid", frozen=True)
#: A question PostgreSQL can store: no NUL. Documented only: the query path refuses one
#: itself (invalid_question, naming where it is) and audits that like any answer. Said as
#: "not containing NUL" rather than the anchored ``^[^\x00]*$``, which schema-driven
#: generators (schemathesis) take ~0.4 s per string to violate.
_STORABLE: JsonDict = {"not": {"pattern": r"\x00"}}

#: Hard ceilings whatever the settings say (the settings' own upper bounds).
QUESTION_CHARS_CEILING = 100_000
BATCH_QUESTIONS_CEILING = 100_000


class QueryRequest(BaseModel):
    model_config = _REQUEST

    question: str = Field(min_length=1, max_length=QUESTION_CHARS_CEILING,
                          json_schema_extra=_STORABLE,
                          description="the question (at most RAG_MAX_QUESTION_CHARS "
                                      "characters, no NUL)")
    # The shape rag_core.query.sessions accepts: documented so a client knows it.
    session_id: str | None = Field(default=None, min_length=43, max_length=256,
                                   pattern=r"^[A-Za-z0-9_-]+$",
                                   description="groups a conversation's questions: 43-256 "
                                               "URL-safe base64 characters, as from "
                                               "secrets.token_urlsafe(32) (stored only as a "
                                               "keyed hash)")


class BatchQuestion(BaseModel):
    model_config = _REQUEST

    id: str | None = Field(default=None, min_length=1, max_length=200,
                           pattern=r"^[A-Za-z0-9_.:-]+$",
                           description="the question's id in events, unique in the batch "
                                       "(default q<position>: q1, q2, ...)")
    question: str = Field(min_length=1, max_length=QUESTION_CHARS_CEILING,
                          json_schema_extra=_STORABLE,
                          description="at most RAG_MAX_QUESTION_CHARS characters, no NUL, "
                                      "not only whitespace")


class BatchRequest(BaseModel):
    model_config = _REQUEST

    questions: list[BatchQuestion] = Field(
        min_length=1, max_length=BATCH_QUESTIONS_CEILING,
        description="at most RAG_API__MAX_BATCH_QUESTIONS questions; answered in the "
                    "background, at most 5 per LLM call")


class SourceOut(BaseModel):
    chunk_id: int
    document_id: int
    score: float
    excerpt: str


class AnswerOut(BaseModel):
    """One answered (or failed) question."""

    request_id: str
    question_id: str
    answer: str | None
    sources: list[SourceOut]
    citations: list[int]
    cache_hit: bool
    prompt_tokens: int
    completion_tokens: int
    model: str | None
    error_code: str | None
    error: str | None
    retry_after_s: float | None = None
    latency_ms: dict[str, float]


class BatchOut(BaseModel):
    """A batch job's state; ``summary`` once it is over."""

    batch_id: str
    status: Literal["queued", "running", "done", "failed"]
    questions: int
    answered: int = Field(description="questions with an answer event so far")
    created_at: str
    finished_at: str | None = None
    summary: dict[str, Any] | None = None
    events_url: str
    answers: list[dict[str, Any]] | None = Field(
        default=None, description="the answer events so far, with ?answers=true")


class ProblemOut(BaseModel):
    """RFC 9457 problem details (``application/problem+json``)."""

    type: str
    title: str
    status: int
    detail: str
    code: str = Field(description="the platform's typed code (rag_core.codes.ErrorCode)")
    field: str | None = None
    retry_after_s: float | None = None
    errors: list[dict[str, str]] | None = None


class HealthOut(BaseModel):
    status: Literal["ok"]
    pid: int


class ReadyOut(BaseModel):
    status: Literal["ready", "not_ready"]
    checks: dict[str, dict[str, Any]]
