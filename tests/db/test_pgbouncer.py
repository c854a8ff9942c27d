"""The platform behind PgBouncer in transaction mode, as managed PostgreSQL is usually reached.

A real PgBouncer (Debian's package, :mod:`rag_testing.pgbouncer`) stands in front of a fresh
database of the test server, with fewer server connections (``SERVER_CONNECTIONS``) than the
platform's pool has clients (``POOL_CLIENTS``): the clients' transactions take turns on
shared server connections, so anything left in a session would reach another client or be
missing on the next transaction. With ``db_pooler="transaction"`` the migrations, the query
service (two tenants at once), ingestion and a Prefect flow all work through it; the
controls show what fails without the setting.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pydantic import SecretStr

from flows import _resources
from flows.batch_query import BatchQueryParameters, batch_query
from rag_core.common.tenancy import TenantId
from rag_core.composition import Platform
from rag_core.config import LLMSettings, RateLimitPolicy, Settings, get_settings
from rag_core.db import tenant_admin
from rag_core.db.embedded import SUPERUSER, EmbeddedPostgres
from rag_core.db.pool import Database
from rag_core.embeddings.base import Embedder
from rag_core.errors import DatabaseUnavailableError
from rag_core.ingestion.runner import IngestionResult
from rag_core.ops import services
from rag_core.redis.embedded import EmbeddedRedis
from rag_testing.fake_groq import FakeGroqServer, answering_responder
from rag_testing.pgbouncer import PgBouncer
from tests.conftest import TEST_STATE_DIR, make_settings
from tests.ingestion.conftest import scifact_records

POOL_CLIENTS = 8  # the platform's pool (min = max)
SERVER_CONNECTIONS = 2  # PgBouncer's default_pool_size: server connections per user
DOCUMENTS = 10  # per tenant
QUESTIONS = [
    "What is the effect of vitamin D on bone density?",
    "Does smoking increase the risk of lung cancer?",
    "How do T cells recognise antigens?",
    "What causes antibiotic resistance in bacteria?",
    "Is obesity associated with type 2 diabetes?",
]
ASKS_PER_TENANT = 20
COUNT_DOCUMENTS = "SELECT count(*) FROM rag.documents"


@dataclass(frozen=True)
class Pooled:
    """A migrated database reached directly (``direct``) and through PgBouncer (``settings``,
    both URLs the pooler's, ``db_pooler="transaction"``)."""

    bouncer: PgBouncer
    direct: Settings
    settings: Settings
    app_password: str

    def admin(self) -> psycopg.Connection[tuple[Any, ...]]:
        """A direct superuser connection (sees every tenant, and pg_stat_activity)."""
        return psycopg.connect(EmbeddedPostgres(TEST_STATE_DIR).admin_url(
            self.direct.embedded_database), autocommit=True)


@dataclass(frozen=True)
class Corpora:
    tenants: tuple[TenantId, TenantId]
    documents: dict[TenantId, set[int]]  # each tenant's document ids (read directly)
    ingested: dict[TenantId, IngestionResult]


def _bouncer(pg_server: EmbeddedPostgres, database: str, **options: Any) -> PgBouncer:
    status = pg_server.status()
    assert status.port is not None
    credentials = pg_server.credentials()
    return PgBouncer(TEST_STATE_DIR / "pgbouncer" / secrets.token_hex(4),
                     upstream_port=status.port, dbname=database,
                     users={SUPERUSER: credentials.superuser_password,
                            "rag_app": credentials.app_password}, **options)


@pytest.fixture(scope="session")
def pooled(pg_server: EmbeddedPostgres,
           create_database: Callable[[str], Settings]) -> Iterator[Pooled]:
    """PgBouncer (transaction mode) in front of a fresh database, migrated through it."""
    direct = create_database("pgb")
    password = pg_server.credentials().app_password
    with _bouncer(pg_server, direct.embedded_database,
                  default_pool_size=SERVER_CONNECTIONS) as bouncer:
        through = make_settings(
            database_url=bouncer.url(SUPERUSER, pg_server.credentials().superuser_password),
            app_database_url=bouncer.url(direct.app_db_role, password),
            db_pooler="transaction", db_pool_min_size=POOL_CLIENTS,
            db_pool_max_size=POOL_CLIENTS)
        # Migrations through the pooler: each runs one statement per migration (more than
        # five of them) on one admin connection.
        assert services.upgrade_database(through).applied
        yield Pooled(bouncer, direct, through, password)


@pytest.fixture(scope="module")
def fake_llm() -> Iterator[FakeGroqServer]:
    with FakeGroqServer(default=answering_responder) as server:
        yield server


@pytest.fixture(scope="module")
def platform(pooled: Pooled, embedder: Embedder, redis_server: EmbeddedRedis,
             fake_llm: FakeGroqServer,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """The platform as a service process builds it, on the pooler's URLs."""
    settings = pooled.settings.model_copy(update={
        "state_dir": tmp_path_factory.mktemp("pgb-state"),
        "redis_key_prefix": f"pgb{secrets.token_hex(4)}",
        "rate_limit": RateLimitPolicy(requests_per_minute=100_000, tokens_per_day=100_000_000),
        "llm": LLMSettings(api_key=SecretStr("test-key"), base_url=fake_llm.base_url,
                           timeout_s=5.0)})
    with Platform(settings, embedder=embedder, redis_url=redis_server.url(),
                  start_services=False) as built:
        yield built


@pytest.fixture(scope="module")
def corpora(pooled: Pooled, platform: Platform,
            tmp_path_factory: pytest.TempPathFactory) -> Corpora:
    """Two tenants created and ingested through the pooler (two ingestion workers each)."""
    with platform.admin_connection() as conn:
        tenants = (tenant_admin.create_tenant(conn, display_name="pooled a"),
                   tenant_admin.create_tenant(conn, display_name="pooled b"))
    ingested = {}
    for number, tenant in enumerate(tenants):
        source = tmp_path_factory.mktemp("pgb-corpus") / "corpus.jsonl"
        source.write_text("".join(json.dumps(r) + "\n" for r in
                                  scifact_records(DOCUMENTS, start=3000 + 100 * number)))
        ingested[tenant] = platform.ingestion.run(tenant, source, workers=2)
    with pooled.admin() as admin:
        documents = {tenant: {int(r[0]) for r in admin.execute(
            "SELECT document_id FROM rag.documents WHERE tenant_id = %s", [tenant])}
            for tenant in tenants}
    return Corpora(tenants, documents, ingested)


def _server_connections(pooled: Pooled) -> int:
    """The application role's backends on the database: PgBouncer's server connections."""
    with pooled.admin() as admin:
        row = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                            "AND usename = %s", [pooled.direct.embedded_database,
                                                 pooled.direct.app_db_role]).fetchone()
    assert row is not None
    return int(row[0])


def test_two_tenants_ask_at_once_through_the_pooler_and_see_only_their_own_sources(
        pooled: Pooled, platform: Platform, corpora: Corpora) -> None:
    service = platform.query_service
    pool = platform.database.pool
    pool.pop_stats()
    work = [(tenant, f"{QUESTIONS[n % len(QUESTIONS)]} (take {n})")
            for n in range(ASKS_PER_TENANT) for tenant in corpora.tenants]  # interleaved
    with ThreadPoolExecutor(max_workers=POOL_CLIENTS) as threads:
        answers = list(threads.map(lambda job: (job[0], service.ask(*job)), work))

    for tenant, answer in answers:
        assert answer.error_code is None, answer
        assert answer.model != "extractive-fallback" and answer.answer
        assert answer.sources
        # The tenant set in each transaction was that transaction's own: no source of the
        # other tenant, whichever client used the server connection before.
        assert {s.document_id for s in answer.sources} <= corpora.documents[tenant], answer
    with pooled.admin() as admin:
        audited = dict(admin.execute(
            "SELECT request_id::text, tenant_id FROM rag.audit_log "
            "WHERE request_id::text = ANY(%s)", [[a.request_id for _, a in answers]]))
    assert audited == {a.request_id: tenant for tenant, a in answers}

    # Eight clients took turns on at most two server connections, and each client ran the
    # same statements well past psycopg's prepare threshold (5): the pool lends its
    # connections in turn (first in, first out), so each got about an eighth of the loans.
    assert pool.get_stats()["pool_size"] == POOL_CLIENTS
    assert pool.get_stats()["requests_num"] >= 2 * 5 * POOL_CLIENTS
    assert _server_connections(pooled) <= SERVER_CONNECTIONS


def test_ingestion_through_the_pooler_stores_every_document_and_vector(
        pooled: Pooled, corpora: Corpora) -> None:
    for tenant in corpora.tenants:
        summary = corpora.ingested[tenant].summary
        assert (summary.status, summary.read, summary.ingested, summary.failed) == (
            "succeeded", DOCUMENTS, DOCUMENTS, 0), summary
        assert summary.balanced and len(corpora.documents[tenant]) == DOCUMENTS
    with pooled.admin() as admin:
        rows = admin.execute(
            "SELECT c.tenant_id, count(*), count(e.chunk_id), "
            "       count(*) FILTER (WHERE e.tenant_id IS DISTINCT FROM c.tenant_id) "
            "  FROM rag.chunks c LEFT JOIN rag.chunk_embeddings e USING (chunk_id) "
            " WHERE c.tenant_id = ANY(%s) GROUP BY c.tenant_id",
            [list(corpora.tenants)]).fetchall()
    counts = {str(tenant): (int(chunks), int(vectors), int(foreign))
              for tenant, chunks, vectors, foreign in rows}
    for tenant in corpora.tenants:
        chunks, vectors, foreign = counts[tenant]
        assert chunks == corpora.ingested[tenant].summary.chunks > 0
        assert (vectors, foreign) == (chunks, 0)  # every chunk's vector, under its tenant


@pytest.mark.slow
def test_batch_query_flow_runs_through_the_pooler(
        prefect_harness: None, pooled: Pooled, corpora: Corpora,
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The flow's worker process holds only the pooler's application URL."""
    tenant = corpora.tenants[1]
    monkeypatch.setenv("RAG_STATE_DIR", str(TEST_STATE_DIR))
    monkeypatch.setenv("RAG_APP_DATABASE_URL", str(pooled.settings.app_database_url))
    monkeypatch.setenv("RAG_DB_POOLER", "transaction")
    monkeypatch.setenv("RAG_RUNTIME_ONLY", "true")
    monkeypatch.setenv("RAG_DB_POOL_MAX_SIZE", str(POOL_CLIENTS))
    monkeypatch.setenv("RAG_QUESTIONS_ROOTS", json.dumps([str(tmp_path)]))
    monkeypatch.setenv("RAG_OUTPUTS_DIR", str(tmp_path / "outputs"))
    monkeypatch.setenv("RAG_REDIS_KEY_PREFIX", f"pgbflow{secrets.token_hex(4)}")
    for name in ("DATABASE_URL", "RAG_DATABASE_URL", "REDIS_URL", "RAG_REDIS_URL",
                 "RAG_LLM_API_KEY", "GROQ_API_KEY", "RAG_LLM_BASE_URL", "GROQ_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    monkeypatch.setattr(_resources, "_platform", None)
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps({"id": f"q{n}", "question": f"{text} ({n})"}) + "\n"
                                 for n, text in enumerate(QUESTIONS * 2)), encoding="utf-8")
    try:
        summary = batch_query(BatchQueryParameters(questions=str(questions), tenant_id=tenant,
                                                   group_size=2))
        built = _resources._platform
        assert built is not None
        assert built.settings.db_pooler == "transaction"
        with built.database.unscoped_session() as conn:
            assert conn.info.port == pooled.bouncer.port
    finally:
        if _resources._platform is not None:
            _resources._platform.close()
        get_settings.cache_clear()

    assert (summary["questions"], summary["answered"], summary["errors"]) == (
        2 * len(QUESTIONS), 2 * len(QUESTIONS), {})
    out = tmp_path / "outputs" / "questions.answers.jsonl"
    answers = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(answers) == 2 * len(QUESTIONS)
    for answer in answers:
        assert answer["error_code"] is None and answer["sources"], answer
        assert {s["document_id"] for s in answer["sources"]} <= corpora.documents[tenant]


# --- controls: what the setting prevents ---------------------------------------------------
@pytest.fixture(scope="module")
def lenient_bouncer(pooled: Pooled, pg_server: EmbeddedPostgres) -> Iterator[PgBouncer]:
    """A PgBouncer that lets a client without the setting in at all: it drops the
    ``options`` startup parameter (the statement timeout in it) instead of refusing it,
    tracks no prepared statements (1.21+ would by ``max_prepared_statements``; the helper
    sets 0, 1.18 has none) and has a single server connection, so the two clients of a pool
    run on the same one in turn."""
    with _bouncer(pg_server, pooled.direct.embedded_database, default_pool_size=1,
                  ignore_startup_parameters=("options",)) as bouncer:
        assert not bouncer.tracks_prepared_statements
        yield bouncer


def _two_client_pool(pooled: Pooled, url: str, **settings: Any) -> Database:
    return Database.for_settings(pooled.settings.model_copy(update={
        "app_database_url": url, "db_pool_min_size": 2, "db_pool_max_size": 2,
        "db_statement_timeout_ms": 7_000, **settings}))


def test_control_without_the_setting_psycopg_prepares_and_the_pooler_mixes_them_up(
        pooled: Pooled, lenient_bouncer: PgBouncer, corpora: Corpora) -> None:
    url = lenient_bouncer.url(pooled.direct.app_db_role, pooled.app_password)
    tenant = corpora.tenants[0]
    with _two_client_pool(pooled, url, db_pooler="none") as db:
        with db.tenant_session(tenant) as conn:
            # the statement timeout meant for every session never reached the server
            assert conn.execute("SHOW statement_timeout").fetchone() == ("0",)
        # psycopg prepares a statement on its sixth run on a client connection, as
        # "_pg3_0": the second client to do so finds the first one's on the shared server
        # connection (or, with more server connections, a client misses its own).
        with pytest.raises((psycopg.errors.DuplicatePreparedStatement,
                            psycopg.errors.InvalidSqlStatementName)):
            for _ in range(4 * 5):
                with db.tenant_session(tenant) as conn:
                    conn.execute(COUNT_DOCUMENTS).fetchone()

    # The same loop with the setting: nothing prepared, the timeout set in each transaction.
    with _two_client_pool(pooled, url, db_pooler="transaction") as db:
        for _ in range(4 * 5):
            with db.tenant_session(tenant) as conn:
                assert conn.execute(COUNT_DOCUMENTS).fetchone() == (DOCUMENTS,)
                assert conn.execute("SHOW statement_timeout").fetchone() == ("7s",)
        with db.unscoped_session() as conn:
            assert conn.execute("SHOW statement_timeout").fetchone() == ("7s",)
            assert conn.execute(COUNT_DOCUMENTS).fetchone() == (0,)


def test_control_without_the_setting_pgbouncer_refuses_the_statement_timeout_option(
        pooled: Pooled) -> None:
    url = str(pooled.settings.app_database_url)
    with pytest.raises(DatabaseUnavailableError, match="unsupported startup parameter"):
        _two_client_pool(pooled, url, db_pooler="none")
