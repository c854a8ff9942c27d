"""Answering questions in batches: up to five questions per LLM call, with honest accounting.

What happens to a batch (:meth:`LLMBatchAnswerer.answer_batch`)
--------------------------------------------------------------
1. One call (:meth:`~rag_core.llm.client.LLMClient.complete` with
   ``response_format_json=True``) carries all questions of the batch, each with its own
   passages (:func:`rag_core.llm.prompts.build_batch_prompt`).
2. The reply is validated with pydantic (:class:`BatchAnswers`, :class:`AnswerEntry`), per
   entry: one malformed entry does not discard the others. Prose is never parsed.
3. A question whose answer is missing, invalid or empty is retried *alone* (one call each,
   :func:`~rag_core.llm.prompts.build_single_prompt`). A question that still fails gets
   ``answer=None`` and an ``error_code``; the other questions are unaffected.
4. If the batch call itself fails, the questions fall back to one call each — unless the
   breaker is open (:class:`~rag_core.llm.errors.CircuitOpenError`: every question fails
   fast with ``circuit_open`` and no call is made; or the failed batch call just opened it:
   ``llm_unavailable``), or no concurrency slot could be had (``concurrency_timeout``).
   Retrying transient HTTP failures is the client's job and happens inside the call.

Tolerance of the reply (documented, and nothing else)
-----------------------------------------------------
- unknown keys are ignored, at the top level and in entries;
- ids are compared without surrounding whitespace; entries with an id that is not in the
  batch are ignored; for a question answered twice the first *valid* entry wins;
- in a single-question reply the entry is taken for that question whatever its ``id`` says
  (there is nothing to confuse it with);
- a numeric ``id`` or ``answer`` is read as its string form; surrounding whitespace of the
  answer is stripped;
- ``citations`` may be absent (no citations); items that are not integers (or strings or
  floats holding an integer) are dropped, as are chunk ids that were not among *that
  question's* passages, and repeats.
An answer that is empty after stripping, or an entry without ``answer``, is invalid.

Error codes of :class:`AnswerResult`
------------------------------------
``circuit_open`` (the breaker refused; no request), ``llm_unavailable`` (transient failures
exhausted the client's attempts), ``request_rejected`` (a 4xx the API will not accept),
``bad_response`` (the reply was not a JSON object, or its envelope was broken),
``invalid_answer`` (valid JSON, but no usable answer for this question), ``llm_error``
(another LLM error), ``concurrency_timeout`` / ``concurrency_unavailable`` (no call slot).

Token attribution
-----------------
The provider reports one usage per call. :func:`attribute_tokens` splits it into integers
that add up *exactly* to it (largest-remainder method): prompt tokens in proportion to each
question's own prompt segment (the shared instructions are split in the same proportion),
completion tokens in proportion to the characters of the reply entries each question got.
A question retried alone also carries the whole usage of its own call. Summed over the
questions, the figures equal what the provider billed for every successful call. A call
that failed has no usage to attribute (a reply rejected as not-JSON was billed, but the
client's :class:`~rag_core.llm.errors.LLMResponseError` does not carry its usage).

Counting
--------
``llm_calls`` counts the calls that sent at least one request and included the question (a
batch call counts for every question in it); ``retries`` counts their HTTP attempts after
the first (the client's retries); ``breaker_state`` is the breaker state met by the last of
them; ``latency_ms`` runs from the start of the batch until the question's result was known.

Concurrency
-----------
:func:`answer_all` runs batches in a thread pool and holds a semaphore (and, if given, a
cross-process slot from :mod:`rag_core.concurrency`) around every client call, retries alone
included.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, field_validator

from rag_core.concurrency import (
    ConcurrencyError,
    ConcurrencyLimitTimeoutError,
    ConcurrencySlots,
)
from rag_core.llm.breaker import BreakerState
from rag_core.llm.client import CallReport, Completion, LLMClient
from rag_core.llm.errors import (
    CircuitOpenError,
    LLMError,
    LLMRequestRejectedError,
    LLMResponseError,
    LLMUnavailableError,
)
from rag_core.llm.prompts import (
    MAX_QUESTIONS_PER_PROMPT,
    PROMPT_VERSION,
    BuiltPrompt,
    build_batch_prompt,
    build_single_prompt,
)

__all__ = [
    "EXTRACTIVE_LABEL",
    "EXTRACTIVE_MODEL",
    "EXTRACTIVE_VERSION",
    "MAX_BATCH_SIZE",
    "AnswerEntry",
    "AnswerResult",
    "Answerer",
    "BatchAnswers",
    "CallGate",
    "ExtractiveAnswerer",
    "LLMBatchAnswerer",
    "ParsedAnswers",
    "Passage",
    "QuestionContext",
    "ValidAnswer",
    "answer_all",
    "attribute_tokens",
    "parse_answers",
]

log = logging.getLogger(__name__)

MAX_BATCH_SIZE = MAX_QUESTIONS_PER_PROMPT

#: Held around every LLM call; entering it may block (a slot) or raise ConcurrencyError.
CallGate = Callable[[], AbstractContextManager[object]]


# --- data ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Passage:
    """A retrieved chunk given to the model: ``chunk_id`` is what it cites."""

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

    See the module docstring for how tokens, ``llm_calls``, ``retries`` and ``latency_ms``
    are counted and for the error codes.
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
    error_code: str | None
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
    """What :func:`answer_all` drives: answers for up to ``max_batch_size`` questions."""

    @property
    def max_batch_size(self) -> int: ...

    def answer_batch(self, items: Sequence[QuestionContext], *,
                     call_gate: CallGate | None = None) -> list[AnswerResult]:
        """One result per item, in the items' order; never raises for an LLM failure."""
        ...


