"""Session fixtures: real embedded PostgreSQL (pgvector) and real Redis, started by the suite.

The suite runs its own servers under ``.rag/test`` (never the user's ``.rag`` data) and gives
each test module that needs a clean schema its own database. Nothing here is mocked: the LLM
is the only component ever faked, and only with a real HTTP server.
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from rag_core.common.offline import apply_offline_environment
from rag_core.common.tenancy import TenantId
from rag_core.composition import Platform
from rag_core.config import Settings
from rag_core.db import tenant_admin
from rag_core.db.connection import resolve_analytics_target, resolve_targets
from rag_core.db.embedded import EmbeddedPostgres
from rag_core.db.pool import Database
from rag_core.embeddings.base import Embedder
from rag_core.embeddings.registry import ensure_models, load_embedder
from rag_core.ops import services
from rag_core.redis.embedded import EmbeddedRedis
from rag_core.retrieval.vector_store import VectorStore

REPO_ROOT = Path(__file__).resolve().parent.parent
TEST_STATE_DIR = REPO_ROOT / ".rag" / "test"

# The same offline, no-telemetry defaults as scripts/env.sh, for a bare `pytest` run too.
apply_offline_environment()
os.environ.setdefault("PREFECT_HOME", str(TEST_STATE_DIR / "prefect"))
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
# Prefect warns (an error under filterwarnings=error) when its home folder is missing.
Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)


def make_settings(**overrides: Any) -> Settings:
    """Settings for the test servers; explicit values beat the caller's environment."""
    values: dict[str, Any] = {"state_dir": TEST_STATE_DIR, "database_url": None,
                              "redis_url": None, "app_database_url": None}
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[EmbeddedPostgres]:
    # Not stopped at the end: several pytest sessions may share these servers;
    # scripts/test.sh stops them when the whole run is over.
    server = EmbeddedPostgres(TEST_STATE_DIR)
    server.start()
    yield server


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(TEST_STATE_DIR)
    server.start()
    yield server


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One Prefect test harness (a temporary local API) for the whole session, shared by
    every test that runs a flow in-process (two harnesses at once would fight over the
    process's Prefect settings)."""
    # Imported here: most test sessions run no flow and need not pay Prefect's import.
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def create_database(pg_server: EmbeddedPostgres) -> Callable[[str], Settings]:
    """Factory: a new empty database on the test server; returns settings pointing at it."""

    def factory(prefix: str = "t") -> Settings:
        name = f"{prefix}_{secrets.token_hex(4)}"
        services.ensure_embedded_database(TEST_STATE_DIR, name)
        return make_settings(embedded_database=name)

    return factory


@pytest.fixture(scope="session")
def settings(create_database: Callable[[str], Settings]) -> Settings:
    """A migrated database shared by the session's read-mostly tests."""
    migrated = create_database("rag")
    services.upgrade_database(migrated)
    return migrated


@pytest.fixture(scope="session")
def db(settings: Settings) -> Iterator[Database]:
    database = services.open_database(settings)
    yield database
    database.close()


@pytest.fixture()
def admin_conn(settings: Settings) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    with psycopg.connect(resolve_targets(settings).admin_url, autocommit=True) as conn:
        yield conn


@pytest.fixture()
def analyst_conn(settings: Settings) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    """An autocommit connection as the analytics role (rag_analyst, migration 0013): what
    dbt and analysts connect as."""
    with psycopg.connect(resolve_analytics_target(settings).url, autocommit=True) as conn:
        yield conn


@pytest.fixture()
def make_tenant(settings: Settings) -> Iterator[Callable[[], TenantId]]:
    """Factory of fresh tenants, deleted after the test."""
    created: list[TenantId] = []
    url = resolve_targets(settings).admin_url

    def factory() -> TenantId:
        with psycopg.connect(url, autocommit=True) as conn:
            tenant = tenant_admin.create_tenant(conn, display_name="test")
        created.append(tenant)
        return tenant

    yield factory
    with psycopg.connect(url, autocommit=True) as conn:
        for tenant in created:
            tenant_admin.delete_tenant(conn, tenant)


@pytest.fixture(scope="session")
def redis_client(redis_server: EmbeddedRedis) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url())
    yield client
    client.close()


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    ensure_models(TEST_STATE_DIR)
    return load_embedder("fastembed", state_dir=TEST_STATE_DIR)


@pytest.fixture()
def store(db: Database, settings: Settings) -> VectorStore:
    return Platform(settings, database=db, start_services=False).vector_store


@pytest.fixture()
def write_jsonl(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """Write records (dicts, or raw bytes lines) to a .jsonl file in a fresh folder."""
    counter = itertools.count()

    def write(lines: list[dict[str, object] | bytes], name: str = "corpus.jsonl") -> Path:
        folder = tmp_path / f"src{next(counter)}"
        folder.mkdir()
        path = folder / name
        with path.open("wb") as handle:
            for line in lines:
                handle.write(line if isinstance(line, bytes) else json.dumps(line).encode())
                handle.write(b"\n")
        return path

    yield write


# Variables through which a developer's shell could point a child process elsewhere.
_FOREIGN_CLI_VARIABLES = ("DATABASE_URL", "REDIS_URL", "GROQ_API_KEY", "GROQ_BASE_URL")


def cli_environment(**overrides: str) -> dict[str, str]:
    """The environment for a ``rag`` subprocess: this process's, without any ``RAG_*`` or
    connection variable of the caller's shell, plus ``overrides``."""
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("RAG_") and name not in _FOREIGN_CLI_VARIABLES}
    env.update(overrides)
    return env
