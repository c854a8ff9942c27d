"""Fixtures for the query path: a tenant with a real ingested corpus, a fake Groq server that
answers batch prompts correctly, and services built the way the product builds them."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from rag_core.common.tenancy import TenantId
from rag_core.composition import Platform
from rag_core.config import RateLimitPolicy, Settings
from rag_core.db import tenant_admin
from rag_core.db.connection import resolve_targets
from rag_core.db.embedded import EmbeddedPostgres
from rag_core.db.pool import Database
from rag_core.embeddings.base import Embedder
from rag_core.ingestion.runner import run_ingestion
from rag_core.ops import services
from rag_core.query.service import QueryService
from rag_core.redis.embedded import EmbeddedRedis
from rag_core.retrieval.vector_store import VectorStore
from rag_testing.fake_groq import FakeGroqServer, answering_responder
from tests.conftest import REPO_ROOT, make_settings
from tests.ingestion.conftest import scifact_records


@pytest.fixture(scope="module")
def corpus_tenant(settings: Settings, embedder: Embedder,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[TenantId]:
    """A tenant holding 40 real SciFact abstracts (ingested once per module)."""
    admin_url = resolve_targets(settings).admin_url
    with psycopg.connect(admin_url, autocommit=True) as conn:
        tenant = tenant_admin.create_tenant(conn, display_name="query tests")
    folder = tmp_path_factory.mktemp("corpus")
    source = folder / "corpus.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in scifact_records(40, start=1000)))
    with services.open_database(settings) as db:
        run_ingestion(db, embedder, VectorStore(db, settings), tenant, source)
    yield tenant
    with psycopg.connect(admin_url, autocommit=True) as conn:
        tenant_admin.delete_tenant(conn, tenant)


@pytest.fixture()
def fake_llm() -> Iterator[FakeGroqServer]:
    with FakeGroqServer(default=answering_responder) as server:
        yield server


@pytest.fixture()
def make_service(settings: Settings, db: Database, embedder: Embedder,
                 redis_server: EmbeddedRedis,
                 tmp_path: Path) -> Callable[..., QueryService]:
    """Build the query service as the product does, with settings overrides."""

    def factory(redis_url: str | None = None, **overrides: Any) -> QueryService:
        # Fresh Redis key space per service, so limits and caches of one test never leak
        # into another; generous limits unless a test sets its own.
        values: dict[str, Any] = {
            "state_dir": tmp_path / "state", "redis_key_prefix": f"t{secrets.token_hex(4)}",
            "rate_limit": RateLimitPolicy(requests_per_minute=100_000,
                                          tokens_per_day=100_000_000)}
        values.update(overrides)
        service_settings = settings.model_copy(update=values)
        return Platform(service_settings, database=db, embedder=embedder,
                        redis_url=redis_url or redis_server.url()).query_service

    return factory


@pytest.fixture(scope="module")
def private_pg() -> Iterator[tuple[EmbeddedPostgres, Settings]]:
    """A migrated PostgreSQL server of the module's own, for tests that stop it (the shared
    test server is never stopped). Under the repository's .rag, not /tmp: the server's OS
    user must traverse the parents."""
    root = REPO_ROOT / ".rag" / "test-faults"
    root.mkdir(parents=True, exist_ok=True)
    state = root / f"{os.getpid()}-{time.monotonic_ns()}"
    state.mkdir()
    server = EmbeddedPostgres(state)
    server.start()
    try:
        services.ensure_embedded_database(state, "rag")
        settings = make_settings(state_dir=state)
        services.upgrade_database(settings)
        yield server, settings
    finally:
        server.stop()
        shutil.rmtree(state, ignore_errors=True)


def audit_rows(db: Database, tenant: TenantId, since_id: int = 0) -> list[dict[str, Any]]:
    with db.tenant_session(tenant) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return list(cur.execute("SELECT * FROM rag.audit_log WHERE audit_id > %s "
                                "ORDER BY audit_id", [since_id]).fetchall())


def last_audit_id(db: Database, tenant: TenantId) -> int:
    with db.tenant_session(tenant) as conn:
        row = conn.execute("SELECT coalesce(max(audit_id), 0) FROM rag.audit_log").fetchone()
    return int(row[0]) if row else 0
