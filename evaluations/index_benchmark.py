"""``rag bench index`` / flow ``benchmark-index``: which vector index strategy serves every
tenant, the smallest included, with recall@10 >= 0.98 at p95 <= 10 ms?

One scratch database on the configured server (embedded by default) gets the product's own
schema (its migrations) and >= 500,000 MiniLM-like vectors (real SciFact embeddings plus
synthetic ones drawn from a mixture fitted to them, see ``_index_data``) spread over five
tenants holding 1/5/10/34/50% of the rows. Strategies, each measured on every tenant with the
tenant's own queries (recall@10 against exact neighbours, p50/p95 latency, QPS at 1 and 2
concurrent clients) plus build time and size of its index:

* exact scan through the tenant b-tree;
* the product's plan, ``rag.search_chunks`` itself (exact up to a row threshold, else HNSW
  with iterative scans), at its configured defaults and at candidate defaults;
* HNSW (the product's index and other m/ef_construction), ef_search sweep, iterative scans
  off / relaxed_order / strict_order;
* IVFFlat, probes sweep, iterative scans off / relaxed_order;
* HNSW on halfvec; binary-quantised HNSW with exact re-ranking of a larger candidate set;
* LIST partition per tenant: exact in small partitions, HNSW in large ones;
* pgvectorscale StreamingDiskANN when the server can install ``vectorscale`` (else the row
  says "not installed").

Stages (``prepare_dataset``, ``prepare_database``, ``run_phase`` per index family,
``finish``) are what the Prefect flow runs as tasks; ``run_index_benchmark`` runs them in
one process for the CLI.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import psycopg
from psycopg import sql
from pydantic import BaseModel, Field, model_validator

from evaluations._index_data import Dataset, DataSpec, build_dataset
from evaluations._index_db import (
    BenchDatabase,
    apply_product_schema,
    build_session,
    create_bench_database,
    drop_bench_database,
    drop_index,
    index_mb,
    index_options,
    load_partitioned_table,
    load_product_tables,
    partition_name,
    timed,
    vectorscale_status,
)
from evaluations._index_measure import (
    CellResult,
    Strategy,
    ann_query,
    binary_rerank_query,
    exact_join_all_query,
    exact_query,
    exact_topk_join_query,
    explain,
    index_settings,
    measure_strategy,
    partition_query,
    product_query,
)
from evaluations.reports import Report
from rag_core.config import Settings
from rag_core.embeddings.base import Embedder

BENCHMARK = "index"
PHASES = ("exact", "product", "hnsw", "ivfflat", "halfvec", "binary", "hnsw_extra",
          "diskann", "partition")
NOT_INSTALLED = "not installed"
BASIS_TEXT = {"cpu": "the serving backend's CPU time per query (load-independent)",
              "wall": "wall-clock time per query in the client"}
ITERATIVE_MODES = ("off", "relaxed_order", "strict_order")
FORCED_EXACT = 1_000_000_000  # p_exact_max_rows that sends every tenant to the exact plan


class IndexBenchConfig(BaseModel, frozen=True):
    """Sizes and sweeps. ``full()`` is the README run, ``quick()`` the CI-speed smoke test."""

    vectors: int = Field(default=500_000, ge=100)
    shares: tuple[float, ...] = (0.01, 0.05, 0.10, 0.34, 0.50)
    queries_per_tenant: int = Field(default=100, ge=1)
    real_chunks: int = Field(default=9000, ge=10)
    clusters: int = Field(default=64, ge=1)
    neighbours: int = Field(default=10, ge=0)
    neighbour_scale: float = Field(default=0.7, ge=0)
    noise_scale: float = Field(default=0.35, ge=0)
    seed: int = 20261124
    database: str = Field(default="bench_index", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    keep_db: bool = False
    phases: tuple[str, ...] = PHASES
    hnsw_ef: tuple[int, ...] = (40, 100, 200, 400)
    hnsw_modes: tuple[str, ...] = ("off", "relaxed_order")
    hnsw_strict_ef: tuple[int, ...] = (100, 400)
    # other HNSW builds (m, ef_construction) beside the product's own; each costs a build of
    # several minutes at 500,000 rows on 2 cores
    extra_hnsw: tuple[tuple[int, int], ...] = ((24, 96),)
    ivf_lists: int | None = None  # None: rows / 1000 (pgvector's guidance up to 1M rows)
    ivf_probes: tuple[int, ...] = (10, 20, 40)
    ivf_modes: tuple[str, ...] = ("off", "relaxed_order")
    halfvec_ef: tuple[int, ...] = (100, 400)
    binary_candidates: tuple[int, ...] = (100, 400)
    partition_ef: tuple[int, ...] = (40, 100, 200, 400)
    partition_exact_max_rows: int = 10_000
    partition_hnsw: tuple[int, int] = (16, 64)  # (m, ef_construction) of each partition's graph
    product_ef: tuple[int, ...] = (100, 200, 400, 800)
    diskann_search_list: tuple[int, ...] = (100, 200)
    cell_budget_s: float = Field(default=15.0, gt=0)
    min_queries: int = Field(default=25, ge=1)
    concurrent_queries: int = Field(default=40, ge=2)  # the QPS-2 pass: first N queries
    goal_recall: float = 0.98
    goal_p95_ms: float = 10.0
    # latency judged against the goal: "wall" = p95 of wall-clock time in the client (the
    # goal as stated: run it on a quiet machine); "cpu" = p95 of the serving backend's CPU
    # time per query (load-independent, needs the server on this machine; for a shared
    # machine), "auto" = cpu when available. Both are reported either way.
    latency_basis: Literal["auto", "cpu", "wall"] = "wall"
    maintenance_work_mem: str = "2GB"
    build_workers: int = Field(default=1, ge=0, le=8)
    size: str = "full"

    @model_validator(mode="after")
    def _check(self) -> IndexBenchConfig:
        unknown = set(self.phases) - set(PHASES)
        if unknown:
            raise ValueError(f"unknown phases {sorted(unknown)}; known: {PHASES}")
        if abs(sum(self.shares) - 1.0) > 1e-6:
            raise ValueError(f"tenant shares must add up to 1, got {sum(self.shares)}")
        bad = set(self.hnsw_modes) - set(ITERATIVE_MODES)
        if bad:
            raise ValueError(f"unknown iterative modes {sorted(bad)}")
        m, ef_construction = self.partition_hnsw
        if not 2 <= m <= 100 or not 2 * m <= ef_construction <= 1000:
            raise ValueError(f"partition_hnsw (m, ef_construction) = {self.partition_hnsw}: "
                             "pgvector needs 2 <= m <= 100 and 2*m <= ef_construction <= 1000")
        return self

    @classmethod
    def full(cls, **overrides: Any) -> IndexBenchConfig:
        return cls(**overrides)

    @classmethod
    def preset(cls, quick: bool, **options: Any) -> IndexBenchConfig:
        """The quick or full preset with the options the CLI and the flow take: ``None``
        keeps the preset's value, lists (phases, partition_hnsw) become tuples."""
        overrides = {k: tuple(v) if isinstance(v, list) else v
                     for k, v in options.items() if v is not None}
        return (cls.quick if quick else cls.full)(**overrides)

    @classmethod
    def quick(cls, **overrides: Any) -> IndexBenchConfig:
        values: dict[str, Any] = dict(
            vectors=30_000, queries_per_tenant=10, real_chunks=600, clusters=16,
            hnsw_ef=(100,), hnsw_strict_ef=(), extra_hnsw=(), ivf_probes=(10,),
            halfvec_ef=(100,), binary_candidates=(100,), partition_ef=(100,),
            partition_exact_max_rows=1_000, product_ef=(100, 400), diskann_search_list=(100,),
            cell_budget_s=5.0, min_queries=5, size="quick")
        values.update(overrides)
        return cls(**values)

    def data_spec(self) -> DataSpec:
        return DataSpec(vectors=self.vectors, shares=self.shares,
                        queries_per_tenant=self.queries_per_tenant, real_chunks=self.real_chunks,
                        clusters=self.clusters, neighbours=self.neighbours,
                        neighbour_scale=self.neighbour_scale, noise_scale=self.noise_scale,
                        seed=self.seed)


