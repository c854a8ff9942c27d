"""Tenant administration (owner connection): create, list, delete tenants.

RLS is FORCEd on ``rag.tenants`` too, so even the owner sees and writes a tenant's row only
inside a transaction scoped to that tenant; these functions scope themselves.
"""

from __future__ import annotations

from typing import Any

import psycopg

from rag_core.common.tenancy import TenantId, new_tenant_id, parse_tenant_id

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


def delete_tenant(conn: Connection, tenant_id: str) -> bool:
    """Delete a tenant and (by cascade) all its data. True if it existed."""
    tenant = parse_tenant_id(tenant_id)
    with conn.transaction():
        _scope(conn, tenant)
        # chunk_embeddings and audit rows reference the tenant without a foreign key.
        conn.execute("DELETE FROM rag.chunk_embeddings WHERE tenant_id = %s", [tenant])
        conn.execute("DELETE FROM rag.audit_log WHERE tenant_id = %s", [tenant])
        cur = conn.execute("DELETE FROM rag.tenants WHERE tenant_id = %s", [tenant])
        return cur.rowcount > 0


def tenant_exists(conn: Connection, tenant_id: str) -> bool:
    tenant = parse_tenant_id(tenant_id)
    with conn.transaction():
        _scope(conn, tenant)
        row = conn.execute("SELECT 1 FROM rag.tenants WHERE tenant_id = %s", [tenant]).fetchone()
    return row is not None
