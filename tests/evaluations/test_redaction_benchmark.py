"""``rag bench redaction --quick``: the benchmark runs end to end through the CLI on real
SciFact passages, times both modes for every query and deletes its tenant."""

from __future__ import annotations

import json
from collections.abc import Iterator

import psycopg
import pytest
import typer
from typer.testing import CliRunner

from evaluations.cli import bench_redaction
from rag_core.config import Settings, get_settings
from rag_core.db.connection import resolve_targets
from rag_core.embeddings.base import Embedder
from rag_core.redis.embedded import EmbeddedRedis
from tests.conftest import TEST_STATE_DIR


@pytest.fixture()
def env_settings(settings: Settings, redis_server: EmbeddedRedis,
                 monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """The CLI reads its settings from the environment: point it at the test servers."""
    monkeypatch.setenv("RAG_STATE_DIR", str(TEST_STATE_DIR))
    monkeypatch.setenv("RAG_EMBEDDED_DATABASE", settings.embedded_database)
    for name in ("DATABASE_URL", "RAG_DATABASE_URL", "REDIS_URL", "RAG_REDIS_URL",
                 "RAG_APP_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield settings
    get_settings.cache_clear()


def _tenants(settings: Settings) -> int:
    with psycopg.connect(resolve_targets(settings).admin_url) as conn:
        row = conn.execute("SELECT count(*) FROM rag.tenants").fetchone()
    return int(row[0]) if row else 0


def test_quick_run_times_both_modes_and_leaves_no_tenant(env_settings: Settings,
                                                         embedder: Embedder) -> None:
    bench_app = typer.Typer()
    bench_redaction.register(bench_app)

    @bench_app.command("other")
    def other() -> None:
        """Placeholder (a group of one command collapses into it)."""

    tenants_before = _tenants(env_settings)
    result = CliRunner().invoke(bench_app, ["redaction", "--quick", "--json"])

    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout.strip().splitlines()[-1])
    assert (data["mode"], data["questions"], data["k"]) == ("quick", 5, 5)
    assert data["queries_timed"] == 5 and data["passages"] == 25
    assert data["on_ms_per_query_p50"] > 0 and data["off_ms_per_query_p50"] > 0
    assert data["redact_ms_per_query_p50"] > 0 and data["ratio_on_off_p50"] > 0
    assert 0 <= data["passages_changed"] <= data["passages"]
    assert _tenants(env_settings) == tenants_before


def test_rag_bench_mounts_the_command() -> None:
    from evaluations.cli.bench_commands import bench_app

    result = CliRunner().invoke(bench_app, ["redaction", "--help"])
    assert result.exit_code == 0 and "--quick" in result.output
