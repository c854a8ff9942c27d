"""Where the databases are: the admin (migration) URL and the application role's URL.

Embedded default: both point at the embedded server under the state folder, database
``RAG_EMBEDDED_DATABASE`` (default ``rag``). External: ``DATABASE_URL`` is the admin URL;
the application URL is ``RAG_APP_DATABASE_URL``, or the admin URL with the user swapped for
``RAG_APP_DB_ROLE`` and ``RAG_APP_DB_PASSWORD`` (set by ``rag db upgrade``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from rag_core.config import Settings
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

    @property
    def database_name(self) -> str:
        return str(conninfo_to_dict(self.admin_url).get("dbname", ""))


def redact_url(url: str) -> str:
    """``url`` without its password, for messages."""
    params = conninfo_to_dict(url)
    if "password" in params:
        params["password"] = "***"
    return make_conninfo("", **{k: v for k, v in params.items() if v is not None})


def resolve_targets(settings: Settings) -> DatabaseTargets:
    """The URLs to use under ``settings``; the embedded server must already be running."""
    if settings.uses_embedded_postgres:
        server = EmbeddedPostgres(settings.state_dir)
        credentials = server.credentials()
        return DatabaseTargets(
            admin_url=server.admin_url(settings.embedded_database),
            app_url=server.url_for(settings.app_db_role, credentials.app_password,
                                   settings.embedded_database),
            app_role=settings.app_db_role,
            app_password=credentials.app_password,
            embedded=True,
        )
    assert settings.database_url is not None
    password = (settings.app_db_password.get_secret_value()
                if settings.app_db_password is not None else None)
    if settings.app_database_url is not None:
        app_url = settings.app_database_url
    elif password is not None:
        params = conninfo_to_dict(settings.database_url)
        params.update(user=settings.app_db_role, password=password)
        app_url = make_conninfo("", **{k: v for k, v in params.items() if v is not None})
    else:
        raise ConfigurationError(
            "RAG_APP_DATABASE_URL", None,
            "with DATABASE_URL set, give the application role's URL, or RAG_APP_DB_PASSWORD "
            "so that `rag db upgrade` sets it on role " + settings.app_db_role)
    return DatabaseTargets(settings.database_url, app_url, settings.app_db_role, password,
                           embedded=False)


@contextlib.contextmanager
def connect(url: str, *, connect_timeout_s: float = 5.0) -> Iterator[AdminConnection]:
    """An autocommit connection to ``url``; an unreachable server is a
    :class:`DatabaseUnavailableError` naming the (password-free) target."""
    try:
        conn = psycopg.connect(url, autocommit=True,
                               connect_timeout=max(1, round(connect_timeout_s)))
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailableError(redact_url(url), str(exc).strip()) from exc
    with conn:
        yield conn


@contextlib.contextmanager
def admin_connection(settings: Settings) -> Iterator[AdminConnection]:
    """An autocommit connection as the admin role (migrations, tenant administration)."""
    with connect(resolve_targets(settings).admin_url,
                 connect_timeout_s=settings.db_connect_timeout_s) as conn:
        yield conn
