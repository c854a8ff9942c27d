"""Buffer warm-up (migration 0018, rag_core.db.buffer_warmup) on a real server: the
extension is installed by the migration, a promotion's partition indexes are loaded block by
block, and without the extension nothing is loaded and the caller is told."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import psycopg
import pytest

from rag_core.config import Settings
from rag_core.config.retrieval import PartitionPolicy
from rag_core.db import tenant_admin
from rag_core.db.buffer_warmup import prewarm_available, prewarm_indexes
from rag_core.db.connection import resolve_targets
from rag_core.db.pool import Database
from rag_core.db.tenant_partitions import GraphParams, TenantPartitions, partition_name
from rag_core.ops import services
from rag_core.retrieval.vector_store import ChunkToStore, VectorStore

Conn = psycopg.Connection[tuple[Any, ...]]


@pytest.fixture(scope="module")
def env(create_database: Callable[[str], Settings]) -> Iterator[tuple[Settings, Database]]:
    settings = create_database("warmup")
    services.upgrade_database(settings)
    with services.open_database(settings) as db:
        yield settings, db


@pytest.fixture()
def admin(env: tuple[Settings, Database]) -> Iterator[Conn]:
    with psycopg.connect(resolve_targets(env[0]).admin_url, autocommit=True) as conn:
        yield conn


def _index_blocks(admin: Conn, table: str) -> int:
    row = admin.execute(
        "SELECT coalesce(sum(pg_relation_size(i.indexrelid)), 0) / current_setting('block_size')"
        "::int FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid "
        "WHERE c.relname = %s AND c.relnamespace = 'rag'::regnamespace", [table]).fetchone()
    assert row is not None
    return int(row[0])


def test_a_promoted_partition_s_indexes_are_loaded_whole(
        env: tuple[Settings, Database], admin: Conn) -> None:
    settings, db = env
    assert prewarm_available(admin)  # the test server is a superuser's: 0018 created it
    tenant = tenant_admin.create_tenant(admin)
    rng = np.random.default_rng(5)
    chunks = [ChunkToStore(f"w {i}", 2, hashlib.sha256(b"w%d" % i).digest(), v)
              for i, v in enumerate(rng.standard_normal((300, 384)).astype(np.float32))]
    VectorStore(db, settings).add_document(tenant, f"doc://{tenant}/0", b"h", chunks)
    TenantPartitions(admin, PartitionPolicy(own_partition_min_rows=200, demote_below_rows=50,
                                            retry_wait_s=0.0)).promote(
        tenant, GraphParams(m=8, ef_construction=32, ef_search=60))
    table = partition_name(tenant)
    blocks = _index_blocks(admin, table)
    assert blocks > 0  # the graph and the partition's b-trees
    assert prewarm_indexes(admin, table) == blocks
    assert prewarm_indexes(admin, "no_such_table") == 0


def test_without_the_extension_nothing_is_loaded(env: tuple[Settings, Database],
                                                 admin: Conn) -> None:
    admin.execute("DROP EXTENSION pg_prewarm")
    try:
        assert not prewarm_available(admin)
        assert prewarm_indexes(admin, "chunk_embeddings_shared") is None
    finally:
        admin.execute("CREATE EXTENSION pg_prewarm SCHEMA public")
