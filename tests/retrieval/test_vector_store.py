"""The vector store: k results for small tenants among big ones, both plans, input errors,
and the per-row tenant check against a deliberately sabotaged database."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector

from rag_core.common.metrics import CROSS_TENANT_ROWS_BLOCKED, counter_value
from rag_core.common.tenancy import TenantId
from rag_core.config import Settings
from rag_core.db.connection import resolve_targets
from rag_core.errors import (
    CrossTenantLeakError,
    DimensionMismatchError,
    UnknownEmbeddingModelError,
)
from rag_core.ops import services
from rag_core.retrieval.vector_store import ChunkToStore, VectorStore


def _chunks(n: int, rng: np.random.Generator, centre: np.ndarray) -> list[ChunkToStore]:
    vectors = centre + 0.3 * rng.standard_normal((n, 384)).astype(np.float32)
    return [ChunkToStore(f"chunk {i}", 2, hashlib.sha256(f"{i}".encode()).digest(), v)
            for i, v in enumerate(vectors)]


def _exact_top_k(vectors: np.ndarray, ids: list[int], query: np.ndarray, k: int) -> list[int]:
    normed = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    sims = normed @ (query / np.linalg.norm(query))
    return [ids[i] for i in np.argsort(-sims, kind="stable")[:k]]


@pytest.fixture(scope="module")
def populated(create_database: Callable[[str], Settings]) -> tuple[Settings, TenantId, TenantId]:
    """One big tenant (3,000 vectors) and one small (12) in the same region of space."""
    settings = create_database("vs")
    services.upgrade_database(settings)
    from rag_core.db import tenant_admin as tenants
    with psycopg.connect(resolve_targets(settings).admin_url, autocommit=True) as conn:
        big, small = tenants.create_tenant(conn), tenants.create_tenant(conn)
    rng = np.random.default_rng(7)
    centre = rng.standard_normal(384).astype(np.float32)
    with services.open_database(settings) as db:
        store = VectorStore(db, settings)
        store.add_document(big, "big://1", b"b", _chunks(3000, rng, centre))
        store.add_document(small, "small://1", b"s", _chunks(12, rng, centre))
    return settings, big, small


@pytest.mark.parametrize("exact_max_rows", [0, 10_000])
def test_small_tenant_gets_k_results_and_only_its_own(
        populated: tuple[Settings, TenantId, TenantId], exact_max_rows: int) -> None:
    settings, _big, small = populated
    settings = settings.model_copy(update={"exact_search_max_rows": exact_max_rows})
    rng = np.random.default_rng(3)
    with services.open_database(settings) as db:
        store = VectorStore(db, settings)
        for _ in range(10):
            results = store.search(small, rng.standard_normal(384).astype(np.float32), k=10)
            assert len(results) == 10
            assert {r.tenant_id for r in results} == {small}
            assert [r.distance for r in results] == sorted(r.distance for r in results)


def test_the_exact_plan_reads_the_tenant_s_rows_once_in_tenant_order_on_every_call(
        create_database: Callable[[str], Settings]) -> None:
    """A shared tenant's exact search reads its rows once, from the covering b-tree (its
    vectors together, in tenant order), never the whole shared partition. 0014's row count
    was a static PL/pgSQL statement whose cached generic plan (from the sixth call in a
    session) chose a sequential scan; 0016's count, planned per call, still read every
    row's heap page; 0017 has no separate count. auto_explain shows each nested statement."""
    settings = create_database("vsplans")  # its own: the tenants below change the others' data
    services.upgrade_database(settings)
    from rag_core.db import tenant_admin as tenants
    admin_url = resolve_targets(settings).admin_url
    with psycopg.connect(admin_url, autocommit=True) as conn:
        crowd, spread = tenants.create_tenant(conn), tenants.create_tenant(conn)
    rng = np.random.default_rng(17)
    centre = rng.standard_normal(384).astype(np.float32)
    with services.open_database(settings) as db:
        store = VectorStore(db, settings)
        for i in range(60):  # interleaved: the spread tenant's rows on many heap pages
            store.add_document(crowd, f"crowd://{i}", b"c", _chunks(40, rng, centre))
            store.add_document(spread, f"spread://{i}", b"s", _chunks(5, rng, centre))
    plans: list[str] = []
    with psycopg.connect(admin_url, autocommit=True) as conn:
        register_vector(conn)
        conn.execute("VACUUM ANALYZE rag.chunk_embeddings_shared")  # index-only: all-visible
        conn.add_notice_handler(lambda d: plans.append(d.message_primary or ""))
        for statement in ("LOAD 'auto_explain'", "SET auto_explain.log_min_duration = 0",
                          "SET auto_explain.log_nested_statements = on",
                          "SET auto_explain.log_level = notice",
                          "SET client_min_messages = notice"):
            conn.execute(statement)
        query = rng.standard_normal(384).astype(np.float32)
        with conn.transaction():
            conn.execute("SELECT set_config('app.tenant_id', %s, true)", [spread])
            for _ in range(9):
                rows = conn.execute(
                    "SELECT chunk_id, plan FROM rag.search_chunks(%s, %s, %s, 10, 100, 1000)",
                    [spread, settings.embedding_model_key, query]).fetchall()
                assert len(rows) == 10 and {r[1] for r in rows} == {"exact"}
    reads = [p for p in plans if "chunk_embeddings" in p and "search_chunks(" not in p]
    assert len(reads) == 9, reads  # one statement per call reads the vectors
    for plan in reads:
        assert "Index Only Scan using ces_exact_" in plan, plan
        assert "Seq Scan" not in plan, plan


