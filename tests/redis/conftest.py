"""Fixtures of the Redis hygiene tests: the platform's own caches and purge, wired by
:class:`~rag_core.composition.Platform` against the suite's servers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
import redis

from rag_core.common.tenancy import TenantId
from rag_core.composition import Platform
from rag_core.config import Settings
from rag_core.db import tenant_admin
from rag_core.db.cache_epochs import CacheEpochs
from rag_core.db.connection import resolve_targets
from rag_core.db.pool import Database
from rag_core.redis.embedded import EmbeddedRedis

Connection = psycopg.Connection[tuple[Any, ...]]


@pytest.fixture()
def platform(settings: Settings, db: Database,
             redis_server: EmbeddedRedis) -> Iterator[Platform]:
    with Platform(settings, database=db, start_services=False,
                  redis_url=redis_server.url(),
                  redis_control_url=redis_server.control_url()) as built:
        yield built


@pytest.fixture()
def epochs(db: Database) -> CacheEpochs:
    return CacheEpochs(db)


@pytest.fixture()
def owner(settings: Settings) -> Iterator[Connection]:
    with psycopg.connect(resolve_targets(settings).admin_url, autocommit=True) as conn:
        yield conn


@pytest.fixture()
def fixed_tenant(owner: Connection, platform: Platform) -> Iterator[Callable[[str], TenantId]]:
    """Create a tenant with a chosen id (again, after a deletion); deleted after the test."""
    made: list[TenantId] = []

    def create(tenant_id: str) -> TenantId:
        tenant = tenant_admin.create_tenant(owner, tenant_id, "redis hygiene")
        made.append(tenant)
        return tenant

    yield create
    for tenant in made:
        tenant_admin.delete_tenant(owner, tenant, redis_keys=platform.tenant_keys)


def raw_keys(client: redis.Redis, pattern: str) -> list[bytes]:
    return sorted(client.scan_iter(match=pattern, count=1000))
