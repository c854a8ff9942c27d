"""Per-tenant API keys: issued, listed, rotated and revoked; resolved to their tenant.

The key format is :mod:`rag_core.db.api_key_format`'s; the database keeps the sha256 of
the whole key, never the key, so its plaintext exists once: in the :class:`IssuedKey` that
:meth:`ApiKeys.create` or :meth:`ApiKeys.rotate` returns.

Management runs on the admin connection, like ``rag tenant create``
(:mod:`rag_core.db.tenant_admin`), and is refused in a ``RAG_RUNTIME_ONLY`` process. A key
is a credential: minting one is administration. The application role may not write
``rag.api_keys`` at all, so a compromised runtime (the HTTP service included) cannot issue
itself a key; tenant sessions would not have stopped that, since the application chooses
its session's tenant. Each operation still scopes its transaction to the tenant (RLS is
FORCEd on the owner too) and filters on it, so a tenant's key id never reaches another's
keys.

Resolution runs as the application role through ``rag.api_key_tenant``, a SECURITY DEFINER
function that answers with the tenant of a live key and nothing else, because no tenant is
known yet. The HTTP service calls :class:`CachedKeyResolver` (re-exported here from
:mod:`rag_core.db.key_resolver`) on every request, not :meth:`ApiKeys.resolve`.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg

from rag_core.common.tenancy import TenantId, parse_tenant_id
from rag_core.db.api_key_format import generate_key, parse_key
from rag_core.db.key_resolver import CachedKeyResolver
from rag_core.db.pool import Database
from rag_core.errors import (
    ConfigurationError,
    DatabaseUnavailableError,
    UnknownApiKeyError,
    UnknownTenantError,
)

__all__ = ["AdminConnector", "ApiKeyInfo", "ApiKeys", "CachedKeyResolver", "IssuedKey"]

Connection = psycopg.Connection[tuple[Any, ...]]
#: Opens an autocommit connection as the admin (``Platform.admin_connection``).
AdminConnector = Callable[[], AbstractContextManager[Connection]]

MAX_NAME_LENGTH = 100  # the table's CHECK
_KEY_ID_ATTEMPTS = 5  # 48-bit key ids: one collision is rare, five in a row a broken RNG

_SCOPE = "SELECT set_config('app.tenant_id', %s, true)"
_TENANT_EXISTS = "SELECT 1 FROM rag.tenants WHERE tenant_id = %s"
_INSERT = ("INSERT INTO rag.api_keys (key_id, tenant_id, key_hash, name) VALUES (%s, %s, %s, %s) "
           "RETURNING key_id, tenant_id, name, created_at, revoked_at, replaced_by")
_SELECT_ONE = ("SELECT key_id, tenant_id, name, created_at, revoked_at, replaced_by "
               "FROM rag.api_keys WHERE tenant_id = %s AND key_id = %s")
_LOCK_LIVE = ("SELECT key_id, tenant_id, name, created_at, revoked_at, replaced_by "
              "FROM rag.api_keys WHERE tenant_id = %s AND key_id = %s AND revoked_at IS NULL "
              "FOR UPDATE")
_LIST = ("SELECT key_id, tenant_id, name, created_at, revoked_at, replaced_by "
         "FROM rag.api_keys WHERE tenant_id = %s ORDER BY created_at, key_id")
_REVOKE = ("UPDATE rag.api_keys SET revoked_at = now() "
           "WHERE tenant_id = %s AND key_id = %s AND revoked_at IS NULL "
           "RETURNING key_id, tenant_id, name, created_at, revoked_at, replaced_by")
_REPLACE = ("UPDATE rag.api_keys SET revoked_at = now(), replaced_by = %s "
            "WHERE tenant_id = %s AND key_id = %s")
_RESOLVE = "SELECT rag.api_key_tenant(%s, %s)"


@dataclass(frozen=True)
class ApiKeyInfo:
    """What may be shown about a key: never the key, never its hash."""

    tenant_id: TenantId
    key_id: str
    name: str
    created_at: datetime
    revoked_at: datetime | None = None
    replaced_by: str | None = None  # the key that rotation issued in its place

    @property
    def live(self) -> bool:
        return self.revoked_at is None

    def as_dict(self) -> dict[str, Any]:
        return {"key_id": self.key_id, "tenant_id": self.tenant_id, "name": self.name,
                "created_at": self.created_at.isoformat(),
                "revoked_at": None if self.revoked_at is None else self.revoked_at.isoformat(),
                "replaced_by": self.replaced_by, "live": self.live}


@dataclass(frozen=True)
class IssuedKey:
    """A key just issued: ``key`` is its only plaintext copy (kept out of ``repr``)."""

    key: str = field(repr=False)
    info: ApiKeyInfo
    replaces: str | None = None  # the key id that rotation revoked

    def as_dict(self) -> dict[str, Any]:
        issued = {"key": self.key, "key_id": self.info.key_id,
                  "tenant_id": self.info.tenant_id, "name": self.info.name,
                  "created_at": self.info.created_at.isoformat()}
        if self.replaces is not None:
            issued["replaces"] = self.replaces
        return issued


def _info(row: tuple[Any, ...]) -> ApiKeyInfo:
    key_id, tenant, name, created_at, revoked_at, replaced_by = row
    return ApiKeyInfo(TenantId(str(tenant)), str(key_id), str(name), created_at, revoked_at,
                      None if replaced_by is None else str(replaced_by))


def _checked_name(name: str) -> str:
    if len(name) > MAX_NAME_LENGTH or not name.isprintable():
        raise ConfigurationError("api key name", name,
                                 f"at most {MAX_NAME_LENGTH} printable characters")
    return name


class ApiKeys:
    """Issue, list, rotate and revoke a tenant's keys (admin); resolve a key (application).

    ``database`` is the application pool, or a callable giving it: then the pool is opened
    on the first resolution, so management commands never need the application URL.
    ``admin`` opens an admin connection (in a runtime-only process it raises
    :class:`~rag_core.errors.ConfigurationError` naming ``RAG_RUNTIME_ONLY``).
    """

    def __init__(self, database: Database | Callable[[], Database], *,
                 admin: AdminConnector) -> None:
        self._database = database
        self._admin = admin

    # --- management (admin connection, one transaction scoped to the tenant) --------------
    def create(self, tenant: TenantId | str, name: str = "") -> IssuedKey:
        """A new live key for ``tenant`` (which must exist); the plaintext is returned once."""
        tenant_id = parse_tenant_id(tenant)
        name = _checked_name(name)
        with self._admin() as conn, conn.transaction():
            conn.execute(_SCOPE, [tenant_id])
            if conn.execute(_TENANT_EXISTS, [tenant_id]).fetchone() is None:
                raise UnknownTenantError(tenant_id)
            return _insert(conn, tenant_id, name)

    def list(self, tenant: TenantId | str) -> builtins.list[ApiKeyInfo]:
        """Every key of ``tenant``, live and revoked, oldest first."""
        tenant_id = parse_tenant_id(tenant)
        with self._admin() as conn, conn.transaction():
            conn.execute(_SCOPE, [tenant_id])
            return [_info(row) for row in conn.execute(_LIST, [tenant_id]).fetchall()]

    def rotate(self, tenant: TenantId | str, key_id: str) -> IssuedKey:
        """A new key with the old one's name; the old one is revoked in the same transaction
        and names its replacement. Only a live key of ``tenant`` can be rotated."""
        tenant_id = parse_tenant_id(tenant)
        with self._admin() as conn, conn.transaction():
            conn.execute(_SCOPE, [tenant_id])
            row = conn.execute(_LOCK_LIVE, [tenant_id, key_id]).fetchone()
            if row is None:
                raise UnknownApiKeyError(tenant_id, key_id, live_only=True)
            issued = _insert(conn, tenant_id, _info(row).name)
            conn.execute(_REPLACE, [issued.info.key_id, tenant_id, key_id])
        return IssuedKey(issued.key, issued.info, replaces=key_id)

    def revoke(self, tenant: TenantId | str, key_id: str) -> ApiKeyInfo:
        """Revoke one of ``tenant``'s keys; a key revoked already is returned as it is."""
        tenant_id = parse_tenant_id(tenant)
        with self._admin() as conn, conn.transaction():
            conn.execute(_SCOPE, [tenant_id])
            row = (conn.execute(_REVOKE, [tenant_id, key_id]).fetchone()
                   or conn.execute(_SELECT_ONE, [tenant_id, key_id]).fetchone())
        if row is None:
            raise UnknownApiKeyError(tenant_id, key_id)
        return _info(row)

    # --- resolution (application role, no tenant yet) ------------------------------------
    def resolve(self, key: str) -> TenantId | None:
        """The tenant of ``key`` if it is a live key; None when it is malformed, unknown,
        revoked (rotated away included) or its secret is wrong: one answer for all. A
        database that cannot be reached raises :class:`DatabaseUnavailableError`, so that an
        outage never looks like a bad key."""
        parsed = parse_key(key)
        if parsed is None:
            return None
        database = self._database if isinstance(self._database, Database) else self._database()
        try:
            with database.unscoped_session() as conn:
                row = conn.execute(_RESOLVE, [parsed.key_id, parsed.key_hash]).fetchone()
        except psycopg.OperationalError as exc:  # the pool's timeout is one too
            raise DatabaseUnavailableError("(application role)", str(exc)) from exc
        if row is None or row[0] is None:
            return None
        return parse_tenant_id(row[0])


def _insert(conn: Connection, tenant: TenantId, name: str) -> IssuedKey:
    """Insert a fresh key for ``tenant``; a key id that exists already is drawn again."""
    for attempt in range(_KEY_ID_ATTEMPTS):
        key, parsed = generate_key()
        try:
            with conn.transaction():  # a savepoint: a colliding id leaves nothing behind
                row = conn.execute(_INSERT, [parsed.key_id, tenant, parsed.key_hash,
                                             name]).fetchone()
        except psycopg.errors.UniqueViolation:
            if attempt == _KEY_ID_ATTEMPTS - 1:
                raise
            continue
        assert row is not None  # the RETURNING of an INSERT that succeeded
        return IssuedKey(key, _info(row))
    raise AssertionError("unreachable: the last attempt returns or raises")
