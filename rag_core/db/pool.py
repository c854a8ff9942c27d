"""The application's connection pool and tenant-scoped sessions.

Every data access of the application goes through ``Database.tenant_session``: one
transaction in which ``app.tenant_id`` is set with ``set_config(..., true)`` (transaction-
local, so a pooled connection never carries a tenant into its next use), on a role that
the pool has verified cannot bypass row-level security.

Behind a transaction-mode pooler (``Settings.db_pooler = "transaction"``) a transaction is
all a client owns of a server connection, so nothing is left in the session: no statement is
prepared on the server, and the statement timeout, otherwise a startup option of each
connection, is set in every transaction along with the tenant (one round trip still).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import psycopg
from pgvector.psycopg import register_vector
from psycopg_pool import ConnectionPool

from rag_core.common.tenancy import TenantId, parse_tenant_id
from rag_core.config import DatabasePooler, Settings
from rag_core.db.connection import pooler_options, resolve_app_target
from rag_core.errors import DatabaseUnavailableError, UnsafeDatabaseRoleError

Connection = psycopg.Connection[tuple[Any, ...]]

_SET_TENANT = "SELECT set_config('app.tenant_id', %s, true)"
_SET_TENANT_AND_TIMEOUT = ("SELECT set_config('app.tenant_id', %s, true), "
                           "set_config('statement_timeout', %s, true)")
_SET_TIMEOUT = "SELECT set_config('statement_timeout', %s, true)"

# "Owns" includes through membership: a member of the owning role can do what the owner does
# (ALTER TABLE ... DISABLE ROW LEVEL SECURITY, CREATE OR REPLACE FUNCTION, ...).
_ROLE_CHECK = """
SELECT r.rolname, r.rolsuper, r.rolbypassrls,
       (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'rag' AND pg_has_role(r.oid, c.relowner, 'MEMBER')),
       (SELECT count(*) FROM pg_proc f JOIN pg_namespace n ON n.oid = f.pronamespace
         WHERE n.nspname = 'rag' AND pg_has_role(r.oid, f.proowner, 'MEMBER')),
       (SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
         WHERE n.nspname = 'rag' AND t.typtype = 'd' AND pg_has_role(r.oid, t.typowner, 'MEMBER')),
       coalesce((SELECT pg_has_role(r.oid, n.nspowner, 'MEMBER') FROM pg_namespace n
                  WHERE n.nspname = 'rag'), false),
       coalesce((SELECT has_schema_privilege(r.oid, n.oid, 'CREATE') FROM pg_namespace n
                  WHERE n.nspname = 'rag'), false),
       has_database_privilege(r.oid, current_database(), 'CREATE')
  FROM pg_roles r WHERE r.rolname = current_user