class ProgressSink(Protocol):
    def add_total(self, count: int) -> None: ...

    def advance(self, description: str, count: int = 1) -> None: ...

    def note(self, message: str) -> None: ...


class NullProgress:
    def add_total(self, count: int) -> None:
        pass

    def advance(self, description: str, count: int = 1) -> None:
        pass

    def note(self, message: str) -> None:
        pass


@dataclass
class StrategyResult:
    strategy: Strategy
    build_s: float | None
    index_mb: float | None
    cells: dict[str, CellResult]
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        s = self.strategy
        return {"family": s.family, "label": s.label, "curve": s.curve, "params": s.params,
                "build_s": None if self.build_s is None else round(self.build_s, 2),
                "index_mb": self.index_mb, "note": self.note,
                "tenants": {name: cell.as_dict() for name, cell in self.cells.items()}}


@dataclass
class BenchContext:
    """Everything the stages share; passed from task to task by the flow."""

    settings: Settings
    config: IndexBenchConfig
    dataset: Dataset
    bench: BenchDatabase | None = None
    results: list[StrategyResult] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    builds: dict[str, dict[str, Any]] = field(default_factory=dict)
    present: set[str] = field(default_factory=set)  # indexes that exist right now
    diskann: str | dict[str, Any] = NOT_INSTALLED
    notes: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    def require_bench(self) -> BenchDatabase:
        if self.bench is None:
            raise RuntimeError("prepare_database has not run")
        return self.bench


# --- stages ------------------------------------------------------------------------------
def cache_dir(settings: Settings) -> Path:
    return settings.state_dir / "cache" / "bench-index"


def prepare_dataset(settings: Settings, config: IndexBenchConfig, embedder: Embedder,
                    progress: ProgressSink | None = None) -> BenchContext:
    sink = progress or NullProgress()
    spec = config.data_spec()
    sink.note(f"data: {config.vectors:,} vectors, tenants {spec.tenant_rows()}, "
              f"{config.queries_per_tenant} queries per tenant")
    started = time.perf_counter()
    seen: set[str] = set()

    embedded = [0]

    def on_progress(stage: str, count: int) -> None:
        if stage.startswith("embedding"):
            embedded[0] += count
            sink.note(f"embedded {embedded[0]} SciFact texts (cached for the next run)")
        elif stage not in seen:
            seen.add(stage)
            sink.note(stage)
        sink.advance(stage, 0)

    dataset = build_dataset(spec, embedder, cache_dir(settings), on_progress)
    context = BenchContext(settings, config, dataset)
    context.timings["dataset_s"] = time.perf_counter() - started
    sink.add_total(planned_cells(config, len(dataset.tenants)))
    return context


def prepare_database(context: BenchContext, progress: ProgressSink | None = None) -> BenchContext:
    """Create the scratch database, apply the product's migrations, COPY the data in."""
    sink = progress or NullProgress()
    config, dataset = context.config, context.dataset
    bench = create_bench_database(context.settings, config.database)
    context.bench = bench
    sink.note(f"database {bench.name}: migrations, then COPY {len(dataset.vectors):,} rows")
    applied, dropped = apply_product_schema(bench, context.settings.migrations_dir)
    context.notes.append(f"product migrations applied to the scratch database: {applied}; "
                         f"indexes on rag.chunks dropped before the load (not used by vector "
                         f"search): {', '.join(dropped) or 'none'}")
    context.timings.update(load_product_tables(bench, dataset))
    context.present.add("chunk_embeddings_tenant_model")
    with bench.connect() as conn:
        context.diskann = (NOT_INSTALLED if vectorscale_status(conn) is None
                           else "available")
    return context


def run_phase(context: BenchContext, phase: str,
              progress: ProgressSink | None = None) -> list[StrategyResult]:
    """Build what ``phase`` needs, measure its strategies on every tenant, drop its index."""
    if phase not in context.config.phases:
        return []
    sink = progress or NullProgress()
    runner = _PHASES[phase]
    sink.note(f"phase {phase}")
    results = runner(context, sink)
    context.results.extend(results)
    return results


def finish(context: BenchContext, progress: ProgressSink | None = None) -> IndexBenchmarkOutcome:
    """Recommendation, report (tables, plots, results.json), then drop the scratch database
    unless asked to keep it."""
    sink = progress or NullProgress()
    bench = context.require_bench()
    try:
        if context.config.keep_db:
            context.notes.append(_restore_for_keep(context))
        summary = summarise(context)
        folder = write_report(context, summary)
        sink.note(f"report: {folder}")
    finally:
        if not context.config.keep_db:
            drop_bench_database(bench)
    return IndexBenchmarkOutcome(folder, summary)


@dataclass
class IndexBenchmarkOutcome:
    folder: Path
    results: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        """The compact form printed by ``--json``: the table and the verdict."""
        keys = ("recall_at_10", "p50_ms", "p95_ms", "qps_1", "qps_2")
        return {
            "ok": True, "report": str(self.folder),
            "default_meets_goal": self.results["default_meets_goal"],
            "diskann": self.results["diskann"],
            "recommendation": self.results["recommendation"],
            "strategies": {
                sid: {"build_s": s["build_s"], "index_mb": s["index_mb"],
                      "tenants": {t: {k: c[k] for k in keys} for t, c in s["tenants"].items()}}
                for sid, s in self.results["strategies"].items()},
        }


def run_index_benchmark(settings: Settings, config: IndexBenchConfig, embedder: Embedder,
                        progress: ProgressSink | None = None) -> IndexBenchmarkOutcome:
    """All stages in one process (the CLI's entry point; the flow runs the same stages)."""
    context = prepare_dataset(settings, config, embedder, progress)
    try:
        prepare_database(context, progress)
        for phase in PHASES:
            run_phase(context, phase, progress)
    except BaseException:
        abandon(context)
        raise
    return finish(context, progress)


def abandon(context: BenchContext) -> None:
    """After a failure: drop the scratch database unless it is to be kept."""
    if not context.config.keep_db and context.bench is not None:
        with contextlib.suppress(psycopg.Error):
            drop_bench_database(context.bench)


# --- phases -------------------------------------------------------------------------------
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
    }
    return tenants * sum(per_phase[p] for p in config.phases)


