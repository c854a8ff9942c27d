"""Who is calling: the API key alone decides the tenant.

A key comes as ``Authorization: Bearer <key>`` (or ``X-API-Key: <key>``); it is resolved by
the platform's cached key resolver (:mod:`rag_core.db.api_keys`), so a known key costs no
database round trip. No key, a malformed one, an unknown one and a revoked one all get the
same 401: nothing tells a caller which keys exist. A tenant id in a body or a path is never
read for access; the tenant goes on the request's span only as a keyed hash.
"""

from __future__ import annotations

from fastapi import Request
from opentelemetry import trace
from starlette.concurrency import run_in_threadpool

from rag_core.common.tenancy import TenantId
from rag_core.common.tracing import TENANT_HASH_ATTRIBUTE, tenant_hash
from rag_core.db.key_resolver import CachedKeyResolver
from rag_core.errors import UnauthorizedError

_BEARER = "bearer "


def presented_key(request: Request) -> str | None:
    """The key the request carries, or None."""
    header = request.headers.get("authorization")
    if header is not None and header[:len(_BEARER)].lower() == _BEARER:
        return header[len(_BEARER):].strip() or None
    return request.headers.get("x-api-key") or None


async def authenticated_tenant(request: Request) -> TenantId:
    """FastAPI dependency: the caller's tenant, or 401.

    Async because nearly every request presents a key the resolver keeps in memory: that
    answer costs no hop to the thread pool (a sync dependency costs one per request: ~13%
    of the cached answers' throughput under ``rag bench load``); only a key that needs the
    database is looked up in a thread."""
    key = presented_key(request)
    if key is None:
        raise UnauthorizedError("an API key is required (Authorization: Bearer <key>)")
    state = request.app.state
    resolver: CachedKeyResolver = state.platform.key_resolver
    found, tenant = resolver.kept(key)
    if not found:
        tenant = await run_in_threadpool(resolver.resolve, key)
    if tenant is None:
        raise UnauthorizedError("the API key is not valid")
    trace.get_current_span().set_attribute(TENANT_HASH_ATTRIBUTE,
                                           tenant_hash(tenant, state.trace_key))
    return tenant
