"""Where the databases are: the admin (migration) URL and the application role's URL.

Embedded default: both point at the embedded server under the state folder, database
``RAG_EMBEDDED_DATABASE`` (default ``rag``). External: ``DATABASE_URL`` is the admin URL;
the application URL is ``RAG_APP_DATABASE_URL``, or the admin URL with the user swapped for
``RAG_APP_DB_ROLE`` and ``RAG_APP_DB_PASSWORD`` (set by ``rag db upgrade``).

The analytics role (analysts, dbt: read-only, the reporting views across tenants, migration
0013) is resolved the same way: ``RAG_ANALYTICS_DATABASE_URL``, or the admin URL with the
user swapped for ``RAG_ANALYTICS_DB_ROLE`` and ``RAG_ANALYTICS_DB_PASSWORD`` (set by
``rag db upgrade``), or the embedded server with its generated password
(:func:`resolve_analytics_target`).

Two resolvers, because two kinds of process exist. ``resolve_app_target`` is all a runtime
(query service, ingestion worker, Prefect flow) needs, and works with nothing but
``RAG_APP_DATABASE_URL``; ``resolve_targets`` adds the admin URL for migrations and
administration, and is refused in a process configured ``RAG_RUNTIME_ONLY``.

Every connection the platform opens takes :func:`pooler_options` for ``Settings.db_pooler``:
behind a transaction-mode pooler a statement psycopg prepares on one server connection (after
its fifth run on a client connection) is missing, or another client's, on the next.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from rag_core.config import DatabasePooler, Settings
from rag_core.db.embedded import EmbeddedPostgres
from rag_core.errors import ConfigurationError, DatabaseUnavailableError

AdminConnection = psycopg.Connection[tuple[Any, ...]]


@dataclass(frozen=True)
class DatabaseTargets:
    admin_url: str
    app_url: str
    app_role: str
    app_password: str | None
    embedded: bool
    # The analytics role's password to set (None: not configured, or the DBA manages it).
    analytics_role: str = "rag_analyst"
    analytics_password: str | None = None

    @property
    def database_name(self) -> str:
        return str(conninfo_to_dict(self.admin_url).get("dbname", ""))


def redact_url(url: str) -> str:
    """``url`` without its password, for messages."""
    params = conninfo_to_dict(url)
    if "password" in params:
        params["password"] = "***"
    return make_conninfo("", **{k: v for k, v in params.items() if v is not None})


@dataclass(frozen=True)
class RoleTarget:
    """One login role's connection: the application role's is everything a runtime process
    needs; the analytics role's is what ``rag dbt`` and analysts use."""

    url: str
    role: str
    embedded: bool


AppTarget = RoleTarget
AnalyticsTarget = RoleTarget


def _as_user(url: str, user: str, password: str) -> str:
    """``url`` (an external server's) with its user and password swapped."""
    params = conninfo_to_dict(url)
    params.update(user=user, password=password)
    return make_conninfo("", **{k: v for k, v in params.items() if v is not None})


def resolve_app_target(settings: Settings) -> AppTarget:
    """The application URL under ``settings``, without needing the admin URL when
    ``RAG_APP_DATABASE_URL`` is given. The embedded server must already be running."""
    if settings.app_database_url is not None:
        user = conninfo_to_dict(settings.app_database_url).get("user")
        return AppTarget(settings.app_database_url, str(user or settings.app_db_role),
                         embedded=False)
    if settings.uses_embedded_postgres:
        server = EmbeddedPostgres(settings.state_dir)
        url = server.url_for(settings.app_db_role, server.credentials().app_password,
                             settings.embedded_database)
        return AppTarget(url, settings.app_db_role, embedded=True)
    assert settings.database_url is not None
    if settings.app_db_password is None:
        raise ConfigurationError(
            "RAG_APP_DATABASE_URL", None,
            "with DATABASE_URL set, give the application role's URL, or RAG_APP_DB_PASSWORD "
            "so that `rag db upgrade` sets it on role " + settings.app_db_role)
    return AppTarget(_as_user(settings.database_url, settings.app_db_role,
                              settings.app_db_password.get_secret_value()),
                     settings.app_db_role, embedded=False)


def analytics_role_name(settings: Settings) -> str:
    """The analytics role's name: the user of ``RAG_ANALYTICS_DATABASE_URL`` when given."""
    if settings.analytics_database_url is not None:
        user = conninfo_to_dict(settings.analytics_database_url).get("user")
        return str(user or settings.analytics_db_role)
    return settings.analytics_db_role


