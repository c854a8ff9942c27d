"""``rag doctor``: is every component the platform needs present, reachable and safe?

Each check names what is wrong in words a user can act on ("extension vector is not
installed in database rag", "pgvector 0.7.0 < 0.8.0 required for iterative index scans").
Optional components (pgvectorscale) are reported as information, never as failures; a
"warn" is a risk that does not stop the platform from working (it leaves ``ok`` true).

The doctor runs as what its process is: an admin process (the admin URL configured, not
``RAG_RUNTIME_ONLY``) checks through the admin connection; a runtime process checks what the
application role can see (everything but the migration ledger) and never uses the admin URL.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import psycopg
import redis

from rag_core.config import Settings
from rag_core.db import migrations
from rag_core.db.buffer_warmup import prewarm_available
from rag_core.db.connection import (
    AppTarget,
    analytics_role_name,
    pooler_options,
    redact_url,
    resolve_app_target,
    resolve_targets,
)
from rag_core.db.embedded import EmbeddedPostgres
from rag_core.db.pool import check_application_role
from rag_core.db.reporting import reporting_problems
from rag_core.db.rls_catalog import find_tenant_tables, policy_problems
from rag_core.db.schema import ANALYTICS_SCHEMA, REPORTING_OWNER, REPORTING_SCHEMA
from rag_core.errors import RagCoreError
from rag_core.ops.rebalance import plans_detail
from rag_core.redis import urls as redis_urls
from rag_core.redis.embedded import EmbeddedRedis

MIN_POSTGRES = 15
MIN_PGVECTOR = (0, 8, 0)

Status = Literal["ok", "fail", "warn", "info"]


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str


@dataclass(frozen=True)
class DoctorReport:
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return all(check.status != "fail" for check in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": [asdict(c) for c in self.checks]}


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("-")[0].split(".") if part.isdigit())


def run_doctor(settings: Settings) -> DoctorReport:
    checks: list[Check] = [_check_runtime_credentials(settings)]
    checks.extend(_check_postgres(settings))
    checks.append(_check_redis(settings))
    checks.append(_check_redis_controls_eviction(settings))
    return DoctorReport(checks)


def _check_runtime_credentials(settings: Settings) -> Check:
    """Does a runtime process hold the admin URL?

    The rule: a process started with ``RAG_RUNTIME_ONLY=true`` (query services, ingestion
    workers, Prefect workers) must hold only the application URL. It gets "warn" when
    ``RAG_DATABASE_URL`` or ``DATABASE_URL`` is in its environment, or when it runs on the
    embedded server with no ``RAG_APP_DATABASE_URL`` (it then reads the state folder's
    credentials file, which holds the superuser's password too). Such a process refuses to
    use the admin URL anyway (``resolve_targets``); the warning is about what a compromise
    of it would hand over. Processes without the setting are admin processes: "info".
    """
    name = "runtime credentials"
    if not settings.runtime_only:
        return Check(name, "info", "admin process (RAG_RUNTIME_ONLY unset): it may migrate "
                                   "and administer tenants; set RAG_RUNTIME_ONLY=true in query "
                                   "services, ingestion workers and flows")
    if settings.database_url is not None:
        return Check(name, "warn", "this runtime process (RAG_RUNTIME_ONLY) holds the admin "
                                   "database URL (RAG_DATABASE_URL or DATABASE_URL is set): "
                                   "remove it from its environment; a runtime needs only "
                                   "RAG_APP_DATABASE_URL")
    if settings.uses_embedded_postgres:
        return Check(name, "warn", "this runtime process (RAG_RUNTIME_ONLY) reaches the "
                                   "embedded server through "
                                   f"{settings.state_dir / 'pg' / 'credentials.json'}, which "
                                   "holds the superuser's password: give it "
                                   "RAG_APP_DATABASE_URL instead")
    return Check(name, "ok", "runtime process with the application URL only")


def _check_postgres(settings: Settings) -> list[Check]:
    if settings.uses_embedded_postgres:
        status = EmbeddedPostgres(settings.state_dir).status()
        if not status.running:
            return [Check("postgres", "fail",
                          f"embedded PostgreSQL in {status.data_dir} is not running; "
                          "run `rag db start`")]
    admin = not settings.runtime_only and (settings.database_url is not None
                                           or settings.uses_embedded_postgres)
    try:
        app = resolve_app_target(settings)
        url = resolve_targets(settings).admin_url if admin else app.url
    except RagCoreError as exc:
        return [Check("postgres", "fail", str(exc))]
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=5,
                               **pooler_options(settings.db_pooler))
    except psycopg.OperationalError as exc:
        return [Check("postgres", "fail", f"cannot connect to {redact_url(url)}: "
                      f"{str(exc).strip()}")]
    with conn:
        where = "embedded" if app.embedded else redact_url(url)
        return _check_database(conn, app, settings, where=where, admin=admin)


def _check_database(conn: psycopg.Connection[tuple[Any, ...]], app: AppTarget,
                    settings: Settings, *, where: str, admin: bool) -> list[Check]:
    checks: list[Check] = []
    row = conn.execute("SELECT current_setting('server_version_num')::int, "
                       "current_setting('server_version'), current_database()").fetchone()
    assert row is not None
    version_num, version, database = int(row[0]), str(row[1]), str(row[2])
    if version_num // 10000 < MIN_POSTGRES:
        checks.append(Check("postgres", "fail",
                            f"PostgreSQL {version} < {MIN_POSTGRES} required ({where})"))
    else:
        checks.append(Check("postgres", "ok", f"PostgreSQL {version}, database {database} "
                                              f"({where})"))

    checks.append(_check_extension_vector(conn, database))
    checks.append(_check_vectorscale(conn, database))
    checks.append(_check_prewarm(conn, database))
    if admin:
        checks.append(_check_migrations(conn, settings))
        checks.append(_check_tenant_plans(conn, settings))
    else:
        checks.append(Check("migrations", "info",
                            "not checked: the migration ledger is read as the admin, and this "
                            "runtime process has only the application URL (run `rag doctor` "
                            "from an admin process)"))
    checks.append(_check_rls(conn, app.role))
    checks.append(_check_app_role(app, settings))
    checks.append(_check_analytics_roles(conn, analytics_role_name(settings), app.role))
    return checks


def _check_extension_vector(conn: psycopg.Connection[tuple[Any, ...]], database: str) -> Check:
    installed = conn.execute(
        "SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
    available = conn.execute(
        "SELECT default_version FROM pg_available_extensions WHERE name = 'vector'").fetchone()
    if installed is None:
        if available is None:
            return Check("pgvector", "fail",
                         f"extension vector is not installed in database {database}, and the "
                         "server has no pgvector to install: install pgvector >= 0.8.0 on it")
        return Check("pgvector", "fail",
                     f"extension vector is not installed in database {database} (the server "
                     f"offers {available[0]}): run `rag db upgrade`")
    version = str(installed[0])
    if _version_tuple(version) < MIN_PGVECTOR:
        wanted = ".".join(map(str, MIN_PGVECTOR))
        return Check("pgvector", "fail",
                     f"pgvector {version} < {wanted} required for iterative index scans "
                     f"(database {database}): ALTER EXTENSION vector UPDATE")
    return Check("pgvector", "ok", f"pgvector {version} in database {database}")


def _check_vectorscale(conn: psycopg.Connection[tuple[Any, ...]], database: str) -> Check:
    installed = conn.execute(
        "SELECT extversion FROM pg_extension WHERE extname = 'vectorscale'").fetchone()
    if installed is not None:
        return Check("pgvectorscale", "info", f"vectorscale {installed[0]} installed")
    available = conn.execute(
        "SELECT default_version FROM pg_available_extensions WHERE name = 'vectorscale'"
    ).fetchone()
    if available is not None:
        return Check("pgvectorscale", "info",
                     f"vectorscale {available[0]} available, not installed in {database}")
    return Check("pgvectorscale", "info",
                 "vectorscale not available on this server (diskann benchmarks are skipped)")


def _check_prewarm(conn: psycopg.Connection[tuple[Any, ...]], database: str) -> Check:
    if prewarm_available(conn):
        return Check("pg_prewarm", "info", "pg_prewarm installed: promotions load their "
                                           "graphs into shared_buffers")
    return Check("pg_prewarm", "info",
                 f"pg_prewarm not installed in {database} (migration 0018 creates it as a "
                 "superuser): promoted graphs are read from disk until searches load them")


def _check_migrations(conn: psycopg.Connection[tuple[Any, ...]], settings: Settings) -> Check:
    try:
        states = migrations.status(conn, settings.migrations_dir)
    except RagCoreError as exc:
        return Check("migrations", "fail", str(exc))
    pending = [s.version for s in states if not s.applied]
    edited = [s.version for s in states if s.checksum_ok is False]
    if edited:
        return Check("migrations", "fail", f"applied migrations edited since: {edited}")
    if pending:
        return Check("migrations", "fail", f"pending migrations {pending}: run `rag db upgrade`")
    latest = max((s.version for s in states), default=0)
    return Check("migrations", "ok", f"{len(states)} applied, at version {latest:04d}")


def _check_tenant_plans(conn: psycopg.Connection[tuple[Any, ...]],
                        settings: Settings) -> Check:
    """Each tenant's vector plan (shared partition or its own, with the graph's parameters),
    and whether `rag tenant rebalance` has work (``rag_core.ops.rebalance``)."""
    status, detail = plans_detail(conn, settings.retrieval)
    return Check("tenant plans", status, detail)


def _check_rls(conn: psycopg.Connection[tuple[Any, ...]], app_role: str) -> Check:
    """Every table with a tenant column, found in the catalog (see ``rag_core.db.rls_catalog``
    for which schemas count and what a policy must say)."""
    tables = find_tenant_tables(conn, app_role)
    judged = [t for t in tables if t.judged]
    problems = [f"{t.qualified_name}: {', '.join(found)}"
                for t in judged if (found := policy_problems(t))]
    if not judged:
        return Check("row-level security", "fail",
                     "no table with a tenant_id column found: run `rag db upgrade`")
    if problems:
        return Check("row-level security", "fail", "tenant rows not isolated: "
                     + "; ".join(problems))
    schemas = sorted({t.schema for t in judged})
    detail = (f"enabled, forced and tenant-scoped on {len(judged)} tenant tables "
              f"(schema {', '.join(schemas)})")
    unreachable = [t.qualified_name for t in tables if not t.judged]
    if unreachable:
        detail += (f"; not reachable by {app_role}, so not judged: "
                   + ", ".join(unreachable))
    return Check("row-level security", "ok", detail)


def _check_app_role(app: AppTarget, settings: Settings) -> Check:
    try:
        with psycopg.connect(app.url, connect_timeout=5,
                             **pooler_options(settings.db_pooler)) as conn:
            role = check_application_role(conn)
    except psycopg.OperationalError as exc:
        return Check("application role", "fail",
                     f"cannot connect as {app.role}: {str(exc).strip()}")
    except RagCoreError as exc:
        return Check("application role", "fail", str(exc))
    return Check("application role", "ok",
                 f"{role}: not superuser, NOBYPASSRLS, owns nothing in schema rag")


def _check_analytics_roles(conn: psycopg.Connection[tuple[Any, ...]], analytics_role: str,
                           app_role: str) -> Check:
    """The analysts' read-only role and the reporting views' owner (``rag_core.db.reporting``)."""
    # Below migration 0013 (after `rag rollback --to-migration`, say) the schema, views and
    # withheld columns the check names do not exist: the migrations check says what is pending.
    row = conn.execute("SELECT to_regnamespace(%s) IS NOT NULL", [REPORTING_SCHEMA]).fetchone()
    if row is None or not row[0]:
        return Check("analytics role", "info",
                     f"not checked: schema {REPORTING_SCHEMA} is missing (migration 0013 is "
                     "not applied)")
    problems = reporting_problems(conn, analytics_role, app_role)
    if problems:
        return Check("analytics role", "fail", "; ".join(problems))
    return Check("analytics role", "ok",
                 f"{analytics_role}: NOBYPASSRLS, reads only schema {REPORTING_SCHEMA} "
                 f"(every tenant, no tenant content), writes only in {ANALYTICS_SCHEMA}; "
                 f"{REPORTING_OWNER} cannot log in and is nobody's member")


def _check_redis(settings: Settings) -> Check:
    if settings.uses_embedded_redis:
        status = EmbeddedRedis(settings.state_dir).status()
        if not status.running:
            return Check("redis", "fail", f"embedded Redis in {status.data_dir} is not running; "
                                          "run `rag services start`")
        url = EmbeddedRedis(settings.state_dir).url()
    else:
        assert settings.redis_url is not None
        url = settings.redis_url
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        info = client.info("server")
        lua_ok = client.eval("return 1", 0) == 1
    except redis.RedisError as exc:
        return Check("redis", "fail", f"cannot use Redis: {exc}")
    finally:
        client.close()
    if not lua_ok:
        return Check("redis", "fail", "Redis does not run Lua scripts (needed for rate limits)")
    where = "embedded" if settings.uses_embedded_redis else "REDIS_URL"
    return Check("redis", "ok", f"Redis {info.get('redis_version')} ({where}), Lua ok")


def _check_redis_controls_eviction(settings: Settings) -> Check:
    """Warn when the controls' server may evict keys: under any policy but ``noeviction``
    (the ``volatile-*`` ones included, the controls' keys all have a TTL) a full server
    drops rate windows, quota counters or the breaker to make room."""
    try:
        url = redis_urls.control_url(settings)
    except RagCoreError as exc:
        return Check("redis controls", "fail", str(exc))
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        memory = client.info("memory")
    except redis.RedisError as exc:
        return Check("redis controls", "fail", f"cannot use the controls' Redis: {exc}")
    finally:
        client.close()
    policy = str(memory.get("maxmemory_policy", "unknown"))
    maxmemory = int(memory.get("maxmemory", 0))
    if policy != "noeviction" and maxmemory > 0:
        return Check("redis controls", "warn",
                     f"the controls' Redis (database {redis_urls.url_database(url)}) runs "
                     f"maxmemory-policy {policy} with maxmemory {maxmemory}: it may evict "
                     "rate-limit windows, token quotas or the breaker. Give the controls a "
                     "server with maxmemory-policy noeviction (RAG_REDIS_CONTROL_URL)")
    detail = "noeviction" if policy == "noeviction" else f"{policy}, but no maxmemory"
    return Check("redis controls", "ok", f"the controls' Redis never evicts ({detail})")