def test_a_model_too_wide_for_the_covering_index_is_searched_from_the_heap(
        create_database: Callable[[str], Settings]) -> None:
    """A b-tree entry holds at most 2,704 bytes: a 768-dimension model gets no covering
    index, and its exact search still returns the nearest rows."""
    settings = create_database("vswide")
    services.upgrade_database(settings)
    from rag_core.db import tenant_admin as tenants
    admin_url = resolve_targets(settings).admin_url
    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((30, 768)).astype(np.float32)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        register_vector(conn)
        conn.execute("SELECT rag.register_embedding_model('wide-768', 'test/wide', 768)")
        indexes = {str(r[0]) for r in conn.execute(
            "SELECT indexrelid::regclass::text FROM pg_index "
            "WHERE indrelid = 'rag.chunk_embeddings_shared'::regclass").fetchall()}
        narrow = conn.execute("SELECT rag.shared_exact_index_name(%s)",
                              [settings.embedding_model_key]).fetchone()
        wide = conn.execute("SELECT rag.shared_exact_index_name('wide-768')").fetchone()
        assert narrow is not None and wide is not None
        assert f"rag.{narrow[0]}" in indexes and f"rag.{wide[0]}" not in indexes
        tenant = tenants.create_tenant(conn)
        with conn.transaction():
            conn.execute("SELECT set_config('app.tenant_id', %s, true)", [tenant])
            document = conn.execute(
                "INSERT INTO rag.documents (tenant_id, source_uri, content_hash) "
                "VALUES (%s, 'wide://0', '\\x00') RETURNING document_id", [tenant]).fetchone()
            assert document is not None
            for i, vector in enumerate(vectors):
                chunk = conn.execute(
                    "INSERT INTO rag.chunks (tenant_id, document_id, ordinal, text, "
                    "token_count, content_hash) VALUES (%s, %s, %s, %s, 1, %s) "
                    "RETURNING chunk_id", [tenant, document[0], i, f"wide {i}",
                                           bytes([i])]).fetchone()
                assert chunk is not None
                conn.execute("INSERT INTO rag.chunk_embeddings (chunk_id, model_key, "
                             "tenant_id, embedding) VALUES (%s, 'wide-768', %s, %s)",
                             [chunk[0], tenant, vector])
            query = rng.standard_normal(768).astype(np.float32)
            rows = conn.execute("SELECT ordinal, plan FROM rag.search_chunks(%s, 'wide-768', "
                                "%s, 5)", [tenant, query]).fetchall()
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    expected = list(np.argsort(-(unit @ (query / np.linalg.norm(query))))[:5])
    assert [r[0] for r in rows] == expected and {r[1] for r in rows} == {"exact"}


def test_exact_plan_matches_numpy_ground_truth(
        populated: tuple[Settings, TenantId, TenantId]) -> None:
    settings, _big, small = populated
    with services.open_database(settings) as db:
        store = VectorStore(db, settings)
        with db.tenant_session(small) as conn:
            rows = conn.execute("SELECT e.chunk_id, e.embedding FROM rag.chunk_embeddings e "
                                "ORDER BY e.chunk_id").fetchall()
        ids = [r[0] for r in rows]
        vectors = np.stack([np.asarray(r[1].to_numpy()) for r in rows])
        query = np.random.default_rng(11).standard_normal(384).astype(np.float32)
        results = store.search(small, query, k=5)
    assert [r.plan for r in results] == ["exact"] * 5
    assert [r.chunk_id for r in results] == _exact_top_k(vectors, ids, query, 5)
    assert results[0].score == pytest.approx(1 - results[0].distance)


