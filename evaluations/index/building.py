"""What every phase of ``rag bench index`` does around its measurements: build an index in
a session with the configured build memory and workers (timed, sized), drop it, measure a
strategy on every tenant, and count the cells a run will measure."""

from __future__ import annotations

from typing import Any

from psycopg import sql

from evaluations.index.config import IndexBenchConfig
from evaluations.index.context import BenchContext, ProgressSink, StrategyResult
from evaluations.index.database import (
    build_session,
    create_shared_exact,
    drop_index,
    index_mb,
    index_options,
    timed,
)
from evaluations.index.measure import measure_strategy
from evaluations.index.strategies import Strategy

__all__ = ["build_index", "drop", "drop_vector_competitors", "measure", "planned_cells", "psql",
           "restore_for_keep"]


def planned_cells(config: IndexBenchConfig, tenants: int) -> int:
    per_phase = {
        "exact": 3,
        "product": 2 + len(config.product_ef),
        "hnsw": len(config.hnsw_ef) * len(config.hnsw_modes) + len(config.hnsw_strict_ef),
        "ivfflat": len(config.ivf_probes) * len(config.ivf_modes),
        "halfvec": len(config.halfvec_ef) * len(config.hnsw_modes),
        "binary": len(config.binary_candidates) * len(config.hnsw_modes),
        "hnsw_extra": len(config.extra_hnsw) * len(config.hnsw_ef) * len(config.hnsw_modes),
        "diskann": 0,
        "partition": 1 + len(config.partition_ef),
        "plan": 1,
    }
    return tenants * sum(per_phase[p] for p in config.phases)


def measure(context: BenchContext, strategy: Strategy, sink: ProgressSink,
             build_s: float | None, size_mb: float | None, note: str = "") -> StrategyResult:
    cells = measure_strategy(context.require_bench(), context.dataset, strategy,
                             budget_s=context.config.cell_budget_s,
                             min_queries=context.config.min_queries,
                             concurrent_queries=context.config.concurrent_queries,
                             on_cell=lambda text: sink.advance(text))
    worst = min(c.recall_at_10 for c in cells.values())
    cpu = [c.cpu_p95_ms for c in cells.values() if c.cpu_p95_ms is not None]
    sink.note(f"  {strategy.label}: min recall {worst:.3f}, max p95 "
              f"{max(c.p95_ms for c in cells.values()):.1f} ms"
              + (f" (CPU {max(cpu):.1f} ms)" if cpu else ""))
    return StrategyResult(strategy, build_s, size_mb, cells, note)


def build_index(context: BenchContext, key: str, name: str, statement: Any,
           params: list[Any] | None = None, schema: str = "rag") -> dict[str, Any]:
    bench = context.require_bench()
    with build_session(bench, context.config.maintenance_work_mem,
                       context.config.build_workers) as conn:
        seconds = timed(conn, statement, params)
        info = {"index": name, "build_s": round(seconds, 2),
                "index_mb": index_mb(conn, [name], schema),
                "options": index_options(conn, name, schema),
                "maintenance_work_mem": context.config.maintenance_work_mem,
                "max_parallel_maintenance_workers": context.config.build_workers}
    context.builds[key] = info
    context.present.add(name)
    return info


def drop(context: BenchContext, name: str, schema: str = "rag") -> None:
    with context.require_bench().connect() as conn:
        drop_index(conn, name, schema)
    context.present.discard(name)


def drop_vector_competitors(context: BenchContext) -> None:
    """Indexes on ``embedding::vector(d)`` compete for the same ORDER BY: keep one at a time."""
    bench = context.require_bench()
    extra = [n for n in context.present if n.startswith("bench_hnsw_m")]
    for name in [bench.product_index, *extra]:
        if name in context.present:
            drop(context, name)


def psql(template: str, **values: Any) -> sql.Composed:
    """A statement with identifiers and literals quoted by psycopg."""
    parts: dict[str, sql.Composable] = {}
    for key, value in values.items():
        if key in ("name", "part"):
            parts[key] = sql.Identifier(value)
        else:
            parts[key] = sql.Literal(value)
    return sql.SQL(template).format(**parts)


def restore_for_keep(context: BenchContext) -> str:
    """A kept database gets its b-tree back (the product's HNSW index may have been
    dropped for other phases); returns a note naming the indexes that remain."""
    bench = context.require_bench()
    with bench.connect() as conn:
        conn.execute("CREATE INDEX IF NOT EXISTS chunk_embeddings_tenant_model "
                     "ON rag.chunk_embeddings (tenant_id, model_key)")
        create_shared_exact(conn, bench.model_key)
        rows = conn.execute("SELECT schemaname || '.' || indexname FROM pg_indexes "
                            "WHERE schemaname IN ('rag', 'bench') AND (tablename = "
                            "'chunk_embeddings' OR tablename LIKE 'items_part%%') "
                            "ORDER BY 1").fetchall()
    return (f"database {bench.name} kept; vector-search indexes left in it: "
            + ", ".join(str(r[0]) for r in rows))

