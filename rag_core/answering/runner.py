"""Many batches at once: a thread pool, with every LLM call held inside the concurrency limits.

Concurrency
-----------
:func:`answer_all` runs batches in a thread pool and holds a semaphore (and, if given, a
cross-process slot from :mod:`rag_core.limits.concurrency`) around every client call, retries alone
included. Each batch runs in a copy of the caller's context, so the spans of its LLM calls
keep the caller's span (the ``llm`` stage) as their parent.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from rag_core.answering.types import (
    Answerer,
    AnswerResult,
    QuestionContext,
    check_batch_size,
    check_items,
)
from rag_core.limits.concurrency import ConcurrencySlots, LocalSlots

__all__ = ["answer_all"]


def answer_all(items: Sequence[QuestionContext], answerer: Answerer, *, batch_size: int = 5,
               max_concurrent_llm_calls: int = 3,
               slots: ConcurrencySlots | None = None) -> list[AnswerResult]:
    """Answer every item in batches of at most ``batch_size``; results in input order.

    Batches run concurrently in a thread pool. Around every LLM call (retries alone
    included) a semaphore of ``max_concurrent_llm_calls`` is held, then a slot of ``slots``
    (e.g. a :class:`~rag_core.limits.concurrency.RedisSemaphore` shared by every process); the local
    semaphore is taken first so that no process sits on a shared slot while it waits for a
    local one. The semaphore belongs to this run: to cap several concurrent runs of one
    process together, also pass them one shared :class:`~rag_core.limits.concurrency.LocalSlots`.

    Raises :class:`ValueError` for a ``batch_size`` outside 1..5 (or above the answerer's
    ``max_batch_size``), ``max_concurrent_llm_calls`` < 1, or empty or repeated question ids.
    """
    check_batch_size(batch_size, "batch_size")
    if batch_size > answerer.max_batch_size:
        raise ValueError(f"batch_size {batch_size} exceeds the answerer's max_batch_size "
                         f"{answerer.max_batch_size}")
    if max_concurrent_llm_calls < 1:
        raise ValueError(f"max_concurrent_llm_calls must be >= 1, got "
                         f"{max_concurrent_llm_calls}")
    items = list(items)
    check_items(items, len(items))
    if not items:
        return []
    batches = [items[i:i + batch_size] for i in range(0, len(items), batch_size)]
    # LocalSlots rather than a bare semaphore: its waits are measured (llm_calls).
    local = LocalSlots(max_concurrent_llm_calls, name="llm_calls")

    @contextmanager
    def gate() -> Iterator[None]:
        with local.slot():
            if slots is None:
                yield
            else:
                with slots.slot():
                    yield

    workers = min(len(batches), max_concurrent_llm_calls)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rag-answer") as pool:
        context = contextvars.copy_context()
        futures = [pool.submit(context.copy().run, answerer.answer_batch, batch, call_gate=gate)
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
