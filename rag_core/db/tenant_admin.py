"""Tenant administration (owner connection): create, list, delete tenants.

RLS is FORCEd on ``rag.tenants`` too, so even the owner sees and writes a tenant's row only
inside a transaction scoped to that tenant; these functions scope themselves.

Deleting a tenant also purges its Redis keys when given the platform's
:class:`~rag_core.redis.tenant_keys.TenantKeys` (the CLI does): after the database commit,
so a Redis outage never blocks or undoes a deletion. What a failed purge leaves behind is
unreadable anyway (cache keys carry the deleted row's epoch, migration 0009) and expires.
A tenant with a vector partition of its own (migration 0014) has it dropped after the rows
are gone (:meth:`~rag_core.db.tenant_partitions.TenantPartitions.drop`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from rag_core.common.tenancy import TenantId, new_tenant_id, parse_tenant_id
from rag_core.db.tenant_partitions import TenantPartitions
from rag_core.redis.tenant_keys import PurgeResult, TenantKeys

Connection = psycopg.Connection[tuple[Any, ...]]


def _scope(conn: Connection, tenant: TenantId) -> None:
    conn.execute("SELECT set_config('app.tenant_id', %s, true)", [tenant])


def create_tenant(conn: Connection, tenant_id: str | None = None,
                  display_name: str = "") -> TenantId:
    """Create a tenant (a fresh id when none is given); existing tenants are left as they are."""
    tenant = parse_tenant_id(tenant_id) if tenant_id is not None else new_tenant_id()
    with conn.transaction():
        _scope(conn, tenant)
        conn.execute(
            "INSERT INTO rag.tenants (tenant_id, display_name) VALUES (%s, %s) "
            "ON CONFLICT (tenant_id) DO NOTHING", [tenant, display_name])
    return tenant


@dataclass(frozen=True)
class TenantDeletion:
    """What deleting a tenant did: its row (``existed``) and its Redis keys (``purge``,
    None when no Redis was given)."""

    tenant_id: TenantId
    existed: bool
    purge: PurgeResult | None = None


def delete_tenant(conn: Connection, tenant_id: str, *,
                  redis_keys: TenantKeys | None = None) -> TenantDeletion:
    """Delete a tenant and (by cascade) all its data, then its Redis keys if ``redis_keys``
    is given. The keys are purged even when the row is already gone: a deletion re-run
    after a Redis outage removes what the first one left."""
    tenant = parse_tenant_id(tenant_id)
    with conn.transaction():
        _scope(conn, tenant)
        # chunk_embeddings and audit rows reference the tenant without a foreign key.
        conn.execute("DELETE FROM rag.chunk_embeddings WHERE tenant_id = %s", [tenant])
        conn.execute("DELETE FROM rag.audit_log WHERE tenant_id = %s", [tenant])
        cur = conn.execute("DELETE FROM rag.tenants WHERE tenant_id = %s", [tenant])
        existed = cur.rowcount > 0
    # Its own partition, if any, now empty: detached and dropped (a failure leaves an empty
    # orphan partition, which `rag tenant rebalance` drops).
    TenantPartitions(conn).drop(tenant)
    purge = redis_keys.purge(tenant) if redis_keys is not None else None
    return TenantDeletion(tenant, existed, purge)


def tenant_exists(conn: Connection, tenant_id: str) -> bool:
    tenant = parse_tenant_id(tenant_id)
    with conn.transaction():
        _scope(conn, tenant)
        row = conn.execute("SELECT 1 FROM rag.tenants WHERE tenant_id = %s", [tenant]).fetchone()
    return row is not None
