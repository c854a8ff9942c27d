"""Judging ``rag bench index``: which latency a cell is judged on, whether it meets the
goal, and which exact-threshold / ef_search plan, composed from the measured exact and HNSW
building blocks, would meet it for every tenant."""

from __future__ import annotations

import numpy as np

from evaluations.index.config import IndexBenchConfig
from evaluations.index.context import BenchContext, StrategyResult, by_id
from evaluations.index.measure import CellResult
from evaluations.index.results import Candidate, FunctionConfig, LatencyFit

__all__ = ["Blocks", "best_function_config", "closest", "compose_candidates",
           "exact_latency_fit", "latency_basis", "meets_goal", "p95", "partition_blocks",
           "product_blocks"]

Blocks = tuple[str, dict[int, str]]
"""(id of the exact building block, {ef_search: id of the HNSW building block})."""


def latency_basis(config: IndexBenchConfig, results: list[StrategyResult]) -> str:
    """``cpu`` when asked (or ``auto``) and every cell has backend CPU times, else ``wall``."""
    if config.latency_basis == "wall":
        return "wall"
    has_cpu = bool(results) and all(c.cpu_p95_ms is not None
                                    for r in results for c in r.cells.values())
    return "cpu" if has_cpu else "wall"


def p95(cell: CellResult, basis: str) -> float:
    if basis == "cpu" and cell.cpu_p95_ms is not None:
        return cell.cpu_p95_ms
    return cell.p95_ms


def meets_goal(cell: CellResult, config: IndexBenchConfig, basis: str = "wall") -> bool:
    return (cell.recall_at_10 >= config.goal_recall
            and p95(cell, basis) <= config.goal_p95_ms)


def product_blocks(context: BenchContext) -> Blocks:
    return "product_forced_exact", {ef: f"product_forced_hnsw_ef{ef}"
                                    for ef in context.config.product_ef}


def partition_blocks(context: BenchContext) -> Blocks:
    return "partition_exact", {ef: f"partition_ef{ef}" for ef in context.config.partition_ef}


def compose_candidates(context: BenchContext, results: list[StrategyResult],
                       blocks: Blocks | None = None) -> list[Candidate]:
    """Candidate plans (exact threshold x ef_search), scored per tenant from measured exact
    and HNSW building blocks (by default ``rag.search_chunks`` with one branch forced): a
    tenant with at most ``threshold`` rows is searched exactly. Thresholds between two tenant
    sizes behave alike here."""
    exact_id, hnsw_ids = blocks or product_blocks(context)
    basis = latency_basis(context.config, results)
    measured = by_id(results)
    exact = measured.get(exact_id)
    if exact is None:
        return []
    tenants = context.dataset.tenants
    thresholds = sorted({0, *[t.rows for t in tenants]})
    candidates = []
    for ef, hnsw_id in hnsw_ids.items():
        hnsw = measured.get(hnsw_id)
        if hnsw is None:
            continue
        for threshold in thresholds:
            cells = {t.name: (exact if t.rows <= threshold else hnsw).cells[t.name]
                     for t in tenants}
            candidates.append(Candidate(
                threshold_covers_rows=threshold, ef_search=ef,
                meets_goal=all(meets_goal(c, context.config, basis) for c in cells.values()),
                tenants_meeting_goal=sum(meets_goal(c, context.config, basis)
                                         for c in cells.values()),
                min_recall=round(min(c.recall_at_10 for c in cells.values()), 4),
                max_p95_ms=round(max(p95(c, basis) for c in cells.values()), 3),
                latency_basis=basis,
                plans={t.name: ("exact" if t.rows <= threshold else "hnsw") for t in tenants}))
    return candidates


def _nice_floor(value: float) -> int:
    if value < 10:
        return max(0, int(value))
    digits = len(str(int(value)))
    step = 5 * 10 ** max(digits - 2, 0) if digits > 2 else 1
    return int(value // step * step)


def exact_latency_fit(context: BenchContext, results: list[StrategyResult],
                      exact_id: str = "product_forced_exact") -> LatencyFit | None:
    """p95 of exact search as ``a + b * rows`` (least squares over the tenants)."""
    exact = by_id(results).get(exact_id)
    if exact is None or len(context.dataset.tenants) < 2:
        return None
    rows = np.array([t.rows for t in context.dataset.tenants], dtype=float)
    basis = latency_basis(context.config, results)
    values = np.array([p95(exact.cells[t.name], basis) for t in context.dataset.tenants])
    b, a = np.polyfit(rows, values, 1)
    return LatencyFit(float(a), float(b))


def best_function_config(context: BenchContext, results: list[StrategyResult],
                         blocks: Blocks | None = None) -> FunctionConfig | None:
    """The candidate that meets the goal for every tenant with the lowest worst p95 (ties:
    the smaller threshold, then the smaller ef_search), as a concrete threshold: the rows
    where exact search's fitted p95 reaches the goal, kept between the largest tenant that
    must be exact and the smallest that must use HNSW."""
    blocks = blocks or product_blocks(context)
    candidates = [c for c in compose_candidates(context, results, blocks) if c.meets_goal]
    if not candidates:
        return None
    best = min(candidates, key=lambda c: (c.max_p95_ms, c.threshold_covers_rows, c.ef_search))
    rows = sorted(t.rows for t in context.dataset.tenants)
    low = best.threshold_covers_rows
    above = [r for r in rows if r > low]
    high = (above[0] - 1) if above else max(low, 1) * 2
    fit = exact_latency_fit(context, results, blocks[0])
    target = float(low)
    if fit is not None and fit.per_row_ms > 0:
        target = (context.config.goal_p95_ms - fit.intercept_ms) / fit.per_row_ms
    threshold = min(max(_nice_floor(target), low), high)
    return FunctionConfig(int(threshold), int(best.ef_search), best)


def closest(candidates: list[Candidate]) -> Candidate | None:
    """Most tenants meeting the goal, then the best worst-case recall, then speed."""
    if not candidates:
        return None
    return max(candidates, key=lambda c: (c.tenants_meeting_goal, c.min_recall,
                                          -c.max_p95_ms))
