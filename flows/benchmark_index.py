"""Prefect flow ``benchmark-index``: vector index strategies per tenant size.

The same stages as ``rag bench index`` (``evaluations.index.stages``), one task each:
build the data (embed + synthesise), load the scratch database, one task per index family,
then the report. The shared state (vectors of half a million rows) stays in this process:
tasks pass a key to it, so Prefect neither inspects, copies nor persists it.
"""

from __future__ import annotations

import uuid
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from evaluations.index.config import PHASES, IndexBenchConfig
from evaluations.index.context import BenchContext
from evaluations.index.stages import abandon, finish, prepare_database, prepare_dataset, run_phase
from flows._resources import platform
from rag_core.db.embedded import EmbeddedPostgres
from rag_core.embeddings.registry import ensure_models, load_embedder


class _LogProgress:
    """Progress for a flow run: phase notes as log lines, cells every 10%."""

    def __init__(self) -> None:
        self.total = 0
        self.done = 0
        self._next_report = 0.1

    def add_total(self, count: int) -> None:
        self.total += count

    def advance(self, description: str, count: int = 1) -> None:
        self.done += count
        if self.total and count and self.done / self.total >= self._next_report:
            get_run_logger().info("%d/%d cells measured (%s)", self.done, self.total,
                                  description)
            self._next_report += 0.1

    def note(self, message: str) -> None:
        get_run_logger().info(message)


# The shared state (half a million vectors) stays in this process: tasks get a run key, so
# Prefect neither inspects, copies nor persists it (the tasks run in the flow's process).
_RUNS: dict[str, tuple[BenchContext, _LogProgress]] = {}


def _run(key: str) -> tuple[BenchContext, _LogProgress]:
    return _RUNS[key]


@task(name="index-bench-data", cache_policy=NO_CACHE)
def build_data(quick: bool, keep_db: bool, database: str, vectors: int | None,
               queries_per_tenant: int | None, real_chunks: int | None,
               phases: list[str] | None, partition_hnsw: list[int] | None = None) -> str:
    """Embed the SciFact texts (cached), draw the synthetic rows, compute exact neighbours."""
    settings = platform().settings
    config = IndexBenchConfig.preset(
        quick, keep_db=keep_db, database=database, vectors=vectors,
        queries_per_tenant=queries_per_tenant, real_chunks=real_chunks, phases=phases,
        partition_hnsw=partition_hnsw)
    ensure_models(settings.state_dir)
    embedder = load_embedder("fastembed", state_dir=settings.state_dir)
    progress = _LogProgress()
    key = uuid.uuid4().hex
    _RUNS[key] = (prepare_dataset(settings, config, embedder, progress), progress)
    return key


@task(name="index-bench-database", cache_policy=NO_CACHE)
def load_database(key: str) -> None:
    """Create the scratch database, apply the product's migrations, COPY the rows in."""
    context, progress = _run(key)
    if context.settings.uses_embedded_postgres:
        EmbeddedPostgres(context.settings.state_dir).start()
    prepare_database(context, progress)


@task(name="index-bench-phase", cache_policy=NO_CACHE, task_run_name="index-bench-{phase}")
def measure_phase(key: str, phase: str) -> int:
    """Build one index family, measure its strategies on every tenant, drop it."""
    context, progress = _run(key)
    return len(run_phase(context, phase, progress))


@task(name="index-bench-report", cache_policy=NO_CACHE)
def write_report(key: str) -> dict[str, Any]:
    """Recommendation, tables, plots, results.json; drop the scratch database."""
    context, progress = _run(key)
    return finish(context, progress).summary()


@flow(name="benchmark-index", log_prints=True)
def benchmark_index(quick: bool = False, keep_db: bool = False, database: str = "bench_index",
                    vectors: int | None = None, queries_per_tenant: int | None = None,
                    real_chunks: int | None = None, phases: list[str] | None = None,
                    partition_hnsw: list[int] | None = None) -> dict[str, Any]:
    """Measure every index strategy on every tenant; returns the summary of ``--json``
    (report folder, per-strategy per-tenant numbers, ``default_meets_goal``, ``diskann``).

    ``vectors``, ``queries_per_tenant``, ``real_chunks`` (real SciFact chunks embedded) and
    ``phases`` (subset of exact, product, hnsw, ivfflat, halfvec, binary, hnsw_extra, diskann,
    partition) and ``partition_hnsw`` ([m, ef_construction] of the partitions' graphs)
    override the preset chosen by ``quick``."""
    key = build_data(quick, keep_db, database, vectors, queries_per_tenant, real_chunks, phases,
                     partition_hnsw)
    try:
        try:
            load_database(key)
            for phase in PHASES:
                measure_phase(key, phase)
        except BaseException:
            abandon(_RUNS[key][0])
            raise
        summary = write_report(key)
    finally:
        _RUNS.pop(key, None)
    get_run_logger().info("index benchmark: default meets goal: %s; report %s",
                          summary["default_meets_goal"], summary["report"])
    return summary