def resolve_analytics_target(settings: Settings) -> AnalyticsTarget:
    """The analytics URL under ``settings`` (see the module docstring); the embedded server
    must already be running. ``ConfigurationError`` on an external server given neither the
    analytics URL nor its password."""
    role = analytics_role_name(settings)
    if settings.analytics_database_url is not None:
        return AnalyticsTarget(settings.analytics_database_url, role, embedded=False)
    if settings.uses_embedded_postgres:
        server = EmbeddedPostgres(settings.state_dir)
        url = server.url_for(role, server.credentials().analytics_password,
                             settings.embedded_database)
        return AnalyticsTarget(url, role, embedded=True)
    base = settings.database_url or settings.app_database_url
    if base is None or settings.analytics_db_password is None:
        raise ConfigurationError(
            "RAG_ANALYTICS_DATABASE_URL", None,
            "with an external database, give the analytics role's URL, or "
            "RAG_ANALYTICS_DB_PASSWORD so that `rag db upgrade` sets it on role " + role)
    return AnalyticsTarget(_as_user(base, role,
                                    settings.analytics_db_password.get_secret_value()),
                           role, embedded=False)


def resolve_targets(settings: Settings) -> DatabaseTargets:
    """The admin and application URLs under ``settings``, for migrations and administration;
    the embedded server must already be running.

    Refused (``ConfigurationError``) in a ``runtime_only`` process, which must never act as
    the admin even when the URL is in its environment, and when only the application URL
    is configured.
    """
    if settings.runtime_only:
        raise ConfigurationError(
            "RAG_RUNTIME_ONLY", True,
            "this process is a runtime (queries, ingestion, flows) and never uses the admin "
            "database URL: run migrations and tenant administration from an admin process")
    if settings.database_url is None and settings.app_database_url is not None:
        raise ConfigurationError(
            "RAG_DATABASE_URL", None,
            "only RAG_APP_DATABASE_URL is set, which serves queries and ingestion; migrations "
            "and tenant administration need the admin URL (RAG_DATABASE_URL or DATABASE_URL)")
    app = resolve_app_target(settings)
    password = (settings.app_db_password.get_secret_value()
                if settings.app_db_password is not None else None)
    analytics_role = analytics_role_name(settings)
    if settings.uses_embedded_postgres:
        server = EmbeddedPostgres(settings.state_dir)
        credentials = server.credentials()
        return DatabaseTargets(
            admin_url=server.admin_url(settings.embedded_database), app_url=app.url,
            app_role=settings.app_db_role, app_password=credentials.app_password,
            embedded=True, analytics_role=analytics_role,
            analytics_password=credentials.analytics_password)
    assert settings.database_url is not None
    # An explicit RAG_ANALYTICS_DATABASE_URL means the DBA manages that role's password.
    analytics_password = (settings.analytics_db_password.get_secret_value()
                          if settings.analytics_db_password is not None
                          and settings.analytics_database_url is None else None)
    return DatabaseTargets(settings.database_url, app.url, settings.app_db_role, password,
                           embedded=False, analytics_role=analytics_role,
                           analytics_password=analytics_password)


def pooler_options(pooler: DatabasePooler) -> dict[str, Any]:
    """Keyword arguments of ``psycopg.connect`` for a server reached through ``pooler``.

    Behind a transaction-mode pooler nothing may be prepared on the server: psycopg would
    prepare a statement after five runs and look for it, by name, on whichever server
    connection the pooler lends next (``prepared statement "_pg3_0" does not exist``, or
    ``already exists`` when another client's is there). Statements still use the extended
    protocol with unnamed statements, which poolers pass through.
    """
    return {"prepare_threshold": None} if pooler == "transaction" else {}


@contextlib.contextmanager
def connect(url: str, *, connect_timeout_s: float = 5.0,
            pooler: DatabasePooler = "none") -> Iterator[AdminConnection]:
    """An autocommit connection to ``url``; an unreachable server is a
    :class:`DatabaseUnavailableError` naming the (password-free) target."""
    try:
        conn = psycopg.connect(url, autocommit=True,
                               connect_timeout=max(1, round(connect_timeout_s)),
                               **pooler_options(pooler))
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailableError(redact_url(url), str(exc).strip()) from exc
    with conn:
        yield conn


@contextlib.contextmanager
def admin_connection(settings: Settings) -> Iterator[AdminConnection]:
    """An autocommit connection as the admin role (migrations, tenant administration)."""
    with connect(resolve_targets(settings).admin_url,
                 connect_timeout_s=settings.db_connect_timeout_s,
                 pooler=settings.db_pooler) as conn:
        yield conn