# --- token attribution ---------------------------------------------------------------------
def attribute_tokens(total: int, weights: Sequence[int]) -> list[int]:
    """Split ``total`` into integers proportional to ``weights`` that sum exactly to it.

    Largest-remainder (Hamilton) method: everyone gets the floor of their exact share, and
    the units left over go to the largest remainders; ties go to the larger weight, then to
    the earlier position (deterministic). Each share is within 1 of the exact proportional
    share, and a larger weight never gets fewer tokens. All weights zero: an even split,
    the remainder to the first ones. Raises :class:`ValueError` for a negative total or
    weight, or a positive total with no weights.
    """
    if total < 0:
        raise ValueError(f"total must be >= 0, got {total}")
    if any(w < 0 for w in weights):
        raise ValueError(f"weights must be >= 0, got {list(weights)}")
    n = len(weights)
    if n == 0:
        if total:
            raise ValueError(f"cannot attribute {total} tokens to no one")
        return []
    weight_sum = sum(weights)
    if weight_sum == 0:
        base, extra = divmod(total, n)
        return [base + (1 if i < extra else 0) for i in range(n)]
    # exact integer arithmetic: share_i = total * w_i / weight_sum = floor + rem / weight_sum
    floors = [total * w // weight_sum for w in weights]
    remainders = [total * w % weight_sum for w in weights]
    left = total - sum(floors)
    order = sorted(range(n), key=lambda i: (-remainders[i], -weights[i], i))
    for i in order[:left]:
        floors[i] += 1
    return floors


# --- the model's reply ---------------------------------------------------------------------
class BatchAnswers(BaseModel):
    """The reply's top level: ``{"answers": [...]}``; entries are validated one by one."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    answers: list[JsonValue]


class AnswerEntry(BaseModel):
    """One entry of ``answers``: ``{"id": ..., "answer": ..., "citations": [...]}``."""

    model_config = ConfigDict(extra="ignore", frozen=True, coerce_numbers_to_str=True)

    id: str = ""
    answer: str
    citations: list[JsonValue] = Field(default_factory=list)

    @field_validator("id")
    @classmethod
    def _strip_id(cls, value: str) -> str:
        return value.strip()

    @field_validator("answer")
    @classmethod
    def _non_empty_answer(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("answer is empty")
        return value


@dataclass(frozen=True)
class ValidAnswer:
    """A usable answer: its text and the citations that survived the checks."""

    answer: str
    citations: list[int]


@dataclass(frozen=True)
class ParsedAnswers:
    """What a reply gave each question.

    ``answers`` holds the usable ones; ``problems`` says, for every other expected question,
    why not; ``output_chars`` is the size of the reply entries that concerned each question
    (the weights for completion tokens).
    """

    answers: dict[str, ValidAnswer]
    problems: dict[str, str]
    output_chars: dict[str, int]


def _citation(value: JsonValue) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdecimal():
        return int(value.strip())
    return None


def _clean_citations(raw: Sequence[JsonValue], allowed: Collection[int]) -> list[int]:
    kept: list[int] = []
    for value in raw:
        chunk_id = _citation(value)
        if chunk_id is not None and chunk_id in allowed and chunk_id not in kept:
            kept.append(chunk_id)
    return kept


def _short(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'reply'}: {e['msg']}"
                     for e in exc.errors(include_url=False))[:300]


def _entry_id(raw: JsonValue) -> str | None:
    if not isinstance(raw, dict):
        return None
    value = raw.get("id")
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    return str(value).strip()


def parse_answers(text: str, allowed: Mapping[str, Collection[int]], *,
                  single: bool = False) -> ParsedAnswers:
    """Validate a reply against the questions asked (``allowed``: id -> its chunk ids).

    Never raises for a bad reply: what could not be used is reported in ``problems``. See
    the module docstring for exactly what is tolerated.
    """
    expected = list(allowed)
    if single and len(expected) != 1:
        raise ValueError(f"a single-question reply needs exactly one question, got {expected}")
    answers: dict[str, ValidAnswer] = {}
    problems: dict[str, str] = {}
    output_chars = dict.fromkeys(expected, 0)
    try:
        top = BatchAnswers.model_validate_json(text)
    except ValidationError as exc:
        reason = f'reply is not {{"answers": [...]}}: {_short(exc)}'
        return ParsedAnswers({}, dict.fromkeys(expected, reason), output_chars)
    by_stripped_id = {question_id.strip(): question_id for question_id in expected}
    for raw in top.answers:
        echoed = _entry_id(raw)
        target = expected[0] if single else by_stripped_id.get(echoed or "")
        if target is None:
            continue  # an entry for no question we asked
        output_chars[target] += len(json.dumps(raw, ensure_ascii=False))
        if target in answers:
            continue  # the first valid entry for a question wins
        try:
            entry = AnswerEntry.model_validate(raw)
        except ValidationError as exc:
            problems.setdefault(target, f"invalid answer entry: {_short(exc)}")
            continue
        answers[target] = ValidAnswer(entry.answer,
                                      _clean_citations(entry.citations, allowed[target]))
        problems.pop(target, None)
    for question_id in expected:
        if question_id not in answers:
            problems.setdefault(question_id, "the reply has no entry for this question id")
    return ParsedAnswers(answers, problems, output_chars)


# --- the LLM answerer ----------------------------------------------------------------------
@dataclass(frozen=True)
class _Outcome:
    """How one client call went, in the terms the tally needs."""

    completion: Completion | None
    attempts: int
    breaker_state: str | None
    breaker_opened: bool = False
    error_code: str | None = None
    error: str | None = None


@dataclass
class _Tally:
    """Mutable per-question bookkeeping while a batch is being answered."""

    item: QuestionContext
    model: str
    started: float
    prompt_tokens: int = 0
    completion_tokens: int = 0
    llm_calls: int = 0
    retries: int = 0
    retried_alone: bool = False
    breaker_state: str | None = None
    answer: str | None = None
    citations: list[int] = field(default_factory=list)
    error_code: str | None = None
    error: str | None = None
    latency_ms: float = 0.0

    def saw(self, outcome: _Outcome) -> None:
        if outcome.attempts > 0:
            self.llm_calls += 1
            self.retries += outcome.attempts - 1
        if outcome.breaker_state is not None:
            self.breaker_state = outcome.breaker_state

    def answered(self, answer: ValidAnswer, model: str) -> None:
        self.answer, self.citations, self.model = answer.answer, answer.citations, model
        self.error_code = self.error = None
        self._done()

    def failed(self, code: str, error: str) -> None:
        self.answer, self.citations = None, []
        self.error_code, self.error = code, error
        self._done()

    def _done(self) -> None:
        self.latency_ms = (time.monotonic() - self.started) * 1000.0

    def result(self, batch_id: str, batch_size: int, prompt_version: str) -> AnswerResult:
        return AnswerResult(
            question_id=self.item.question_id, answer=self.answer, citations=self.citations,
            prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens,
            batch_id=batch_id, batch_size=batch_size, llm_calls=self.llm_calls,
            retried_alone=self.retried_alone, retries=self.retries,
            breaker_state=self.breaker_state, model=self.model, prompt_version=prompt_version,
            error_code=self.error_code, error=self.error, latency_ms=self.latency_ms)


# Failures after which calling again (alone) would only repeat them.
_FAIL_FAST = frozenset({"circuit_open", "concurrency_timeout", "concurrency_unavailable"})


def _error_code(exc: LLMError) -> str:
    if isinstance(exc, LLMUnavailableError):
        return "llm_unavailable"
    if isinstance(exc, LLMRequestRejectedError):
        return "request_rejected"
    if isinstance(exc, LLMResponseError):
        return "bad_response"
    return "llm_error"


def _check_items(items: Sequence[QuestionContext], max_size: int) -> None:
    if len(items) > max_size:
        raise ValueError(f"a batch takes at most {max_size} questions, got {len(items)}")
    ids = [item.question_id for item in items]
    if any(not qid.strip() for qid in ids):
        raise ValueError(f"question ids must be non-empty, got {ids!r}")
    # replies are matched on the stripped id (see parse_answers): "q1" and "q1 " would clash
    if len({qid.strip() for qid in ids}) != len(ids):
        raise ValueError(f"question ids must be unique, got {ids!r}")


def _check_batch_size(value: int, what: str) -> None:
    if isinstance(value, bool) or not 1 <= value <= MAX_BATCH_SIZE:
        raise ValueError(f"{what} must be between 1 and {MAX_BATCH_SIZE}, got {value!r}")


def _open_gate() -> AbstractContextManager[object]:
    return nullcontext()


class LLMBatchAnswerer:
    """Answers up to ``max_batch_size`` (1..5) questions per LLM call; see the module doc.

    ``prompt_version`` is the label recorded with every result (the prompt text itself comes
    from :mod:`rag_core.llm.prompts`; pass its :data:`PROMPT_VERSION` unless you are labelling
    an experiment). ``max_tokens_per_answer`` sizes the completion budget of a call
    (``per_answer * questions + 64`` for the JSON around the answers): a reply cut off at
    the limit is not valid JSON, and every question of the batch would be retried alone.
    """

    def __init__(self, client: LLMClient, *, max_batch_size: int = MAX_BATCH_SIZE,
                 prompt_version: str = PROMPT_VERSION, max_tokens_per_answer: int = 300,
                 ) -> None:
        _check_batch_size(max_batch_size, "max_batch_size")
        if max_tokens_per_answer < 1:
            raise ValueError(f"max_tokens_per_answer must be >= 1, got {max_tokens_per_answer}")
        self._client = client
        self._max_batch_size = max_batch_size
        self.prompt_version = prompt_version
        self.max_tokens_per_answer = max_tokens_per_answer

    @property
    def max_batch_size(self) -> int:
        """The most questions sent in one call."""
        return self._max_batch_size

    def answer_batch(self, items: Sequence[QuestionContext], *,
                     call_gate: CallGate | None = None) -> list[AnswerResult]:
        """Answer ``items`` with one call (plus retries alone); one result per item, in order.

        ``call_gate`` is entered around every client call (:func:`answer_all` passes its
        concurrency limits). LLM failures become results with an ``error_code``; only bad
        input raises (:class:`ValueError`: too many items, empty or repeated ids).
        """
        items = list(items)
        _check_items(items, self._max_batch_size)
        if not items:
            return []
        gate = call_gate or _open_gate
        batch_id = uuid.uuid4().hex
        started = time.monotonic()
        tallies = [_Tally(item, self._client.config.model, started) for item in items]

        prompt = build_batch_prompt(items)
        outcome = self._call(prompt, gate, len(items))
        for tally in tallies:
            tally.saw(outcome)
        pending: list[_Tally] = []
        if outcome.completion is not None:
            pending = self._settle_batch(tallies, prompt, outcome.completion)
        elif outcome.error_code in _FAIL_FAST or outcome.breaker_opened:
            for tally in tallies:
                tally.failed(outcome.error_code or "llm_error", outcome.error or "")
        else:
            log.info("batch %s: the batch call failed (%s); asking its %d questions one by one",
                     batch_id, outcome.error_code, len(items))
            pending = tallies
        self._retry_alone(pending, gate)
        failed = [t.item.question_id for t in tallies if t.error_code is not None]
        if failed:
            log.warning("batch %s: %d of %d questions got no answer: %s", batch_id,
                        len(failed), len(items),
                        ", ".join(f"{t.item.question_id}={t.error_code}" for t in tallies
                                  if t.error_code is not None))
        return [t.result(batch_id, len(items), self.prompt_version) for t in tallies]

    # --- internals -----------------------------------------------------------------------
    def _settle_batch(self, tallies: list[_Tally], prompt: BuiltPrompt,
                      completion: Completion) -> list[_Tally]:
        """Attribute the batch call's tokens, record valid answers, return the rest."""
        allowed = {t.item.question_id: {p.chunk_id for p in t.item.passages} for t in tallies}
        parsed = parse_answers(completion.text, allowed)
        prompt_shares = attribute_tokens(completion.prompt_tokens, prompt.segment_chars)
        completion_shares = attribute_tokens(
            completion.completion_tokens,
            [parsed.output_chars[t.item.question_id] for t in tallies])
        pending: list[_Tally] = []
        for tally, p_share, c_share in zip(tallies, prompt_shares, completion_shares,
                                           strict=True):
            tally.prompt_tokens += p_share
            tally.completion_tokens += c_share
            answer = parsed.answers.get(tally.item.question_id)
            if answer is not None:
                tally.answered(answer, completion.model)
            else:
                tally.error_code = "invalid_answer"
                tally.error = parsed.problems[tally.item.question_id]
                pending.append(tally)
        return pending

    def _retry_alone(self, pending: list[_Tally], gate: CallGate) -> None:
        stop: tuple[str, str] | None = None
        for tally in pending:
            if stop is not None:
                tally.failed(*stop)
                continue
            tally.retried_alone = True
            question_id = tally.item.question_id
            prompt = build_single_prompt(tally.item)
            outcome = self._call(prompt, gate, 1)
            tally.saw(outcome)
            if outcome.completion is None:
                code = outcome.error_code or "llm_error"
                tally.failed(code, outcome.error or "")
                if code in _FAIL_FAST:
                    stop = (code, f"not attempted: {outcome.error}")
                elif outcome.breaker_opened:
                    stop = ("circuit_open", "not attempted: the circuit breaker opened after "
                            f"a failed call ({outcome.error})")
                continue
            completion = outcome.completion
            tally.prompt_tokens += completion.prompt_tokens
            tally.completion_tokens += completion.completion_tokens
            parsed = parse_answers(completion.text,
                                   {question_id: {p.chunk_id for p in tally.item.passages}},
                                   single=True)
            answer = parsed.answers.get(question_id)
            if answer is not None:
                tally.answered(answer, completion.model)
            else:
                tally.failed("invalid_answer", parsed.problems[question_id])

    def _call(self, prompt: BuiltPrompt, gate: CallGate, n_questions: int) -> _Outcome:
        client = self._client
        before = client.last_report
        try:
            with gate():
                completion = client.complete(
                    prompt.messages, response_format_json=True,
                    max_tokens=self.max_tokens_per_answer * n_questions + 64)
        except CircuitOpenError as exc:
            return _Outcome(None, 0, exc.state, breaker_opened=True,
                            error_code="circuit_open", error=str(exc))
        except ConcurrencyError as exc:
            code = ("concurrency_timeout" if isinstance(exc, ConcurrencyLimitTimeoutError)
                    else "concurrency_unavailable")
            return _Outcome(None, 0, None, error_code=code, error=str(exc))
        except LLMError as exc:
            report: CallReport | None = client.last_report
            if report is before:
                report = None  # not this call's (cannot happen with LLMClient; be safe)
            attempts = (report.attempts if report is not None
                        else getattr(exc, "attempts", 1))
            return _Outcome(
                None, attempts,
                report.breaker_state.value if report is not None else None,
                breaker_opened=(report is not None
                                and report.breaker_state_after is BreakerState.OPEN),
                error_code=_error_code(exc), error=str(exc))
        return _Outcome(completion, completion.attempts, completion.breaker_state.value)


# --- the offline answerer ------------------------------------------------------------------
EXTRACTIVE_MODEL = "extractive-fallback"
EXTRACTIVE_VERSION = "extractive-v1"
EXTRACTIVE_LABEL = "[extractive answer: no LLM configured]"

_WORD_RE = re.compile(r"[^\W_]+")
_SENTENCE_END_RE = re.compile(r"(?<=[.!?])\s+")
_STOPWORDS = frozenset({
    "a", "about", "an", "and", "are", "as", "at", "be", "been", "but", "by", "can", "could",
    "did", "do", "does", "for", "from", "had", "has", "have", "how", "i", "if", "in", "into",
    "is", "it", "its", "may", "might", "of", "on", "or", "should", "so", "than", "that", "the",
    "their", "them", "then", "there", "these", "they", "this", "those", "to", "was", "were",
    "what", "when", "where", "which", "who", "whom", "whose", "why", "will", "with", "would",
    "you", "your",
})
_MAX_QUOTE_CHARS = 400


def _terms(text: str) -> set[str]:
    return {w for w in (m.lower() for m in _WORD_RE.findall(text))
            if w not in _STOPWORDS and (len(w) > 1 or w.isdigit())}


def _sentences(text: str) -> list[str]:
    flat = " ".join(text.split())
    return [s for s in _SENTENCE_END_RE.split(flat) if s]


class ExtractiveAnswerer:
    """An offline stand-in for the LLM: quotes the passage sentences closest to the question.

    For deployments and demos without an LLM key. Every answer starts with
    :data:`EXTRACTIVE_LABEL`, the model is :data:`EXTRACTIVE_MODEL`, tokens are 0 and no
    request is ever sent. A sentence's score is the number of distinct question words
    (lower-cased, stop words removed) it contains; the best ``max_sentences`` sentences with
    a score above 0 are quoted, best first (ties: earlier passage, then earlier sentence),
    each followed by its chunk id, and those chunk ids are the citations.
    """

    def __init__(self, *, max_sentences: int = 3,
                 max_batch_size: int = MAX_BATCH_SIZE) -> None:
        if max_sentences < 1:
            raise ValueError(f"max_sentences must be >= 1, got {max_sentences}")
        _check_batch_size(max_batch_size, "max_batch_size")
        self.max_sentences = max_sentences
        self._max_batch_size = max_batch_size

    @property
    def max_batch_size(self) -> int:
        """The most questions per batch (only for symmetry with the LLM answerer)."""
        return self._max_batch_size

    def answer_batch(self, items: Sequence[QuestionContext], *,
                     call_gate: CallGate | None = None) -> list[AnswerResult]:
        """One labelled extractive answer per item; ``call_gate`` is unused (no LLM calls)."""
        items = list(items)
        _check_items(items, self._max_batch_size)
        batch_id = uuid.uuid4().hex
        results: list[AnswerResult] = []
        for item in items:
            started = time.monotonic()
            answer, citations = self._extract(item)
            results.append(AnswerResult(
                question_id=item.question_id, answer=answer, citations=citations,
                prompt_tokens=0, completion_tokens=0, batch_id=batch_id,
                batch_size=len(items), llm_calls=0, retried_alone=False, retries=0,
                breaker_state=None, model=EXTRACTIVE_MODEL, prompt_version=EXTRACTIVE_VERSION,
                error_code=None, error=None,
                latency_ms=(time.monotonic() - started) * 1000.0))
        return results

    def _extract(self, item: QuestionContext) -> tuple[str, list[int]]:
        wanted = _terms(item.question)
        scored: list[tuple[int, int, int, str, int]] = []
        for p_index, passage in enumerate(item.passages):
            for s_index, sentence in enumerate(_sentences(passage.text)):
                score = len(wanted & _terms(sentence))
                if score > 0:
                    scored.append((-score, p_index, s_index, sentence, passage.chunk_id))
        if not scored:
            return (f"{EXTRACTIVE_LABEL} None of the {len(item.passages)} retrieved passages "
                    "shares a word with the question.", [])
        best = sorted(scored)[: self.max_sentences]
        quotes: list[str] = []
        citations: list[int] = []
        for _, _, _, sentence, chunk_id in best:
            if len(sentence) > _MAX_QUOTE_CHARS:
                sentence = sentence[: _MAX_QUOTE_CHARS - 3].rstrip() + "..."
            quotes.append(f'"{sentence}" [chunk {chunk_id}]')
            if chunk_id not in citations:
                citations.append(chunk_id)
        return f"{EXTRACTIVE_LABEL} " + " ".join(quotes), citations


# --- many batches --------------------------------------------------------------------------
def answer_all(items: Sequence[QuestionContext], answerer: Answerer, *, batch_size: int = 5,
               max_concurrent_llm_calls: int = 3,
               slots: ConcurrencySlots | None = None) -> list[AnswerResult]:
    """Answer every item in batches of at most ``batch_size``; results in input order.

    Batches run concurrently in a thread pool. Around every LLM call (retries alone
    included) a semaphore of ``max_concurrent_llm_calls`` is held, then a slot of ``slots``
    (e.g. a :class:`~rag_core.concurrency.RedisSemaphore` shared by every process); the local
    semaphore is taken first so that no process sits on a shared slot while it waits for a
    local one. The semaphore belongs to this run: to cap several concurrent runs of one
    process together, also pass them one shared :class:`~rag_core.concurrency.LocalSlots`.

    Raises :class:`ValueError` for a ``batch_size`` outside 1..5 (or above the answerer's
    ``max_batch_size``), ``max_concurrent_llm_calls`` < 1, or empty or repeated question ids.
    """
    _check_batch_size(batch_size, "batch_size")
    if batch_size > answerer.max_batch_size:
        raise ValueError(f"batch_size {batch_size} exceeds the answerer's max_batch_size "
                         f"{answerer.max_batch_size}")
    if max_concurrent_llm_calls < 1:
        raise ValueError(f"max_concurrent_llm_calls must be >= 1, got "
                         f"{max_concurrent_llm_calls}")
    items = list(items)
    _check_items(items, len(items))
    if not items:
        return []
    batches = [items[i:i + batch_size] for i in range(0, len(items), batch_size)]
    local = threading.BoundedSemaphore(max_concurrent_llm_calls)

    @contextmanager
    def gate() -> Iterator[None]:
        with local:
            if slots is None:
                yield
            else:
                with slots.slot():
                    yield

    workers = min(len(batches), max_concurrent_llm_calls)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rag-answer") as pool:
        futures = [pool.submit(answerer.answer_batch, batch, call_gate=gate)
                   for batch in batches]
        per_batch = [future.result() for future in futures]
    results: list[AnswerResult] = []
    for batch, batch_results in zip(batches, per_batch, strict=True):
        got = [r.question_id for r in batch_results]
        if got != [item.question_id for item in batch]:
            raise RuntimeError(f"answerer returned results for {got}, expected "
                               f"{[item.question_id for item in batch]}")
        results.extend(batch_results)
    return results
