"""Phase ``plan`` of ``rag bench index``: the product's plan as shipped (migration 0014).

The tenants at or above the own-partition threshold (``RAG_RETRIEVAL__OWN_PARTITION_MIN_ROWS``,
or the run's ``plan_own_min_rows``) are promoted by the product's own code
(:class:`~rag_core.db.tenant_partitions.TenantPartitions`, graph parameters from
rag.partition_graph_params), the others stay in the shared partition; then
``rag.search_chunks`` with the configured settings is measured on every tenant: strategy
``product_plan``, the row ``default_meets_goal`` judges.

It also measures what the plan costs:

* a promotion: seconds per 100,000 vectors (attach, moves, graph build) and the p95 of the
  promoted tenant's searches while it runs (a second connection searching in a loop);
* ingestion: vectors per second through the product's write path
  (:meth:`~rag_core.retrieval.vector_store.VectorStore.insert_chunks`) into the largest
  tenant while it is in the shared partition and again once it has its own.
Rows written for the ingestion measurement are deleted before anything is measured on them.

After the promotions the shared partition is VACUUMed (timed, reported): it holds the moved
rows' dead versions, and autovacuum's cleanup of them would otherwise run during the
measurement (2026-12-02, reports/index/20261202T073847Z: the 25k tenant's one-client p95
was 19 ms while it ran, its four-client p95 right after 10 ms). A CHECKPOINT follows, then a
bounded wait for autovacuum workers (timed, reported), then every partition's indexes are
loaded into shared_buffers as a promotion loads its tenant's (reported: blocks). The row
measures the plan in its steady state.
"""

from __future__ import annotations

import hashlib
import statistics
import threading
import time
from typing import Any, cast

import numpy as np
from psycopg import sql

from evaluations.index.building import build_index, measure
from evaluations.index.context import BenchContext, ProgressSink, StrategyResult
from evaluations.index.database import (
    BenchDatabase,
    Connection,
    create_shared_exact,
    index_mb,
)
from evaluations.index.strategies import Strategy, product_query
from rag_core.common.tenancy import parse_tenant_id
from rag_core.db.buffer_warmup import prewarm_indexes
from rag_core.db.pool import Database
from rag_core.db.tenant_partitions import TenantPartitions, graph_params_for
from rag_core.retrieval.vector_store import ChunkToStore, VectorStore

__all__ = ["phase_plan", "plan_section"]

SETTLE_LIMIT_S = 900.0


def _ensure_btree(context: BenchContext) -> None:
    """The shared plan finds a tenant's rows through the (tenant_id, model_key) b-tree and
    reads them from the shared partition's covering b-tree (the hnsw phase drops both)."""
    bench = context.require_bench()
    with bench.connect() as conn:
        if "chunk_embeddings_tenant_model" not in context.present:
            conn.execute("CREATE INDEX IF NOT EXISTS chunk_embeddings_tenant_model "
                         "ON rag.chunk_embeddings (tenant_id, model_key)")
            context.present.add("chunk_embeddings_tenant_model")
        context.present.add(create_shared_exact(conn, bench.model_key))


