"""Bring the platform's backing services up: embedded servers when no URLs are configured,
the database and its migrations, and the passwords of the application and analytics roles.

This is the one place that decides "embedded or external"; the CLI and the test suite
both call it, so a user's first command and CI exercise the same path.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from rag_core.config import Settings
from rag_core.db import migrations
from rag_core.db.connection import DatabaseTargets, admin_connection, connect, resolve_targets
from rag_core.db.embedded import EmbeddedPostgres
from rag_core.db.pool import Database
from rag_core.redis.embedded import EmbeddedRedis

_ALTER_ROLE_ATTEMPTS = 3


@dataclass(frozen=True)
class UpgradeResult:
    applied: list[int]
    database: str


def start_services(settings: Settings) -> None:
    """Start whichever embedded servers the settings call for (idempotent)."""
    if settings.uses_embedded_postgres:
        EmbeddedPostgres(settings.state_dir).start()
        ensure_embedded_database(settings.state_dir, settings.embedded_database)
    if settings.uses_embedded_redis:
        EmbeddedRedis(settings.state_dir).start()


def stop_services(settings: Settings) -> None:
    if settings.uses_embedded_postgres:
        EmbeddedPostgres(settings.state_dir).stop()
    if settings.uses_embedded_redis:
        EmbeddedRedis(settings.state_dir).stop()


def ensure_embedded_database(state_dir: Path, name: str) -> None:
    """Create database ``name`` on the embedded server if it does not exist."""
    server = EmbeddedPostgres(state_dir)
    with connect(server.admin_url("postgres")) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if exists is None:
            # A concurrent caller may create it first.
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def redis_url(settings: Settings) -> str:
    if settings.redis_url is not None:
        return settings.redis_url
    return EmbeddedRedis(settings.state_dir).url()


def upgrade_database(settings: Settings, target: int | None = None) -> UpgradeResult:
    """Apply pending migrations, then give the application and analytics roles their
    passwords."""
    targets = resolve_targets(settings)
    with connect(targets.admin_url, connect_timeout_s=settings.db_connect_timeout_s,
                 pooler=settings.db_pooler) as conn:
        applied = migrations.upgrade(conn, settings.migrations_dir, target)
        set_app_role_password(conn, targets)
        set_role_password(conn, targets.analytics_role, targets.analytics_password)
    return UpgradeResult(applied, targets.database_name)


def downgrade_database(settings: Settings, target: int) -> list[int]:
    with admin_connection(settings) as conn:
        return migrations.downgrade(conn, settings.migrations_dir, target)


def set_app_role_password(conn: psycopg.Connection[tuple[object, ...]],
                          targets: DatabaseTargets) -> None:
    # None: external server with an explicit RAG_APP_DATABASE_URL, the DBA manages it.
    set_role_password(conn, targets.app_role, targets.app_password)


def set_role_password(conn: psycopg.Connection[tuple[object, ...]], role: str,
                      password: str | None) -> None:
    """Give ``role`` (the application or the analytics role) ``password``; nothing when the
    password is None (managed by the DBA) or the role does not exist yet."""
    if password is None:
        return
    role_exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone()
    if role_exists is None:
        return  # migrations not applied yet
    # ALTER ROLE takes no bind parameters, and a statement is logged whole under
    # log_statement=ddl: send the SCRAM-SHA-256 verifier libpq computes on this side (as psql's
    # \password does), never the password. The migration lock serialises concurrent runners
    # of one database (concurrent ALTER ROLEs on one role fail with "tuple concurrently
    # updated"); runners of two databases on one server (roles are cluster-wide, the lock is
    # not) may still collide, so that error is retried.
    verifier = conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256")
    statement = sql.SQL("ALTER ROLE {} PASSWORD {}").format(
        sql.Identifier(role), sql.Literal(verifier.decode()))
    for attempt in range(_ALTER_ROLE_ATTEMPTS):
        try:
            with conn.transaction():
                migrations.lock(conn)
                conn.execute(statement)
            return
        except psycopg.errors.InternalError_ as exc:
            if "concurrently updated" not in str(exc) or attempt + 1 == _ALTER_ROLE_ATTEMPTS:
                raise


def open_database(settings: Settings) -> Database:
    """A pool of application-role connections for ``settings`` (the admin URL is not
    needed: see ``Database.for_settings``)."""
    return Database.for_settings(settings)