def _measure(context: BenchContext, strategy: Strategy, sink: ProgressSink,
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


def _build(context: BenchContext, key: str, name: str, statement: Any,
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


def _drop(context: BenchContext, name: str, schema: str = "rag") -> None:
    with context.require_bench().connect() as conn:
        drop_index(conn, name, schema)
    context.present.discard(name)


def _phase_exact(context: BenchContext, sink: ProgressSink) -> list[StrategyResult]:
    bench = context.require_bench()
    with bench.connect() as conn:
        size = index_mb(conn, ["chunk_embeddings_tenant_model"])
    context.builds["btree"] = {"index": "chunk_embeddings_tenant_model",
                               "build_s": round(context.timings["btree_build_s"], 2),
                               "index_mb": size}
    strategy = Strategy("exact_btree", "exact", "exact (tenant b-tree)", "exact", 0,
                        exact_query(bench), {"index": "btree (tenant_id, model_key)"},
                        expect_index=())
    joined = Strategy("exact_topk_then_join", "exact",
                      "exact, top 10 first, then join rag.chunks (0005)",
                      "exact, top-k then join", 0, exact_topk_join_query(bench),
                      {"index": "btree (tenant_id, model_key)"})
    join_all = Strategy("exact_join_all_then_topk", "exact",
                        "exact, join every row to rag.chunks, then top 10 (0001)",
                        "exact, join then top-k", 0, exact_join_all_query(bench),
                        {"index": "btree (tenant_id, model_key)"})
    build_s = context.timings["btree_build_s"]
    return [_measure(context, strategy, sink, build_s, size),
            _measure(context, joined, sink, build_s, size),
            _measure(context, join_all, sink, build_s, size)]


def _ensure_product_index(context: BenchContext) -> dict[str, Any]:
    bench = context.require_bench()
    if bench.product_index not in context.present:
        from rag_core.embeddings.base import MODEL_ID

        # the product's own DDL, with its own defaults (m, ef_construction)
        _build(context, "hnsw_product", bench.product_index,
               "SELECT rag.register_embedding_model(%s, %s, %s)",
               [bench.model_key, MODEL_ID, bench.dimension])
    return context.builds["hnsw_product"]


def _product_strategy(context: BenchContext, sid: str, label: str, *, ef: int, exact_max: int,
                      curve: str, sweep: float) -> Strategy:
    settings = context.settings
    params = {"ef_search": max(ef, 10), "exact_max_rows": exact_max,
              "iterative_scan": settings.hnsw_iterative_scan,
              "max_scan_tuples": settings.hnsw_max_scan_tuples}
    return Strategy(sid, "product", label, curve, sweep, product_query(context.require_bench()),
                    params, product=True,
                    query_params={"ef": params["ef_search"], "exact_max": exact_max,
                                  "iterative": settings.hnsw_iterative_scan,
                                  "max_tuples": settings.hnsw_max_scan_tuples})


def _phase_product(context: BenchContext, sink: ProgressSink) -> list[StrategyResult]:
    """``rag.search_chunks`` itself: its exact and HNSW branches forced (building blocks for
    candidate defaults), the configured default, and the best candidate if it differs."""
    build = _ensure_product_index(context)
    settings = context.settings
    results: list[StrategyResult] = []
    exact = _product_strategy(context, "product_forced_exact", "search_chunks, exact branch",
                              ef=settings.hnsw_ef_search, exact_max=FORCED_EXACT,
                              curve="search_chunks exact branch", sweep=0)
    results.append(_measure(context, exact, sink, context.builds["btree"]["build_s"],
                            context.builds["btree"]["index_mb"]))
    for ef in context.config.product_ef:
        strategy = _product_strategy(context, f"product_forced_hnsw_ef{ef}",
                                     f"search_chunks, HNSW branch, ef_search {ef}", ef=ef,
                                     exact_max=0, curve="search_chunks HNSW branch", sweep=ef)
        results.append(_measure(context, strategy, sink, build["build_s"], build["index_mb"]))
    default = _product_strategy(
        context, "product_default",
        f"search_chunks default (exact <= {settings.exact_search_max_rows:,} rows, else HNSW "
        f"ef {max(settings.hnsw_ef_search, 10)})", ef=settings.hnsw_ef_search,
        exact_max=settings.exact_search_max_rows, curve="search_chunks default", sweep=0)
    results.append(_measure(context, default, sink, build["build_s"], build["index_mb"]))
    context.notes.extend(_planner_check(context))
    candidate = best_function_config(context, results)
    if candidate is not None and (candidate["exact_max_rows"], candidate["ef_search"]) != (
            settings.exact_search_max_rows, max(settings.hnsw_ef_search, 10)):
        proposed = _product_strategy(
            context, "product_proposed",
            f"search_chunks proposed (exact <= {candidate['exact_max_rows']:,} rows, else "
            f"HNSW ef {candidate['ef_search']})", ef=candidate["ef_search"],
            exact_max=candidate["exact_max_rows"], curve="search_chunks proposed", sweep=0)
        sink.add_total(len(context.dataset.tenants))
        results.append(_measure(context, proposed, sink, build["build_s"], build["index_mb"]))
    return results


def _planner_check(context: BenchContext) -> list[str]:
    """Which plan the server picks for the product's HNSW-branch query, per tenant, with the
    b-tree present (as in production)."""
    bench = context.require_bench()
    notes = []
    with bench.connect() as conn:
        conn.execute("SET hnsw.iterative_scan = relaxed_order")
        strategy = Strategy("check", "check", "check", "check", 0, ann_query(bench))
        for tenant, tenant_id in zip(context.dataset.tenants, bench.tenant_ids, strict=True):
            plan = explain(conn, strategy, tenant_id, tenant.queries[0])
            notes.append(f"planner, HNSW-branch query, {tenant.name}: {plan}")
    return notes


def _phase_hnsw(context: BenchContext, sink: ProgressSink) -> list[StrategyResult]:
    """The product's HNSW index alone (the tenant b-tree is dropped so the planner cannot
    swap in an exact plan): ef_search sweep x iterative scan modes."""
    build = _ensure_product_index(context)
    bench = context.require_bench()
    _drop(context, "chunk_embeddings_tenant_model")
    return [_measure(context, s, sink, build["build_s"], build["index_mb"])
            for s in _hnsw_strategies(context, build, bench.product_index, "hnsw",
                                      "hnsw (product index)")]


def _hnsw_strategies(context: BenchContext, build: dict[str, Any], index: str, prefix: str,
                     name: str) -> list[Strategy]:
    config, bench = context.config, context.require_bench()
    options = ",".join(build.get("options", [])) or "defaults"
    configs = [(ef, mode) for mode in config.hnsw_modes for ef in config.hnsw_ef]
    if prefix == "hnsw":
        configs += [(ef, "strict_order") for ef in config.hnsw_strict_ef]
    strategies = []
    for ef, mode in configs:
        strategies.append(Strategy(
            f"{prefix}_ef{ef}_{mode}", "hnsw", f"{name} ef_search {ef}, iterative {mode}",
            f"{name}, iterative {mode}", ef, ann_query(bench),
            {"index": index, "build": options, "ef_search": ef, "iterative_scan": mode},
            index_settings(ef_search=ef, iterative=mode), expect_index=(index,)))
    return strategies


def _drop_vector_competitors(context: BenchContext) -> None:
    """Indexes on ``embedding::vector(d)`` compete for the same ORDER BY: keep one at a time."""
    bench = context.require_bench()
    extra = [n for n in context.present if n.startswith("bench_hnsw_m")]
    for name in [bench.product_index, *extra]:
        if name in context.present:
            _drop(context, name)


def _phase_ivfflat(context: BenchContext, sink: ProgressSink) -> list[StrategyResult]:
    config, bench = context.config, context.require_bench()
    _drop_vector_competitors(context)
    lists = config.ivf_lists or max(10, len(context.dataset.vectors) // 1000)
    name = "bench_ivfflat"
    build = _build(context, "ivfflat", name, _psql(
        "CREATE INDEX {name} ON rag.chunk_embeddings USING ivfflat ((embedding::vector({d}))"
        " vector_cosine_ops) WITH (lists = {lists}) WHERE model_key = {mk}",
        name=name, d=bench.dimension, lists=lists, mk=bench.model_key))
    results = []
    for mode in config.ivf_modes:
        for probes in config.ivf_probes:
            strategy = Strategy(
                f"ivfflat_l{lists}_p{probes}_{mode}", "ivfflat",
                f"ivfflat lists {lists} probes {probes}, iterative {mode}",
                f"ivfflat lists {lists}, iterative {mode}", probes, ann_query(bench),
                {"index": name, "lists": lists, "probes": probes, "iterative_scan": mode},
                index_settings(probes=probes, ivf_iterative=mode), expect_index=(name,))
            results.append(_measure(context, strategy, sink, build["build_s"],
                                    build["index_mb"]))
    _drop(context, name)
    return results


def _phase_halfvec(context: BenchContext, sink: ProgressSink) -> list[StrategyResult]:
    config, bench = context.config, context.require_bench()
    name = "bench_hnsw_halfvec"
    build = _build(context, "halfvec", name, _psql(
        "CREATE INDEX {name} ON rag.chunk_embeddings USING hnsw ((embedding::halfvec({d}))"
        " halfvec_cosine_ops) WITH (m = 16, ef_construction = 64) WHERE model_key = {mk}",
        name=name, d=bench.dimension, mk=bench.model_key))
    results = []
    for mode in config.hnsw_modes:
        for ef in config.halfvec_ef:
            strategy = Strategy(
                f"halfvec_ef{ef}_{mode}", "halfvec",
                f"hnsw halfvec ef_search {ef}, iterative {mode}",
                f"hnsw halfvec (m 16, efc 64), iterative {mode}", ef,
                ann_query(bench, "halfvec"),
                {"index": name, "m": 16, "ef_construction": 64, "ef_search": ef,
                 "iterative_scan": mode},
                index_settings(ef_search=ef, iterative=mode), expect_index=(name,))
            results.append(_measure(context, strategy, sink, build["build_s"],
                                    build["index_mb"]))
    _drop(context, name)
    return results


def _phase_binary(context: BenchContext, sink: ProgressSink) -> list[StrategyResult]:
    config, bench = context.config, context.require_bench()
    name = "bench_hnsw_binary"
    build = _build(context, "binary", name, _psql(
        "CREATE INDEX {name} ON rag.chunk_embeddings USING hnsw"
        " ((binary_quantize(embedding)::bit({d})) bit_hamming_ops)"
        " WITH (m = 16, ef_construction = 64) WHERE model_key = {mk}",
        name=name, d=bench.dimension, mk=bench.model_key))
    results = []
    for mode in config.hnsw_modes:
        for candidates in config.binary_candidates:
            ef = min(max(candidates, 40), 1000)
            strategy = Strategy(
                f"binary_c{candidates}_{mode}", "binary",
                f"hnsw binary, {candidates} candidates re-ranked, iterative {mode}",
                f"hnsw binary_quantize + re-rank, iterative {mode}", candidates,
                binary_rerank_query(bench),
                {"index": name, "m": 16, "ef_construction": 64, "candidates": candidates,
                 "ef_search": ef, "iterative_scan": mode},
                index_settings(ef_search=ef, iterative=mode), expect_index=(name,),
                query_params={"candidates": candidates})
            results.append(_measure(context, strategy, sink, build["build_s"],
                                    build["index_mb"]))
    _drop(context, name)
    return results


def _phase_hnsw_extra(context: BenchContext, sink: ProgressSink) -> list[StrategyResult]:
    bench = context.require_bench()
    results = []
    for m, efc in context.config.extra_hnsw:
        _drop_vector_competitors(context)
        name = f"bench_hnsw_m{m}_efc{efc}"
        build = _build(context, f"hnsw_m{m}_efc{efc}", name, _psql(
            "CREATE INDEX {name} ON rag.chunk_embeddings USING hnsw ((embedding::vector({d}))"
            " vector_cosine_ops) WITH (m = {m}, ef_construction = {efc})"
            " WHERE model_key = {mk}", name=name, d=bench.dimension, m=m, efc=efc,
            mk=bench.model_key))
        strategies = _hnsw_strategies(context, build, name, f"hnsw_m{m}_efc{efc}",
                                      f"hnsw m {m} efc {efc}")
        results += [_measure(context, s, sink, build["build_s"], build["index_mb"])
                    for s in strategies]
        _drop(context, name)
    return results


def _phase_diskann(context: BenchContext, sink: ProgressSink) -> list[StrategyResult]:
    """pgvectorscale StreamingDiskANN, only where the server offers the extension."""
    bench = context.require_bench()
    with bench.connect() as conn:
        version = vectorscale_status(conn)
    if version is None:
        context.diskann = NOT_INSTALLED
        sink.note("  diskann: vectorscale is not available on this server: not installed")
        return []
    _drop_vector_competitors(context)
    name = "bench_diskann"
    try:
        with bench.connect() as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vectorscale CASCADE")
        build = _build(context, "diskann", name, _psql(
            "CREATE INDEX {name} ON rag.chunk_embeddings USING diskann"
            " ((embedding::vector({d})) vector_cosine_ops) WHERE model_key = {mk}",
            name=name, d=bench.dimension, mk=bench.model_key))
    except psycopg.Error as exc:
        context.diskann = {"status": "failed", "version": version,
                           "error": str(exc).strip().splitlines()[0]}
        sink.note(f"  diskann: build failed: {context.diskann['error']}")
        return []
    results = []
    for search_list in context.config.diskann_search_list:
        strategy = Strategy(
            f"diskann_sl{search_list}", "diskann", f"diskann search_list {search_list}",
            "diskann (streaming post-filter)", search_list, ann_query(bench),
            {"index": name, "query_search_list_size": search_list, "vectorscale": version},
            index_settings(extra=(("diskann.query_search_list_size", search_list),)),
            expect_index=(name,))
        sink.add_total(len(context.dataset.tenants))
        results.append(_measure(context, strategy, sink, build["build_s"], build["index_mb"]))
    _drop(context, name)
    context.diskann = {"status": "measured", "version": version,
                       "strategies": [r.strategy.id for r in results]}
    return results


def _phase_partition(context: BenchContext, sink: ProgressSink) -> list[StrategyResult]:
    """One LIST partition per tenant: exact search in partitions up to the threshold, an HNSW
    index (no filter needed: the partition is the tenant) in the larger ones."""
    config, bench, dataset = context.config, context.require_bench(), context.dataset
    context.timings["copy_partitioned_s"] = load_partitioned_table(bench, dataset)
    indexed: list[str] = []
    build_s = 0.0
    m, ef_construction = config.partition_hnsw
    graph = "" if config.partition_hnsw == (16, 64) else f"m {m} efc {ef_construction} "
    for t, tenant in enumerate(dataset.tenants):
        if tenant.rows <= config.partition_exact_max_rows:
            continue
        name = f"{partition_name(t)}_hnsw"
        info = _build(context, f"partition_{tenant.name}", name, _psql(
            "CREATE INDEX {name} ON bench.{part} USING hnsw (embedding vector_cosine_ops)"
            " WITH (m = {m}, ef_construction = {efc})", name=name, part=partition_name(t),
            m=m, efc=ef_construction), schema="bench")
        build_s += info["build_s"]
        indexed.append(name)
    with bench.connect() as conn:
        size = index_mb(conn, indexed, "bench")
    results = [_measure(context, Strategy(
        "partition_exact", "partition", "partition per tenant, exact in every partition",
        "partition per tenant, exact", 0, partition_query(exact=True),
        {"exact_max_rows": "all"}, index_settings(force_index=False)),
        sink, None, None, note="contiguous rows: exact search inside the tenant's partition")]
    for ef in config.partition_ef:
        strategy = Strategy(
            f"partition_ef{ef}", "partition",
            f"partition per tenant (exact <= {config.partition_exact_max_rows:,} rows, "
            f"else HNSW {graph}ef {ef})", f"partition per tenant {graph}".strip(), ef,
            partition_query(),
            {"exact_max_rows": config.partition_exact_max_rows, "m": m,
             "ef_construction": ef_construction, "ef_search": ef, "hnsw_partitions": indexed},
            index_settings(ef_search=ef, force_index=False),
            expect_index=())
        results.append(_measure(context, strategy, sink, build_s, size))
    if not config.keep_db:
        with bench.connect() as conn:
            conn.execute("DROP TABLE IF EXISTS bench.items_part")
    return results


def _psql(template: str, **values: Any) -> sql.Composed:
    """A statement with identifiers and literals quoted by psycopg."""
    parts: dict[str, sql.Composable] = {}
    for key, value in values.items():
        if key in ("name", "part"):
            parts[key] = sql.Identifier(value)
        else:
            parts[key] = sql.Literal(value)
    return sql.SQL(template).format(**parts)


_PHASES: dict[str, Callable[[BenchContext, ProgressSink], list[StrategyResult]]] = {
    "exact": _phase_exact, "product": _phase_product, "hnsw": _phase_hnsw,
    "ivfflat": _phase_ivfflat, "halfvec": _phase_halfvec, "binary": _phase_binary,
    "hnsw_extra": _phase_hnsw_extra, "diskann": _phase_diskann, "partition": _phase_partition,
}


def _restore_for_keep(context: BenchContext) -> str:
    """A kept database gets its b-tree back (the product's HNSW index may have been
    dropped for other phases); returns a note naming the indexes that remain."""
    bench = context.require_bench()
    with bench.connect() as conn:
        conn.execute("CREATE INDEX IF NOT EXISTS chunk_embeddings_tenant_model "
                     "ON rag.chunk_embeddings (tenant_id, model_key)")
        rows = conn.execute("SELECT schemaname || '.' || indexname FROM pg_indexes "
                            "WHERE schemaname IN ('rag', 'bench') AND (tablename = "
                            "'chunk_embeddings' OR tablename LIKE 'items_part%%') "
                            "ORDER BY 1").fetchall()
    return (f"database {bench.name} kept; vector-search indexes left in it: "
            + ", ".join(str(r[0]) for r in rows))


# --- judging -------------------------------------------------------------------------------
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


def _by_id(results: list[StrategyResult]) -> dict[str, StrategyResult]:
    return {r.strategy.id: r for r in results}


def _product_blocks(context: BenchContext) -> tuple[str, dict[int, str]]:
    return "product_forced_exact", {ef: f"product_forced_hnsw_ef{ef}"
                                    for ef in context.config.product_ef}


def _partition_blocks(context: BenchContext) -> tuple[str, dict[int, str]]:
    return "partition_exact", {ef: f"partition_ef{ef}" for ef in context.config.partition_ef}


def compose_candidates(context: BenchContext, results: list[StrategyResult],
                       blocks: tuple[str, dict[int, str]] | None = None
                       ) -> list[dict[str, Any]]:
    """Candidate plans (exact threshold x ef_search), scored per tenant from measured exact
    and HNSW building blocks (by default ``rag.search_chunks`` with one branch forced): a
    tenant with at most ``threshold`` rows is searched exactly. Thresholds between two tenant
    sizes behave alike here."""
    exact_id, hnsw_ids = blocks or _product_blocks(context)
    basis = latency_basis(context.config, results)
    by_id = _by_id(results)
    exact = by_id.get(exact_id)
    if exact is None:
        return []
    tenants = context.dataset.tenants
    thresholds = sorted({0, *[t.rows for t in tenants]})
    candidates = []
    for ef, hnsw_id in hnsw_ids.items():
        hnsw = by_id.get(hnsw_id)
        if hnsw is None:
            continue
        for threshold in thresholds:
            cells = {t.name: (exact if t.rows <= threshold else hnsw).cells[t.name]
                     for t in tenants}
            candidates.append({
                "threshold_covers_rows": threshold, "ef_search": ef,
                "meets_goal": all(meets_goal(c, context.config, basis)
                                  for c in cells.values()),
                "tenants_meeting_goal": sum(meets_goal(c, context.config, basis)
                                            for c in cells.values()),
                "min_recall": round(min(c.recall_at_10 for c in cells.values()), 4),
                "max_p95_ms": round(max(p95(c, basis) for c in cells.values()), 3),
                "latency_basis": basis,
                "plans": {t.name: ("exact" if t.rows <= threshold else "hnsw") for t in tenants},
            })
    return candidates


def _nice_floor(value: float) -> int:
    if value < 10:
        return max(0, int(value))
    digits = len(str(int(value)))
    step = 5 * 10 ** max(digits - 2, 0) if digits > 2 else 1
    return int(value // step * step)


def exact_latency_fit(context: BenchContext, results: list[StrategyResult],
                      exact_id: str = "product_forced_exact") -> tuple[float, float] | None:
    """p95 of exact search as ``a + b * rows`` (least squares over the tenants)."""
    exact = _by_id(results).get(exact_id)
    if exact is None or len(context.dataset.tenants) < 2:
        return None
    rows = np.array([t.rows for t in context.dataset.tenants], dtype=float)
    basis = latency_basis(context.config, results)
    values = np.array([p95(exact.cells[t.name], basis) for t in context.dataset.tenants])
    b, a = np.polyfit(rows, values, 1)
    return float(a), float(b)


def best_function_config(context: BenchContext, results: list[StrategyResult],
                         blocks: tuple[str, dict[int, str]] | None = None
                         ) -> dict[str, Any] | None:
    """The candidate that meets the goal for every tenant with the lowest worst p95 (ties:
    the smaller threshold, then the smaller ef_search), as a concrete threshold: the rows
    where exact search's fitted p95 reaches the goal, kept between the largest tenant that
    must be exact and the smallest that must use HNSW."""
    blocks = blocks or _product_blocks(context)
    candidates = [c for c in compose_candidates(context, results, blocks) if c["meets_goal"]]
    if not candidates:
        return None
    best = min(candidates, key=lambda c: (c["max_p95_ms"], c["threshold_covers_rows"],
                                          c["ef_search"]))
    rows = sorted(t.rows for t in context.dataset.tenants)
    low = best["threshold_covers_rows"]
    above = [r for r in rows if r > low]
    high = (above[0] - 1) if above else max(low, 1) * 2
    fit = exact_latency_fit(context, results, blocks[0])
    target = float(low)
    if fit is not None and fit[1] > 0:
        target = (context.config.goal_p95_ms - fit[0]) / fit[1]
    threshold = min(max(_nice_floor(target), low), high)
    return {"exact_max_rows": int(threshold), "ef_search": int(best["ef_search"]),
            "composed": best}


def summarise(context: BenchContext) -> dict[str, Any]:
    config, settings = context.config, context.settings
    by_id = _by_id(context.results)
    tenants = context.dataset.tenants
    basis = latency_basis(config, context.results)

    def all_meet(result: StrategyResult | None, on: str = basis) -> bool:
        return result is not None and all(meets_goal(result.cells[t.name], config, on)
                                          for t in tenants)

    default = by_id.get("product_default")
    default_meets = all_meet(default)
    failing = [] if default is None else [
        t.name for t in tenants if not meets_goal(default.cells[t.name], config, basis)]
    proposed = by_id.get("product_proposed")
    proposed_meets = all_meet(proposed)
    meeting = sorted(r.strategy.id for r in context.results if all_meet(r))
    candidates = compose_candidates(context, context.results)
    best = best_function_config(context, context.results)
    fit = exact_latency_fit(context, context.results)
    partition_blocks = _partition_blocks(context)
    partition_best = best_function_config(context, context.results, partition_blocks)
    partition_fit = exact_latency_fit(context, context.results, partition_blocks[0])
    recommendation: dict[str, Any] = {
        "goal": {"recall_at_10": config.goal_recall, "p95_ms": config.goal_p95_ms,
                 "latency_basis": basis},
        "default": {"exact_search_max_rows": settings.exact_search_max_rows,
                    "hnsw_ef_search": settings.hnsw_ef_search,
                    "hnsw_iterative_scan": settings.hnsw_iterative_scan,
                    "hnsw_max_scan_tuples": settings.hnsw_max_scan_tuples},
        "default_failing_tenants": failing,
        "function_candidates_meeting_goal": [c for c in candidates if c["meets_goal"]],
        "proposed": None if best is None else {
            "exact_search_max_rows": best["exact_max_rows"], "hnsw_ef_search": best["ef_search"],
            "measured_meets_goal": proposed_meets if proposed is not None else default_meets},
        "exact_p95_fit_ms": None if fit is None else {
            "intercept_ms": round(fit[0], 3), "per_1000_rows_ms": round(fit[1] * 1000, 4)},
        "strategies_meeting_goal_for_every_tenant": meeting,
        "partition_per_tenant": {
            "candidates_meeting_goal": [
                c for c in compose_candidates(context, context.results, partition_blocks)
                if c["meets_goal"]],
            "best": None if partition_best is None else {
                "exact_max_rows": partition_best["exact_max_rows"],
                "ef_search": partition_best["ef_search"],
                "max_p95_ms": partition_best["composed"]["max_p95_ms"],
                "min_recall": partition_best["composed"]["min_recall"]},
            "exact_p95_fit_ms": None if partition_fit is None else {
                "intercept_ms": round(partition_fit[0], 3),
                "per_1000_rows_ms": round(partition_fit[1] * 1000, 4)},
        },
    }
    recommendation["verdict"] = _verdict(context, default_meets, failing, best, proposed_meets,
                                         meeting, partition_best)
    results: dict[str, Any] = {
        "size": config.size,
        "goal": recommendation["goal"],
        "default_meets_goal": default_meets,
        "default_meets_goal_wall_clock": all_meet(default, "wall"),
        "latency_basis": basis,
        "diskann": context.diskann,
        "tenants": [{"name": t.name, "share": t.share, "rows": t.rows,
                     "queries": len(t.queries),
                     "query_kinds": {k: t.query_kinds.count(k) for k in set(t.query_kinds)}}
                    for t in tenants],
        "strategies": {r.strategy.id: r.as_dict() for r in context.results},
        "builds": context.builds,
        "recommendation": recommendation,
        "data": context.dataset.description,
        "server": context.require_bench().facts,
        "timings_s": {k: round(v, 2) for k, v in context.timings.items()},
        "config": config.model_dump(mode="json"),
        "notes": context.notes,
        "measured_as": "owner (admin URL); RLS not FORCEd in the scratch database",
        "elapsed_s": round(time.perf_counter() - context.started, 1),
    }
    return results


def _verdict(context: BenchContext, default_meets: bool, failing: list[str],
             best: dict[str, Any] | None, proposed_meets: bool, meeting: list[str],
             partition_best: dict[str, Any] | None) -> str:
    config = context.config
    basis = latency_basis(config, context.results)
    goal = (f"recall@10 >= {config.goal_recall} at p95 <= {config.goal_p95_ms:g} ms, "
            f"p95 of {BASIS_TEXT[basis]}")
    if "product" not in config.phases:
        return "the product's plan was not measured in this run"
    if default_meets:
        text = f"The product's default meets the goal ({goal}) for every tenant."
    else:
        text = (f"The product's default does NOT meet the goal ({goal}); failing tenants: "
                f"{', '.join(failing)}.")
    if best is None:
        text += (" No exact-threshold / ef_search combination of rag.search_chunks meets it "
                 "for every tenant in this run.")
        closest = _closest(compose_candidates(context, context.results))
        if closest is not None:
            text += (f" Closest: exact up to {closest['threshold_covers_rows']:,} rows, HNSW "
                     f"ef_search {closest['ef_search']} above: "
                     f"{closest['tenants_meeting_goal']}/{len(context.dataset.tenants)} "
                     f"tenants, worst recall {closest['min_recall']:.3f}, worst p95 "
                     f"{closest['max_p95_ms']:.1f} ms.")
    elif not default_meets or best["exact_max_rows"] != context.settings.exact_search_max_rows:
        text += (f" Proposed: exact search up to {best['exact_max_rows']:,} rows, HNSW "
                 f"ef_search {best['ef_search']} above (measured "
                 f"{'meets' if proposed_meets else 'does not meet'} the goal).")
    others = [m for m in meeting if not m.startswith("product")]
    if others:
        text += f" Other strategies meeting it for every tenant: {', '.join(others)}."
    if partition_best is not None:
        composed = partition_best["composed"]
        text += (f" With one partition per tenant, exact search up to "
                 f"{partition_best['exact_max_rows']:,} rows and HNSW ef_search "
                 f"{partition_best['ef_search']} above meets it (worst tenant: recall "
                 f"{composed['min_recall']:.3f}, p95 {composed['max_p95_ms']:.1f} ms).")
    elif "partition" in config.phases:
        text += " Partitioning per tenant does not meet it either in this run."
        closest = _closest(compose_candidates(context, context.results,
                                              _partition_blocks(context)))
        if closest is not None:
            text += (f" Closest with partitions: exact up to "
                     f"{closest['threshold_covers_rows']:,} rows, HNSW ef_search "
                     f"{closest['ef_search']} above: {closest['tenants_meeting_goal']}/"
                     f"{len(context.dataset.tenants)} tenants, worst recall "
                     f"{closest['min_recall']:.3f}, worst p95 {closest['max_p95_ms']:.1f} ms.")
    return text


def _closest(candidates: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Most tenants meeting the goal, then the best worst-case recall, then speed."""
    if not candidates:
        return None
    return max(candidates, key=lambda c: (c["tenants_meeting_goal"], c["min_recall"],
                                          -c["max_p95_ms"]))


# --- the report -----------------------------------------------------------------------------
def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def write_report(context: BenchContext, results: dict[str, Any]) -> Path:
    config = context.config
    tenants = context.dataset.tenants
    basis = results["latency_basis"]
    report = Report(BENCHMARK, "Vector index strategies per tenant size (rag bench index)")
    report.results = results
    folder = report.folder()
    rec = results["recommendation"]
    load = [c.loadavg_1m for r in context.results for c in r.cells.values()]
    report.add(
        "## Verdict\n\n" + rec["verdict"] + "\n\n"
        f"Goal: recall@10 >= {config.goal_recall} for every tenant (the smallest included) at "
        f"p95 <= {config.goal_p95_ms:g} ms per query. `default_meets_goal` = "
        f"**{results['default_meets_goal']}** (latency: p95 of {BASIS_TEXT[basis]}); on "
        f"wall-clock p95 as measured: **{results['default_meets_goal_wall_clock']}**. "
        f"pgvectorscale DiskANN: **{_diskann_text(results['diskann'])}**.\n\n"
        + _basis_note(basis, load))
    report.add(_tenant_line(tenants))
    by_id = _by_id(context.results)
    for sid, title in (("product_default", "The product's default plan"),
                       ("product_proposed", "Proposed default")):
        if sid in by_id:
            report.add(f"### {title}: {by_id[sid].strategy.label}")
            report.table(["tenant", "rows", "recall@10", "p50 ms", "p95 ms", "CPU p95 ms",
                          "QPS 1", "QPS 2", "plan", "meets goal"],
                         [[t.name, t.rows, _fmt(c.recall_at_10), _fmt(c.p50_ms, 2),
                           _fmt(c.p95_ms, 2), _fmt(c.cpu_p95_ms, 2), _fmt(c.qps_1, 1),
                           _fmt(c.qps_2, 1), c.plan,
                           "yes" if meets_goal(c, config, basis) else "no"]
                          for t in tenants for c in [by_id[sid].cells[t.name]]])
    report.add(f"### Per tenant: the fastest strategies that meet the goal ({basis} p95)")
    report.table(["tenant", "rows", "meeting the goal (p95 ms), fastest first"],
                 [[t.name, f"{t.rows:,}", _fastest_meeting(context, t.name, basis)]
                  for t in tenants])
    report.add("## Recall@10 / p95 ms per tenant, every strategy\n\n"
               "Cells: recall@10 · p95 of CPU time / p95 of wall-clock time (ms). **Bold**: "
               f"meets the goal ({basis} basis).")
    report.table(["strategy", *[t.name for t in tenants], "build s", "index MB"],
                 [[r.strategy.label,
                   *[_cell_text(r.cells[t.name], config, basis) for t in tenants],
                   _fmt(r.build_s, 1), _fmt(r.index_mb, 1)] for r in context.results])
    report.add("## Index builds")
    report.table(["index", "build s", "size MB", "options"],
                 [[k, v.get("build_s"), v.get("index_mb"), ",".join(v.get("options", []))]
                  for k, v in context.builds.items()])
    report.add(_diskann_section(results["diskann"]))
    plots = write_plots(context, folder, basis)
    if plots:
        report.add(f"## Recall-latency curves ({basis} p95)\n\n" + "\n".join(
            f"![{p.stem}]({p.name})" for p in plots))
    report.add(_data_section(context, results))
    report.add(_setup_section(context, results))
    report.add("## Every cell\n\nQPS 1: queries per second of one client running the tenant's "
               "queries back to back; QPS 2: queries split over two concurrent clients "
               "(both wall-clock, so they carry the machine's load). CPU: time the serving "
               "backend spent on a CPU for the query (parallel workers not included; plans "
               "with Gather say so). `plan`: the scan nodes of EXPLAIN for the first query "
               "(for rag.search_chunks: the branch it reports).")
    report.table(["strategy", "tenant", "recall@10", "p50 ms", "p95 ms", "CPU p50", "CPU p95",
                  "QPS 1", "QPS 2", "queries", "load 1m", "plan"],
                 [[r.strategy.id, name, _fmt(c.recall_at_10), _fmt(c.p50_ms, 2),
                   _fmt(c.p95_ms, 2), _fmt(c.cpu_p50_ms, 2), _fmt(c.cpu_p95_ms, 2),
                   _fmt(c.qps_1, 1), _fmt(c.qps_2, 1), c.queries, _fmt(c.loadavg_1m, 1),
                   c.plan + ("" if c.plan_ok in (None, True) else " (NOT the intended index)")]
                  for r in context.results for name, c in r.cells.items()])
    return report.write()


def _basis_note(basis: str, load: list[float]) -> str:
    if not load:
        return ""
    text = (f"The machine was shared during the run: 1-minute load average "
            f"{min(load):.1f}-{max(load):.1f} (median {float(np.median(load)):.1f}) on "
            f"{os.cpu_count()} cores. ")
    if basis == "cpu":
        text += ("Wall-clock latency then mostly measures the wait for a core, so the goal is "
                 "judged on the p95 of the CPU time the serving backend spent per query "
                 "(read from /proc/<pid>/schedstat): what the query costs, and about what it "
                 "takes on an idle machine, plus a round trip of a fraction of a millisecond. "
                 "Both are in every table.")
    else:
        text += "Latency is wall-clock time and includes the wait for a core."
    return text


def _fastest_meeting(context: BenchContext, tenant: str, basis: str, limit: int = 4) -> str:
    meeting = sorted((p95(r.cells[tenant], basis), r.strategy.id) for r in context.results
                     if meets_goal(r.cells[tenant], context.config, basis))
    if not meeting:
        return "none"
    return ", ".join(f"{sid} ({value:.1f})" for value, sid in meeting[:limit])


def _cell_text(cell: CellResult, config: IndexBenchConfig, basis: str) -> str:
    text = f"{cell.recall_at_10:.3f} · {_fmt(cell.cpu_p95_ms, 1)} / {cell.p95_ms:.1f}"
    return f"**{text}**" if meets_goal(cell, config, basis) else text


def _tenant_line(tenants: list[Any]) -> str:
    return "Tenants: " + ", ".join(
        f"{t.name} = {t.rows:,} rows ({len(t.queries)} queries)" for t in tenants) + "."


def _diskann_text(value: str | dict[str, Any]) -> str:
    if isinstance(value, str):
        return value
    return f"{value.get('status')} (vectorscale {value.get('version')})"


def _diskann_section(value: str | dict[str, Any]) -> str:
    if value == NOT_INSTALLED:
        return ("## pgvectorscale StreamingDiskANN\n\n| strategy | result |\n|---|---|\n"
                "| diskann | not installed: this server's pg_available_extensions has no "
                "`vectorscale`; no numbers are reported. Point DATABASE_URL at a server with "
                "pgvectorscale to include it. |")
    return ("## pgvectorscale StreamingDiskANN\n\n"
            f"{_diskann_text(value)}; rows `diskann_*` in the tables above."
            + (f" Error: {value['error']}" if isinstance(value, dict) and "error" in value
               else ""))


def _data_section(context: BenchContext, results: dict[str, Any]) -> str:
    data = results["data"]
    comparison = data["real_vs_synthetic"]
    kinds = context.dataset.tenants[0].query_kinds
    lines = [
        "## How the data was made",
        "",
        f"- {data['vectors']:,} unit vectors of {data['dimension']} dimensions: "
        f"{data['real_vectors']:,} real, {data['synthetic_vectors']:,} synthetic.",
        f"- Real: {data['real_texts']}. {data['embedded_now']} texts embedded in this run, "
        f"{data['embedded_from_cache']} read from the embedding cache "
        f"(`<state_dir>/cache/bench-index`, keyed by model version and text).",
        f"- Mixture: one Gaussian component per real vector x_i. Its covariance has a "
        f"low-rank part along the offsets from x_i to its {data['neighbours']} nearest real "
        "vectors (the directions in which the data varies there) and a diagonal part: the "
        "per-dimension standard deviation of the residuals (vector minus centroid) of x_i's "
        f"cluster under spherical k-means (numpy, k-means++ seeding, {data['clusters']} "
        f"clusters, mean residual std {data['mean_residual_std']}).",
        f"- Each synthetic vector: pick i uniformly; draw x_i + sum_j w_j (x_nn_j - x_i) + "
        f"{data['noise_scale']} x sigma_cluster(i) * z, with w_j ~ N(0, "
        f"{data['neighbour_scale']}^2 / {data['neighbours']}) and z ~ N(0, I); normalise to "
        "unit length. Synthetic rows carry their centre's chunk text in rag.chunks.",
        "- Why not isotropic noise around each real vector (a plain kernel density estimate)? "
        "Tried first: it turns every real vector into a cloud of near-equidistant copies. In "
        "the calibration (3,000 real vectors, 100,000 rows) unfiltered HNSW recall@10 was "
        "0.56 at ef_search 40 and 0.78 at 100 with it, 0.85 and 0.94 with this mixture: the "
        "clouds are far harder than text embeddings, and the verdict would be an artefact.",
        "- Tenants: rows are assigned independently of content (a random permutation cut at "
        "the shares), so each tenant is a uniform sample of the space; the heap is written in "
        "a random order (every tenant's rows scattered over the table's pages, as with many "
        "tenants ingesting concurrently). The partition variant stores each tenant in its own "
        "partition.",
        f"- Queries (real embeddings only): per tenant {kinds.count('claim')} SciFact test "
        f"claims (disjoint between tenants) and {kinds.count('heldout_chunk')} first chunks of "
        "held-out SciFact abstracts (not in the data, not used to fit the mixture).",
        "- Ground truth: exact cosine top-10 within the tenant, computed in numpy over the same "
        "float32 vectors; a returned row counts as a hit if it is the tenant's and no farther "
        "than the 10th true neighbour (+1e-5, ties), so recall does not depend on tie order.",
        f"- Seed {data['seed']}; `--quick` is the same recipe at "
        f"{IndexBenchConfig.quick().vectors:,} vectors.",
        "",
        "Real vs synthetic, samples of equal size (synthetic drawn fresh from the mixture):",
        "",
        "| sample | norm of mean vector | random-pair cosine | 1-NN cosine | 10-NN cosine | "
        "LID (k=20) |",
        "|---|---|---|---|---|---|",
    ]
    for name in ("real", "synthetic"):
        c = comparison[name]
        lines.append(f"| {name} | {c['mean_vector_norm']} | {c['random_pair_cosine']} | "
                     f"{c['nn1_cosine']} | {c['nn10_cosine']} | {c['lid_k20']} |")
    scale = data["neighbours_at_full_size"]
    lines += [
        "",
        f"At the full size ({scale['rows']:,} rows) the mean cosine of a row's nearest and "
        "10th-nearest neighbour (200 sampled rows) is "
        f"{scale['synthetic_plus_real']['nn1_cosine']} and "
        f"{scale['synthetic_plus_real']['nn10_cosine']}; extrapolating the real sample "
        f"({data['comparison_size']:,} rows, LID {comparison['real']['lid_k20']}) to that size "
        "with neighbour distance ~ n^(-1/LID) gives "
        f"{scale['extrapolated_from_real']['nn1_cosine']} and "
        f"{scale['extrapolated_from_real']['nn10_cosine']}: the synthetic rows sit somewhat "
        "closer together than the extrapolation (each real vector's neighbourhood is sampled "
        "many times)."]
    difficulty = _difficulty(context)
    if difficulty:
        lines += ["", difficulty]
    lines += ["", f"Limits: {data['real_vectors']:,} real vectors stand for a corpus of "
              f"{data['vectors']:,}; a real "
              "corpus with near-duplicates or tight topical clusters would behave differently, "
              "so absolute recall of the approximate indexes carries that uncertainty. The "
              "comparison between strategies, all on the same rows and queries, does not."]
    return "\n".join(lines)


def _difficulty(context: BenchContext) -> str:
    """Unfiltered HNSW recall inside the largest tenant's own partition: how hard the rows
    are for an approximate index, independent of tenant filters."""
    largest = max(context.dataset.tenants, key=lambda t: t.rows)
    points = [(r.strategy.params.get("ef_search"), r.cells[largest.name].recall_at_10)
              for r in context.results
              if r.strategy.family == "partition" and r.strategy.id != "partition_exact"]
    if not points:
        return ""
    text = ", ".join(f"{recall:.3f} at ef_search {ef}" for ef, recall in points)
    return (f"Difficulty check: HNSW (m 16, ef_construction 64) without any filter, in "
            f"{largest.name}'s own partition ({largest.rows:,} rows): recall@10 {text}.")


def _setup_section(context: BenchContext, results: dict[str, Any]) -> str:
    server = results["server"]
    timings = results["timings_s"]
    config = context.config
    lines = [
        "## Setup",
        "",
        f"- Server: PostgreSQL {server.get('server_version')}, pgvector {server.get('pgvector')}"
        f"; shared_buffers {server.get('shared_buffers')}, work_mem {server.get('work_mem')}, "
        f"max_parallel_workers_per_gather {server.get('max_parallel_workers_per_gather')}, "
        f"jit {server.get('jit')} (available: {server.get('jit_available')}). "
        f"Index builds: maintenance_work_mem {config.maintenance_work_mem}, "
        f"max_parallel_maintenance_workers {config.build_workers} (SET per build session).",
        f"- pgvector defaults seen: hnsw.ef_search {server.get('hnsw.ef_search')}, "
        f"hnsw.max_scan_tuples {server.get('hnsw.max_scan_tuples')}, ivfflat.max_probes "
        f"{server.get('ivfflat.max_probes')}.",
        f"- Scratch database `{config.database}` on the configured server, the product's "
        f"migrations applied; {'kept' if config.keep_db else 'dropped at the end'}. "
        "Everything runs as the owner (admin URL): this compares index strategies, not "
        "row-level security (RLS is not FORCEd in the scratch database; rag.search_chunks "
        "still runs inside a tenant transaction).",
        "- Per (strategy, tenant): EXPLAIN of the first query, 3 warm-up queries, then the "
        f"tenant's queries one by one (at least {config.min_queries}, stopping after "
        f"{config.cell_budget_s:g} s), then (up to) the first {config.concurrent_queries} of "
        "them split over two concurrent clients. "
        "Latency is measured in the client around the whole statement (for rag.search_chunks: "
        "the transaction with set_config), localhost TCP included.",
        "- HNSW/IVFFlat/halfvec/binary rows run with enable_seqscan and enable_bitmapscan off "
        "and without the tenant b-tree (dropped after the exact and product phases), so each row "
        "measures its index under the tenant filter; the `plan` column shows what ran.",
        "- The machine is shared: the 1-minute load average at the end of each cell is in the "
        "last table; latency and QPS move with it, recall does not.",
        "- Timings (s): " + ", ".join(f"{k} {v}" for k, v in timings.items()) + ".",
    ]
    if context.notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in context.notes]
    return "\n".join(lines)


def write_plots(context: BenchContext, folder: Path, basis: str = "wall") -> list[Path]:
    """Recall@10 against p95 latency: one PNG per tenant (a line per strategy family and
    mode, points along its swept parameter) and one overview with all tenants."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    config = context.config
    curves: dict[str, list[StrategyResult]] = {}
    for result in context.results:
        curves.setdefault(result.strategy.curve, []).append(result)
    colours = plt.get_cmap("tab20")
    paths: list[Path] = []
    tenants = context.dataset.tenants
    overview, axes = plt.subplots(1, len(tenants), figsize=(4.2 * len(tenants), 4.4),
                                  squeeze=False)
    for index, tenant in enumerate(tenants):
        figure, ax = plt.subplots(figsize=(9, 6))
        for target in (ax, axes[0][index]):
            for n, (curve, members) in enumerate(curves.items()):
                members = sorted(members, key=lambda r: r.strategy.sweep)
                xs = [max(p95(r.cells[tenant.name], basis), 0.01) for r in members]
                ys = [r.cells[tenant.name].recall_at_10 for r in members]
                target.plot(xs, ys, marker="o", markersize=4, linewidth=1.2,
                            color=colours(n % 20), label=curve)
            target.axhline(config.goal_recall, color="grey", linestyle="--", linewidth=0.8)
            target.axvline(config.goal_p95_ms, color="grey", linestyle="--", linewidth=0.8)
            target.set_xscale("log")
            target.set_xlabel("p95 CPU time per query (ms, log)" if basis == "cpu"
                              else "p95 latency per query (ms, log)")
            target.set_ylabel("recall@10")
            target.set_ylim(-0.02, 1.02)
            target.set_title(f"{tenant.name} ({tenant.rows:,} rows)")
            target.grid(True, which="both", linewidth=0.3)
        ax.legend(fontsize=7, loc="lower right")
        figure.tight_layout()
        path = folder / f"recall_latency_{tenant.name}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        paths.append(path)
    axes[0][-1].legend(fontsize=6, loc="lower right")
    overview.tight_layout()
    path = folder / "recall_latency_all_tenants.png"
    overview.savefig(path, dpi=90)
    plt.close(overview)
    return [path, *paths]


__all__ = [
    "NOT_INSTALLED",
    "BenchContext",
    "IndexBenchConfig",
    "IndexBenchmarkOutcome",
    "NullProgress",
    "ProgressSink",
    "StrategyResult",
    "finish",
    "prepare_database",
    "prepare_dataset",
    "run_index_benchmark",
    "run_phase",
]
