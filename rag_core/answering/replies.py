"""Reading the model's reply: validated with pydantic, entry by entry, prose never parsed.

The reply to a batch prompt (:mod:`rag_core.llm.prompts`) is ``{"answers": [...]}``.
:func:`parse_answers` validates it against the questions that were asked
(:class:`BatchAnswers`, then :class:`AnswerEntry` per entry): one malformed entry does not
discard the others, and nothing in the reply can make it raise.

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
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, field_validator

__all__ = [
    "AnswerEntry",
    "BatchAnswers",
    "ParsedAnswers",
    "ValidAnswer",
    "parse_answers",
]


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
