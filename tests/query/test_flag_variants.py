"""What a feature flag switches on the query path, end to end: a canary tenant's questions
go through hybrid retrieval and prompt v2 (the fake LLM sees v2's wording), a control
tenant's through the defaults; both audit rows say which cohort they were in; a rollback
reaches the query path within the flag cache's ttl; cached answers never cross variants."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pydantic import SecretStr

from rag_core.common.tenancy import TenantId
from rag_core.composition import Platform
from rag_core.config import LLMSettings, RateLimitPolicy, Settings
from rag_core.db import tenant_admin
from rag_core.db.connection import resolve_targets
from rag_core.embeddings.base import Embedder
from rag_core.errors import UnknownEmbeddingModelError
from rag_core.ingestion.runner import run_ingestion
from rag_core.ops import services
from rag_core.redis.embedded import EmbeddedRedis
from rag_core.retrieval.hybrid import HybridRetrieval
from rag_core.retrieval.vector_store import VectorStore
from rag_testing.fake_groq import FakeGroqServer, answering_responder
from tests.ingestion.conftest import scifact_records


@pytest.fixture(scope="module")
def flag_db(create_database: Callable[[str], Settings], embedder: Embedder,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, list[TenantId]]]:
    """A database of the module's own (flags are global) with two tenants of 20 abstracts."""
    settings = create_database("variants")
    services.upgrade_database(settings)
    source = tmp_path_factory.mktemp("variants") / "corpus.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in scifact_records(20, start=2000)))
    tenants = []
    with psycopg.connect(resolve_targets(settings).admin_url, autocommit=True) as conn:
        for _ in range(2):
            tenants.append(tenant_admin.create_tenant(conn, display_name="variants"))
    with services.open_database(settings) as db:
        for tenant in tenants:
            run_ingestion(db, embedder, VectorStore(db, settings), tenant, source)
    yield settings, tenants


@pytest.fixture()
def platform(flag_db: tuple[Settings, list[TenantId]], embedder: Embedder,
             redis_server: EmbeddedRedis,
             tmp_path: Path) -> Iterator[tuple[Platform, FakeGroqServer]]:
    settings, _ = flag_db
    with FakeGroqServer(default=answering_responder) as fake:
        configured = settings.model_copy(update={
            "redis_key_prefix": f"v{abs(hash(tmp_path)) % 10**8}",
            "flag_cache_ttl_s": 0.0,
            "llm": LLMSettings(api_key=SecretStr("test-key"), base_url=fake.base_url,
                               timeout_s=5.0),
            "rate_limit": RateLimitPolicy(requests_per_minute=100_000,
                                          tokens_per_day=100_000_000)})
        with Platform(configured, embedder=embedder, redis_url=redis_server.url(),
                      start_services=False) as platform:
            yield platform, fake


def _audit_row(platform: Platform, tenant: TenantId, request_id: str) -> dict[str, Any]:
    with platform.database.tenant_session(tenant) as conn, \
            conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        row = cur.execute("SELECT * FROM rag.audit_log WHERE request_id = %s",
                          [request_id]).fetchone()
    assert row is not None
    return dict(row)


def test_a_flag_switches_retrieval_and_prompt_for_its_cohort_only(
        platform: tuple[Platform, FakeGroqServer],
        flag_db: tuple[Settings, list[TenantId]]) -> None:
    plat, fake = platform
    canary, control = flag_db[1]
    # hybrid is the default retrieval: the flag switches its cohort to dense
    flag = plat.flags.create("dense-v2", {"retrieval_mode": "dense",
                                          "prompt_version": "batch-qa-v2"},
                             force_on=[canary], force_off=[control])
    plat.flags.transition(flag.name, state="rolling", percent=50, action="start",
                          actor="test", reason="compare")
    try:
        question = "Does vitamin D supplementation reduce fractures?"
        route = plat.query_service.route(canary)
        assert route.config.retrieval_mode == "dense"
        assert not isinstance(route.retriever.retrieve(canary, question), HybridRetrieval)
        default = plat.query_service.route(control)
        assert default.config.retrieval_mode == "hybrid"
        assert isinstance(default.retriever.retrieve(control, question), HybridRetrieval)

        fake.reset_stats()
        on = plat.query_service.ask(canary, question)
        sent_canary = fake.requests[-1].messages[0]["content"]
        off = plat.query_service.ask(control, question)
        sent_control = fake.requests[-1].messages[0]["content"]
        assert on.error_code is None and off.error_code is None
        assert "Supported, Contradicted or Unaddressed" in sent_canary
        assert "Supported, Contradicted or Unaddressed" not in sent_control

        canary_row = _audit_row(plat, canary, on.request_id)
        control_row = _audit_row(plat, control, off.request_id)
        assert (canary_row["prompt_version"], canary_row["rollout_cohort"]) == (
            "batch-qa-v2", "dense-v2=canary")
        assert (control_row["prompt_version"], control_row["rollout_cohort"]) == (
            "batch-qa-v1", "dense-v2=control")

        # the same question again is a cache hit for each, from its own variant's entry
        again = plat.query_service.ask(canary, question)
        assert again.cache_hit and again.answer == on.answer

        # rolled back: the canary tenant is answered by the defaults again, not from the
        # canary's cache entry, and its rows no longer carry a cohort
        plat.flags.transition(flag.name, state="rolled_back", percent=0,
                              action="rollback", actor="test", reason="done")
        after = plat.query_service.ask(canary, question)
        assert not after.cache_hit
        assert "Supported, Contradicted" not in fake.requests[-1].messages[0]["content"]
        row = _audit_row(plat, canary, after.request_id)
        assert (row["prompt_version"], row["rollout_cohort"]) == ("batch-qa-v1", None)
    finally:
        plat.flags.transition(flag.name, state="rolled_back", percent=0, action="rollback",
                              actor="test", reason="cleanup")


def test_an_embedding_version_without_an_embedder_is_refused_and_audited(
        platform: tuple[Platform, FakeGroqServer],
        flag_db: tuple[Settings, list[TenantId]]) -> None:
    plat, _ = platform
    canary = flag_db[1][0]
    with plat.admin_connection() as conn:
        conn.execute("SELECT rag.register_embedding_model('minilm-unloadable', "
                     "'sentence-transformers/all-MiniLM-L6-v2', 384)")
    flag = plat.flags.create("unloadable-embedding", {"embedding_model_key":
                                                      "minilm-unloadable"},
                             force_on=[canary])
    try:
        with pytest.raises(UnknownEmbeddingModelError) as refused:
            plat.query_service.ask(canary, "Is aspirin linked to bleeding?")
        assert "minilm-unloadable" in str(refused.value)
        assert "RAG_EMBEDDING_VARIANTS" in str(refused.value)
        with plat.database.tenant_session(canary) as conn:
            code = conn.execute("SELECT error_code FROM rag.audit_log "
                                "ORDER BY audit_id DESC LIMIT 1").fetchone()
        assert code == ("unknown_embedding_model",)  # refused, and audited
    finally:
        plat.flags.transition(flag.name, state="rolled_back", percent=0, action="rollback",
                              actor="test", reason="cleanup")