def _ingest_rate(context: BenchContext, tenant_id: str, count: int) -> float:
    """Vectors per second into ``tenant_id`` through the product's write path (chunks and
    their vectors, one transaction), rows deleted afterwards."""
    bench = context.require_bench()
    tenant = parse_tenant_id(tenant_id)
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((count, bench.dimension)).astype(np.float32)
    chunks = [ChunkToStore(f"bench ingest {i}", 3, hashlib.sha256(b"%d" % i).digest(), v)
              for i, v in enumerate(vectors)]
    # insert_chunks uses only the connection it is given (an owner connection here).
    store = VectorStore(cast(Database, None), context.settings, model_key=bench.model_key)
    with bench.connect() as conn:
        # The load COPYs explicit ids: move the identities past them first.
        for table, column in (("documents", "document_id"), ("chunks", "chunk_id")):
            conn.execute(sql.SQL("SELECT setval(pg_get_serial_sequence({q}, {c}), "
                                 "(SELECT coalesce(max({col}), 0) + 1 FROM {t}))").format(
                q=sql.Literal(f"rag.{table}"), c=sql.Literal(column),
                col=sql.Identifier(column), t=sql.Identifier("rag", table)))
        with conn.transaction():
            conn.execute("SELECT set_config('app.tenant_id', %s, true)", [tenant])
            row = conn.execute(
                "INSERT INTO rag.documents (tenant_id, source_uri, content_hash) "
                "VALUES (%s, 'bench://ingest', '\\x00') RETURNING document_id",
                [tenant]).fetchone()
            assert row is not None
            started = time.perf_counter()
            store.insert_chunks(conn, tenant, int(row[0]), chunks)
            elapsed = time.perf_counter() - started
        with conn.transaction():
            conn.execute("SELECT set_config('app.tenant_id', %s, true)", [tenant])
            conn.execute("DELETE FROM rag.documents WHERE tenant_id = %s "
                         "AND source_uri = 'bench://ingest'", [tenant])
    return count / elapsed if elapsed > 0 else 0.0


def _search_loop(bench: BenchDatabase, tenant_id: str, queries: list[np.ndarray],
                 stop: threading.Event, latencies: list[float], errors: list[str]) -> None:
    statement = product_query(bench)
    params = {"ef": 100, "exact_max": 10_000, "iterative": "relaxed_order",
              "max_tuples": 20_000, "tenant": tenant_id}
    with bench.connect() as conn:
        i = 0
        while not stop.is_set():
            started = time.perf_counter()
            try:
                with conn.transaction():
                    conn.execute("SELECT set_config('app.tenant_id', %s, true)", [tenant_id])
                    rows = conn.execute(statement, {**params,
                                                    "q": queries[i % len(queries)]}).fetchall()
            except Exception as exc:  # reported: a failed query during a promotion
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            latencies.append((time.perf_counter() - started) * 1000)
            if len(rows) < 10:
                errors.append(f"{len(rows)} rows instead of 10")
            i += 1


def _settle(conn: Connection, limit_s: float) -> dict[str, Any]:
    """A CHECKPOINT (the moves' dirty pages written now, not during the measurement), then
    wait, at most ``limit_s``, until no autovacuum worker runs in this database: the row
    measures the plan in its steady state, the cost of getting there is reported above."""
    started = time.perf_counter()
    conn.execute("CHECKPOINT")
    checkpoint_s = time.perf_counter() - started
    waited = 0.0
    while waited < limit_s:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = "
                           "current_database() AND backend_type = 'autovacuum worker'"
                           ).fetchone()
        if row is None or int(row[0]) == 0:
            break
        time.sleep(5.0)
        waited = time.perf_counter() - started - checkpoint_s
    return {"checkpoint_s": round(checkpoint_s, 2),
            "autovacuum_wait_s": round(waited, 1),
            "autovacuum_still_running": waited >= limit_s}


def _warm(conn: Connection) -> int | None:
    """Every partition's indexes loaded into shared_buffers, as each promotion loads its
    tenant's graphs (rag_core.db.buffer_warmup): the later promotions, the VACUUM and the
    CHECKPOINT above passed more pages through the buffers than they hold. The blocks
    loaded, or None without pg_prewarm."""
    total: int | None = None
    for (table,) in conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'rag.chunk_embeddings'::regclass ORDER BY 1").fetchall():
        blocks = prewarm_indexes(conn, str(table))
        if blocks is not None:
            total = (total or 0) + blocks
    return total


def _p95(values: list[float]) -> float | None:
    if len(values) < 2:
        return round(values[0], 2) if values else None
    return round(statistics.quantiles(values, n=20)[-1], 2)


