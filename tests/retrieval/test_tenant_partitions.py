"""Per-tenant partitions (migration 0014): promotion while queries and ingestion go on, every
plan returning k rows, demotion and deletion dropping the partition, writers coordinated
through the tenant row, the application role kept off the partitions, `rag tenant rebalance`.

Each test module gets its own database (promotions change the schema); thresholds are tiny
so the tenants are small."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import psycopg
import pytest

from rag_core.common.tenancy import TenantId
from rag_core.config import Settings
from rag_core.config.retrieval import PartitionPolicy
from rag_core.db import tenant_admin
from rag_core.db.connection import resolve_targets
from rag_core.db.pool import Database
from rag_core.db.rls_catalog import find_tenant_tables, policy_problems
from rag_core.db.tenant_partitions import (
    GraphParams,
    TenantPartitions,
    graph_params_for,
    partition_name,
    tenant_partitions,
)
from rag_core.ops import services
from rag_core.ops.doctor import run_doctor
from rag_core.ops.rebalance import plan_rebalance, read_plans, rebalance
from rag_core.retrieval.vector_store import ChunkToStore, VectorStore
from tests.conftest import REPO_ROOT, TEST_STATE_DIR

PARAMS = GraphParams(m=8, ef_construction=32, ef_search=60)
POLICY = PartitionPolicy(own_partition_min_rows=200, demote_below_rows=50, move_batch_rows=40,
                         lock_timeout_ms=200, lock_attempts=50, retry_wait_s=0.0)


def _chunks(n: int, seed: int, prefix: str) -> list[ChunkToStore]:
    rng = np.random.default_rng(seed)
    centre = rng.standard_normal(384).astype(np.float32)
    vectors = centre + 0.5 * rng.standard_normal((n, 384)).astype(np.float32)
    return [ChunkToStore(f"{prefix} {i}", 2, hashlib.sha256(f"{prefix}{i}".encode()).digest(),
                         v) for i, v in enumerate(vectors)]


@pytest.fixture(scope="module")
def env(create_database: Callable[[str], Settings]) -> Iterator[tuple[Settings, Database]]:
    settings = create_database("parts")
    services.upgrade_database(settings)
    with services.open_database(settings) as db:
        yield settings, db


@pytest.fixture()
def admin(env: tuple[Settings, Database]) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    with psycopg.connect(resolve_targets(env[0]).admin_url, autocommit=True) as conn:
        yield conn


def _tenant(admin: psycopg.Connection[tuple[Any, ...]], store: VectorStore, rows: int,
            seed: int) -> TenantId:
    tenant = tenant_admin.create_tenant(admin)
    store.add_document(tenant, f"doc://{tenant}/0", b"h", _chunks(rows, seed, "base"))
    return tenant


def _placement(admin: psycopg.Connection[tuple[Any, ...]],
               tenant: TenantId) -> tuple[int, int, int, set[str]]:
    """(chunks, vectors, distinct chunks with a vector, shards holding them), read past RLS."""
    with admin.transaction():
        admin.execute("SELECT set_config('row_security', 'off', true)")
        chunks = admin.execute("SELECT count(*) FROM rag.chunks WHERE tenant_id = %s",
                               [tenant]).fetchone()
        row = admin.execute("SELECT count(*), count(DISTINCT chunk_id), "
                            "coalesce(array_agg(DISTINCT shard), '{}') FROM "
                            "rag.chunk_embeddings WHERE tenant_id = %s", [tenant]).fetchone()
    assert chunks is not None and row is not None
    return int(chunks[0]), int(row[0]), int(row[1]), set(row[2])


def _shared_index_files(admin: psycopg.Connection[tuple[Any, ...]]) -> dict[str, int]:
    """The shared partition's valid indexes (graphs and b-trees) -> their files (a rebuild
    gives a new one)."""
    return {str(name): int(node) for name, node in admin.execute(
        "SELECT c.relname, c.relfilenode FROM pg_index i JOIN pg_class c ON c.oid = "
        "i.indexrelid WHERE i.indisvalid "
        "AND i.indrelid = 'rag.chunk_embeddings_shared'::regclass").fetchall()}


def test_promotion_under_queries_and_ingestion_loses_and_doubles_nothing(
        env: tuple[Settings, Database], admin: psycopg.Connection[tuple[Any, ...]]) -> None:
    settings, db = env
    store = VectorStore(db, settings)
    growing, other = _tenant(admin, store, 400, 1), _tenant(admin, store, 60, 2)
    stop = threading.Event()
    errors: list[BaseException] = []
    plans: dict[TenantId, set[str]] = {growing: set(), other: set()}
    done = {"queries": 0, "ingests": 0}
    step = threading.Condition()

    def record(kind: str) -> None:
        with step:
            done[kind] += 1
            step.notify_all()

    def query_loop() -> None:
        rng = np.random.default_rng(3)
        try:
            while not stop.is_set():
                for tenant in (growing, other):
                    results = store.search(tenant, rng.standard_normal(384)
                                           .astype(np.float32), k=10)
                    ids = [r.chunk_id for r in results]
                    assert len(ids) == 10, f"{tenant} got {len(ids)} rows"
                    assert len(set(ids)) == 10, f"duplicate chunks for {tenant}: {ids}"
                    assert {r.tenant_id for r in results} == {tenant}
                    plans[tenant].add(results[0].plan)
                record("queries")
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
            stop.set()

    def ingest_loop() -> None:
        n = 0
        try:
            while not stop.is_set():
                for tenant in (growing, other):
                    store.add_document(tenant, f"doc://{tenant}/live{n}", b"h",
                                       _chunks(7, 100 + n, f"live{n}"))
                n += 1
                record("ingests")
        except BaseException as exc:
            errors.append(exc)
            stop.set()

    def after_batch(_moved: int) -> None:
        # Each batch waits for one more query round and one more ingestion round: the moves
        # really interleave with both (no timing involved).
        with step:
            seen = dict(done)
            step.wait_for(lambda: stop.is_set() or (done["queries"] > seen["queries"]
                                                    and done["ingests"] > seen["ingests"]),
                          timeout=60)

    threads = [threading.Thread(target=query_loop), threading.Thread(target=ingest_loop)]
    before = admin.execute("SELECT now()").fetchone()
    graphs = _shared_index_files(admin)
    for thread in threads:
        thread.start()
    try:
        report = TenantPartitions(admin, POLICY).promote(growing, PARAMS, progress=after_batch)
        after_batch(0)  # one more round of each on the new plan
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=120)
    assert not errors, errors
    assert report.batches >= 10 and report.rows_moved >= 400
    assert "moving_exact" in plans[growing] and "own_hnsw" in plans[growing]
    assert plans[other] == {"exact"}

    chunks, vectors, distinct, shards = _placement(admin, growing)
    assert chunks == vectors == distinct > 400 + 7 * 10  # every chunk exactly once
    assert shards == {growing}
    chunks, vectors, distinct, shards = _placement(admin, other)
    assert chunks == vectors == distinct > 60
    assert shards == {"shared"}
    with db.tenant_session(growing) as conn:
        row = conn.execute("SELECT embedding_plan, embedding_hnsw_m, embedding_ef_search "
                           "FROM rag.tenants WHERE tenant_id = %s", [growing]).fetchone()
    assert row == ("own", PARAMS.m, PARAMS.ef_search)
    # Both partitions were analyzed by the move: without statistics the planner takes the new
    # partition for an empty table and searches it exactly, graph or not.
    analyzed = dict(admin.execute(
        "SELECT relname, last_analyze >= %s FROM pg_stat_user_tables WHERE relname = ANY(%s)",
        [before[0] if before else None,
         [partition_name(growing), "chunk_embeddings_shared"]]).fetchall())
    assert analyzed == {partition_name(growing): True, "chunk_embeddings_shared": True}
    # Most of the shared partition moved out: its graphs and b-trees were rebuilt (while the
    # other tenant's searches and ingestion went on), none left half-built. The covering
    # b-tree is among them: kept with the pages of the moved rows, it looked dearer to the
    # planner than a sequential scan of the whole heap.
    rebuilt = _shared_index_files(admin)
    assert report.rebuild_s > 0 and rebuilt.keys() == graphs.keys()
    assert any(name.startswith("ces_exact_") for name in graphs)
    assert any(name.startswith("chunk_embeddings_hnsw_") for name in graphs)
    assert all(rebuilt[name] != graphs[name] for name in graphs)
    leftovers = admin.execute("SELECT count(*) FROM pg_index i WHERE NOT i.indisvalid AND "
                              "i.indrelid = 'rag.chunk_embeddings_shared'::regclass").fetchone()
    assert leftovers == (0,)
    vacuumed = admin.execute("SELECT last_vacuum >= %s FROM pg_stat_user_tables WHERE relname "
                             "= 'chunk_embeddings_shared'", [before[0] if before else None]
                             ).fetchone()
    assert vacuumed == (True,)  # then VACUUMed: cheap once the graphs hold no moved row
    # The new partition too, once searches use its graph: autovacuum does not come for the
    # moved rows later, while the tenant's searches run.
    own_vacuumed = admin.execute("SELECT last_vacuum >= %s FROM pg_stat_user_tables WHERE "
                                 "relname = %s", [before[0] if before else None,
                                                  partition_name(growing)]).fetchone()
    assert own_vacuumed == (True,) and report.vacuum_s > 0


def test_a_promotion_that_moves_few_of_the_shared_rows_keeps_the_shared_graphs(
        env: tuple[Settings, Database], admin: psycopg.Connection[tuple[Any, ...]]) -> None:
    settings, db = env
    tenant = _tenant(admin, VectorStore(db, settings), 250, 9)
    graphs = _shared_index_files(admin)
    # the whole shared partition would have to move out (other tenants' rows stay in it)
    policy = POLICY.model_copy(update={"rebuild_shared_graphs_fraction": 1.0})
    report = TenantPartitions(admin, policy).promote(tenant, PARAMS)
    assert report.rows_moved == 250 and report.rebuild_s == 0
    assert _shared_index_files(admin) == graphs
    # VACUUMed by the promotion (nothing wrote to it since): every page all-visible
    pages = admin.execute("SELECT relpages, relallvisible FROM pg_class WHERE oid = %s::regclass",
                          [f"rag.{partition_name(tenant)}"]).fetchone()
    assert pages is not None and pages[0] > 0 and pages[1] == pages[0]


def test_every_plan_returns_k_rows_and_only_the_tenant_s(
        env: tuple[Settings, Database], admin: psycopg.Connection[tuple[Any, ...]]) -> None:
    settings, db = env
    store = VectorStore(db, settings)
    tenant = _tenant(admin, store, 120, 5)
    query = np.random.default_rng(9).standard_normal(384).astype(np.float32)
    exact = [r.chunk_id for r in store.search(tenant, query, k=10)]
    partitions = TenantPartitions(admin, POLICY)
    seen: list[tuple[str, list[int]]] = []

    def look(_moved: int = 0) -> None:
        results = store.search(tenant, query, k=10)
        seen.append((results[0].plan, [r.chunk_id for r in results]))

    partitions.promote(tenant, PARAMS, progress=look)
    look()
    partitions.demote(tenant, progress=look)
    look()
    assert [plan for plan, _ in seen] == (["moving_exact"] * 3 + ["own_hnsw"]
                                          + ["moving_exact"] * 3 + ["exact"])
    for plan, ids in seen:
        assert len(ids) == len(set(ids)) == 10
        if plan != "own_hnsw":  # the exact plans give the exact answer, mid-move too
            assert ids == exact


def test_a_writer_in_flight_holds_the_switch_and_its_rows_are_moved(
        env: tuple[Settings, Database], admin: psycopg.Connection[tuple[Any, ...]]) -> None:
    settings, db = env
    store = VectorStore(db, settings)
    tenant = _tenant(admin, store, 30, 6)
    writer = db.acquire_tenant_transaction(tenant)
    document = writer.execute(
        "INSERT INTO rag.documents (tenant_id, source_uri, content_hash) "
        "VALUES (%s, 'doc://inflight', '\\x00') RETURNING document_id", [tenant]).fetchone()
    assert document is not None
    store.insert_chunks(writer, tenant, int(document[0]), _chunks(5, 7, "inflight"))
    waits: list[float] = []

    def commit_writer(seconds: float) -> None:
        # The switch timed out behind the writer's FOR KEY SHARE: let the writer finish.
        waits.append(seconds)
        if len(waits) == 1:
            db.release(writer, commit=True)

    TenantPartitions(admin, POLICY, sleep=commit_writer).promote(tenant, PARAMS)
    assert waits, "the switch should have waited for the writer"
    chunks, vectors, distinct, shards = _placement(admin, tenant)
    assert chunks == vectors == distinct == 35
    assert shards == {tenant}


def test_demotion_and_deletion_drop_the_partition(
        env: tuple[Settings, Database], admin: psycopg.Connection[tuple[Any, ...]]) -> None:
    settings, db = env
    store = VectorStore(db, settings)
    demoted, deleted = _tenant(admin, store, 40, 11), _tenant(admin, store, 40, 12)
    partitions = TenantPartitions(admin, POLICY)
    for tenant in (demoted, deleted):
        partitions.promote(tenant, PARAMS)
    assert {demoted, deleted} <= set(tenant_partitions(admin))

    partitions.demote(demoted)
    assert demoted not in tenant_partitions(admin)
    assert _placement(admin, demoted)[1:] == (40, 40, {"shared"})

    assert tenant_admin.delete_tenant(admin, deleted).existed
    assert deleted not in tenant_partitions(admin)
    exists = admin.execute("SELECT to_regclass(%s)", [f"rag.{partition_name(deleted)}"])
    assert exists.fetchone() == (None,)


def test_the_application_role_cannot_reach_a_partition_and_the_doctor_checks_each(
        env: tuple[Settings, Database], admin: psycopg.Connection[tuple[Any, ...]]) -> None:
    settings, db = env
    store = VectorStore(db, settings)
    owner, other = _tenant(admin, store, 20, 21), _tenant(admin, store, 20, 22)
    TenantPartitions(admin, POLICY).promote(owner, PARAMS)
    for table in (partition_name(owner), "chunk_embeddings_shared"):
        for tenant in (owner, other):
            with pytest.raises(psycopg.errors.InsufficientPrivilege), \
                    db.tenant_session(tenant) as conn:
                conn.execute(f"SELECT count(*) FROM rag.{table}")  # noqa: S608
    # Through the parent, another tenant's session sees none of the partition's rows.
    with db.tenant_session(other) as conn:
        row = conn.execute("SELECT count(*) FROM rag.chunk_embeddings WHERE shard = %s",
                           [owner]).fetchone()
    assert row == (0,)
    tables = {t.qualified_name: t for t in find_tenant_tables(admin, settings.app_db_role)}
    for name in (f"rag.{partition_name(owner)}", "rag.chunk_embeddings_shared",
                 "rag.chunk_embeddings"):
        assert policy_problems(tables[name]) == [], name


def test_rebalance_plans_then_promotes_and_demotes(
        env: tuple[Settings, Database], admin: psycopg.Connection[tuple[Any, ...]]) -> None:
    settings, db = env
    store = VectorStore(db, settings)
    big, small = _tenant(admin, store, 210, 31), _tenant(admin, store, 30, 32)
    TenantPartitions(admin, POLICY).promote(small, PARAMS)  # too small for its partition
    decisions = {d.tenant_id: d.action for d in plan_rebalance(admin, POLICY)}
    assert decisions[big] == "promote" and decisions[small] == "demote"

    report = rebalance(admin, POLICY)
    assert report.ok, report.failed
    assert big in tenant_partitions(admin) and small not in tenant_partitions(admin)
    assert {d.tenant_id for d in plan_rebalance(admin, POLICY)} & {big, small} == set()


def test_a_stale_graph_keeps_the_larger_ef_search(
        env: tuple[Settings, Database], admin: psycopg.Connection[tuple[Any, ...]]) -> None:
    settings, db = env
    store = VectorStore(db, settings)
    wide, narrow = _tenant(admin, store, 210, 41), _tenant(admin, store, 210, 42)
    # Both graphs are built with other m / ef_construction than the table's row for their
    # size (16 / 64, ef_search 100, from 0 rows).
    partitions = TenantPartitions(admin, POLICY)
    partitions.promote(wide, GraphParams(m=8, ef_construction=32, ef_search=300))
    partitions.promote(narrow, GraphParams(m=8, ef_construction=32, ef_search=40))
    table = graph_params_for(admin, 210)
    decisions = {d.tenant_id: d for d in plan_rebalance(admin, POLICY)}
    assert {decisions[t].action for t in (wide, narrow)} == {"tune"}
    assert decisions[wide].graph_params_stale and decisions[narrow].graph_params_stale
    wide_params, narrow_params = decisions[wide].params, decisions[narrow].params
    assert wide_params is not None and narrow_params is not None
    # the wide search is not lowered onto a graph the table's ef_search was not measured on;
    # the narrow one is raised to the table's
    assert (wide_params.ef_search, narrow_params.ef_search) == (300, table.ef_search)
    assert rebalance(admin, POLICY).ok
    ef = {p.tenant_id: p.ef_search for p in read_plans(admin) if p.tenant_id in (wide, narrow)}
    assert ef == {wide: 300, narrow: table.ef_search}


def test_cli_rebalance_dry_run_and_run(env: tuple[Settings, Database],
                                       admin: psycopg.Connection[tuple[Any, ...]]) -> None:
    settings, db = env
    store = VectorStore(db, settings)
    tenant = _tenant(admin, store, 220, 41)
    environment = {**os.environ, "RAG_STATE_DIR": str(TEST_STATE_DIR),
                   "RAG_EMBEDDED_DATABASE": settings.embedded_database,
                   "RAG_RETRIEVAL__OWN_PARTITION_MIN_ROWS": "200",
                   "RAG_RETRIEVAL__DEMOTE_BELOW_ROWS": "10"}
    for name in ("DATABASE_URL", "REDIS_URL", "RAG_DATABASE_URL", "RAG_REDIS_URL"):
        environment.pop(name, None)

    def run(*args: str) -> dict[str, Any]:
        result = subprocess.run([sys.executable, "-m", "rag_core.cli", "tenant", "rebalance",
                                 *args, "--json"], capture_output=True, text=True,
                                env=environment, cwd=REPO_ROOT, timeout=300, check=False)
        assert result.returncode == 0, result.stderr + result.stdout
        payload: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
        return payload

    planned = run("--dry-run")
    assert planned["dry_run"] and not planned["done"]
    assert {"tenant_id": tenant, "action": "promote"}.items() <= next(
        d for d in planned["decisions"] if d["tenant_id"] == tenant).items()
    assert tenant not in tenant_partitions(admin)
    done = run()
    assert any(d.get("tenant_id") == tenant and d["action"] == "promote"
               for d in done["done"])
    assert tenant in tenant_partitions(admin)


def test_the_doctor_shows_each_tenant_s_plan(
        env: tuple[Settings, Database], admin: psycopg.Connection[tuple[Any, ...]]) -> None:
    settings, db = env
    store = VectorStore(db, settings)
    promoted, shared = _tenant(admin, store, 25, 51), _tenant(admin, store, 5, 52)
    TenantPartitions(admin, POLICY).promote(promoted, PARAMS)
    checks = {c.name: c for c in run_doctor(settings).checks}
    detail = checks["tenant plans"].detail
    assert (f"{promoted}: 25 rows, own ({partition_name(promoted)}, m {PARAMS.m}, "
            f"ef_construction {PARAMS.ef_construction}, ef_search {PARAMS.ef_search})") in detail
    assert f"{shared}: 5 rows, shared" in detail
    # Settings' default threshold (10,000): the promoted 25-row tenant is due for demotion.
    assert checks["tenant plans"].status == "ok"
    assert "rebalance due" in detail