"""


def check_application_role(conn: Connection) -> str:
    """Raise ``UnsafeDatabaseRoleError`` unless the connected role is subject to RLS and can
    neither change nor add to the schema it is confined by."""
    row = conn.execute(_ROLE_CHECK).fetchone()
    if row is None:
        raise UnsafeDatabaseRoleError("?", "current_user not found in pg_roles")
    role, is_super, bypasses, relations, functions, domains, owns_schema, creates_in_schema, \
        creates_in_database = row
    problems = [
        (is_super, "it is a superuser (superusers bypass RLS)"),
        (bypasses, "it has BYPASSRLS"),
        (relations, f"it owns (or is a member of the owner of) {relations} relation(s) in "
                    "schema rag"),
        (functions, f"it owns (or is a member of the owner of) {functions} function(s) in "
                    "schema rag"),
        (domains, f"it owns (or is a member of the owner of) {domains} domain(s) in schema rag"),
        (owns_schema, "it owns (or is a member of the owner of) schema rag"),
        (creates_in_schema, "it may CREATE in schema rag"),
        (creates_in_database, "it may CREATE in the database"),
    ]
    for found, reason in problems:
        if found:
            raise UnsafeDatabaseRoleError(role, reason)
    return str(role)


def _reset(conn: Connection) -> None:
    """Back to the connection's start-up settings before the pool lends it again: nothing a
    caller set at session level (a tenant, a search_path) reaches the next one."""
    conn.execute("RESET ALL")
    # Outside autocommit the statement opened a transaction: a connection handed back INTRANS
    # is discarded by the pool (with a warning on stderr), so every return cost a reconnect.
    conn.commit()


class Database:
    """A pool of application-role connections."""

    def __init__(self, app_url: str, *, min_size: int = 1, max_size: int = 10,
                 statement_timeout_ms: int = 30_000, connect_timeout_s: float = 5.0,
                 acquire_timeout_s: float = 30.0, pooler: DatabasePooler = "none") -> None:
        self._kwargs: dict[str, Any] = {
            "connect_timeout": max(1, round(connect_timeout_s)), **pooler_options(pooler)}
        # The timeout of each transaction's statements, when it cannot be the session's.
        self._transaction_timeout: str | None = None
        if pooler == "transaction":
            self._transaction_timeout = str(statement_timeout_ms)
        else:
            self._kwargs["options"] = f"-c statement_timeout={statement_timeout_ms}"
        try:
            with psycopg.connect(app_url, **self._kwargs) as probe:
                self.role = check_application_role(probe)
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailableError("(application role)", str(exc).strip()) from exc
        self.pool: ConnectionPool[Connection] = ConnectionPool(
            app_url, min_size=min_size, max_size=max_size, kwargs=self._kwargs,
            configure=register_vector, check=ConnectionPool.check_connection, reset=_reset,
            open=False, name="rag-app", timeout=acquire_timeout_s)
        self.pool.open(wait=True, timeout=connect_timeout_s + 5)

    @classmethod
    def for_settings(cls, settings: Settings) -> Database:
        """The pool of the application role under ``settings``. Only the application URL is
        resolved, so a runtime process configured with ``RAG_APP_DATABASE_URL`` alone (no
        admin URL anywhere in it) gets its pool."""
        return cls(resolve_app_target(settings).url, min_size=settings.db_pool_min_size,
                   max_size=settings.db_pool_max_size,
                   statement_timeout_ms=settings.db_statement_timeout_ms,
                   connect_timeout_s=settings.db_connect_timeout_s, pooler=settings.db_pooler)

    @contextlib.contextmanager
    def tenant_session(self, tenant_id: TenantId | str) -> Iterator[Connection]:
        """A transaction scoped to ``tenant_id``; commits on success, rolls back on error."""
        tenant = parse_tenant_id(tenant_id)  # NewType is not checked at run time: re-check
        with self.pool.connection() as conn, conn.transaction():
            self._begin(conn, tenant)
            yield conn

    def acquire_tenant_transaction(self, tenant_id: TenantId | str) -> Connection:
        """A pooled connection with a tenant transaction open, for work that spans threads
        (claim on one thread, write and commit on another). Hand it back with ``release``."""
        tenant = parse_tenant_id(tenant_id)
        conn = self.pool.getconn()
        try:
            self._begin(conn, tenant)
        except BaseException:
            self.release(conn, commit=False)
            raise
        return conn

    def release(self, conn: Connection, *, commit: bool) -> None:
        """End the transaction of ``conn`` (commit or roll back) and return it to the pool."""
        try:
            if commit:
                conn.commit()
            else:
                conn.rollback()
        finally:
            self.pool.putconn(conn)

    @contextlib.contextmanager
    def unscoped_session(self) -> Iterator[Connection]:
        """A transaction with no tenant set: RLS shows no tenant rows (used by probes)."""
        with self.pool.connection() as conn, conn.transaction():
            self._begin(conn, None)
            yield conn

    def _begin(self, conn: Connection, tenant: TenantId | None) -> None:
        """The first statement of a transaction: its tenant, and its statement timeout when
        a transaction pooler keeps that out of the session."""
        if self._transaction_timeout is None:
            if tenant is not None:
                conn.execute(_SET_TENANT, [tenant])
        elif tenant is None:
            conn.execute(_SET_TIMEOUT, [self._transaction_timeout])
        else:
            conn.execute(_SET_TENANT_AND_TIMEOUT, [tenant, self._transaction_timeout])

    def close(self) -> None:
        self.pool.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
