"""The LLM answerer: up to five questions per call, retried alone where the batch failed them.

What happens to a batch (:meth:`LLMBatchAnswerer.answer_batch`)
--------------------------------------------------------------
1. One call (:meth:`~rag_core.llm.client.LLMClient.complete` with
   ``response_format_json=True``) carries all questions of the batch, each with its own
   passages (:func:`rag_core.llm.prompts.build_batch_prompt`).
2. The reply is validated with pydantic, per entry
   (:func:`~rag_core.answering.replies.parse_answers`): one malformed entry does not discard
   the others. Prose is never parsed.
3. A question whose answer is missing, invalid or empty is retried *alone* (one call each,
   :func:`~rag_core.llm.prompts.build_single_prompt`). A question that still fails gets
   ``answer=None`` and an ``error_code``; the other questions are unaffected.
4. If the batch call itself fails, the questions fall back to one call each — unless the
   breaker is open (:class:`~rag_core.errors.CircuitOpenError`: every question fails
   fast with ``circuit_open`` and no call is made; or the failed batch call just opened it:
   ``llm_unavailable``), or no concurrency slot could be had (``concurrency_timeout``).
   Retrying transient HTTP failures is the client's job and happens inside the call.

The tokens of every call are split over its questions with
:func:`~rag_core.answering.attribution.attribute_tokens`; the error codes and counters of
the results are described in :mod:`rag_core.answering.types`.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

from rag_core.answering.attribution import attribute_tokens
from rag_core.answering.replies import ValidAnswer, parse_answers
from rag_core.answering.types import (
    MAX_BATCH_SIZE,
    AnswererBase,
    AnswerResult,
    CallGate,
    QuestionContext,
)
from rag_core.codes import ErrorCode
from rag_core.errors import CircuitOpenError, ConcurrencyError, LLMError
from rag_core.llm.breaker_state import BreakerState
from rag_core.llm.calls import CallReport, Completion
from rag_core.llm.client import LLMClient
from rag_core.llm.prompts import (
    PROMPT_VERSION,
    PROMPT_VERSIONS,
    BuiltPrompt,
    build_batch_prompt,
    build_single_prompt,
)

__all__ = ["LLMBatchAnswerer"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Outcome:
    """How one client call went, in the terms the tally needs."""

    completion: Completion | None
    attempts: int
    breaker_state: str | None
    breaker_opened: bool = False
    error_code: ErrorCode | None = None
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
    error_code: ErrorCode | None = None
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

    def failed(self, code: ErrorCode, error: str) -> None:
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
_FAIL_FAST = frozenset({ErrorCode.CIRCUIT_OPEN, ErrorCode.CONCURRENCY_TIMEOUT,
                        ErrorCode.CONCURRENCY_UNAVAILABLE})


def _open_gate() -> AbstractContextManager[object]:
    return nullcontext()


class LLMBatchAnswerer(AnswererBase):
    """Answers up to ``max_batch_size`` (1..5) questions per LLM call; see the module doc.

    ``prompt_version`` is the wording sent (one of
    :data:`~rag_core.llm.prompts.PROMPT_VERSIONS`) and the label recorded with every result.
    ``max_tokens_per_answer`` sizes the completion budget of a call (``per_answer *
    questions + 64`` for the JSON around the answers): a reply cut off at the limit is not
    valid JSON, and every question of the batch would be retried alone.
    """

    def __init__(self, client: LLMClient, *, max_batch_size: int = MAX_BATCH_SIZE,
                 prompt_version: str = PROMPT_VERSION, max_tokens_per_answer: int = 300,
                 ) -> None:
        super().__init__(max_batch_size)
        if max_tokens_per_answer < 1:
            raise ValueError(f"max_tokens_per_answer must be >= 1, got {max_tokens_per_answer}")
        if prompt_version not in PROMPT_VERSIONS:
            raise ValueError(f"unknown prompt version {prompt_version!r}")
        self._client = client
        self.prompt_version = prompt_version
        self.max_tokens_per_answer = max_tokens_per_answer

    def answer_batch(self, items: Sequence[QuestionContext], *,
                     call_gate: CallGate | None = None) -> list[AnswerResult]:
        """Answer ``items`` with one call (plus retries alone); one result per item, in order.

        ``call_gate`` is entered around every client call (:func:`answer_all` passes its
        concurrency limits). LLM failures become results with an ``error_code``; only bad
        input raises (:class:`ValueError`: too many items, empty or repeated ids).
        """
        items = self.checked(items)
        if not items:
            return []
        gate = call_gate or _open_gate
        batch_id = uuid.uuid4().hex
        started = time.monotonic()
        tallies = [_Tally(item, self._client.config.model, started) for item in items]

        prompt = build_batch_prompt(items, self.prompt_version)
        outcome = self._call(prompt, gate, len(items))
        for tally in tallies:
            tally.saw(outcome)
        pending: list[_Tally] = []
        if outcome.completion is not None:
            pending = self._settle_batch(tallies, prompt, outcome.completion)
        elif outcome.error_code in _FAIL_FAST or outcome.breaker_opened:
            for tally in tallies:
                tally.failed(outcome.error_code or ErrorCode.LLM_ERROR, outcome.error or "")
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
                tally.error_code = ErrorCode.INVALID_ANSWER
                tally.error = parsed.problems[tally.item.question_id]
                pending.append(tally)
        return pending

    def _retry_alone(self, pending: list[_Tally], gate: CallGate) -> None:
        stop: tuple[ErrorCode, str] | None = None
        for tally in pending:
            if stop is not None:
                tally.failed(*stop)
                continue
            tally.retried_alone = True
            question_id = tally.item.question_id
            prompt = build_single_prompt(tally.item, self.prompt_version)
            outcome = self._call(prompt, gate, 1)
            tally.saw(outcome)
            if outcome.completion is None:
                code = outcome.error_code or ErrorCode.LLM_ERROR
                tally.failed(code, outcome.error or "")
                if code in _FAIL_FAST:
                    stop = (code, f"not attempted: {outcome.error}")
                elif outcome.breaker_opened:
                    stop = (ErrorCode.CIRCUIT_OPEN, "not attempted: the circuit breaker "
                            f"opened after a failed call ({outcome.error})")
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
                tally.failed(ErrorCode.INVALID_ANSWER, parsed.problems[question_id])

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
                            error_code=exc.code, error=str(exc))
        except ConcurrencyError as exc:
            return _Outcome(None, 0, None, error_code=exc.code, error=str(exc))
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
                error_code=exc.code, error=str(exc))
        return _Outcome(completion, completion.attempts, completion.breaker_state.value)
