"""Every Redis key of one tenant, found and deleted when the tenant is deleted.

All tenant-scoped keys start with the platform's key prefix and contain the tenant id: in the
middle for the caches (``rag:tn_…:answer:…``, ``rag:tn_…:qemb:…``) and as a Cluster hash tag
for the controls (``rag:rl:{tn_…}:req``, ``rag:quota:{tn_…}:…``). One pattern,
``<prefix>:*<tenant id>*``, matches every family, including families added later, and
nothing of another tenant: tenant ids are 128 random bits and hold no glob characters.

SCAN walks the keyspace in small steps (never KEYS, which blocks the server), in every
logical database the platform uses (caches and controls). A purge can miss a key written
while it runs, or all of them when Redis is down; that is why cache keys also carry the
tenant's epoch (:mod:`rag_core.db.cache_epochs`), and why a purge can be re-run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import redis

from rag_core.common.tenancy import TenantId, parse_tenant_id

_log = logging.getLogger(__name__)

_SCAN_COUNT = 1000
_DELETE_BATCH = 500


@dataclass(frozen=True)
class PurgeResult:
    """What a purge did: keys deleted, or why it could not finish."""

    tenant_id: TenantId
    keys_deleted: int
    error: str | None = None

    @property
    def complete(self) -> bool:
        return self.error is None


class TenantKeys:
    """Finds and deletes a tenant's keys in each of ``clients`` (one per logical database)."""

    def __init__(self, clients: Sequence[redis.Redis], prefix: str = "rag") -> None:
        self._clients = list(clients)
        self.prefix = prefix

    def pattern(self, tenant_id: TenantId | str) -> str:
        """The SCAN pattern of every key of ``tenant_id``."""
        return f"{self.prefix}:*{parse_tenant_id(tenant_id)}*"

    def find(self, tenant_id: TenantId | str) -> list[bytes]:
        """The tenant's keys in every database (for checks and reports)."""
        pattern = self.pattern(tenant_id)
        found: list[bytes] = []
        for client in self._clients:
            found.extend(client.scan_iter(match=pattern, count=_SCAN_COUNT))
        return found

    def purge(self, tenant_id: TenantId | str) -> PurgeResult:
        """Delete every key of ``tenant_id``; a Redis error is reported, not raised."""
        tenant = parse_tenant_id(tenant_id)
        pattern = self.pattern(tenant)
        deleted = 0
        try:
            for client in self._clients:
                batch: list[bytes] = []
                for name in client.scan_iter(match=pattern, count=_SCAN_COUNT):
                    batch.append(name)
                    if len(batch) >= _DELETE_BATCH:
                        deleted += int(client.unlink(*batch))
                        batch.clear()
                if batch:
                    deleted += int(client.unlink(*batch))
        except redis.RedisError as exc:
            reason = f"{type(exc).__name__}: {exc}"
            _log.warning("Redis keys of %s not purged (%s); %d deleted before the error. The "
                         "cache keys left are unreadable (the tenant's epoch is gone) and "
                         "expire; run the deletion again to remove them", tenant, reason,
                         deleted)
            return PurgeResult(tenant, deleted, reason)
        return PurgeResult(tenant, deleted)
