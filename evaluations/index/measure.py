"""How a strategy of ``rag bench index`` is measured on one tenant: recall@10 against the
exact neighbours, per-query latency (p50/p95, wall clock and the serving backend's CPU
time), QPS with one and with two concurrent clients, and QPS and p95 with four concurrent
clients (the load a few API workers put on one server)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from psycopg import sql

from evaluations.common.stats import percentiles
from evaluations.index.data import Dataset, TenantData, recall_at_k
from evaluations.index.database import BenchDatabase, Connection
from evaluations.index.strategies import Strategy
from evaluations.index.vectors import K

__all__ = ["BackendClock", "CellResult", "explain", "measure_strategy", "measure_tenant",
           "run_query"]

WARMUP_QUERIES = 3


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
    # Four clients at once (wall clock of each query in its client; None: not measured).
    qps_4: float | None = None
    p95_ms_4: float | None = None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("recall_at_10", "p50_ms", "p95_ms", "qps_1", "qps_2", "cpu_p50_ms",
                    "cpu_p95_ms", "qps_4", "p95_ms_4"):
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


def _concurrent(conns: list[Connection], strategy: Strategy, tenant_id: str,
                queries: np.ndarray) -> tuple[float, list[float]]:
    """All ``queries`` once, split over the connections running at the same time: the
    queries per second, and each query's wall-clock seconds in its client."""
    barrier = threading.Barrier(len(conns) + 1)
    errors: list[BaseException] = []
    finished: list[float] = []
    latencies: list[float] = []  # list.append is atomic: no lock needed

    def client(index: int) -> None:
        try:
            barrier.wait()
            for j in range(index, len(queries), len(conns)):
                t0 = time.perf_counter()
                run_query(conns[index], strategy, tenant_id, queries[j])
                latencies.append(time.perf_counter() - t0)
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
    return len(queries) / max(max(finished) - started, 1e-9), latencies


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
    qps_2, _ = _concurrent(conns[:2], strategy, tenant_id,
                           queries[:max(2, min(done, concurrent_queries))])
    qps_4 = p95_4 = None
    if len(conns) >= 4:
        qps_4, wall_4 = _concurrent(conns[:4], strategy, tenant_id,
                                    queries[:max(4, min(done, 2 * concurrent_queries))])
        p95_4 = float(percentiles([s * 1000.0 for s in wall_4], [95])[0])
    p50, p95 = percentiles([s * 1000.0 for s in latencies], [50, 95])
    cpu_p50 = cpu_p95 = None
    if len(cpu) == done:
        cpu_p50, cpu_p95 = percentiles([s * 1000.0 for s in cpu], [50, 95])
    return CellResult(float(np.mean(recalls)), float(p50), float(p95),
                      done / max(sum(latencies), 1e-9), qps_2, done, plan, plan_ok, foreign,
                      short, os.getloadavg()[0], cpu_p50, cpu_p95, qps_4, p95_4)


def measure_strategy(bench: BenchDatabase, dataset: Dataset, strategy: Strategy, *,
                     budget_s: float, min_queries: int, concurrent_queries: int,
                     on_cell: Callable[[str], None] | None = None) -> dict[str, CellResult]:
    """Every tenant, on connections configured with the strategy's settings: two, or four
    for the product's strategies (whose cells also get the four-client pass)."""
    conns = [bench.connect() for _ in range(4 if strategy.product else 2)]
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