def test_big_tenant_uses_hnsw_with_high_recall(
        populated: tuple[Settings, TenantId, TenantId]) -> None:
    settings, big, _small = populated
    settings = settings.model_copy(update={"exact_search_max_rows": 1000})
    rng = np.random.default_rng(5)
    hits = 0
    with services.open_database(settings) as db:
        store = VectorStore(db, settings)
        exact_store = VectorStore(db, settings.model_copy(
            update={"exact_search_max_rows": 1_000_000}))
        for _ in range(20):
            query = rng.standard_normal(384).astype(np.float32)
            approx = store.search(big, query, k=10)
            truth = exact_store.search(big, query, k=10)
            assert {r.plan for r in approx} == {"hnsw_iterative"}
            assert {r.plan for r in truth} == {"exact"}
            hits += len({r.chunk_id for r in approx} & {r.chunk_id for r in truth})
    assert hits / 200 >= 0.9


def test_wrong_dimension_and_unknown_model_are_named_errors(
        populated: tuple[Settings, TenantId, TenantId]) -> None:
    settings, big, _ = populated
    with services.open_database(settings) as db:
        with pytest.raises(DimensionMismatchError) as info:
            VectorStore(db, settings).search(big, np.ones(10, dtype=np.float32))
        assert (info.value.expected, info.value.actual) == (384, 10)
        with pytest.raises(UnknownEmbeddingModelError, match="no-such-model"):
            VectorStore(db, settings, model_key="no-such-model").search(
                big, np.ones(384, dtype=np.float32))


def sabotage_isolation(admin_url: str) -> None:
    """As the database owner: RLS off on chunks and embeddings, and a search function that
    ignores the tenant: only the application's per-row check is left."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        for table in ("chunks", "chunk_embeddings"):
            conn.execute(f"ALTER TABLE rag.{table} NO FORCE ROW LEVEL SECURITY")
            conn.execute(f"ALTER TABLE rag.{table} DISABLE ROW LEVEL SECURITY")
        conn.execute("""
            CREATE OR REPLACE FUNCTION rag.search_chunks(
                p_tenant_id text, p_model_key text, p_query vector, p_k integer DEFAULT 10,
                p_ef_search integer DEFAULT 100, p_exact_max_rows integer DEFAULT 10000,
                p_iterative_scan text DEFAULT 'relaxed_order',
                p_max_scan_tuples integer DEFAULT 20000)
            RETURNS TABLE (chunk_id bigint, document_id bigint, tenant_id text,
                           ordinal integer, text text, distance double precision, plan text)
            LANGUAGE sql AS $$
                SELECT c.chunk_id, c.document_id, c.tenant_id::text, c.ordinal, c.text,
                       0.0::float8, 'sabotaged' FROM rag.chunks c LIMIT p_k $$""")


def test_rows_of_another_tenant_are_refused_even_if_the_database_leaks(
        create_database: Callable[[str], Settings]) -> None:
    """Sabotage the database as its owner (no RLS, a search that ignores the tenant) and
    check that the application's own per-row check still refuses the foreign rows."""
    settings = create_database("sabotage")
    services.upgrade_database(settings)
    from rag_core.db import tenant_admin as tenants
    admin_url = resolve_targets(settings).admin_url
    with psycopg.connect(admin_url, autocommit=True) as conn:
        victim, attacker = tenants.create_tenant(conn), tenants.create_tenant(conn)
    rng = np.random.default_rng(1)
    with services.open_database(settings) as db:
        VectorStore(db, settings).add_document(
            victim, "v://1", b"v", _chunks(5, rng, np.zeros(384, dtype=np.float32)))
    sabotage_isolation(admin_url)
    before = counter_value(CROSS_TENANT_ROWS_BLOCKED)
    with services.open_database(settings) as db, pytest.raises(CrossTenantLeakError) as info:
        VectorStore(db, settings).search(attacker, np.ones(384, dtype=np.float32))
    assert info.value.expected_tenant == attacker
    assert info.value.row_tenant == victim
    assert counter_value(CROSS_TENANT_ROWS_BLOCKED) == before + 1