def _promote(context: BenchContext, conn: Connection, threshold: int,
             sink: ProgressSink) -> tuple[list[dict[str, Any]], float]:
    bench, dataset = context.require_bench(), context.dataset
    policy = context.settings.retrieval.model_copy(update={
        "own_partition_min_rows": threshold,
        "demote_below_rows": min(context.settings.retrieval.demote_below_rows,
                                 threshold - 1)})
    partitions = TenantPartitions(conn, policy)
    promotions, index_s = [], 0.0
    conn.execute("SELECT set_config('maintenance_work_mem', %s, false)",
                 [context.config.maintenance_work_mem])
    for tenant, tenant_id in zip(dataset.tenants, bench.tenant_ids, strict=True):
        if tenant.rows < threshold:
            continue
        params = graph_params_for(conn, tenant.rows)
        stop, latencies, errors = threading.Event(), [], []  # type: ignore[var-annotated]
        searcher = threading.Thread(target=_search_loop, args=(
            bench, tenant_id, list(tenant.queries), stop, latencies, errors))
        searcher.start()
        try:
            report = partitions.promote(tenant_id, params)
        finally:
            stop.set()
            searcher.join()
        index_s += report.index_s
        per_100k = report.total_s * 100_000 / max(report.rows_moved, 1)
        promotions.append({
            "tenant": tenant.name, "rows": report.rows_moved, **params.as_dict(),
            "attach_s": round(report.attach_s, 2), "move_s": round(report.move_s, 2),
            "index_s": round(report.index_s, 2), "rebuild_shared_s": round(report.rebuild_s, 2),
            "vacuum_s": round(report.vacuum_s, 2), "total_s": round(report.total_s, 2),
            "s_per_100k_vectors": round(per_100k, 2),
            "queries_during": len(latencies), "query_p95_ms_during": _p95(latencies),
            "failed_or_short_queries": len(errors), "errors": errors[:3]})
        sink.note(f"  promoted {tenant.name}: {report.rows_moved:,} rows in "
                  f"{report.total_s:.1f} s ({per_100k:.1f} s per 100k), query p95 during "
                  f"{_p95(latencies)} ms over {len(latencies)} queries, {len(errors)} failed")
    return promotions, index_s


