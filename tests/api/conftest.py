"""Fixtures for the HTTP service: a real server on 127.0.0.1 over a platform that answers
from a real corpus through the fake Groq server, and API keys made the product's way."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from rag_core.common.tenancy import TenantId
from rag_core.composition import Platform
from rag_core.config import RateLimitPolicy, Settings
from rag_core.db.pool import Database
from rag_core.embeddings.base import Embedder
from rag_core.redis.embedded import EmbeddedRedis
from rag_testing.api_server import ApiServer
from rag_testing.fake_groq import FakeGroqServer, answering_responder
from tests.query.conftest import corpus_tenant

__all__ = ["Api", "api", "api_settings", "corpus_tenant", "module_fake_llm", "serve"]


@dataclass
class Api:
    """A running service: its URL, a tenant with documents, a live key of that tenant."""

    url: str
    tenant: TenantId
    key: str
    platform: Platform
    llm: FakeGroqServer

    def client(self, key: str | None = None, **options: Any) -> httpx.Client:
        """An HTTP client with ``key`` (default: the tenant's) as its bearer token."""
        chosen = self.key if key is None else key
        headers = {"Authorization": f"Bearer {chosen}"} if chosen else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, **options)


@pytest.fixture(scope="module")
def module_fake_llm() -> Iterator[FakeGroqServer]:
    with FakeGroqServer(default=answering_responder) as server:
        yield server


@pytest.fixture(scope="module")
def api_settings(settings: Settings, module_fake_llm: FakeGroqServer,
                 tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The service's settings: the fake LLM, a fresh Redis key space, generous limits, a
    short batch poll so tests wait less."""
    llm = settings.llm.model_copy(update={"api_key": SecretStr("gsk_test"), "base_url":
                                          module_fake_llm.base_url})
    api = settings.api.model_copy(update={"batch_poll_interval_s": 0.05,
                                          "sse_poll_interval_s": 0.05, "batch_lease_s": 5.0,
                                          "audit_flush_interval_s": 0.05})
    return settings.model_copy(update={
        # The suite's state folder (its embedded servers), with a spool of this module's own.
        "audit_spool_dir": tmp_path_factory.mktemp("api-spool"), "llm": llm, "api": api,
        "redis_key_prefix": f"t{secrets.token_hex(4)}",
        "rate_limit": RateLimitPolicy(requests_per_minute=100_000, tokens_per_day=100_000_000)})


@pytest.fixture(scope="module")
def serve(db: Database, embedder: Embedder,
          redis_server: EmbeddedRedis) -> Iterator[Callable[..., ApiServer]]:
    """Factory: a started server over a serving platform built from the given settings."""
    started: list[tuple[ApiServer, Platform]] = []

    def factory(service_settings: Settings, **options: Any) -> ApiServer:
        platform = Platform(service_settings, database=db, embedder=embedder,
                            redis_url=redis_server.url(), serving=True)
        server = ApiServer(platform, **options).start()
        started.append((server, platform))
        return server

    yield factory
    for server, platform in reversed(started):
        server.stop()
        platform.close()


@pytest.fixture(scope="module")
def api(api_settings: Settings, corpus_tenant: TenantId, serve: Callable[..., ApiServer],
        module_fake_llm: FakeGroqServer) -> Api:
    # The tenant before the server, so the server (and its batch runner, perhaps still
    # answering the tenant's batches) stops before the tenant is deleted: deleting it under
    # a running batch can deadlock with the runner's writes.
    server = serve(api_settings)
    platform = server.platform
    issued = platform.api_keys.create(corpus_tenant, "tests")
    return Api(server.url, corpus_tenant, issued.key, platform, module_fake_llm)


def repo_artifacts() -> Path:
    """Where tests leave artifacts (screenshots): the suite's state folder, not the repo."""
    from tests.conftest import TEST_STATE_DIR

    folder = TEST_STATE_DIR / "artifacts"
    folder.mkdir(parents=True, exist_ok=True)
    return folder
