"""One audit row per question, whatever happens: refused ids, a database error in the middle
of the query path. The rows carry the typed code; the caller still gets the error."""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from rag_core.common.metrics import CROSS_TENANT_ROWS_BLOCKED, counter_value
from rag_core.common.tenancy import TenantId, new_tenant_id
from rag_core.composition import Platform
from rag_core.config import Settings
from rag_core.db import tenant_admin
from rag_core.db.connection import resolve_targets
from rag_core.db.pool import Database
from rag_core.embeddings.base import Embedder
from rag_core.errors import CrossTenantLeakError, InvalidQuestionIdsError, UnknownTenantError
from rag_core.ops import services
from rag_core.query.service import QueryService
from rag_core.redis.embedded import EmbeddedRedis
from tests.query.conftest import audit_rows, last_audit_id
from tests.retrieval.test_vector_store import sabotage_isolation


def _one_document(folder: Path) -> Path:
    source = folder / "corpus.jsonl"
    source.write_text(json.dumps({"_id": "d1", "title": "secret",
                                  "text": "The victim's confidential finding."}) + "\n")
    return source


@pytest.mark.parametrize("ids", [["x", "x"], ["", "y"], ["only-one"]])
def test_refused_question_ids_are_audited_one_row_per_question(
        make_service: Callable[..., QueryService], corpus_tenant: TenantId, db: Database,
        ids: list[str]) -> None:
    service = make_service()
    before = last_audit_id(db, corpus_tenant)
    with pytest.raises(InvalidQuestionIdsError) as refused:
        service.ask_many(corpus_tenant, ["first?", "second?"], question_ids=ids)
    assert repr(ids) in str(refused.value)
    rows = audit_rows(db, corpus_tenant, before)
    assert [(r["kind"], r["error_code"]) for r in rows] == \
        [("batch", "partial"), ("sub_query", "invalid_input"), ("sub_query", "invalid_input")]
    assert len({r["request_id"] for r in rows}) == 3


def test_a_database_error_in_the_query_path_is_audited(
        create_database: Callable[[str], Settings], embedder: Embedder,
        redis_server: EmbeddedRedis) -> None:
    fresh = create_database("auditdb")
    services.upgrade_database(fresh)
    admin_url = resolve_targets(fresh).admin_url
    with psycopg.connect(admin_url, autocommit=True) as conn:
        tenant = tenant_admin.create_tenant(conn, display_name="audit always")
        # the corpus version is read from rag.tenants: take that away from the app role
        conn.execute("REVOKE SELECT ON rag.tenants FROM rag_app")
    scoped = fresh.model_copy(update={"redis_key_prefix": f"t{secrets.token_hex(4)}"})
    with Platform(scoped, embedder=embedder, redis_url=redis_server.url()) as platform:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            platform.query_service.ask_many(tenant, ["one?", "two?"])
        rows = audit_rows(platform.database, tenant)
    assert [(r["kind"], r["error_code"]) for r in rows] == \
        [("batch", "partial"), ("sub_query", "database_error"), ("sub_query", "database_error")]
    assert all(r["question_redacted"] in ("one?", "two?") for r in rows[1:])


def test_a_blocked_cross_tenant_row_is_audited_as_a_security_event(
        create_database: Callable[[str], Settings], embedder: Embedder,
        redis_server: EmbeddedRedis, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fresh = create_database("auditleak")
    services.upgrade_database(fresh)
    admin_url = resolve_targets(fresh).admin_url
    with psycopg.connect(admin_url, autocommit=True) as conn:
        victim = tenant_admin.create_tenant(conn)
        attacker = tenant_admin.create_tenant(conn)
    scoped = fresh.model_copy(update={"redis_key_prefix": f"t{secrets.token_hex(4)}"})
    with Platform(scoped, embedder=embedder, redis_url=redis_server.url()) as platform:
        platform.ingestion.run(victim, _one_document(tmp_path))
        sabotage_isolation(admin_url)
        blocked_before = counter_value(CROSS_TENANT_ROWS_BLOCKED)
        with pytest.raises(CrossTenantLeakError), \
                caplog.at_level(logging.ERROR, logger="rag_core.query.service"):
            platform.query_service.ask(attacker, "what does the victim know?")
        # counted for the alert and logged as a security event
        assert counter_value(CROSS_TENANT_ROWS_BLOCKED) > blocked_before
        assert any(r.levelno == logging.ERROR and "security event" in r.getMessage()
                   for r in caplog.records)
        rows = audit_rows(platform.database, attacker)
        assert audit_rows(platform.database, victim) == []
    assert [(r["kind"], r["error_code"], r["chunk_ids"]) for r in rows] == \
        [("query", "cross_tenant_blocked", [])]


def test_a_tenant_that_does_not_exist_is_refused_and_audited(
        make_service: Callable[..., QueryService], db: Database) -> None:
    """Fail closed: a well-formed id of no tenant (never created, or deleted) is not answered
    as an empty corpus; the attempt is audited under that id with its code."""
    stranger = new_tenant_id()
    with pytest.raises(UnknownTenantError) as refused:
        make_service().ask(stranger, "what does the corpus say?")
    assert stranger in str(refused.value)
    rows = audit_rows(db, stranger)
    assert [(r["kind"], r["error_code"]) for r in rows] == [("query", "unknown_tenant")]
