"""PostgreSQL restarted in the middle of a batch run: the query path reconnects, every
question is answered or fails with a typed code, and every question is audited exactly once
(in the database, or spooled and then flushed).

The test runs its own embedded PostgreSQL under a private state folder: the shared test
server is used by other test sessions and is never restarted. The fake LLM (the only faked
component) stops the server and the batch runner's progress callback starts it again, so
the outage begins and ends at known points of the run, not after a sleep.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pydantic import SecretStr

from rag_core.codes import ErrorCode
from rag_core.common.tenancy import TenantId
from rag_core.composition import Platform
from rag_core.config import LLMSettings, RateLimitPolicy, Settings
from rag_core.db import tenant_admin
from rag_core.db.connection import resolve_targets
from rag_core.db.embedded import EmbeddedPostgres
from rag_core.db.pool import Database
from rag_core.embeddings.base import Embedder
from rag_core.ingestion.runner import run_ingestion
from rag_core.ops import services
from rag_core.query.batch_run import Question, run_batch
from rag_core.redis.embedded import EmbeddedRedis
from rag_core.retrieval.vector_store import VectorStore
from rag_testing.fake_groq import FakeGroqServer, FakeResponse, RecordedRequest, answering_responder
from tests.ingestion.conftest import scifact_records

pytestmark = pytest.mark.slow

CLAIMS = [
    "Vitamin D supplementation reduces the risk of fractures.",
    "Aspirin lowers the risk of cardiovascular events.",
    "Obesity is associated with type 2 diabetes.",
    "MicroRNAs regulate gene expression.",
    "Antibiotic resistance spreads by horizontal gene transfer.",
    "Smoking increases the risk of lung cancer.",
    "Exercise improves insulin sensitivity.",
    "Statins reduce LDL cholesterol.",
    "Sleep deprivation impairs memory.",
    "Folic acid prevents neural tube defects.",
    "Coffee consumption is linked to liver health.",
    "Breastfeeding lowers the risk of infant infections.",
]


@pytest.fixture(scope="module")
def restart_env(private_pg: tuple[EmbeddedPostgres, Settings], embedder: Embedder,
                tmp_path_factory: pytest.TempPathFactory,
                ) -> Iterator[tuple[EmbeddedPostgres, Settings, Database, TenantId]]:
    server, settings = private_pg
    with psycopg.connect(resolve_targets(settings).admin_url, autocommit=True) as conn:
        tenant = tenant_admin.create_tenant(conn, display_name="restart")
    source = tmp_path_factory.mktemp("restart") / "corpus.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in scifact_records(30, start=2000)))
    db = services.open_database(settings)
    try:
        run_ingestion(db, embedder, VectorStore(db, settings), tenant, source)
        yield server, settings, db, tenant
    finally:
        db.close()


def _service(settings: Settings, db: Database, embedder: Embedder, redis: EmbeddedRedis,
             fake: FakeGroqServer, spool: Path) -> Any:
    phase = settings.model_copy(update={
        "llm": LLMSettings(api_key=SecretStr("test-key"), base_url=fake.base_url,
                           timeout_s=30.0),
        "redis_key_prefix": f"pgr{secrets.token_hex(4)}", "state_dir": spool,
        "rate_limit": RateLimitPolicy(requests_per_minute=100_000,
                                      tokens_per_day=100_000_000)})
    return Platform(phase, database=db, embedder=embedder, redis_url=redis.url(),
                    start_services=False).query_service


def _audited(settings: Settings, tenant: TenantId) -> dict[str, int]:
    """request id -> audit rows, read as the admin (the pool may be mid-reconnect)."""
    with psycopg.connect(resolve_targets(settings).admin_url) as conn:
        rows = conn.execute("SELECT request_id::text, count(*) FROM rag.audit_log "
                            "WHERE tenant_id = %s AND kind <> 'batch' GROUP BY request_id",
                            [tenant]).fetchall()
    return {str(r[0]): int(r[1]) for r in rows}


def _check_outcomes(lines: list[dict[str, Any]], settings: Settings, tenant: TenantId,
                    before: dict[str, int], extra: set[str]) -> None:
    assert [line["question_id"] for line in lines] == [f"c{i}" for i in range(len(CLAIMS))]
    for line in lines:
        assert (line["error_code"] is None and line["answer"]) or \
            line["error_code"] in {c.value for c in ErrorCode}, line
    audited = _audited(settings, tenant)
    new = {rid: n for rid, n in audited.items() if rid not in before}
    assert sorted(new) == sorted({line["request_id"] for line in lines} | extra)
    assert set(new.values()) == {1}


def test_postgres_down_for_a_group_then_back(
        restart_env: tuple[EmbeddedPostgres, Settings, Database, TenantId],
        embedder: Embedder, redis_server: EmbeddedRedis, tmp_path: Path) -> None:
    """The first group's LLM call stops PostgreSQL: that group is answered (its audit rows
    spooled), the second group finds no database and fails with ``database_error`` instead
    of ending the run, PostgreSQL comes back after it, and the run goes on."""
    server, settings, _, tenant = restart_env
    before = _audited(settings, tenant)
    # A pool of its own that gives up waiting for a connection after 2 s (30 s by default),
    # so the outage costs the test seconds.
    db = Database(resolve_targets(settings).app_url, connect_timeout_s=2.0,
                  acquire_timeout_s=2.0)
    groups_done: list[int] = []

    def stop(request: RecordedRequest) -> FakeResponse:
        server.stop()
        return answering_responder(request)

    def after_group(size: int) -> None:
        groups_done.append(size)
        if len(groups_done) == 2:
            server.start()

    questions = [Question(f"c{i}", text) for i, text in enumerate(CLAIMS)]
    out = tmp_path / "answers.jsonl"
    try:
        with FakeGroqServer(default=answering_responder) as fake:
            fake.enqueue(stop)
            service = _service(settings, db, embedder, redis_server, fake, tmp_path / "state")
            with out.open("w", encoding="utf-8") as handle:
                summary = run_batch(service, tenant, questions, handle, group_size=4,
                                    progress=after_group)
            assert server.status().running
            db.pool.wait(timeout=120)  # the pool has reconnected
            later = service.ask(tenant, CLAIMS[0])
            assert later.error_code is None and later.answer
            flushed = service.audit.flush_spool()
        lines = [json.loads(line) for line in out.read_text().splitlines()]
        assert summary.questions == len(CLAIMS) == len(lines) and len(groups_done) == 3
        codes = [line["error_code"] for line in lines]
        assert codes[:4] == [None] * 4 and all(line["answer"] for line in lines[:4])
        assert codes[4:8] == [ErrorCode.DATABASE_ERROR.value] * 4
        assert summary.errors.get(ErrorCode.DATABASE_ERROR.value, 0) >= 4
        assert flushed is not None and service.audit.spooled() == 0
        _check_outcomes(lines, settings, tenant, before, extra={later.request_id})
    finally:
        server.start()
        db.close()
