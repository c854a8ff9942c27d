"""Each tenant's cache epoch: a random value drawn when its row is created (migration 0009).

Cache keys carry it, so that a tenant id deleted and created again starts with an empty
cache even when the deletion could not purge Redis. It is read from ``rag.tenants`` on each
lookup, never kept in the process: a process holding the old epoch in memory would keep
serving the old tenant's entries to the new one.

A lookup that cannot find the epoch (no such tenant, or the database failed) returns None,
and the caches then neither read nor write: failing closed costs a cache miss, while a guess
could cost another tenant's answer.
"""

from __future__ import annotations

import logging
from typing import Protocol

import psycopg

from rag_core.common.tenancy import TenantId
from rag_core.db.pool import Database

_log = logging.getLogger(__name__)

_SELECT_EPOCH = "SELECT cache_epoch FROM rag.tenants WHERE tenant_id = %s"


class EpochSource(Protocol):
    """Something that gives the current cache epoch of a tenant, or None if it has none."""

    def __call__(self, tenant: TenantId) -> str | None: ...


class CacheEpochs:
    """Reads a tenant's cache epoch in a tenant-scoped session (RLS applies)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def __call__(self, tenant: TenantId) -> str | None:
        try:
            with self._db.tenant_session(tenant) as conn:
                row = conn.execute(_SELECT_EPOCH, [tenant]).fetchone()
        except psycopg.Error as exc:
            # The query path reads the tenant's corpus version from the same table right
            # after: a database outage is reported there, with its code.
            _log.warning("cache epoch of %s unavailable (%s): caches bypassed", tenant,
                         type(exc).__name__)
            return None
        if row is None or row[0] is None:
            return None
        return str(row[0]).replace("-", "")