def phase_plan(context: BenchContext, sink: ProgressSink) -> list[StrategyResult]:
    """Promote by size as the product does, measure the product's search (see the module
    docstring)."""
    bench, settings, dataset = context.require_bench(), context.settings, context.dataset
    threshold = context.config.plan_own_min_rows or settings.retrieval.own_partition_min_rows
    _ensure_btree(context)
    if bench.product_index not in context.present:
        # the shared partition's graph, as in production (rag.register_embedding_model):
        # ingestion into the shared partition pays for it too
        from rag_core.embeddings.base import MODEL_ID

        build_index(context, "hnsw_product", bench.product_index,
                    "SELECT rag.register_embedding_model(%s, %s, %s)",
                    [bench.model_key, MODEL_ID, bench.dimension])
    largest = max(range(len(dataset.tenants)), key=lambda t: dataset.tenants[t].rows)
    ingest_rows = context.config.plan_ingest_vectors
    ingest: dict[str, Any] = {"vectors": ingest_rows, "tenant": dataset.tenants[largest].name,
                              "shared_vectors_per_s": round(_ingest_rate(
                                  context, bench.tenant_ids[largest], ingest_rows), 1)}
    with bench.connect() as conn:
        promotions, index_s = _promote(context, conn, threshold, sink)
        started = time.perf_counter()
        conn.execute("VACUUM (ANALYZE) rag.chunk_embeddings_shared")
        vacuum_s = time.perf_counter() - started
        settle = _settle(conn, SETTLE_LIMIT_S)
        warmed = _warm(conn)
        own = [n for (n,) in conn.execute(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE c.relname LIKE 'cet\\_%%'").fetchall()]
        size = index_mb(conn, own) if own else None
    promoted = {p["tenant"] for p in promotions}
    context.builds["plan"] = {"index": "one HNSW graph per promoted tenant",
                              "build_s": round(index_s, 2), "index_mb": size,
                              "threshold_rows": threshold, "promotions": promotions,
                              "vacuum_shared_s": round(vacuum_s, 2), **settle,
                              "prewarmed_blocks": warmed,
                              "ingest": ingest}
    exact_max = settings.exact_search_max_rows
    params = {"ef_search": max(settings.hnsw_ef_search, 10), "exact_max_rows": exact_max,
              "iterative_scan": settings.hnsw_iterative_scan,
              "max_scan_tuples": settings.hnsw_max_scan_tuples,
              "own_partition_min_rows": threshold,
              "promoted": sorted(promoted)}
    strategy = Strategy(
        "product_plan", "product",
        f"product plan (own partition and graph from {threshold:,} rows, else shared "
        "partition, exact)", "product plan", 0, product_query(bench), params, product=True,
        query_params={"ef": params["ef_search"], "exact_max": exact_max,
                      "iterative": settings.hnsw_iterative_scan,
                      "max_tuples": settings.hnsw_max_scan_tuples})
    result = measure(context, strategy, sink, index_s, size,
                     note=f"promoted: {', '.join(sorted(promoted)) or 'none'}")
    # Ingestion into the promoted tenant comes after the measurement, which is of the settled
    # state: in reports/index/20261202T182853Z its 2,000 inserts and deletes (the graph
    # updated per row) ran between the wait for autovacuum and the measurement.
    if dataset.tenants[largest].name in promoted:
        ingest["own_vectors_per_s"] = round(_ingest_rate(
            context, bench.tenant_ids[largest], ingest_rows), 1)
    sink.note(f"  ingest into {ingest['tenant']}: {ingest}")
    return [result]


def plan_section(builds: dict[str, dict[str, Any]]) -> str | None:
    """The report's section on what the product's plan cost (None: phase not run)."""
    plan = builds.get("plan")
    if plan is None:
        return None
    rows = "\n".join(
        f"| {p['tenant']} | {p['rows']:,} | m {p['m']}, ef_construction {p['ef_construction']}"
        f", ef_search {p['ef_search']} | {p['total_s']} ({p['move_s']} moving, {p['index_s']}"
        f" graph, {p.get('rebuild_shared_s', 0)} shared graphs rebuilt, "
        f"{p.get('vacuum_s', 0)} VACUUM) | "
        f"{p['s_per_100k_vectors']} | {p['query_p95_ms_during']} over "
        f"{p['queries_during']} | {p['failed_or_short_queries']} |" for p in plan["promotions"])
    ingest = plan["ingest"]
    own = ingest.get("own_vectors_per_s")
    return (f"## The product's plan: promotions and ingestion\n\nTenants with at least "
            f"{plan['threshold_rows']:,} vectors promoted to their own partition by "
            "rag_core.db.tenant_partitions while a second connection searched the tenant.\n\n"
            "| tenant | rows moved | graph | seconds | s per 100k vectors | query p95 ms "
            "during | failed or short queries |\n|---|---|---|---|---|---|---|\n"
            f"{rows or '| none | | | | | | |'}\n\nThen VACUUM (ANALYZE) of the shared partition "
            f"(the moved rows' dead versions): {plan.get('vacuum_shared_s', '-')} s; a "
            f"CHECKPOINT ({plan.get('checkpoint_s', '-')} s) and "
            f"{plan.get('autovacuum_wait_s', '-')} s waiting for autovacuum workers to "
            f"finish (still running after the wait: "
            f"{plan.get('autovacuum_still_running', '-')}); every partition's indexes were "
            f"loaded into shared_buffers (pg_prewarm: {plan.get('prewarmed_blocks', '-')} "
            "blocks), before the product's plan was measured.\n\n"
            f"Ingestion into {ingest['tenant']} "
            f"({ingest['vectors']} vectors, chunks and vectors in one transaction): "
            f"{ingest['shared_vectors_per_s']} vectors/s in the shared partition, "
            f"{'-' if own is None else own} vectors/s in its own partition.")
