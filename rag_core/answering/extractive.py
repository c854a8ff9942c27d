"""The offline answerer: labelled quotes of the passages, for deployments without an LLM key.

:class:`ExtractiveAnswerer` speaks the same :class:`~rag_core.answering.types.Answerer`
protocol as the LLM answerer, so the query path is the same with or without an LLM; its
answers are plainly marked (:data:`EXTRACTIVE_LABEL`, model :data:`EXTRACTIVE_MODEL`) so that
nobody mistakes a quote for a generated answer, and they cost no tokens.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Sequence

from rag_core.answering.types import (
    MAX_BATCH_SIZE,
    AnswererBase,
    AnswerResult,
    CallGate,
    QuestionContext,
)

__all__ = [
    "EXTRACTIVE_LABEL",
    "EXTRACTIVE_MODEL",
    "EXTRACTIVE_VERSION",
    "ExtractiveAnswerer",
]

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


class ExtractiveAnswerer(AnswererBase):
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
        super().__init__(max_batch_size)  # only for symmetry with the LLM answerer
        self.max_sentences = max_sentences

    def answer_batch(self, items: Sequence[QuestionContext], *,
                     call_gate: CallGate | None = None) -> list[AnswerResult]:
        """One labelled extractive answer per item; ``call_gate`` is unused (no LLM calls)."""
        items = self.checked(items)
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
