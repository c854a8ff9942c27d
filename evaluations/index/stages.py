"""``rag bench index`` / flow ``benchmark-index``: which vector index strategy serves every
tenant, the smallest included, with recall@10 >= 0.98 at p95 <= 10 ms?

One scratch database on the configured server (embedded by default) gets the product's own
schema (its migrations) and >= 500,000 MiniLM-like vectors (real SciFact embeddings plus
synthetic ones drawn from a mixture fitted to them, see :mod:`evaluations.index.data`)
spread over five tenants holding 1/5/10/34/50% of the rows. Strategies, each measured on
every tenant with the tenant's own queries (recall@10 against exact neighbours, p50/p95
latency, QPS at 1 and 2 concurrent clients) plus build time and size of its index:

* exact scan through the tenant b-tree;
* the product's plan, ``rag.search_chunks`` itself (exact up to a row threshold, else HNSW
  with iterative scans), at its configured defaults and at candidate defaults;
* HNSW (the product's index and other m/ef_construction), ef_search sweep, iterative scans
  off / relaxed_order / strict_order;
* IVFFlat, probes sweep, iterative scans off / relaxed_order;
* HNSW on halfvec; binary-quantised HNSW with exact re-ranking of a larger candidate set;
* LIST partition per tenant: exact in small partitions, HNSW in large ones;
* pgvectorscale StreamingDiskANN when the server can install ``vectorscale`` (else the row
  says "not installed");
* the product's plan as shipped (phase ``plan``, :mod:`evaluations.index.plan_phase`): the
  tenants past the own-partition threshold promoted by the product's code, then
  ``rag.search_chunks``: the row ``default_meets_goal`` judges; with the cost of a
  promotion and of ingestion into a promoted tenant against the shared partition.

The stages here (:func:`prepare_dataset`, :func:`prepare_database`, :func:`run_phase` per
index family, :func:`finish`) are what the Prefect flow runs as tasks;
:func:`run_index_benchmark` runs them in one process for the CLI.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from evaluations.index.building import planned_cells, restore_for_keep
from evaluations.index.config import NOT_INSTALLED, PHASES, IndexBenchConfig
from evaluations.index.context import BenchContext, NullProgress, ProgressSink, StrategyResult
from evaluations.index.data import build_dataset
from evaluations.index.database import (
    apply_product_schema,
    create_bench_database,
    drop_bench_database,
    load_product_tables,
    shared_exact_index,
    vectorscale_status,
)
from evaluations.index.phases import PHASE_RUNNERS
from evaluations.index.report import write_report
from evaluations.index.results import IndexResults
from evaluations.index.summary import summarise
from rag_core.config import Settings
from rag_core.embeddings.base import Embedder

__all__ = ["IndexBenchmarkOutcome", "abandon", "cache_dir", "finish", "prepare_database",
           "prepare_dataset", "run_index_benchmark", "run_phase"]


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
        context.present.add(shared_exact_index(conn, bench.model_key))
        context.diskann = (NOT_INSTALLED if vectorscale_status(conn) is None
                           else "available")
    return context


def run_phase(context: BenchContext, phase: str,
              progress: ProgressSink | None = None) -> list[StrategyResult]:
    """Build what ``phase`` needs, measure its strategies on every tenant, drop its index."""
    if phase not in context.config.phases:
        return []
    sink = progress or NullProgress()
    runner = PHASE_RUNNERS[phase]
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
            context.notes.append(restore_for_keep(context))
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
    results: IndexResults

    def summary(self) -> dict[str, Any]:
        """The compact form printed by ``--json``: the table and the verdict."""
        keys = ("recall_at_10", "p50_ms", "p95_ms", "qps_1", "qps_2", "qps_4", "p95_ms_4")
        results = self.results.as_dict()
        return {
            "ok": True, "report": str(self.folder),
            "default_meets_goal": results["default_meets_goal"],
            "diskann": results["diskann"],
            "recommendation": results["recommendation"],
            "plan": results["builds"].get("plan"),
            "strategies": {
                sid: {"build_s": s["build_s"], "index_mb": s["index_mb"],
                      "tenants": {t: {k: c[k] for k in keys} for t, c in s["tenants"].items()}}
                for sid, s in results["strategies"].items()},
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


