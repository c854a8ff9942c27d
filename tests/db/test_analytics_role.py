"""The analytics role of migration 0013, over the real database: rag_analyst reads every
tenant's audit and ingestion rows through rag_reporting and nothing of tenant content; no
role that reads across tenants can reach content; the application role is as confined as
before; `rag dbt` connects as rag_analyst."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from rag_core.cli.dbt_commands import dbt_environment
from rag_core.common.tenancy import TenantId
from rag_core.config import Settings
from rag_core.db.connection import resolve_analytics_target, resolve_targets
from rag_core.db.pool import Database
from rag_core.db.reporting import reporting_problems
from rag_core.db.rls_catalog import find_tenant_tables, policy_problems
from rag_core.db.schema import (
    REPORTED_GLOBAL_TABLES,
    REPORTED_TENANT_TABLES,
    REPORTING_OWNER,
    REPORTING_POLICY,
)
from rag_core.errors import ConfigurationError
from rag_core.ops import services
from tests.cli.test_failures import run_rag
from tests.conftest import REPO_ROOT, cli_environment, make_settings

Conn = psycopg.Connection[tuple[Any, ...]]
ANALYST = "rag_analyst"
ALL_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER"


def _write_rows(db: Database, tenant: TenantId) -> None:
    """An ingestion job with an item and a rejected record, and an audit row, as the
    application writes them (in the tenant's session)."""
    with db.tenant_session(tenant) as conn:
        job = conn.execute("INSERT INTO rag.ingestion_jobs (tenant_id, source_uri) "
                           "VALUES (%s, 'test://src') RETURNING job_id", [tenant]).fetchone()
        assert job is not None
        conn.execute("INSERT INTO rag.ingestion_items (job_id, item_no, tenant_id, source_uri, "
                     "title, body, content_hash) VALUES (%s, 0, %s, 'test://src#1', "
                     "'secret title', 'secret body', '\\x00')", [job[0], tenant])
        conn.execute("INSERT INTO rag.ingestion_errors (job_id, tenant_id, source, reason) "
                     "VALUES (%s, %s, 'test://src', 'missing text')", [job[0], tenant])
        conn.execute("INSERT INTO rag.audit_log (tenant_id, request_id, kind, question_hash, "
                     "question_redacted, prompt_tokens) "
                     "VALUES (%s, gen_random_uuid(), 'query', 'h', 'secret question', 7)",
                     [tenant])


@pytest.fixture()
def two_tenants(db: Database, make_tenant: Callable[[], TenantId]) -> tuple[TenantId, TenantId]:
    a, b = make_tenant(), make_tenant()
    _write_rows(db, a)
    _write_rows(db, b)
    return a, b


def _content_tables(admin_conn: Conn) -> list[str]:
    """Every tenant table of schema rag (from the catalog) that no reporting view shows."""
    return sorted(t.qualified_name for t in find_tenant_tables(admin_conn, "rag_app")
                  if t.schema == "rag" and t.name not in REPORTED_TENANT_TABLES)


def test_the_analyst_reads_every_tenants_audit_and_ingestion_rows(
        analyst_conn: Conn, two_tenants: tuple[TenantId, TenantId]) -> None:
    tenants = list(two_tenants)
    assert analyst_conn.execute("SELECT current_user").fetchone() == (ANALYST,)
    for view in ("audit_log", "ingestion_jobs", "ingestion_items", "ingestion_errors",
                 "tenants"):
        owners = {r[0] for r in analyst_conn.execute(
            f"SELECT tenant_id FROM rag_reporting.{view} WHERE tenant_id = ANY(%s)",  # noqa: S608
            [tenants])}
        assert owners == set(tenants), view
    row = analyst_conn.execute(
        "SELECT count(*), sum(prompt_tokens) FROM rag_reporting.audit_log "
        " WHERE tenant_id = ANY(%s)", [tenants]).fetchone()
    assert row == (2, 14)
    # The global tables are readable too.
    for view in ("feature_flags", "feature_flag_events", "benchmark_runs"):
        analyst_conn.execute(f"SELECT count(*) FROM rag_reporting.{view}")  # noqa: S608


def test_no_reporting_view_shows_tenant_content(admin_conn: Conn, analyst_conn: Conn) -> None:
    columns = {(str(t), str(c)) for t, c in analyst_conn.execute(
        "SELECT table_name, column_name FROM information_schema.columns "
        " WHERE table_schema = 'rag_reporting'")}
    views = {t for t, _ in columns}
    assert views == set(REPORTED_TENANT_TABLES) | set(REPORTED_GLOBAL_TABLES)
    withheld = {**REPORTED_TENANT_TABLES, **REPORTED_GLOBAL_TABLES}
    for view, hidden in withheld.items():
        assert not {c for t, c in columns if t == view} & set(hidden), view
    assert not {c for _, c in columns} & {"text", "body", "embedding", "question_redacted"}
    # What the views are built on, from the rewrite rules' dependencies: the reported tables.
    bases = {str(r[0]) for r in admin_conn.execute(
        "SELECT DISTINCT t.relnamespace::regnamespace::text || '.' || t.relname "
        "  FROM pg_rewrite w JOIN pg_class v ON v.oid = w.ev_class "
        "  JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = w.oid "
        "  JOIN pg_class t ON t.oid = d.refobjid AND d.refclassid = 'pg_class'::regclass "
        " WHERE v.relnamespace = 'rag_reporting'::regnamespace AND t.oid <> v.oid")}
    assert bases == {f"rag.{t}" for t in withheld}


@pytest.mark.parametrize("table", ["rag.chunks", "rag.documents", "rag.chunk_embeddings",
                                   "rag.audit_log", "rag.ingestion_items"])
def test_the_analyst_cannot_read_schema_rag(analyst_conn: Conn, table: str) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        analyst_conn.execute(f"SELECT * FROM {table} LIMIT 1")  # noqa: S608


def test_no_role_reading_across_tenants_can_reach_tenant_content(admin_conn: Conn) -> None:
    content = _content_tables(admin_conn)
    assert {"rag.documents", "rag.chunks", "rag.chunk_embeddings"} <= set(content)
    roles = dict(admin_conn.execute(
        "SELECT rolname, rolbypassrls FROM pg_roles WHERE rolname = ANY(%s)",
        [[ANALYST, REPORTING_OWNER]]).fetchall())
    assert roles == {ANALYST: False, REPORTING_OWNER: False}
    # Whoever reads past RLS: BYPASSRLS roles that are not superusers, and every role an
    # all-rows policy (one that is not the tenant comparison) names.
    bypassing = {str(r[0]) for r in admin_conn.execute(
        "SELECT rolname FROM pg_roles WHERE rolbypassrls AND NOT rolsuper")}
    policies = admin_conn.execute(
        "SELECT policyname, tablename, roles::text[], qual FROM pg_policies "
        " WHERE schemaname = 'rag' AND policyname NOT IN ('tenant_isolation', "
        "                                              'api_key_resolution')").fetchall()
    assert {(p[0], p[1], tuple(p[2]), p[3]) for p in policies} == {
        (REPORTING_POLICY, t, (REPORTING_OWNER,), "true") for t in REPORTED_TENANT_TABLES}
    for role in bypassing | {REPORTING_OWNER, ANALYST}:
        for table in content:
            row = admin_conn.execute(
                "SELECT has_table_privilege(%s, %s, %s) "
                "    OR has_any_column_privilege(%s, %s, 'SELECT, INSERT, UPDATE, REFERENCES')",
                [role, table, ALL_PRIVILEGES, role, table]).fetchone()
            assert row == (False,), (role, table)
        for table, hidden in {**REPORTED_TENANT_TABLES, **REPORTED_GLOBAL_TABLES}.items():
            for column in hidden:
                assert admin_conn.execute(
                    "SELECT has_column_privilege(%s, %s, %s, 'SELECT')",
                    [role, f"rag.{table}", column]).fetchone() == (False,), (role, table, column)
    # Nobody uses the owner's rights: not the analyst, not the application role.
    for role in (ANALYST, "rag_app"):
        assert admin_conn.execute("SELECT pg_has_role(%s, %s, 'MEMBER')",
                                  [role, REPORTING_OWNER]).fetchone() == (False,)


def test_the_app_role_still_sees_only_its_tenants_audit_rows(
        db: Database, two_tenants: tuple[TenantId, TenantId]) -> None:
    a, _ = two_tenants
    with db.tenant_session(a) as conn:
        owners = {r[0] for r in conn.execute("SELECT tenant_id FROM rag.audit_log")}
        assert owners == {a}
        for table in ("ingestion_jobs", "ingestion_items", "ingestion_errors", "tenants"):
            assert {r[0] for r in conn.execute(f"SELECT tenant_id FROM rag.{table}")} == {a}  # noqa: S608
    for view in ("audit_log", "tenants", "feature_flags"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege), \
                db.tenant_session(a) as conn:
            conn.execute(f"SELECT * FROM rag_reporting.{view}")  # noqa: S608
    with pytest.raises(psycopg.errors.InsufficientPrivilege), db.tenant_session(a) as conn:
        conn.execute("CREATE TABLE rag_analytics.app_was_here (x int)")


# --- the doctor's checks ------------------------------------------------------------------
def test_the_doctor_accepts_the_migrated_roles_and_policies(admin_conn: Conn) -> None:
    assert reporting_problems(admin_conn, ANALYST, "rag_app") == []
    tables = {t.name: t for t in find_tenant_tables(admin_conn, "rag_app") if t.schema == "rag"}
    for name in REPORTED_TENANT_TABLES:
        assert policy_problems(tables[name]) == [], name


# What could make the roles unsafe, and the words the doctor must say about it.
UNSAFE = {
    "a content grant to the owner": ("GRANT SELECT ON rag.chunks TO rag_reporting_owner",
                                     "rag_reporting_owner holds a privilege on rag.chunks"),
    "a content column to the analyst": (
        "GRANT SELECT (body) ON rag.ingestion_items TO rag_analyst",
        "rag_analyst may read rag.ingestion_items.body"),
    "a table of rag to the analyst": ("GRANT SELECT ON rag.embedding_models TO rag_analyst",
                                      "rag_analyst holds privileges on 1 table(s)"),
    "the app role as the owner's member": ("GRANT rag_reporting_owner TO rag_app",
                                           "rag_app may use the rights of rag_reporting_owner"),
    "the reporting schema to the app role": ("GRANT USAGE ON SCHEMA rag_reporting TO rag_app",
                                             "rag_app may use schema rag_reporting"),
    "a view of the admin's": ("CREATE VIEW rag_reporting.leak AS SELECT text FROM rag.chunks",
                              "not owned by rag_reporting_owner"),
}


@pytest.mark.parametrize("change", sorted(UNSAFE))
def test_the_doctor_names_what_makes_the_roles_unsafe(settings: Settings, change: str) -> None:
    statement, expected = UNSAFE[change]
    # One transaction, rolled back: nothing here is ever visible to another session.
    with psycopg.connect(resolve_targets(settings).admin_url) as conn:
        conn.execute(statement)
        problems = reporting_problems(conn, ANALYST, "rag_app")
        conn.rollback()
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize("statement", [
    "ALTER POLICY reporting_read ON rag.audit_log TO rag_app",
    "ALTER POLICY reporting_read ON rag.audit_log USING (tenant_id IS NOT NULL)",
])
def test_a_widened_reporting_policy_fails_the_rls_check(settings: Settings,
                                                         statement: str) -> None:
    with psycopg.connect(resolve_targets(settings).admin_url) as conn:
        conn.execute(statement)
        audit = next(t for t in find_tenant_tables(conn, "rag_app")
                     if (t.schema, t.name) == ("rag", "audit_log"))
        conn.rollback()
    assert any("reporting_read" in p for p in policy_problems(audit))


# --- the migration on a database holding dbt's tables ---------------------------------------
def test_dbts_earlier_tables_change_hands_and_the_rollback_leaves_no_grant(
        create_database: Callable[[str], Settings]) -> None:
    fresh = create_database("analyst")
    services.upgrade_database(fresh, target=12)
    url = resolve_targets(fresh).admin_url
    owner_sql = "SELECT relowner::regrole::text FROM pg_class WHERE oid = %s::regclass"
    with psycopg.connect(url, autocommit=True) as conn:
        # What `rag dbt build` left as the admin before 0013.
        conn.execute("CREATE SCHEMA rag_analytics")
        conn.execute("CREATE TABLE rag_analytics.tenant_daily_usage (tenant_id text)")
    services.upgrade_database(fresh)
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute(owner_sql, ["rag_analytics.tenant_daily_usage"]).fetchone() \
            == (ANALYST,)
    services.downgrade_database(fresh, 12)
    with psycopg.connect(url, autocommit=True) as conn:
        admin = conn.execute("SELECT current_user").fetchone()
        assert conn.execute(owner_sql, ["rag_analytics.tenant_daily_usage"]).fetchone() == admin
        assert conn.execute("SELECT to_regnamespace('rag_reporting')").fetchone() == (None,)
        # Nothing of this database depends on the two cluster-wide roles any more.
        assert conn.execute(
            "SELECT count(*) FROM pg_shdepend WHERE refobjid = ANY(%s::regrole[]) "
            "   AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
            [[ANALYST, REPORTING_OWNER]]).fetchone() == (0,)


# --- how processes reach the role -----------------------------------------------------------
def test_the_analytics_url_on_an_external_server() -> None:
    admin = "postgresql://admin:secret@db.example.internal:5432/rag"
    swapped = resolve_analytics_target(make_settings(
        database_url=admin, analytics_db_password="pw"))
    assert (swapped.role, swapped.embedded) == (ANALYST, False)
    assert "user=rag_analyst" in swapped.url and "password=pw" in swapped.url
    assert "db.example.internal" in swapped.url
    given = resolve_analytics_target(make_settings(
        database_url=admin, analytics_database_url="postgresql://reader:x@h/rag"))
    assert (given.url, given.role) == ("postgresql://reader:x@h/rag", "reader")
    with pytest.raises(ConfigurationError, match="RAG_ANALYTICS_DATABASE_URL"):
        resolve_analytics_target(make_settings(database_url=admin))


@pytest.fixture()
def dbt_env(settings: Settings, tmp_path: Path) -> Iterator[dict[str, str]]:
    targets = resolve_targets(settings)
    state = tmp_path / "state"
    state.mkdir()
    yield cli_environment(DATABASE_URL=targets.admin_url, RAG_APP_DATABASE_URL=targets.app_url,
                          RAG_STATE_DIR=str(state))


@pytest.mark.slow
def test_rag_dbt_connects_as_the_analyst(settings: Settings, dbt_env: dict[str, str]) -> None:
    env = {**dbt_env, "RAG_ANALYTICS_DATABASE_URL": resolve_analytics_target(settings).url}
    result = run_rag(["dbt", "debug"], env, REPO_ROOT)
    output = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout)
    assert result.returncode == 0, output + result.stderr
    assert re.search(r"^\S*\s+user: rag_analyst$", output, re.MULTILINE), output
    assert "Connection test: [OK connection ok]" in output


def test_dbt_is_never_given_the_admin_connection(settings: Settings) -> None:
    env = dbt_environment(settings)
    assert (env["RAG_DBT_USER"], env["RAG_DBT_DBNAME"]) == (ANALYST, settings.embedded_database)
    external = make_settings(database_url=resolve_targets(settings).admin_url)
    with pytest.raises(ConfigurationError, match="RAG_ANALYTICS_DB_PASSWORD"):
        dbt_environment(external)  # not the admin URL in its place
