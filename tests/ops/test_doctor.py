"""``rag doctor`` on a healthy setup and on databases that lack what the platform needs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from rag_core.config import Settings
from rag_core.db.connection import resolve_targets
from rag_core.ops import services
from rag_core.ops.doctor import run_doctor
from rag_core.redis.embedded import EmbeddedRedis
from tests.conftest import REPO_ROOT, TEST_STATE_DIR, cli_environment


def _by_name(settings: Settings) -> dict[str, Any]:
    report = run_doctor(settings)
    return {c.name: c for c in report.checks} | {"_ok": report.ok}


def test_healthy_setup_reports_every_component_ok(settings: Settings,
                                                  redis_server: EmbeddedRedis) -> None:
    checks = _by_name(settings)
    assert checks["_ok"] is True
    for name in ("postgres", "pgvector", "migrations", "row-level security",
                 "application role", "redis"):
        assert checks[name].status == "ok", checks[name]
    assert checks["pgvectorscale"].status == "info"
    assert "not available" in checks["pgvectorscale"].detail
    assert checks["pg_prewarm"].status == "info"
    assert checks["pg_prewarm"].detail.startswith("pg_prewarm installed")


def _external(settings: Settings, database: str, redis_server: EmbeddedRedis) -> Settings:
    """Settings as a user with their own servers would have them (DATABASE_URL etc.)."""
    targets = resolve_targets(settings)
    admin = psycopg.conninfo.make_conninfo(targets.admin_url, dbname=database)
    app = psycopg.conninfo.make_conninfo(targets.app_url, dbname=database)
    return settings.model_copy(update={"database_url": admin, "app_database_url": app,
                                       "redis_url": redis_server.url()})


def test_database_without_vector_is_named(create_database: Callable[[str], Settings],
                                          redis_server: EmbeddedRedis) -> None:
    bare = create_database("novector")
    checks = _by_name(_external(bare, bare.embedded_database, redis_server))
    assert checks["_ok"] is False
    assert checks["pgvector"].status == "fail"
    assert (f"extension vector is not installed in database {bare.embedded_database}"
            in checks["pgvector"].detail)
    assert "rag db upgrade" in checks["pgvector"].detail
    assert checks["migrations"].status == "fail"
    assert checks["redis"].status == "ok"


def test_old_pgvector_is_refused_with_the_required_version(
        create_database: Callable[[str], Settings], redis_server: EmbeddedRedis) -> None:
    settings = create_database("oldvec")
    services.upgrade_database(settings)
    with psycopg.connect(resolve_targets(settings).admin_url, autocommit=True) as conn:
        # The catalog is what the doctor reads; make it say what an old server would say.
        conn.execute("UPDATE pg_extension SET extversion = '0.7.0' WHERE extname = 'vector'")
    checks = _by_name(settings)
    assert checks["pgvector"].status == "fail"
    assert "pgvector 0.7.0 < 0.8.0 required for iterative index scans" in checks["pgvector"].detail


def test_rls_switched_off_is_reported(create_database: Callable[[str], Settings],
                                      redis_server: EmbeddedRedis) -> None:
    settings = create_database("norls")
    services.upgrade_database(settings)
    with psycopg.connect(resolve_targets(settings).admin_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE rag.chunks NO FORCE ROW LEVEL SECURITY")
    checks = _by_name(settings)
    assert checks["row-level security"].status == "fail"
    assert ("rag.chunks: row-level security not forced (the owner bypasses it)"
            in checks["row-level security"].detail)


def test_unreachable_server_is_reported(settings: Settings, redis_server: EmbeddedRedis) -> None:
    broken = settings.model_copy(update={
        "database_url": "postgresql://nobody:x@127.0.0.1:1/none",
        "app_database_url": "postgresql://nobody:x@127.0.0.1:1/none",
        "redis_url": "redis://127.0.0.1:1/0"})
    checks = _by_name(broken)
    assert checks["postgres"].status == "fail"
    assert "cannot connect" in checks["postgres"].detail
    assert "x@" not in checks["postgres"].detail  # the password is not echoed
    assert checks["redis"].status == "fail"


def test_cli_doctor_json_and_exit_code(create_database: Callable[[str], Settings],
                                       redis_server: EmbeddedRedis) -> None:
    bare = create_database("clidoc")
    external = _external(bare, bare.embedded_database, redis_server)
    env = {**os.environ, "RAG_STATE_DIR": str(TEST_STATE_DIR),
           "DATABASE_URL": external.database_url or "",
           "RAG_APP_DATABASE_URL": external.app_database_url or "",
           "REDIS_URL": external.redis_url or ""}
    result = subprocess.run([sys.executable, "-m", "rag_core.cli", "doctor", "--json"],
                            capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=120,
                            check=False)
    assert result.returncode == 1, result.stderr
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload["ok"] is False
    pgvector = next(c for c in payload["checks"] if c["name"] == "pgvector")
    assert f"not installed in database {bare.embedded_database}" in pgvector["detail"]


@pytest.mark.parametrize("missing", ["RAG_APP_DATABASE_URL"])
def test_external_database_without_app_credentials_is_a_clear_error(
        settings: Settings, redis_server: EmbeddedRedis, missing: str) -> None:
    external = settings.model_copy(update={
        "database_url": resolve_targets(settings).admin_url, "app_database_url": None,
        "app_db_password": None, "redis_url": redis_server.url()})
    checks = _by_name(external)
    assert checks["postgres"].status == "fail"
    assert missing in checks["postgres"].detail


# --- runtime processes and the admin URL --------------------------------------------------
def test_a_runtime_holding_the_admin_url_is_warned(settings: Settings,
                                                   redis_server: EmbeddedRedis) -> None:
    external = _external(settings, settings.embedded_database, redis_server)
    checks = _by_name(external.model_copy(update={"runtime_only": True}))
    assert checks["runtime credentials"].status == "warn"
    assert "holds the admin database URL" in checks["runtime credentials"].detail
    assert checks["_ok"] is True  # a risk, not a broken platform

    assert _by_name(external)["runtime credentials"].status == "info"  # an admin process


def test_a_runtime_with_only_the_app_url_is_checked_as_the_app_role(
        settings: Settings, redis_server: EmbeddedRedis) -> None:
    external = _external(settings, settings.embedded_database, redis_server)
    runtime = external.model_copy(update={"database_url": None, "runtime_only": True})
    checks = _by_name(runtime)
    assert checks["_ok"] is True
    assert checks["runtime credentials"].status == "ok"
    for name in ("postgres", "pgvector", "row-level security", "application role"):
        assert checks[name].status == "ok", checks[name]
    assert checks["migrations"].status == "info"  # the ledger is the admin's to read
    # rag_core.db.schema.TENANT_TABLES and migration 0014's shared vector partition
    assert "tenant-scoped on 12 tenant tables" in checks["row-level security"].detail
    assert "tenant plans" not in checks  # read as the admin only


def test_cli_doctor_shows_the_warning_and_exits_zero(settings: Settings,
                                                     redis_server: EmbeddedRedis) -> None:
    external = _external(settings, settings.embedded_database, redis_server)
    env = cli_environment(RAG_STATE_DIR=str(TEST_STATE_DIR), RAG_RUNTIME_ONLY="true",
                          DATABASE_URL=external.database_url or "",
                          RAG_APP_DATABASE_URL=external.app_database_url or "",
                          REDIS_URL=external.redis_url or "")
    result = subprocess.run([sys.executable, "-m", "rag_core.cli", "doctor", "--json"],
                            capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    warned = next(c for c in payload["checks"] if c["name"] == "runtime credentials")
    assert warned["status"] == "warn"


# --- tenant tables found in the catalog -----------------------------------------------------
@pytest.fixture(scope="module")
def migrated(create_database: Callable[[str], Settings]) -> Settings:
    fresh = create_database("docrls")
    services.upgrade_database(fresh)
    return fresh


_TABLE = "CREATE TABLE {t} (id int, tenant_id rag.tenant_id NOT NULL)"
_FORCED = ("ALTER TABLE {t} ENABLE ROW LEVEL SECURITY",
           "ALTER TABLE {t} FORCE ROW LEVEL SECURITY")
_SCOPED = "tenant_id = rag.current_tenant_id()"

# Each case: the statements that make a new tenant table, and what the doctor must say.
UNSAFE_TABLES: dict[str, tuple[list[str], str]] = {
    "no RLS at all": ([_TABLE], "rag.doc_new: row-level security not enabled"),
    "RLS not forced": ([_TABLE, _FORCED[0], f"CREATE POLICY p ON {{t}} USING ({_SCOPED}) "
                        f"WITH CHECK ({_SCOPED})"], "not forced (the owner bypasses it)"),
    "no policy": ([_TABLE, *_FORCED], "rag.doc_new: no policy"),
    "USING (true)": ([_TABLE, *_FORCED, "CREATE POLICY p ON {t} USING (true) WITH CHECK (true)"],
                     "permissive policy p (ALL): USING (true) is always true"),
    "tenant comparison OR true": (
        [_TABLE, *_FORCED, f"CREATE POLICY p ON {{t}} USING ({_SCOPED} OR true) "
                           f"WITH CHECK ({_SCOPED})"], "widens the tenant comparison with OR"),
    "no tenant setting": ([_TABLE, *_FORCED, "CREATE POLICY p ON {t} USING (tenant_id IS NOT "
                           f"NULL) WITH CHECK ({_SCOPED})"], "does not read the tenant setting"),
    "no WITH CHECK": ([_TABLE, *_FORCED, f"CREATE POLICY p ON {{t}} USING ({_SCOPED})"],
                      "permissive policy p (ALL): no WITH CHECK"),
    "an INSERT policy without a check": (
        [_TABLE, *_FORCED, f"CREATE POLICY r ON {{t}} FOR SELECT USING ({_SCOPED})",
         "CREATE POLICY w ON {t} FOR INSERT"], "permissive policy w (INSERT): no WITH CHECK"),
    "a schema the application role can use": (
        ["CREATE SCHEMA doc_extra", "GRANT USAGE ON SCHEMA doc_extra TO rag_app",
         "CREATE TABLE doc_extra.notes (tenant_id text)"],
        "doc_extra.notes: row-level security not enabled"),
}


@pytest.mark.parametrize("case", sorted(UNSAFE_TABLES))
def test_a_new_tenant_table_is_found_and_judged(migrated: Settings, redis_server: EmbeddedRedis,
                                                case: str) -> None:
    statements, expected = UNSAFE_TABLES[case]
    url = resolve_targets(migrated).admin_url
    with psycopg.connect(url, autocommit=True) as conn:
        try:
            for statement in statements:
                conn.execute(statement.format(t="rag.doc_new"))
            check = _by_name(migrated)["row-level security"]
        finally:
            conn.execute("DROP TABLE IF EXISTS rag.doc_new")
            conn.execute("DROP SCHEMA IF EXISTS doc_extra CASCADE")
    assert check.status == "fail"
    assert expected in check.detail


def test_a_new_tenant_table_with_a_tenant_policy_passes(migrated: Settings,
                                                        redis_server: EmbeddedRedis) -> None:
    url = resolve_targets(migrated).admin_url
    with psycopg.connect(url, autocommit=True) as conn:
        try:
            for statement in [_TABLE, *_FORCED, f"CREATE POLICY p ON {{t}} USING ({_SCOPED}) "
                              f"WITH CHECK ({_SCOPED})"]:
                conn.execute(statement.format(t="rag.doc_new"))
            # A tenant-keyed table the application role cannot reach is listed, not judged.
            conn.execute("CREATE SCHEMA doc_private")
            conn.execute("CREATE TABLE doc_private.summary (tenant_id text)")
            check = _by_name(migrated)["row-level security"]
        finally:
            conn.execute("DROP TABLE IF EXISTS rag.doc_new")
            conn.execute("DROP SCHEMA IF EXISTS doc_private CASCADE")
    assert check.status == "ok", check.detail
    assert "tenant-scoped on 13 tenant tables" in check.detail
    assert "not judged: doc_private.summary" in check.detail
