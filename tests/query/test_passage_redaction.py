"""RAG_REDACT_PASSAGES: personal data in a retrieved passage never reaches the LLM, the
source excerpts, the answer cache or answers; with the setting off the passage goes as
stored (so the setting, not something else, is what removes it)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pydantic import SecretStr

from rag_core.common.tenancy import TenantId
from rag_core.config import LLMSettings, Settings
from rag_core.db import tenant_admin
from rag_core.db.connection import resolve_targets
from rag_core.db.pool import Database
from rag_core.embeddings.base import Embedder
from rag_core.ingestion.chunking import chunk_document
from rag_core.ingestion.runner import run_ingestion
from rag_core.query.service import QueryService
from rag_core.retrieval.vector_store import VectorStore
from rag_testing.fake_groq import FakeGroqServer

EMAIL = "jane.doe@clinic-example.org"
PHONE = "+1 415 555 2671"
TITLE = "Vitamin D clinic enrolment"
QUESTION = "How do I enrol in the vitamin D deficiency clinic study?"


def _body() -> str:
    """A passage whose e-mail address straddles the 300th character of its chunk (where the
    source excerpt is cut): truncating before redacting would leave ``jane.doe@clin``."""
    filler = ("Patients with vitamin D deficiency are enrolled in the clinic study after a "
              "blood test of serum 25-hydroxyvitamin D levels and a short interview about "
              "diet, sun exposure and bone health. ")
    lead = filler * 3
    # The chunk starts with the title and "\n"; " Write to " takes 10 characters, and the
    # address starts 10 characters before the cut.
    lead = lead[:300 - len(TITLE) - 1 - 10 - 10]
    return (f"{lead} Write to {EMAIL} or call {PHONE} to enrol; the study team answers "
            "within two days and explains the vitamin D dosing schedule.")


@pytest.fixture(scope="module")
def pii_tenant(settings: Settings, db: Database, embedder: Embedder,
               tmp_path_factory: pytest.TempPathFactory) -> TenantId:
    with psycopg.connect(resolve_targets(settings).admin_url, autocommit=True) as conn:
        tenant = tenant_admin.create_tenant(conn, display_name="passage redaction")
    source = tmp_path_factory.mktemp("pii") / "corpus.jsonl"
    source.write_text(json.dumps({"_id": "clinic-1", "title": TITLE, "text": _body()}) + "\n"
                      + json.dumps({"_id": "other-1", "title": "Aspirin",
                                    "text": "Aspirin reduces cardiovascular events."}) + "\n")
    run_ingestion(db, embedder, VectorStore(db, settings), tenant, source)
    return tenant


def _llm(fake: FakeGroqServer) -> dict[str, Any]:
    return {"llm": LLMSettings(api_key=SecretStr("test-key"), base_url=fake.base_url,
                               timeout_s=5.0)}


def test_redacted_passages_reach_neither_the_llm_nor_the_sources(
        make_service: Callable[..., QueryService], pii_tenant: TenantId,
        fake_llm: FakeGroqServer, embedder: Embedder) -> None:
    chunk = chunk_document(TITLE, _body(), embedder.tokenizer)[0].text
    start = chunk.index(EMAIL)
    assert start < 300 < start + len(EMAIL)  # the premise of the excerpt check below

    answer = make_service(**_llm(fake_llm), redact_passages=True).ask(pii_tenant, QUESTION)

    assert answer.error_code is None and answer.sources
    prompt = fake_llm.requests[0].raw_body.decode()
    assert "[EMAIL]" in prompt and "[PHONE]" in prompt
    assert EMAIL not in prompt and "555 2671" not in prompt
    excerpts = " ".join(s.excerpt for s in answer.sources)
    assert "jane.doe" not in excerpts and "clinic-exam" not in excerpts
    assert "redact_passages" in answer.latency_ms
    assert "jane.doe" not in (answer.answer or "")

    # The control: with the setting off the passage goes as stored.
    plain = make_service(**_llm(fake_llm), redact_passages=False).ask(pii_tenant, QUESTION)
    assert plain.error_code is None and EMAIL in fake_llm.requests[1].raw_body.decode()
    assert "redact_passages" not in plain.latency_ms


def test_an_answer_cached_unredacted_is_not_served_once_redaction_is_on(
        make_service: Callable[..., QueryService], pii_tenant: TenantId,
        fake_llm: FakeGroqServer, tmp_path: Path) -> None:
    prefix = {"redis_key_prefix": f"redact{tmp_path.name[-8:].replace('_', '')}"}
    first = make_service(**_llm(fake_llm), **prefix, redact_passages=False).ask(
        pii_tenant, QUESTION)
    assert not first.cache_hit and "jane.doe" in " ".join(s.excerpt for s in first.sources)

    again = make_service(**_llm(fake_llm), **prefix, redact_passages=True).ask(
        pii_tenant, QUESTION)

    assert not again.cache_hit
    assert "jane.doe" not in " ".join(s.excerpt for s in again.sources)
    assert fake_llm.request_count == 2
