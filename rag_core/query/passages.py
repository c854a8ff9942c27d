"""Retrieved passages with personal data redacted (``RAG_REDACT_PASSAGES``).

A tenant's documents may hold personal data (a phone number in a support article, an e-mail
address in a study's contact line). The question is redacted before it leaves the process;
with this setting the passages are too, with the same redactor (:mod:`rag_core.pii`), so
the LLM provider, a third party, never receives them.

The chunks are redacted right after retrieval, not only when the prompt is built, because
everything downstream reads them: the prompt's passages, the source excerpts returned to the
caller (and kept in the answer cache, in Redis, and in answers files), the token estimate of
the quota. Redacting once keeps these consistent (the caller sees what the model saw and can
read the placeholders the answer may quote) and costs one redaction per passage. The full
text is redacted before the excerpt is cut from it, so a value split by the cut cannot
escape detection. The stored documents are never changed: a caller entitled to them reads
them by chunk id.
"""

from __future__ import annotations

import dataclasses
import time

from rag_core.pii import PiiRedactor, default_redactor
from rag_core.retrieval.retriever import Retrieval

__all__ = ["redact_retrieval"]


def redact_retrieval(retrieval: Retrieval,
                     redactor: PiiRedactor | None = None) -> tuple[Retrieval, float]:
    """``retrieval`` with every chunk's text redacted, and the milliseconds it took."""
    redactor = redactor or default_redactor()
    started = time.perf_counter()
    chunks = [dataclasses.replace(chunk, text=redactor.redact(chunk.text).text)
              for chunk in retrieval.chunks]
    elapsed_ms = (time.perf_counter() - started) * 1000
    return dataclasses.replace(retrieval, chunks=chunks), elapsed_ms
