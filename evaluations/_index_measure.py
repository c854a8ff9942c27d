"""Strategies of ``rag bench index`` (the SQL each one runs) and how a strategy is measured on
one tenant: recall@10 against the exact neighbours, per-query latency (p50/p95), and QPS with
one and with two concurrent clients."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from psycopg import sql

from evaluations._index_data import Dataset, K, TenantData, recall_at_k
from evaluations._index_db import BenchDatabase, Connection

WARMUP_QUERIES = 3


@dataclass(frozen=True)
class Strategy:
    """One measured configuration: an index (or none) plus session settings plus SQL."""

    id: str
    family: str
    label: str
    curve: str  # the plot line it belongs to (same index and mode, a swept parameter)
    sweep: float  # position on that line
    query: sql.Composed
    params: dict[str, Any] = field(default_factory=dict)
    setup: tuple[sql.Composed, ...] = ()
    product: bool = False  # rag.search_chunks inside a tenant transaction
    expect_index: tuple[str, ...] = ()  # the plan should use one of these (empty: no check)
    query_params: dict[str, Any] = field(default_factory=dict)


@dataclass
class CellResult:
    recall_at_10: float
    p50_ms: float
    p95_ms: float
    qps_1: float
    qps_2: float
    queries: int
    plan: str
    plan_ok: bool | None
    foreign_rows: int
    short_results: int
    loadavg_1m: float
    # CPU time of the serving backend per query (None: server not on this machine). On an
    # idle machine latency is about this plus the round trip; on a busy one wall-clock
    # latency also holds the time spent waiting for a core. Parallel workers not included.
    cpu_p50_ms: float | None = None
    cpu_p95_ms: float | None = None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("recall_at_10", "p50_ms", "p95_ms", "qps_1", "qps_2", "cpu_p50_ms",
                    "cpu_p95_ms"):
            if data[key] is not None:
                data[key] = round(float(data[key]), 4 if key == "recall_at_10" else 3)
        return data


class BackendClock:
    """On-CPU nanoseconds of one server backend, from ``/proc/<pid>/schedstat`` (precise,
    unlike the 10 ms ticks of ``/proc/<pid>/stat``). Only for a server on this machine."""

    def __init__(self, conn: Connection, local: bool) -> None:
        self._path: str | None = None
        if not local:
            return
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        if row is None:
            return
        pid = int(row[0])
        try:
            with open(f"/proc/{pid}/comm") as comm:
                if not comm.read().startswith("postgres"):
                    return
            with open(f"/proc/{pid}/schedstat") as handle:
                int(handle.read().split()[0])
        except (OSError, ValueError):
            return
        self._path = f"/proc/{pid}/schedstat"

    def read_ns(self) -> int | None:
        if self._path is None:
            return None
        with open(self._path) as handle:
            return int(handle.read().split()[0])


# --- SQL of the strategies ---------------------------------------------------------------
def _settings(*pairs: tuple[str, object]) -> tuple[sql.Composed, ...]:
    return tuple(sql.SQL("SET {} = {}").format(sql.SQL(name), sql.Literal(str(value)))
                 for name, value in pairs)


def exact_query(bench: BenchDatabase) -> sql.Composed:
    # "+ 0": no vector index can serve the ORDER BY, so this is an exact scan of the tenant's
    # rows found through the (tenant_id, model_key) b-tree (the product's exact plan)
    return sql.SQL(
        "SELECT e.chunk_id FROM rag.chunk_embeddings e"
        " WHERE e.tenant_id = %(tenant)s AND e.model_key = {mk}"
        " ORDER BY (e.embedding::vector({d}) <=> %(q)s) + 0 LIMIT {k}").format(
        mk=sql.Literal(bench.model_key), d=sql.Literal(bench.dimension), k=sql.Literal(K))


def exact_topk_join_query(bench: BenchDatabase) -> sql.Composed:
    """The exact plan of rag.search_chunks since migration 0005: the K nearest vectors of the
    tenant first, then the join to rag.chunks for their text (instead of joining every row
    of the tenant and sorting the joined rows); same rows, same order."""
    return sql.SQL(
        "WITH c AS MATERIALIZED (SELECT e.chunk_id,"
        " (e.embedding::vector({d}) <=> %(q)s) + 0 AS distance FROM rag.chunk_embeddings e"
        " WHERE e.tenant_id = %(tenant)s AND e.model_key = {mk}"
        " ORDER BY distance, e.chunk_id LIMIT {k})"
        " SELECT c.chunk_id, ch.document_id, ch.tenant_id::text, ch.ordinal, ch.text,"
        " c.distance FROM c JOIN rag.chunks ch ON ch.chunk_id = c.chunk_id"
        " WHERE ch.tenant_id = %(tenant)s ORDER BY c.distance, c.chunk_id").format(
        mk=sql.Literal(bench.model_key), d=sql.Literal(bench.dimension), k=sql.Literal(K))


def exact_join_all_query(bench: BenchDatabase) -> sql.Composed:
    """The exact plan as migration 0001's rag.search_chunks ran it: every row of the tenant
    joined to rag.chunks (text included), then sorted; 0005 replaced it with
    :func:`exact_topk_join_query`. Kept as the baseline of that change."""
    return sql.SQL(
        "SELECT ch.chunk_id, ch.document_id, ch.tenant_id::text, ch.ordinal, ch.text,"
        " (e.embedding::vector({d}) <=> %(q)s) + 0 AS distance"
        " FROM rag.chunk_embeddings e JOIN rag.chunks ch ON ch.chunk_id = e.chunk_id"
        " WHERE e.tenant_id = %(tenant)s AND ch.tenant_id = %(tenant)s AND e.model_key = {mk}"
        " ORDER BY distance, ch.chunk_id LIMIT {k}").format(
        mk=sql.Literal(bench.model_key), d=sql.Literal(bench.dimension), k=sql.Literal(K))


def ann_query(bench: BenchDatabase, cast: str = "vector") -> sql.Composed:
    """Nearest rows through an index on ``embedding::<cast>(d)``; relaxed-order iterative
    scans return rows nearly sorted, so the K rows are re-sorted (as the product does)."""
    expr = sql.SQL("e.embedding::{c}({d})").format(c=sql.SQL(cast), d=sql.Literal(bench.dimension))
    operand = sql.SQL("%(q)s::{c}({d})").format(c=sql.SQL(cast), d=sql.Literal(bench.dimension))
    return sql.SQL(
        "WITH c AS MATERIALIZED (SELECT e.chunk_id, {expr} <=> {op} AS distance"
        " FROM rag.chunk_embeddings e WHERE e.tenant_id = %(tenant)s AND e.model_key = {mk}"
        " ORDER BY {expr} <=> {op} LIMIT {k}) SELECT chunk_id FROM c ORDER BY distance").format(
        expr=expr, op=operand, mk=sql.Literal(bench.model_key), k=sql.Literal(K))


def binary_rerank_query(bench: BenchDatabase) -> sql.Composed:
    """Hamming-nearest ``%(candidates)s`` rows by the binary-quantised index, re-ranked by
    exact cosine distance on the full vectors."""
    return sql.SQL(
        "WITH c AS MATERIALIZED (SELECT e.chunk_id, e.embedding FROM rag.chunk_embeddings e"
        " WHERE e.tenant_id = %(tenant)s AND e.model_key = {mk}"
        " ORDER BY binary_quantize(e.embedding)::bit({d}) <~> binary_quantize(%(q)s)::bit({d})"
        " LIMIT %(candidates)s)"
        " SELECT chunk_id FROM c ORDER BY c.embedding::vector({d}) <=> %(q)s LIMIT {k}").format(
        mk=sql.Literal(bench.model_key), d=sql.Literal(bench.dimension), k=sql.Literal(K))


def partition_query(*, exact: bool = False) -> sql.Composed:
    # "+ 0" (exact): no index can serve the ORDER BY; enable_indexscan = off is not enough,
    # PostgreSQL 18 still picks the (disabled) HNSW scan of a partition
    order = "(embedding <=> %(q)s) + 0" if exact else "embedding <=> %(q)s"
    return sql.SQL("SELECT id FROM bench.items_part WHERE tenant_id = %(tenant)s"
                   " ORDER BY {order} LIMIT {k}").format(order=sql.SQL(order),
                                                         k=sql.Literal(K))


def product_query(bench: BenchDatabase) -> sql.Composed:
    return sql.SQL(
        "SELECT chunk_id, plan FROM rag.search_chunks(%(tenant)s, {mk}, %(q)s, {k},"
        " %(ef)s, %(exact_max)s, %(iterative)s, %(max_tuples)s)").format(
        mk=sql.Literal(bench.model_key), k=sql.Literal(K))


def index_settings(*, ef_search: int | None = None, iterative: str | None = None,
                   probes: int | None = None, ivf_iterative: str | None = None,
                   force_index: bool = True, extra: tuple[tuple[str, object], ...] = ()
                   ) -> tuple[sql.Composed, ...]:
    pairs: list[tuple[str, object]] = []
    if ef_search is not None:
        pairs.append(("hnsw.ef_search", ef_search))
    if iterative is not None:
        pairs.append(("hnsw.iterative_scan", iterative))
    if probes is not None:
        pairs.append(("ivfflat.probes", probes))
    if ivf_iterative is not None:
        pairs.append(("ivfflat.iterative_scan", ivf_iterative))
    if force_index:
        # on small data the planner may prefer a sequential scan; the row must measure the index
        pairs += [("enable_seqscan", "off"), ("enable_bitmapscan", "off")]
    pairs += list(extra)
    return _settings(*pairs)


# --- measuring ------------------------------------------------------------------------------
def _params(strategy: Strategy, tenant_id: str, query: np.ndarray) -> dict[str, Any]:
    return {"tenant": tenant_id, "q": query, **strategy.query_params}


def run_query(conn: Connection, strategy: Strategy, tenant_id: str,
              query: np.ndarray) -> tuple[list[int], set[str]]:
    """Ids returned (nearest first) and, for the product function, the plans it reports."""
    params = _params(strategy, tenant_id, query)
    if strategy.product:
        with conn.transaction():
            conn.execute("SELECT set_config('app.tenant_id', %s, true)", [tenant_id])
            rows = conn.execute(strategy.query, params).fetchall()
        return [int(r[0]) for r in rows], {str(r[1]) for r in rows}
    rows = conn.execute(strategy.query, params).fetchall()
    return [int(r[0]) for r in rows], set()


def _walk(node: dict[str, Any], found: list[str]) -> None:
    kind = str(node.get("Node Type", ""))
    if kind.startswith("Gather"):
        found.append(f"{kind} ({node.get('Workers Planned', '?')} workers)")
    if "Index Name" in node:
        found.append(f"{kind} using {node['Index Name']}")
    elif kind.endswith("Scan") and kind not in ("CTE Scan", "Subquery Scan", "Function Scan"):
        found.append(f"{kind} on {node.get('Relation Name', '?')}")
    for child in node.get("Plans", []):
        _walk(child, found)


def explain(conn: Connection, strategy: Strategy, tenant_id: str, query: np.ndarray) -> str:
    row = conn.execute(sql.SQL("EXPLAIN (FORMAT JSON) ") + strategy.query,
                       _params(strategy, tenant_id, query)).fetchone()
    assert row is not None
    found: list[str] = []
    plan = row[0]
    _walk((plan[0] if isinstance(plan, list) else plan)["Plan"], found)
    return "; ".join(dict.fromkeys(found)) or "?"


def _concurrent_qps(conns: list[Connection], strategy: Strategy, tenant_id: str,
                    queries: np.ndarray) -> float:
    """All ``queries`` once, split over the connections running at the same time."""
    barrier = threading.Barrier(len(conns) + 1)
    errors: list[BaseException] = []
    finished: list[float] = []

    def client(index: int) -> None:
        try:
            barrier.wait()
            for j in range(index, len(queries), len(conns)):
                run_query(conns[index], strategy, tenant_id, queries[j])
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)
        finally:
            finished.append(time.perf_counter())

    threads = [threading.Thread(target=client, args=(i,), daemon=True)
               for i in range(len(conns))]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return len(queries) / max(max(finished) - started, 1e-9)


def measure_tenant(conns: list[Connection], strategy: Strategy, dataset: Dataset,
                   tenant: TenantData, tenant_id: str, *, budget_s: float,
                   min_queries: int, concurrent_queries: int,
                   clock: BackendClock | None = None) -> CellResult:
    conn = conns[0]
    queries = tenant.queries
    plan = ""
    plan_ok: bool | None = None
    if not strategy.product:
        plan = explain(conn, strategy, tenant_id, queries[0])
        if strategy.expect_index:
            plan_ok = any(name in plan for name in strategy.expect_index)
    for j in range(min(WARMUP_QUERIES, len(queries))):
        run_query(conn, strategy, tenant_id, queries[j])
    latencies: list[float] = []
    cpu: list[float] = []
    recalls: list[float] = []
    foreign = short = 0
    product_plans: set[str] = set()
    started = time.perf_counter()
    for j in range(len(queries)):
        cpu0 = clock.read_ns() if clock is not None else None
        t0 = time.perf_counter()
        ids, plans = run_query(conn, strategy, tenant_id, queries[j])
        latencies.append(time.perf_counter() - t0)
        cpu1 = clock.read_ns() if clock is not None else None
        if cpu0 is not None and cpu1 is not None:
            cpu.append((cpu1 - cpu0) / 1e9)
        product_plans |= plans
        recall, foreign_rows = recall_at_k(dataset, tenant, j, ids)
        recalls.append(recall)
        foreign += foreign_rows
        short += len(ids) < min(K, tenant.rows)
        if time.perf_counter() - started > budget_s and j + 1 >= min_queries:
            break
    done = len(latencies)
    if strategy.product:
        plan = "rag.search_chunks: " + "+".join(sorted(product_plans))
    qps_2 = _concurrent_qps(conns[:2], strategy, tenant_id,
                            queries[:max(2, min(done, concurrent_queries))])
    p50, p95 = np.percentile(np.array(latencies) * 1000.0, [50, 95])
    cpu_p50 = cpu_p95 = None
    if len(cpu) == done:
        cpu_p50, cpu_p95 = (float(v) for v in np.percentile(np.array(cpu) * 1000.0, [50, 95]))
    return CellResult(float(np.mean(recalls)), float(p50), float(p95),
                      done / max(sum(latencies), 1e-9), qps_2, done, plan, plan_ok, foreign,
                      short, os.getloadavg()[0], cpu_p50, cpu_p95)


def measure_strategy(bench: BenchDatabase, dataset: Dataset, strategy: Strategy, *,
                     budget_s: float, min_queries: int, concurrent_queries: int,
                     on_cell: Callable[[str], None] | None = None) -> dict[str, CellResult]:
    """Every tenant, on two connections configured with the strategy's settings."""
    conns = [bench.connect(), bench.connect()]
    try:
        for conn in conns:
            conn.execute("SET statement_timeout = '120s'")
            for statement in strategy.setup:
                conn.execute(statement)
        clock = BackendClock(conns[0], bench.local_server)
        cells: dict[str, CellResult] = {}
        for tenant, tenant_id in zip(dataset.tenants, bench.tenant_ids, strict=True):
            cells[tenant.name] = measure_tenant(conns, strategy, dataset, tenant, tenant_id,
                                                budget_s=budget_s, min_queries=min_queries,
                                                concurrent_queries=concurrent_queries,
                                                clock=clock)
            if on_cell is not None:
                on_cell(f"{strategy.label} · {tenant.name}")
        return cells
    finally:
        for conn in conns:
            conn.close()
