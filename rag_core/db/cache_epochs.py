"""Each tenant's cache epoch and corpus version, read from ``rag.tenants`` in one query.

The epoch is a random value drawn when the tenant's row is created (migration 0009). Cache
keys carry it, so that a tenant id deleted and created again starts with an empty cache
even when the deletion could not purge Redis. The corpus version goes up with every
ingestion and is in the answer cache's key too.

By default both are read on every lookup, never kept in the process: a process holding the
old epoch would serve the old tenant's entries to the new one, and one holding the old
corpus version would serve answers from before an ingestion. The HTTP service trades a
bounded staleness for no database round trip on a cached answer: with ``ttl_s`` > 0 (the
service's ``RAG_API__TENANT_STATE_TTL_S``, 1 s by default) a worker reads a tenant's row at
most once per ``ttl_s``, so an ingestion reaches its answers within ``ttl_s`` and a tenant
deleted and created again (whose keys the deletion also purges) likewise.

A lookup that cannot find the epoch (no such tenant, or the database failed) returns None,
and the caches then neither read nor write: failing closed costs a cache miss, while a guess
could cost another tenant's answer. Nothing negative is kept: a missing tenant is read
again on its next lookup.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import psycopg

from rag_core.common.tenancy import TenantId
from rag_core.db.pool import Database

_log = logging.getLogger(__name__)

_SELECT_STATE = "SELECT cache_epoch, corpus_version FROM rag.tenants WHERE tenant_id = %s"
#: Tenants kept at most; past it the oldest entries go (a bound, not a tuning knob).
_MAX_TENANTS = 10_000


class EpochSource(Protocol):
    """Something that gives the current cache epoch of a tenant, or None if it has none."""

    def __call__(self, tenant: TenantId) -> str | None: ...


@dataclass(frozen=True)
class TenantState:
    cache_epoch: str | None
    corpus_version: int


class CacheEpochs:
    """Reads a tenant's state in a tenant-scoped session (RLS applies), kept ``ttl_s``."""

    def __init__(self, db: Database, *, ttl_s: float = 0.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._db = db
        self._ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._kept: dict[TenantId, tuple[float, TenantState]] = {}

    def state(self, tenant: TenantId) -> TenantState | None:
        """The tenant's state, or None when no such tenant exists; database errors raise."""
        if self._ttl_s > 0:
            with self._lock:
                kept = self._kept.get(tenant)
            if kept is not None and self._clock() < kept[0]:
                return kept[1]
        with self._db.tenant_session(tenant) as conn:
            row = conn.execute(_SELECT_STATE, [tenant]).fetchone()
        if row is None:
            return None
        state = TenantState(str(row[0]).replace("-", "") if row[0] is not None else None,
                            int(row[1]))
        if self._ttl_s > 0:
            with self._lock:
                if len(self._kept) >= _MAX_TENANTS:
                    self._kept.pop(next(iter(self._kept)))
                self._kept[tenant] = (self._clock() + self._ttl_s, state)
        return state

    def __call__(self, tenant: TenantId) -> str | None:
        try:
            state = self.state(tenant)
        except psycopg.Error as exc:
            # The query path reads the tenant's corpus version through the same method:
            # a database outage is reported there, with its code.
            _log.warning("cache epoch of %s unavailable (%s): caches bypassed", tenant,
                         type(exc).__name__)
            return None
        return None if state is None else state.cache_epoch
