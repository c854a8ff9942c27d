"""Row-level security as the application role: reads, writes, unset tenant, role safety."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from rag_core.common.tenancy import TenantId
from rag_core.composition import Platform
from rag_core.config import Settings
from rag_core.db.connection import resolve_targets
from rag_core.db.pool import Database
from rag_core.db.schema import TENANT_TABLES
from rag_core.errors import InvalidTenantIdError, UnsafeDatabaseRoleError
from rag_core.ops import services
from rag_core.retrieval.vector_store import ChunkToStore, VectorStore


def _seed(store: VectorStore, tenant: TenantId, n: int, seed: int) -> int:
    rng = np.random.default_rng(seed)
    chunks = [ChunkToStore(f"{tenant} chunk {i}", 4, hashlib.sha256(f"{i}".encode()).digest(),
                           rng.standard_normal(384).astype(np.float32)) for i in range(n)]
    return store.add_document(tenant, f"test://{tenant}", b"doc", chunks)


def _write_side_rows(db: Database, tenant: TenantId) -> None:
    with db.tenant_session(tenant) as conn:
        row = conn.execute("INSERT INTO rag.ingestion_jobs (tenant_id, source_uri) "
                           "VALUES (%s, 'x') RETURNING job_id", [tenant]).fetchone()
        assert row is not None
        conn.execute("INSERT INTO rag.ingestion_items (job_id, item_no, tenant_id, source_uri, "
                     "body, content_hash) VALUES (%s, 0, %s, 'x#1', 'text', '\\x00')",
                     [row[0], tenant])
        conn.execute("INSERT INTO rag.ingestion_errors (job_id, tenant_id, source, reason) "
                     "VALUES (%s, %s, 'x', 'test')", [row[0], tenant])
        conn.execute("INSERT INTO rag.audit_log (tenant_id, request_id, kind) "
                     "VALUES (%s, gen_random_uuid(), 'query')", [tenant])
        batch = conn.execute("INSERT INTO rag.batch_jobs (tenant_id, question_count, questions) "
                             "VALUES (%s, 1, '[{\"id\": \"q1\", \"text\": \"x\"}]') "
                             "RETURNING batch_id", [tenant]).fetchone()
        assert batch is not None
        conn.execute("INSERT INTO rag.batch_events (tenant_id, batch_id, seq, kind, "
                     "question_id, data) VALUES (%s, %s, 1, 'answer', 'q1', '{}')",
                     [tenant, batch[0]])


@pytest.fixture()
def two_tenants(db: Database, settings: Settings,
                make_tenant: Callable[[], TenantId]) -> tuple[TenantId, TenantId]:
    store = VectorStore(db, settings)
    a, b = make_tenant(), make_tenant()
    _seed(store, a, 5, 1)
    _seed(store, b, 7, 2)
    _write_side_rows(db, a)
    _write_side_rows(db, b)
    # API keys are issued by administration only (the application role cannot write them).
    keys = Platform(settings, database=db, start_services=False).api_keys
    keys.create(a, "rls")
    keys.create(b, "rls")
    return a, b


def test_each_tenant_sees_only_its_rows_in_every_table(
        db: Database, two_tenants: tuple[TenantId, TenantId]) -> None:
    a, b = two_tenants
    for tenant, chunk_count in ((a, 5), (b, 7)):
        with db.tenant_session(tenant) as conn:
            for table in TENANT_TABLES:
                owners = {r[0] for r in conn.execute(f"SELECT tenant_id FROM rag.{table}")}  # noqa: S608
                assert owners == {tenant}, table
            assert conn.execute("SELECT count(*) FROM rag.chunks").fetchone() == (chunk_count,)


def test_unset_tenant_sees_nothing(db: Database, two_tenants: tuple[TenantId, TenantId]) -> None:
    with db.unscoped_session() as conn:
        for table in TENANT_TABLES:
            assert conn.execute(f"SELECT count(*) FROM rag.{table}").fetchone() == (0,), table  # noqa: S608
        conn.execute("SELECT set_config('app.tenant_id', '', true)")
        assert conn.execute("SELECT count(*) FROM rag.chunks").fetchone() == (0,)


def test_setting_does_not_survive_the_transaction(
        db: Database, two_tenants: tuple[TenantId, TenantId]) -> None:
    a, _ = two_tenants
    with db.pool.connection() as conn:
        with conn.transaction():
            conn.execute("SELECT set_config('app.tenant_id', %s, true)", [a])
            assert conn.execute("SELECT count(*) FROM rag.chunks").fetchone() == (5,)
        assert conn.execute("SELECT count(*) FROM rag.chunks").fetchone() == (0,)
        conn.rollback()


@pytest.mark.parametrize("statement", [
    "INSERT INTO rag.chunks (tenant_id, document_id, ordinal, text, token_count, content_hash) "
    "SELECT %(victim)s, document_id, 999, 'forged', 1, '\\x00' FROM rag.documents LIMIT 1",
    "INSERT INTO rag.documents (tenant_id, source_uri, content_hash) "
    "VALUES (%(victim)s, 'forged', '\\x00')",
    "INSERT INTO rag.audit_log (tenant_id, request_id, kind) "
    "VALUES (%(victim)s, gen_random_uuid(), 'query')",
    "INSERT INTO rag.ingestion_jobs (tenant_id, source_uri) VALUES (%(victim)s, 'forged')",
    "UPDATE rag.chunks SET tenant_id = %(victim)s",
    "UPDATE rag.documents SET tenant_id = %(victim)s",
])
def test_writes_for_another_tenant_are_refused(
        db: Database, two_tenants: tuple[TenantId, TenantId], statement: str) -> None:
    attacker, victim = two_tenants
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"), \
            db.tenant_session(attacker) as conn:
        conn.execute(statement, {"victim": victim})


def test_updates_and_deletes_of_foreign_rows_touch_nothing(
        db: Database, two_tenants: tuple[TenantId, TenantId]) -> None:
    attacker, victim = two_tenants
    with db.tenant_session(attacker) as conn:
        for statement in ("UPDATE rag.chunks SET text = 'x' WHERE tenant_id = %s",
                          "DELETE FROM rag.chunk_embeddings WHERE tenant_id = %s",
                          "DELETE FROM rag.chunks WHERE tenant_id = %s",
                          "DELETE FROM rag.documents WHERE tenant_id = %s",
                          "UPDATE rag.tenants SET corpus_version = 99 WHERE tenant_id = %s"):
            assert conn.execute(statement, [victim]).rowcount == 0, statement
    with db.tenant_session(victim) as conn:
        assert conn.execute("SELECT count(*) FROM rag.chunks").fetchone() == (7,)
        assert conn.execute("SELECT count(*) FROM rag.chunk_embeddings").fetchone() == (7,)
        assert conn.execute("SELECT corpus_version FROM rag.tenants").fetchone() == (0,)


def test_application_role_cannot_do_ddl_or_admin_writes(
        db: Database, two_tenants: tuple[TenantId, TenantId]) -> None:
    a, _ = two_tenants
    for statement in ("ALTER TABLE rag.chunks DISABLE ROW LEVEL SECURITY",
                      "DROP POLICY tenant_isolation ON rag.chunks",
                      "INSERT INTO rag.tenants (tenant_id) VALUES ('tn_" + "f" * 32 + "')",
                      "UPDATE rag.audit_log SET error_code = 'x'",
                      "DELETE FROM rag.audit_log",
                      "UPDATE rag.feature_flags SET enabled = true",
                      "SELECT rag.register_embedding_model('evil', 'x', 3)"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege), db.tenant_session(a) as conn:
            conn.execute(statement)


def test_search_function_refuses_a_tenant_other_than_the_session(
        db: Database, two_tenants: tuple[TenantId, TenantId]) -> None:
    a, b = two_tenants
    query = np.zeros(384, dtype=np.float32)
    query[0] = 1
    for session_tenant in (a, None):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="outside its tenant"):
            if session_tenant is None:
                with db.unscoped_session() as conn:
                    conn.execute("SELECT * FROM rag.search_chunks(%s, 'minilm-l6-v2', %s)",
                                 [b, query])
            else:
                with db.tenant_session(session_tenant) as conn:
                    conn.execute("SELECT * FROM rag.search_chunks(%s, 'minilm-l6-v2', %s)",
                                 [b, query])


@pytest.mark.parametrize(("k", "ef_search", "exact_max_rows", "iterative_scan"), [
    (None, 100, 10_000, "relaxed_order"), (0, 100, 10_000, "relaxed_order"),
    (1001, 100, 10_000, "relaxed_order"), (10, None, 10_000, "relaxed_order"),
    (10, 100, None, "relaxed_order"), (10, 100, 10_000, "sideways"), (10, 100, 10_000, None),
])
def test_search_function_refuses_a_null_or_out_of_range_k_and_options(
        db: Database, two_tenants: tuple[TenantId, TenantId], k: int | None,
        ef_search: int | None, exact_max_rows: int | None, iterative_scan: str | None) -> None:
    a, _ = two_tenants
    query = np.zeros(384, dtype=np.float32)
    with pytest.raises(psycopg.errors.InvalidParameterValue), \
            db.tenant_session(a) as conn:
        conn.execute("SELECT * FROM rag.search_chunks(%s, 'minilm-l6-v2', %s, %s::integer, "
                     "%s::integer, %s::integer, %s::text)",
                     [a, query, k, ef_search, exact_max_rows, iterative_scan])


def test_the_tenant_function_runs_with_a_fixed_search_path(admin_conn: psycopg.Connection[
        Any]) -> None:
    row = admin_conn.execute(
        "SELECT proconfig FROM pg_proc WHERE oid = 'rag.current_tenant_id()'::regprocedure"
    ).fetchone()
    assert row is not None and row[0] == ["search_path=pg_catalog, pg_temp"]


def test_two_tenants_may_use_one_request_id_in_the_audit_log(
        db: Database, two_tenants: tuple[TenantId, TenantId]) -> None:
    request_id = "5b0c1a52-6c1b-4c43-9a55-000000000006"
    for tenant in two_tenants:
        for _ in range(2):  # a replay of the same row is still dropped
            with db.tenant_session(tenant) as conn:
                conn.execute("INSERT INTO rag.audit_log (tenant_id, request_id, kind) "
                             "VALUES (%s, %s, 'query') "
                             "ON CONFLICT (tenant_id, request_id) DO NOTHING",
                             [tenant, request_id])
    for tenant in two_tenants:
        with db.tenant_session(tenant) as conn:
            row = conn.execute("SELECT count(*) FROM rag.audit_log WHERE request_id = %s",
                               [request_id]).fetchone()
        assert row == (1,)


def test_app_path_uses_a_role_without_rls_bypass(db: Database, settings: Settings) -> None:
    with db.tenant_session("tn_" + "0" * 32) as conn:
        row = conn.execute("SELECT current_user, session_user, r.rolsuper, r.rolbypassrls "
                           "FROM pg_roles r WHERE r.rolname = current_user").fetchone()
        owners = {r[0] for r in conn.execute(
            "SELECT tableowner FROM pg_tables WHERE schemaname = 'rag'")}
    assert row is not None
    current, session, is_super, bypass = row
    assert current == session == settings.app_db_role
    assert not is_super and not bypass
    assert settings.app_db_role not in owners


def test_pool_refuses_owner_or_superuser_credentials(settings: Settings) -> None:
    with pytest.raises(UnsafeDatabaseRoleError, match="superuser"):
        Database(resolve_targets(settings).admin_url)


def test_pool_refuses_a_role_with_bypassrls(settings: Settings,
                                            admin_conn: psycopg.Connection[Any]) -> None:
    admin_conn.execute("DROP ROLE IF EXISTS rag_test_bypass")
    admin_conn.execute("CREATE ROLE rag_test_bypass LOGIN PASSWORD 'pw' BYPASSRLS")
    try:
        url = make_conninfo(resolve_targets(settings).app_url, user="rag_test_bypass",
                            password="pw")
        with pytest.raises(UnsafeDatabaseRoleError, match="BYPASSRLS"):
            Database(url)
    finally:
        admin_conn.execute("DROP ROLE rag_test_bypass")


@pytest.mark.parametrize(("grant", "reason"), [
    ("GRANT {owner} TO {role}", "member of the owner"),     # owns every table by membership
    ("GRANT CREATE ON SCHEMA rag TO {role}", "CREATE in schema rag"),
    ("GRANT CREATE ON DATABASE {database} TO {role}", "CREATE in the database"),
])
def test_pool_refuses_a_role_that_could_change_the_schema(
        settings: Settings, admin_conn: psycopg.Connection[Any], grant: str,
        reason: str) -> None:
    role = "rag_test_shaper"
    owner = admin_conn.execute("SELECT tableowner FROM pg_tables WHERE schemaname = 'rag' "
                               "AND tablename = 'chunks'").fetchone()
    assert owner is not None
    database = resolve_targets(settings).database_name
    admin_conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
    admin_conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'pw'").format(
        sql.Identifier(role)))
    statement = sql.SQL(grant).format(owner=sql.Identifier(owner[0]), role=sql.Identifier(role),
                                      database=sql.Identifier(database))
    admin_conn.execute(statement)
    try:
        url = make_conninfo(resolve_targets(settings).app_url, user=role, password="pw")
        with pytest.raises(UnsafeDatabaseRoleError, match=reason):
            Database(url)
    finally:
        admin_conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        admin_conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_a_connection_returns_to_the_pool_without_its_session_settings(
        settings: Settings, make_tenant: Callable[[], TenantId]) -> None:
    tenant = make_tenant()
    with Database(resolve_targets(settings).app_url, min_size=1, max_size=1) as one:
        with one.pool.connection() as conn:
            # a careless caller sets the tenant for the session, not the transaction
            conn.execute("SELECT set_config('app.tenant_id', %s, false)", [tenant])
        with one.pool.connection() as conn:  # the same (only) connection, lent again
            row = conn.execute("SELECT current_setting('app.tenant_id', true)").fetchone()
            assert row is not None and not row[0]
            assert conn.execute("SELECT count(*) FROM rag.tenants").fetchone() == (0,)


def test_invalid_tenant_id_is_rejected_before_sql(db: Database) -> None:
    with pytest.raises(InvalidTenantIdError), db.tenant_session("tn_' OR 1=1 --"):
        pytest.fail("session must not open")


def test_services_open_database_uses_app_role(settings: Settings) -> None:
    with services.open_database(settings) as database:
        assert database.role == settings.app_db_role
