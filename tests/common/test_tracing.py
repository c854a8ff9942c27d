"""Traces of the query path, caught by an in-memory exporter: the span tree of a request
(stages under the request's span, the LLM call under the llm stage, also from the threads
of a batch), a cached answer's shorter tree, and what spans must never carry (a tenant id,
a question, an exception's message). Real PostgreSQL, Redis and embeddings; the fake Groq
server over real HTTP."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from pydantic import SecretStr

from rag_core.common.metrics import Stage
from rag_core.common.tenancy import TenantId, new_tenant_id
from rag_core.common.tracing import configure_tracing, tenant_hash, tracer
from rag_core.composition import audit_hash_key
from rag_core.config import LLMSettings, Settings
from rag_core.errors import UnknownTenantError
from rag_core.query.service import QueryService
from rag_testing.fake_groq import FakeGroqServer

QUESTION = "Which vitamin is linked to bone mineral density in older adults?"
BATCH = ["Does smoking increase the risk of lung cancer?",
         "How do T cells recognise antigens?",
         "What causes antibiotic resistance in bacteria?"]
MODEL = LLMSettings().model
STAGES = {s.value for s in Stage}


@pytest.fixture(scope="module")
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    configure_tracing("rag-tests", exporter=exporter)
    yield exporter
    exporter.shutdown()  # the provider stays (one per process); later spans are dropped


@pytest.fixture()
def spans(exporter: InMemorySpanExporter) -> InMemorySpanExporter:
    exporter.clear()
    return exporter


def llm(fake: FakeGroqServer) -> dict[str, Any]:
    return {"llm": LLMSettings(api_key=SecretStr("test-key"), base_url=fake.base_url,
                               timeout_s=5.0)}


def children(spans: Sequence[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    assert parent.context is not None
    return [s for s in spans if s.parent is not None
            and s.parent.span_id == parent.context.span_id]


def only(spans: Sequence[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


def texts(span: ReadableSpan) -> list[str]:
    """Everything a trace backend would show of ``span``."""
    shown = [span.name, str(span.status.description)]
    shown += [str(v) for v in (span.attributes or {}).values()]
    for event in span.events:
        shown += [event.name, *(str(v) for v in (event.attributes or {}).values())]
    return shown


def assert_nothing_leaks(spans: Sequence[ReadableSpan], *secrets: str) -> None:
    assert spans
    for span in spans:
        for text in texts(span):
            for secret in secrets:
                assert secret not in text, (span.name, text)


def trace_key(settings: Settings, tmp_path: Path) -> bytes:
    """The key make_service's platform hashes tenants with (its state folder's)."""
    return audit_hash_key(settings.model_copy(update={"state_dir": tmp_path / "state"}))


def test_one_ask_gives_the_stage_spans_under_the_request_span(
        make_service: Callable[..., QueryService], corpus_tenant: TenantId,
        fake_llm: FakeGroqServer, spans: InMemorySpanExporter, settings: Settings,
        tmp_path: Path) -> None:
    service = make_service(**llm(fake_llm))
    with tracer().start_as_current_span("POST /v1/query", kind=SpanKind.SERVER):
        answer = service.ask(corpus_tenant, QUESTION)
    assert answer.error_code is None and answer.prompt_tokens > 0

    finished = spans.get_finished_spans()
    root = only(finished, "POST /v1/query")
    assert root.parent is None and root.context is not None
    assert {s.context.trace_id for s in finished if s.context} == {root.context.trace_id}
    stages = children(finished, root)
    names = [s.name for s in stages]
    assert {"embed", "retrieve", "cache", "llm", "audit"} <= set(names) <= STAGES
    # In the order the query path runs them.
    assert names.index("embed") < names.index("retrieve") < names.index("llm") \
        < names.index("audit")
    # The service annotates the request's span rather than opening a second one.
    assert (root.attributes or {})["rag.tenant_hash"] == \
        tenant_hash(corpus_tenant, trace_key(settings, tmp_path))
    assert (root.attributes or {})["rag.questions"] == 1

    lookup = [s for s in stages if s.name == "cache"
              and (s.attributes or {}).get("rag.cache.operation") == "get"]
    assert [(s.attributes or {})["rag.cache.hit"] for s in lookup] == [False]
    assert (only(stages, "embed").attributes or {})["rag.embed.cache_hit"] is False
    assert (only(stages, "retrieve").attributes or {})["rag.retrieve.chunks"] == \
        len(answer.sources)

    stage = only(stages, "llm")
    (call,) = children(finished, stage)  # the LLM call, run in the answer runner's thread
    attributes = call.attributes or {}
    assert call.name == f"chat {MODEL}" and call.kind is SpanKind.CLIENT
    assert attributes["gen_ai.request.model"] == MODEL
    assert attributes["gen_ai.usage.input_tokens"] == answer.prompt_tokens
    assert attributes["gen_ai.usage.output_tokens"] == answer.completion_tokens
    assert attributes["rag.llm.outcome"] == "ok" and attributes["rag.llm.retries"] == 0
    assert (stage.attributes or {})["gen_ai.usage.input_tokens"] == answer.prompt_tokens
    assert all(s.status.status_code is not StatusCode.ERROR for s in finished)
    assert_nothing_leaks(finished, corpus_tenant, QUESTION, QUESTION[:24])


def test_a_cached_answer_has_a_cache_hit_and_no_llm_span(
        make_service: Callable[..., QueryService], corpus_tenant: TenantId,
        fake_llm: FakeGroqServer, spans: InMemorySpanExporter) -> None:
    service = make_service(**llm(fake_llm))
    assert service.ask(corpus_tenant, QUESTION).cache_hit is False
    spans.clear()
    with tracer().start_as_current_span("POST /v1/query", kind=SpanKind.SERVER):
        assert service.ask(corpus_tenant, QUESTION).cache_hit is True

    finished = spans.get_finished_spans()
    stages = children(finished, only(finished, "POST /v1/query"))
    names = {s.name for s in stages}
    assert "cache" in names and "audit" in names
    assert not names & {"llm", "embed", "retrieve", "quota"}
    assert not [s for s in finished if s.name.startswith("chat ")]
    (lookup,) = [s for s in stages if s.name == "cache"]
    assert (lookup.attributes or {})["rag.cache.hit"] is True
    assert_nothing_leaks(finished, corpus_tenant, QUESTION)


def test_a_batch_keeps_its_parent_in_the_search_and_llm_threads(
        make_service: Callable[..., QueryService], corpus_tenant: TenantId,
        fake_llm: FakeGroqServer, spans: InMemorySpanExporter) -> None:
    answers = make_service(**llm(fake_llm)).ask_many(corpus_tenant, BATCH)
    assert all(a.error_code is None for a in answers)

    finished = spans.get_finished_spans()
    # No caller span (the CLI, a flow): the service's own span is the root.
    root = only(finished, "rag.query")
    assert root.parent is None and (root.attributes or {})["rag.questions"] == 3
    stages = children(finished, root)
    assert [s.name for s in stages].count("embed") == 3  # searched in three threads
    assert [s.name for s in stages].count("retrieve") == 3
    (call,) = children(finished, only(stages, "llm"))  # three questions, one call
    assert (call.attributes or {})["gen_ai.usage.input_tokens"] == \
        sum(a.prompt_tokens for a in answers)
    assert len(finished) == 1 + len(stages) + 1
    assert_nothing_leaks(finished, corpus_tenant, *BATCH)


def test_a_failed_stage_is_marked_by_its_code_without_the_message(
        make_service: Callable[..., QueryService], spans: InMemorySpanExporter) -> None:
    stranger = new_tenant_id()  # well-formed, never created: refused, and audited
    with pytest.raises(UnknownTenantError):
        make_service().ask(stranger, QUESTION)

    finished = spans.get_finished_spans()
    failed = only(finished, "tenant_state")
    assert failed.status.status_code is StatusCode.ERROR
    assert (failed.attributes or {})["error.type"] == "unknown_tenant"
    assert (only(finished, "rag.query").attributes or {})["error.type"] == "unknown_tenant"
    assert not any(s.events for s in finished)  # no exception event, no message
    assert "audit" in {s.name for s in finished}  # audited all the same
    assert_nothing_leaks(finished, stranger, QUESTION)
