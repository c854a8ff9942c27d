"""One line per measured stage: its histogram sample and its span together.

``with stage(Stage.EMBED):`` times the block into
``rag_stage_seconds{stage="embed"}`` and runs it inside a child span named ``embed`` of
whatever span is current (the API's request span, or :func:`request_span`'s), so that the
metric and the trace of a stage can never disagree about what was measured. Keyword
attributes are namespaced under the stage: ``operation="get"`` on the ``cache`` stage is the
span attribute ``rag.cache.operation``. A block that raises is still timed, and its span is
marked failed with the error's code (never its message: see :mod:`rag_core.common.tracing`).

Spans follow the current context (a context variable): work handed to a thread pool keeps
its parent only when submitted through ``contextvars.copy_context().run``, as the query
service and the answer runner do.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.util.types import AttributeValue

from rag_core.common.metric_defs import STAGE_SECONDS, Stage
from rag_core.common.tracing import (
    TENANT_HASH_ATTRIBUTE,
    mark_failed,
    open_span,
    tenant_hash,
    tracing_enabled,
)

__all__ = ["Stage", "request_span", "stage"]


# One labelled child per stage, resolved once: labels() costs as much as observe() itself.
_HISTOGRAMS = {s: STAGE_SECONDS.labels(s.value) for s in Stage}


@contextmanager
def stage(name: Stage, **attributes: AttributeValue) -> Iterator[trace.Span]:
    """Time the block as stage ``name`` and run it in a child span of that name."""
    started = time.perf_counter()
    try:
        if not tracing_enabled():  # the histogram alone
            yield trace.INVALID_SPAN
            return
        prefix = f"rag.{name.value}."
        with open_span(name.value, attributes={prefix + key: value for key, value in
                                               attributes.items()}) as span:
            yield span
    finally:
        _HISTOGRAMS[name].observe(time.perf_counter() - started)


@contextmanager
def request_span(name: str, tenant: str, key: bytes | None,
                 **attributes: AttributeValue) -> Iterator[trace.Span]:
    """The span of one request: the caller's when one is recording (the API's request
    span, which the stages then hang under directly), else a new ``name`` span (the CLI, a
    flow). It gets the tenant as :func:`~rag_core.common.tracing.tenant_hash` under ``key``
    (nothing without a key) and ``attributes`` as ``rag.<key>``."""
    values: dict[str, AttributeValue] = {f"rag.{k}": v for k, v in attributes.items()}
    if key is not None:
        values[TENANT_HASH_ATTRIBUTE] = tenant_hash(tenant, key)
    current = trace.get_current_span()
    if current.is_recording():
        current.set_attributes(values)
        try:
            yield current
        except BaseException as exc:
            mark_failed(current, exc)
            raise
        return
    with open_span(name, attributes=values) as span:
        yield span
