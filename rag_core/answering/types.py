"""The vocabulary of the answer step: questions with passages in, one result per question out.

Every answerer (:class:`~rag_core.answering.llm_answerer.LLMBatchAnswerer`,
:class:`~rag_core.answering.extractive.ExtractiveAnswerer`) takes
:class:`QuestionContext` items and returns one :class:`AnswerResult` per item; the
:class:`Answerer` protocol is what :func:`~rag_core.answering.runner.answer_all` drives. The
input checks shared by the answerers and the runner live here too, so that every entry point
rejects the same bad input in the same words.

Error codes of :class:`AnswerResult`
------------------------------------
``circuit_open`` (the breaker refused; no request), ``llm_unavailable`` (transient failures
exhausted the client's attempts), ``request_rejected`` (a 4xx the API will not accept),
``bad_response`` (the reply was not a JSON object, or its envelope was broken),
``invalid_answer`` (valid JSON, but no usable answer for this question), ``llm_error``
(another LLM error), ``concurrency_timeout`` / ``concurrency_unavailable`` (no call slot).

Counting
--------
``llm_calls`` counts the calls that sent at least one request and included the question (a
batch call counts for every question in it); ``retries`` counts their HTTP attempts after
the first (the client's retries); ``breaker_state`` is the breaker state met by the last of
them; ``latency_ms`` runs from the start of the batch until the question's result was known.
How the tokens of a call are split over its questions: :mod:`rag_core.answering.attribution`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from rag_core.codes import ErrorCode
from rag_core.llm.prompts import MAX_QUESTIONS_PER_PROMPT

__all__ = [
    "MAX_BATCH_SIZE",
    "AnswerResult",
    "Answerer",
    "AnswererBase",
    "CallGate",
    "Passage",
    "QuestionContext",
    "check_batch_size",
    "check_items",
]

MAX_BATCH_SIZE = MAX_QUESTIONS_PER_PROMPT

#: Held around every LLM call; entering it may block (a slot) or raise ConcurrencyError.
CallGate = Callable[[], AbstractContextManager[object]]


@dataclass(frozen=True)
class Passage:
    """A retrieved chunk given to the model.

    ``chunk_id`` is what the model cites; only the chunk ids of a question's own passages
    are accepted as its citations.
    """

    chunk_id: int
    text: str


@dataclass(frozen=True)
class QuestionContext:
    """A question, its caller-chosen id (unique within a run) and its own passages."""

    question_id: str
    question: str
    passages: list[Passage]


@dataclass(frozen=True)
class AnswerResult:
    """The outcome for one question; ``answer`` is ``None`` exactly when ``error_code`` is set.

    See the module docstring for how ``llm_calls``, ``retries`` and ``latency_ms`` are
    counted and for the error codes, and :mod:`rag_core.answering.attribution` for tokens.
    """

    question_id: str
    answer: str | None
    citations: list[int]
    prompt_tokens: int
    completion_tokens: int
    batch_id: str
    batch_size: int
    llm_calls: int
    retried_alone: bool
    retries: int
    breaker_state: str | None
    model: str
    prompt_version: str
    error_code: ErrorCode | None
    error: str | None
    latency_ms: float

    @property
    def ok(self) -> bool:
        """Whether the question got an answer."""
        return self.answer is not None

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens attributed to this question."""
        return self.prompt_tokens + self.completion_tokens


class Answerer(Protocol):
    """What :func:`~rag_core.answering.runner.answer_all` drives: up to ``max_batch_size``
    questions per batch."""

    @property
    def max_batch_size(self) -> int: ...

    def answer_batch(self, items: Sequence[QuestionContext], *,
                     call_gate: CallGate | None = None) -> list[AnswerResult]:
        """One result per item, in the items' order; never raises for an LLM failure."""
        ...


class AnswererBase:
    """What every answerer does alike: it keeps a batch size limit and checks its batches.

    A subclass calls ``super().__init__(max_batch_size)`` and starts ``answer_batch`` with
    ``items = self.checked(items)``.
    """

    def __init__(self, max_batch_size: int = MAX_BATCH_SIZE) -> None:
        check_batch_size(max_batch_size, "max_batch_size")
        self._max_batch_size = max_batch_size

    @property
    def max_batch_size(self) -> int:
        """The most questions one ``answer_batch`` call takes (and the LLM sees per call)."""
        return self._max_batch_size

    def checked(self, items: Sequence[QuestionContext]) -> list[QuestionContext]:
        """``items`` as a list, or :class:`ValueError` (too many, empty or repeated ids)."""
        items = list(items)
        check_items(items, self._max_batch_size)
        return items


def check_items(items: Sequence[QuestionContext], max_size: int) -> None:
    """Raise :class:`ValueError` for more than ``max_size`` items, or empty or repeated ids."""
    if len(items) > max_size:
        raise ValueError(f"a batch takes at most {max_size} questions, got {len(items)}")
    ids = [item.question_id for item in items]
    if any(not qid.strip() for qid in ids):
        raise ValueError(f"question ids must be non-empty, got {ids!r}")
    # replies are matched on the stripped id (see parse_answers): "q1" and "q1 " would clash
    if len({qid.strip() for qid in ids}) != len(ids):
        raise ValueError(f"question ids must be unique, got {ids!r}")


def check_batch_size(value: int, what: str) -> None:
    """Raise :class:`ValueError` unless ``value`` is a batch size in 1..:data:`MAX_BATCH_SIZE`."""
    if isinstance(value, bool) or not 1 <= value <= MAX_BATCH_SIZE:
        raise ValueError(f"{what} must be between 1 and {MAX_BATCH_SIZE}, got {value!r}")
