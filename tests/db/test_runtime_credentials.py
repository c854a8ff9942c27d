"""Least privilege: a runtime process needs only the application URL, and never uses the
admin URL even when it holds one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from rag_core.common.tenancy import TenantId
from rag_core.composition import Platform
from rag_core.config import Settings
from rag_core.db.connection import resolve_targets
from rag_core.embeddings.base import Embedder
from rag_core.errors import ConfigurationError
from rag_core.ops import services
from rag_core.redis.embedded import EmbeddedRedis
from tests.conftest import make_settings


def _runtime_settings(settings: Settings, redis_server: EmbeddedRedis, state_dir: Path,
                      **overrides: object) -> Settings:
    """A runtime's settings: the application URL of the test database and nothing that leads
    to the admin (an empty state folder: no embedded server's credentials file)."""
    values: dict[str, object] = {
        "state_dir": state_dir, "app_database_url": resolve_targets(settings).app_url,
        "redis_url": redis_server.url(), "runtime_only": True}
    values.update(overrides)
    return make_settings(**values)


def test_a_runtime_platform_with_only_the_app_url_ingests_and_answers(
        settings: Settings, redis_server: EmbeddedRedis, embedder: Embedder,
        make_tenant: Callable[[], TenantId], write_jsonl: Callable[..., Path],
        tmp_path: Path) -> None:
    runtime = _runtime_settings(settings, redis_server, tmp_path / "state")
    assert runtime.database_url is None
    assert not runtime.uses_embedded_postgres  # nothing to start, no credentials to read
    tenant = make_tenant()  # tenant administration: an admin process's job
    source = write_jsonl([
        {"_id": "d1", "title": "Vitamin D", "text": "Vitamin D supports bone health in adults."},
        {"_id": "d2", "title": "Sleep", "text": "Adults need seven or more hours of sleep."}])

    with Platform(runtime, embedder=embedder) as platform:
        result = platform.ingestion.run(tenant, source)
        answer = platform.query_service.ask(tenant, "What supports bone health?")
        with pytest.raises(ConfigurationError) as info, platform.admin_connection():
            pass

    assert result.summary.status == "succeeded"
    assert result.summary.ingested == 2
    assert answer.error_code is None, answer.error
    assert answer.answer
    assert answer.sources and "Vitamin D" in answer.sources[0].excerpt
    assert info.value.setting == "RAG_RUNTIME_ONLY"
    assert not (tmp_path / "state" / "pg").exists()  # no embedded server was touched


def test_a_runtime_refuses_the_admin_url_even_when_it_holds_it(
        settings: Settings, redis_server: EmbeddedRedis, tmp_path: Path) -> None:
    admin_url = resolve_targets(settings).admin_url
    runtime = _runtime_settings(settings, redis_server, tmp_path, database_url=admin_url)
    with pytest.raises(ConfigurationError, match="RAG_RUNTIME_ONLY"):
        resolve_targets(runtime)
    with pytest.raises(ConfigurationError, match="RAG_RUNTIME_ONLY"):
        services.upgrade_database(runtime)
    # The runtime path still works.
    with services.open_database(runtime) as database, database.unscoped_session() as conn:
        assert conn.execute("SELECT current_user").fetchone() == (database.role,)


def test_admin_commands_without_the_admin_url_name_the_missing_setting(
        settings: Settings, redis_server: EmbeddedRedis, tmp_path: Path) -> None:
    app_only = _runtime_settings(settings, redis_server, tmp_path, runtime_only=False)
    with pytest.raises(ConfigurationError) as info:
        services.upgrade_database(app_only)
    assert info.value.setting == "RAG_DATABASE_URL"
    assert "RAG_APP_DATABASE_URL" in str(info.value)
