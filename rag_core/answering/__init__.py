"""Answering questions in batches: up to five questions per LLM call, with honest accounting.

The package face: import the public names from here. One module per job:

- :mod:`~rag_core.answering.types`: the questions, passages and results (with the error
  codes and how calls, retries and latency are counted), and the ``Answerer`` protocol;
- :mod:`~rag_core.answering.attribution`: splitting a call's token usage over its questions;
- :mod:`~rag_core.answering.replies`: validating the model's JSON reply (what is tolerated);
- :mod:`~rag_core.answering.llm_answerer`: what happens to a batch with the LLM (one call,
  retries alone, failing fast);
- :mod:`~rag_core.answering.extractive`: the offline stand-in without an LLM;
- :mod:`~rag_core.answering.runner`: many batches concurrently, inside the call limits.
"""

from rag_core.answering.attribution import attribute_tokens
from rag_core.answering.extractive import (
    EXTRACTIVE_LABEL,
    EXTRACTIVE_MODEL,
    EXTRACTIVE_VERSION,
    ExtractiveAnswerer,
)
from rag_core.answering.llm_answerer import LLMBatchAnswerer
from rag_core.answering.replies import (
    AnswerEntry,
    BatchAnswers,
    ParsedAnswers,
    ValidAnswer,
    parse_answers,
)
from rag_core.answering.runner import answer_all
from rag_core.answering.types import (
    MAX_BATCH_SIZE,
    Answerer,
    AnswerResult,
    CallGate,
    Passage,
    QuestionContext,
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
